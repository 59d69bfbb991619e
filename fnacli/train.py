"""The training loop shared by ``finetune`` and ``search``, plus the parts it is made of.

Small pieces a caller can use alone (optimiser with no decay on BN/bias, warm-up + cosine or
step schedule, distributed setup, the epoch batch sampler, JSON-lines metrics, train-state
checkpoints, BN recalibration) and ``fit``, which strings them together.

Exactness of ``--resume``: a sample's augmentation depends only on (seed, epoch, image)
(see ``CocoDetection.__getitem__``), the data order only on (seed, epoch), and a checkpoint
holds model, optimiser, scheduler, scaler, RNG states and the position (epoch, batch), so a
run interrupted at a checkpoint and resumed matches an uninterrupted one bit for bit on CPU.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, Dataset, Sampler

from fnacli import interrupt
from fnacli.errors import UserError
from fnacli.io import load_json_text, write_bytes_atomic, write_text_atomic
from fnacli.progress import TrainLogger, fmt
from fnacli.runid import check_resume, training_set_identity

STATE_FORMAT = "fnacli/train-state@1"
OPTIMIZERS = ("sgd", "rmsprop")
SCHEDULES = ("cosine", "step")


class DivergedError(UserError):
    """The loss (or gradient) became NaN/inf; the CLI exits 2 with this message."""


# -- distributed ---------------------------------------------------------------------------
@dataclass
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> DistEnv:
    """Join the process group torchrun describes (WORLD_SIZE/RANK/LOCAL_RANK), if any.

    NCCL on GPUs (one process per GPU, cuda:LOCAL_RANK), gloo on CPU. ``device`` forces
    "cpu" or "cuda"; by default CUDA is used when available.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else device == "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    dev = torch.device("cpu")
    if use_cuda:
        dev = torch.device(f"cuda:{local}" if world > 1 else "cuda")
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistEnv(rank, world, local, dev)


def shutdown_distributed(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def all_ok(flag: bool, env: DistEnv) -> bool:
    """True only if ``flag`` holds on every process (so all of them stop together)."""
    if not env.distributed:
        return flag
    t = torch.tensor([0.0 if flag else 1.0], device=env.device)
    dist.all_reduce(t)
    return t.item() == 0.0


def signal_received(env: DistEnv) -> int | None:
    """The signal any process received (``fnacli.interrupt``), so that all stop together."""
    sig = interrupt.pending()
    if not env.distributed:
        return sig
    t = torch.tensor([float(sig or 0)], device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item()) or None


# -- reproducibility -----------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                       *np_state[2:]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- optimiser and schedule ----------------------------------------------------------------
def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv/linear weights only; none on BN parameters and biases (1-D)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float = 0.0,
                    momentum: float = 0.9, rmsprop_eps: float = 1.0) -> torch.optim.Optimizer:
    """SGD (momentum) or RMSProp; RMSProp's eps=1.0 is FNA's SSDLite setting."""
    groups = param_groups(model, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, momentum=momentum, eps=rmsprop_eps)
    raise UserError(f"--optimizer: expected one of {', '.join(OPTIMIZERS)}, got {name!r}")


def lr_factor(step: int, total: int, schedule: str, warmup_iters: int = 0,
              warmup_ratio: float = 1 / 3, milestones: tuple[float, ...] = (),
              gamma: float = 0.1) -> float:
    """Multiplier of the base lr at iteration ``step`` (0-based) of ``total``.

    Linear warm-up from ``warmup_ratio`` over ``warmup_iters``, multiplied by the decay:
    cosine to 0 over all iterations, or ×gamma at each milestone (fractions of training).
    """
    if schedule == "cosine":
        decay = 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))
    elif schedule == "step":
        decay = gamma ** sum(step >= round(m * total) for m in milestones)
    else:
        raise UserError(f"--schedule: expected one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if step < warmup_iters:
        decay *= warmup_ratio + (1 - warmup_ratio) * step / warmup_iters
    return decay


def build_scheduler(optimizer: torch.optim.Optimizer, total: int, schedule: str,
                    warmup_iters: int = 0, warmup_ratio: float = 1 / 3,
                    milestones: tuple[float, ...] = (),
                    gamma: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration schedule (call ``step()`` after every optimiser step)."""
    lr_factor(0, total, schedule, warmup_iters, warmup_ratio, milestones, gamma)  # validate
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total, schedule, warmup_iters, warmup_ratio,
                                       milestones, gamma))


# -- data order ----------------------------------------------------------------------------
class EpochBatches(Sampler[list[tuple[int, int]]]):
    """Batches of (epoch, index) keys: a seeded permutation per epoch, cut into global
    batches of ``global_batch``; each process takes its contiguous share of every batch.

    With one process and batch B, or P processes with B/P each, the same B samples make up
    step k. The incomplete last batch is dropped (every process runs the same steps).
    ``set_epoch(e, start)`` skips the first ``start`` batches (resuming mid-epoch).
    """

    def __init__(self, n: int, global_batch: int, rank: int = 0, world: int = 1,
                 seed: int = 0, shuffle: bool = True) -> None:
        if global_batch % world:
            raise UserError(f"--batch-size {global_batch} is not divisible by the "
                            f"{world} processes")
        self.n, self.batch, self.rank, self.world = n, global_batch, rank, world
        self.local = global_batch // world
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    @property
    def steps_per_epoch(self) -> int:
        return self.n // self.batch

    def __len__(self) -> int:
        return max(self.steps_per_epoch - self.start, 0)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        for b in range(self.start, self.steps_per_epoch):
            lo = b * self.batch + self.rank * self.local
            yield [(self.epoch, i) for i in order[lo:lo + self.local]]


def loader_generator(seed: int) -> torch.Generator:
    """A DataLoader's own generator: every new iterator (each epoch, and the one a resumed
    run starts with) draws its base seed from the global RNG otherwise, which would leave a
    resumed run's global RNG one draw off the uninterrupted run's."""
    return torch.Generator().manual_seed(seed)


# -- metrics and state files ---------------------------------------------------------------
class MetricsLog:
    """JSON lines beside the output; rank 0 only. A resumed run first drops the lines past the
    checkpoint it resumes from, so the file reads like one uninterrupted run."""

    def __init__(self, path: str | Path | None, enabled: bool = True,
                 resume_step: int | None = None) -> None:
        self.path = Path(path) if path is not None and enabled else None
        if self.path is None:
            return
        keep = []
        if resume_step is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except (ValueError, RecursionError):
                    continue  # a line cut by a crash
                if not isinstance(rec, dict):
                    continue
                if rec.get("step", 0) <= resume_step:
                    keep.append(line)
        write_text_atomic(self.path, "".join(x + "\n" for x in keep))

    def write(self, **record: Any) -> None:
        if self.path is None:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def has(self, event: str, epoch: int) -> bool:
        """Whether the file holds an ``event`` line of ``epoch`` (False when not writing)."""
        if self.path is None or not self.path.exists():
            return False
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(rec, dict) and rec.get("event") == event and rec.get("epoch") == epoch:
                return True
        return False


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def save_train_state(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: Any, scaler: torch.amp.GradScaler | None, *, epoch: int,
                     batch: int, step: int, identity: dict, extra: dict | None = None,
                     hooks: dict | None = None) -> None:
    """Everything needed to continue exactly, written atomically (torch.save; read back
    with ``weights_only=True``). ``epoch``/``batch``: where the next step starts; ``hooks``:
    the state of ``fit``'s hooks (tensors allowed, unlike ``extra``)."""
    state = {"format": STATE_FORMAT, "model": unwrap(model).state_dict(),
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict() if scaler is not None else {},
             "epoch": epoch, "batch": batch, "step": step, "rng": rng_state(),
             "identity": json.dumps(identity, sort_keys=True), "extra": json.dumps(extra or {})}
    if hooks:
        state["hooks"] = hooks
    write_torch_atomic(path, state)


def write_torch_atomic(path: str | Path, obj: Any) -> None:
    """``torch.save`` to memory, then an atomic write: a full disk is an OSError of ours (a
    clear message, the earlier file intact), not an error deep in torch's zip writer."""
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes_atomic(path, buf.getbuffer())


def restore_train_state(state_path: str | Path | None, identity: dict, model: nn.Module,
                        optimizer: torch.optim.Optimizer, scheduler: Any,
                        scaler: torch.amp.GradScaler | None) -> dict:
    """Load a training state for ``--resume``: check it is the same run (``identity``), put
    model/optimizer/scheduler/scaler/RNG back, and return it (epoch, batch, step, extra)."""
    if state_path is None:
        raise ValueError("resume needs state_path")
    state = load_train_state(state_path)
    check_resume(state, json.loads(json.dumps(identity, sort_keys=True)), unwrap(model),
                 state_path, check_identity)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError:  # the same options, another model: a state of an older fnacli
        raise UserError(f"{state_path}: holds another model than this run's (written by "
                        "another fnacli version?); start over with --force") from None
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return state


def load_train_state(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no training state to resume from (run without --resume "
                        "first)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # damaged zip, refused pickle, ...
        raise UserError(f"{path}: not a readable fnacli training state ({type(e).__name__})"
                        ) from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise UserError(f"{path}: not an fnacli training state (expected {STATE_FORMAT})")
    try:
        state["identity"] = load_json_text(state["identity"], path)
        state["extra"] = load_json_text(state["extra"], path)
    except (KeyError, TypeError):
        raise UserError(f"{path}: not an fnacli training state (fields missing)") from None
    return state


# settings a resumed run may raise: more epochs extend a run (timm's and detectron2's
# resume do the same); the schedule is recomputed for the new length from the step reached
EXTENSIBLE = ("epochs",)


def check_identity(saved: dict, current: dict, path: str | Path) -> None:
    """A resumed run must be the same run: same recipe, data and model settings; only the
    number of epochs may grow (``EXTENSIBLE``)."""
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key), current.get(key)
        if key in EXTENSIBLE and isinstance(old, int) and isinstance(new, int) and new >= old:
            continue
        if saved.get(key) != current.get(key):
            raise UserError(f"{path}: was written by a run with {key}={saved.get(key)!r}, this "
                            f"run has {key}={current.get(key)!r} (resume with the same options, "
                            "or start over with --force)")


# -- BatchNorm -----------------------------------------------------------------------------
def set_train_mode(model: nn.Module, freeze_bn: bool = False) -> None:
    """Train mode; with ``freeze_bn`` BN layers use and keep their running statistics."""
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.eval()


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Any, forward: Callable[[nn.Module, Any], Any],
                   ) -> int:
    """Recompute every BN layer's running statistics as the plain average over ``batches``
    (DetNAS-style recalibration); returns the number of batches used."""
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    model.train()
    n = 0
    try:
        for batch in batches:
            forward(model, batch)
            n += 1
    finally:
        for m, mom in zip(bns, momenta, strict=True):
            m.momentum = mom
        model.eval()
    return n


# -- the loop ------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    epochs: int
    batch_size: int  # global: split over the processes
    lr: float
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    rmsprop_eps: float = 1.0
    schedule: str = "cosine"
    milestones: tuple[float, ...] = ()  # fractions of training, for "step"
    gamma: float = 0.1
    warmup_iters: int = 0
    warmup_ratio: float = 1 / 3
    clip_grad: float | None = None
    seed: int = 0
    workers: int = 0
    amp: bool = True  # CUDA only
    channels_last: bool = True  # CUDA only
    freeze_bn: bool = False
    # a supernet trained one path per step leaves the other candidates without gradients
    find_unused_parameters: bool = False
    checkpoint_every: int = 0  # steps; 0 = at the end of every epoch only
    # a metrics line (and, outside a terminal, a log line) every N steps: torchvision's
    # reference scripts print every 10 iterations by default too
    log_every: int = 10
    tensorboard: str | Path | None = None  # TensorBoard log folder (None: no TensorBoard)

    def identity(self) -> dict:
        """The settings a resumed run must share (the rest may change between runs)."""
        d = asdict(self)
        for k in ("workers", "checkpoint_every", "log_every", "tensorboard"):
            d.pop(k)
        d["milestones"] = list(d["milestones"])
        return d


@dataclass
class FitResult:
    steps: int  # optimiser steps done in total (all runs)
    epochs: int  # completed epochs
    last_loss: float | None
    finished: bool  # False when stopped early by ``stop_after``


class NonFinite(Exception):  # noqa: N818 - not an error of its own: fit turns it into one
    """A loss or gradient norm that is NaN/inf, found before the update it would spoil;
    ``fit`` raises it as a ``DivergedError`` that says where."""

    def __init__(self, what: str, value: torch.Tensor, updates: str = "the weights",
                 advice: str = "Lower --lr, add warm-up or set --clip-grad") -> None:
        super().__init__(what)
        self.what, self.value, self.updates, self.advice = what, value, updates, advice


class Hooks:
    """What a caller adds to ``fit``'s loop; this base adds nothing (fine-tuning, one-shot
    training). The differentiable search is ``fit`` with hooks of its own
    (``fnacli.search.differentiable``): the path before each weight step, the α/β step after
    it, and the epoch's record."""

    def before_step(self, loop: Loop) -> None:
        """Before the forward pass of step ``loop.step + 1``."""

    def after_step(self, loop: Loop) -> None:
        """After the weight update of step ``loop.step``: log it (here: the train line every
        ``log_every`` steps and at an epoch's end); ``loop.status`` is the bar's text."""
        if loop.log_due:
            loop.log_train()

    def end_epoch(self, loop: Loop) -> dict | None:
        """Epoch ``loop.epoch`` (from 1) is trained; its state is saved after this returns.
        What it returns is shown with the epoch (the progress line)."""
        return None

    def state_dict(self) -> dict:
        """What travels in the training state (tensors allowed)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Put back what ``state_dict`` gave, on ``--resume``."""


@dataclass
class Loop:
    """Where ``fit`` is, for its hooks, and the parts of one weight step."""

    cfg: TrainConfig
    env: DistEnv
    net: nn.Module  # as trained (DDP-wrapped in a distributed run)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    use_amp: bool
    per_epoch: int
    state_path: str | Path | None
    run_id: dict
    hooks: Hooks
    metrics: MetricsLog = field(init=False)
    bar: TrainLogger = field(init=False)
    epoch: int = 0  # epochs done: the running one is epoch + 1, as on screen
    batch: int = 0  # the running (or last) step's batch within its epoch
    step: int = 0  # optimiser steps done, all runs
    run_steps: int = 0  # of this run
    lr: float = 0.0  # of the last step
    loss: float | None = None  # of the last step
    logged_loss: float | None = None  # the last train line's (the average since the one before)
    status: str = ""  # the bar's text after this step
    # the running average of the losses not yet logged (log_every > 1): saved with the state
    # so that a resumed run logs the same averages as an uninterrupted one
    window: dict[str, float] = field(default_factory=dict)
    window_n: int = 0
    t0: float = field(default_factory=time.perf_counter)

    @property
    def raw(self) -> nn.Module:
        return unwrap(self.net)

    @property
    def total(self) -> int:
        return self.cfg.epochs * self.per_epoch

    @property
    def at_end(self) -> bool:
        """The running step is its epoch's last."""
        return self.batch + 1 == self.per_epoch

    @property
    def log_due(self) -> bool:
        return self.step % self.cfg.log_every == 0 or self.at_end

    def train_step(self, batch: Any, loss_fn: Callable) -> None:
        """One weight step: forward, backward, (clip,) update, schedule, loss window."""
        cfg, env, net = self.cfg, self.env, self.net
        # model.train() walks every module (thousands in a supernet, a visible share of a
        # small step): only when something left train mode (evaluation does through
        # model.eval()/train(), so the root's flag tells), or to re-freeze BN
        if cfg.freeze_bn or not net.training:
            set_train_mode(net, cfg.freeze_bn)
        with torch.autocast(env.device.type, enabled=self.use_amp):
            losses = loss_fn(net, batch, env.device)
        loss = sum(losses.values())
        if not all_ok(bool(torch.isfinite(loss).item()), env):
            raise NonFinite("loss", loss)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.clip_grad or not self.use_amp:
            self.scaler.unscale_(self.optimizer)
            norm = nn.utils.clip_grad_norm_(self.raw.parameters(), cfg.clip_grad or float("inf"))
            # with AMP, inf gradients are the scaler's business (it skips the step)
            if not self.use_amp and not all_ok(bool(torch.isfinite(norm).item()), env):
                raise NonFinite("gradient norm", norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.step += 1
        self.run_steps += 1
        self.loss = float(loss.item())
        for k, v in losses.items():
            self.window[k] = self.window.get(k, 0.0) + float(v.item())
        self.window["loss"] = self.window.get("loss", 0.0) + self.loss
        self.window_n += 1
        self.status = (f"epoch {self.epoch + 1}/{cfg.epochs} loss {fmt(self.loss)} "
                       f"lr {fmt(self.lr)}")

    def log_train(self, head: dict | None = None, tail: dict | None = None,
                  shown: dict | None = None) -> None:
        """The train line: the losses averaged since the last one, between ``head`` and
        ``tail``; the progress line shows them and ``shown``."""
        n = self.window_n
        avg = {"loss": self.window["loss"] / n,
               **{k: v / n for k, v in self.window.items() if k != "loss"}}
        self.logged_loss = avg["loss"]
        # epochs count from 1 here as on screen
        self.metrics.write(event="train", epoch=self.epoch + 1, step=self.step, lr=self.lr,
                           **(head or {}), **avg, **(tail or {}),
                           seconds=round(time.perf_counter() - self.t0, 3))
        self.bar.report(self.step, self.epoch + 1, {**avg, **(shown or {})}, self.lr)
        self.window, self.window_n = {}, 0

    def save(self, at_batch: int) -> None:
        """The training state (rank 0), to continue at batch ``at_batch`` of epoch
        ``self.epoch`` (0-based: the epoch of the next step)."""
        if self.state_path is not None and self.env.is_main:
            save_train_state(self.state_path, self.net, self.optimizer, self.scheduler,
                             self.scaler if self.use_amp else None, epoch=self.epoch,
                             batch=at_batch, step=self.step, identity=self.run_id,
                             extra={"window": self.window, "window_n": self.window_n},
                             hooks=self.hooks.state_dict())

    def interrupted(self, sig: int) -> interrupt.Interrupted:
        saved = (f"the training state {self.state_path} (step {self.step} of {self.total})"
                 if self.state_path is not None else None)
        return interrupt.stop(sig, saved)

    def diverged(self, e: NonFinite) -> DivergedError:
        lr = self.scheduler.get_last_lr()[0]
        kept = (f"the last good training state {self.state_path} is kept"
                if self.state_path is not None and Path(self.state_path).exists()
                else "no training state had been saved yet")
        return DivergedError(f"training diverged: the {e.what} is {float(e.value.detach())} at "
                             f"epoch {self.epoch + 1}, step {self.step + 1} (lr {lr:.3g}); "
                             f"stopped before updating {e.updates}, {kept}. {e.advice}")


def _prepare(model: nn.Module, cfg: TrainConfig, env: DistEnv) -> nn.Module:
    model.to(env.device)
    if env.device.type == "cuda" and cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if env.distributed:
        if env.device.type == "cuda" and not cfg.freeze_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[env.device.index] if env.device.type == "cuda" else None,
            find_unused_parameters=cfg.find_unused_parameters)
    return model


def _start(model: nn.Module, sampler: EpochBatches, cfg: TrainConfig, env: DistEnv,
           state_path: str | Path | None, metrics_path: str | Path | None, resume: bool,
           run_id: dict, hooks: Hooks) -> Loop:
    """The loop's parts, at the start or where the training state says."""
    seed_everything(cfg.seed)
    net = _prepare(model, cfg, env)
    raw = unwrap(net)
    optimizer = build_optimizer(raw, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum,
                                cfg.rmsprop_eps)
    scheduler = build_scheduler(optimizer, cfg.epochs * sampler.steps_per_epoch, cfg.schedule,
                                cfg.warmup_iters, cfg.warmup_ratio, cfg.milestones, cfg.gamma)
    use_amp = cfg.amp and env.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    loop = Loop(cfg, env, net, optimizer, scheduler, scaler, use_amp, sampler.steps_per_epoch,
                state_path, run_id, hooks)
    if resume:
        state = restore_train_state(state_path, run_id, raw, optimizer, scheduler,
                                    scaler if use_amp else None)
        loop.epoch, loop.batch, loop.step = state["epoch"], state["batch"], state["step"]
        loop.window = dict(state["extra"].get("window", {}))
        loop.window_n = int(state["extra"].get("window_n", 0))
        hooks.load_state_dict(state.get("hooks", {}))
    loop.metrics = MetricsLog(metrics_path, env.is_main, loop.step if resume else None)
    return loop


def fit(model: nn.Module, dataset: Dataset, loss_fn: Callable[[nn.Module, Any, torch.device],
                                                              dict[str, torch.Tensor]],
        cfg: TrainConfig, env: DistEnv | None = None, *, state_path: str | Path | None = None,
        metrics_path: str | Path | None = None, resume: bool = False,
        collate_fn: Callable | None = None, identity: dict | None = None,
        on_epoch_end: Callable[[int, nn.Module], dict | None] | None = None,
        stop_after: int | None = None, desc: str = "train",
        log: Callable[[str], None] | None = None, hooks: Hooks | None = None) -> FitResult:
    """Train ``model`` on ``dataset`` with ``loss_fn(model, batch, device) -> losses``.

    The dataset is indexed with (epoch, index) keys from ``EpochBatches``. ``state_path``
    gets a checkpoint every ``cfg.checkpoint_every`` steps and after every epoch;
    ``resume`` continues from it (``identity`` plus the recipe must match). A non-finite
    loss or gradient raises ``DivergedError`` before the weights are touched, leaving the
    last good checkpoint in place. ``on_epoch_end(epoch, model)`` may return metrics to log.
    ``stop_after`` stops (checkpointed) after that many steps of this run. ``hooks`` adds to
    every step and epoch (:class:`Hooks`).
    """
    env = env or DistEnv()
    n = len(dataset)  # type: ignore[arg-type]
    sampler = EpochBatches(n, cfg.batch_size, env.rank, env.world, cfg.seed)
    if sampler.steps_per_epoch == 0:
        raise UserError(f"the training set has {n} usable images, fewer than --batch-size "
                        f"{cfg.batch_size}")
    hooks = hooks or Hooks()
    loop = _start(model, sampler, cfg, env, state_path, metrics_path, resume,
                  {**cfg.identity(), **(identity or {}), **training_set_identity(dataset)},
                  hooks)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.workers,
                        collate_fn=collate_fn, pin_memory=env.device.type == "cuda",
                        generator=loader_generator(cfg.seed))
    with interrupt.deferred(), TrainLogger(loop.total, loop.step, desc, env.is_main,
                                           epochs=cfg.epochs, images_per_step=cfg.batch_size,
                                           tensorboard=cfg.tensorboard) as bar:
        loop.bar = bar
        # the state of an epoch's end is saved before its evaluation: a run that died during
        # the evaluation resumes by evaluating again, so that no epoch line goes missing
        if resume and on_epoch_end and loop.epoch > 0 and loop.batch == 0 and \
                loop.metrics.path is not None and not loop.metrics.has("epoch", loop.epoch):
            _evaluate(loop, on_epoch_end, None)
        while loop.epoch < cfg.epochs:
            sampler.set_epoch(loop.epoch, loop.batch)
            for b, batch in enumerate(loader, start=loop.batch):
                loop.batch = b
                try:
                    hooks.before_step(loop)
                    loop.train_step(batch, loss_fn)
                    hooks.after_step(loop)
                except NonFinite as e:
                    raise loop.diverged(e) from None
                loop.bar.step(loop.status)
                if _stop_mid_epoch(loop, stop_after):
                    return FitResult(loop.step, loop.epoch, _last_loss(loop), finished=False)
            loop.epoch, loop.batch = loop.epoch + 1, 0
            shown = hooks.end_epoch(loop)
            loop.save(0)
            _evaluate(loop, on_epoch_end, shown)
            if sig := signal_received(env):
                raise loop.interrupted(sig)  # the state of the epoch's end is saved
            if stop_after is not None and loop.run_steps >= stop_after and \
                    loop.epoch < cfg.epochs:
                return FitResult(loop.step, loop.epoch, _last_loss(loop), finished=False)
    set_train_mode(loop.raw)
    last = _last_loss(loop)
    if log:
        log(f"{desc}: {loop.step} steps, {cfg.epochs} epochs, last loss {fmt(last)}")
    return FitResult(loop.step, loop.epoch, last, finished=True)


def _last_loss(loop: Loop) -> float | None:
    """The loss a run reports at its end: the last logged value (what the metrics file and
    the log say), else the last step's."""
    return loop.logged_loss if loop.logged_loss is not None else loop.loss


def _stop_mid_epoch(loop: Loop, stop_after: int | None) -> bool:
    """After a step that is not its epoch's last: the periodic training state, and whether
    to stop here (``stop_after``: True; a signal: raised), the state saved."""
    if loop.at_end:
        return False
    cfg, at_batch = loop.cfg, loop.batch + 1
    if cfg.checkpoint_every and loop.step % cfg.checkpoint_every == 0:
        loop.save(at_batch)
    if stop_after is not None and loop.run_steps >= stop_after:
        loop.save(at_batch)
        return True
    if sig := signal_received(loop.env):
        loop.save(at_batch)
        raise loop.interrupted(sig)
    return False


def _evaluate(loop: Loop, on_epoch_end: Callable[[int, nn.Module], dict | None] | None,
              shown: dict | None) -> None:
    """The end of epoch ``loop.epoch`` (from 1): its evaluation's line, and the progress
    line (with what the hooks' ``end_epoch`` gave to show)."""
    extra = on_epoch_end(loop.epoch - 1, loop.raw) if on_epoch_end else None
    if extra:
        loop.metrics.write(event="epoch", epoch=loop.epoch, step=loop.step, **extra)
    loop.bar.epoch_end(loop.epoch, loop.step, {**(shown or {}), **(extra or {})} or None)
