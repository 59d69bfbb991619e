"""FNA's differentiable search on a detection task (FNA/FNA++ §3.3, Jung et al.'s channels).

Schedule: ``warmup_epochs`` of weight steps on uniformly sampled single paths, then weight
steps on a path sampled from softmax(α)/softmax(β) alternating with α/β steps: after every
``arch_every`` weight steps one α/β step (the papers' "alternating" is 1: one weight step,
then one α/β step on the other half). Weight steps read ``train_a``, α/β steps ``train_b``
(a seeded 50/50 split of the training set). An α/β step runs the relaxed supernet (every
candidate, β-mixed channel masks) with all weights frozen and BN statistics left untouched,
and minimises ``task loss + cost``:

- ``log`` (FNA): ``λ·log_τ(γ·C)``, C the expected MAdds in GMAdds (FNA counts in units of
  1e9 and scales by γ; both shift the loss, not its gradient);
- ``linear`` (Jung et al.): ``λ·γ·C`` (GMAdds);
- with ``target_madds`` only the excess counts: ``λ·max(0, log_τ(C/T))`` /
  ``λ·γ·max(0, C−T)``.

With ``cost="latency"`` C is the expected latency in milliseconds by a measured latency
table (``fnacli.latency``, the same nested expectation) and the target is ``target_latency``
(ms).

``arch_step``: ``full`` (FNA) runs every candidate; ``sampled`` runs two sampled candidates
per layer and width with the unbiased two-sample gates of ``fnacli.search.gates`` (the cost
term stays exact). ``checkpoint_activations`` recomputes the mixed layers in the backward
pass instead of storing every candidate's activations (same gradients, less memory).

C is ``Lut.expected_madds`` under the current α/β over ``cost_scope``: by default the searched
mixed blocks only, as Jung et al.'s eq. 5 sums the K searched blocks and FNA accumulates the
cost inside the searched backbone (``detector`` adds stem, head conv, neck and head: constants
or nearly, which dilute the gradient of ``log C``). The table is built at ``cost_size``
(RetinaNet: 1088×800 as FNA and Jung et al. count it, while training at 1333×800).

The defaults are the papers' search recipes (``Task.search_defaults``; docs/search.md lists
where FNA's released configs differ): weight optimiser SGD or RMSProp from ``fnacli.train``
(warm-up + step schedule over the weight steps), architecture optimiser Adam (lr 3e-4, betas
(0.5, 0.999), weight decay 1e-3). Everything else (DDP setup, seeding, the epoch sampler,
JSON-lines metrics, training-state files, the progress bar) comes from ``fnacli.train``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader

from fnacli import interrupt
from fnacli.errors import UserError
from fnacli.nn.supernet import Supernet, op_choices, path_to_arch, width_choices
from fnacli.progress import TrainLogger, fmt
from fnacli.search import arch as A
from fnacli.search.gates import arch_step_generator, sampled_gates
from fnacli.search.supernet_io import SupernetCheckpoint, load_weights
from fnacli.spec import ArchSpec, SpaceSpec
from fnacli.tasks import get_task
from fnacli.tasks.base import ARCH_LR, ARCH_WD
from fnacli.train import (
    DistEnv,
    DivergedError,
    EpochBatches,
    MetricsLog,
    TrainConfig,
    all_ok,
    build_optimizer,
    build_scheduler,
    loader_generator,
    restore_train_state,
    save_train_state,
    seed_everything,
    set_train_mode,
    signal_received,
    unwrap,
)

COST_FORMS = ("log", "linear")
COSTS = ("madds", "latency")
ARCH_STEPS = ("full", "sampled")
GIGA = 1e9
ARCH_BETAS, ARCH_CLIP = (0.5, 0.999), 35.0


def default_cost_size(task: str, size: tuple[int, int]) -> tuple[int, int]:
    """The input size the cost table counts at: the task's ``search_defaults.cost_size``
    (RetinaNet: 1088x800, as FNA and Jung et al. count it), else ``size``."""
    return get_task(task).search_defaults.cost_size or size


def search_cost(lut: Any, alpha_probs: A.AlphaDict, beta_probs: A.BetaDict,
                cfg: SearchConfig) -> torch.Tensor:
    """The expected MAdds the cost term sees: ``cfg.cost_scope`` of the table."""
    return lut.expected_madds(alpha_probs, beta_probs, cfg.cost_scope)


def default_warmup_epochs(task: str, epochs: int) -> int:
    """The task's share of weight-only epochs (its ``search_defaults``: the papers' recipes,
    ssdlite 12 of 24, retinanet 8 of 14) of ``epochs``, rounded down: a shorter search still
    gets α/β epochs."""
    return get_task(task).search_defaults.warmup_for(epochs)


@dataclass
class SearchConfig:
    """A differentiable search run. ``train`` holds the weight-side recipe (its ``epochs`` and
    ``batch_size`` are the search's)."""

    task: str
    size: tuple[int, int]
    train: TrainConfig
    warmup_epochs: int
    arch_every: int = 1
    cost_form: str = "log"
    lam: float | None = None  # None: the task's FNA value (log) / matched to it (linear)
    tau: float = 10.0
    gamma: float | None = None  # None: the task's (ssdlite 10, retinanet 5)
    target_madds: float | None = None  # MAdds, absolute
    min_depth: int = 0
    arch_lr: float = ARCH_LR
    arch_weight_decay: float = ARCH_WD
    arch_fraction: float = 0.5  # share of the training images for α/β steps
    augment: str = "ssd"
    cost_scope: str = "blocks"
    cost_size: tuple[int, int] | None = None  # None: the task's (default_cost_size)
    cost: str = "madds"  # or "latency" (needs latency_table)
    target_latency: float | None = None  # milliseconds
    latency_table: Any = field(default=None, repr=False, compare=False)  # LatencyTable
    arch_step: str = "full"
    checkpoint_activations: bool = False

    @property
    def cost_gamma(self) -> float:
        return get_task(self.task).search_defaults.gamma if self.gamma is None else self.gamma

    @property
    def applied_gamma(self) -> float:
        """γ as the cost term uses it: FNA's γ scales MAdds; a latency cost is taken as is."""
        return self.cost_gamma if self.cost == "madds" else 1.0

    @property
    def lut_size(self) -> tuple[int, int]:
        return self.cost_size or default_cost_size(self.task, self.size)

    def check(self) -> None:
        if self.arch_step not in ARCH_STEPS:
            raise UserError(f"--arch-step: expected one of {', '.join(ARCH_STEPS)}, "
                            f"got {self.arch_step!r}")
        if self.cost_form not in COST_FORMS:
            raise UserError(f"--cost-form: expected one of {', '.join(COST_FORMS)}, "
                            f"got {self.cost_form!r}")
        if self.warmup_epochs > self.train.epochs:
            raise UserError(f"--warmup-epochs {self.warmup_epochs} is more than --epochs "
                            f"{self.train.epochs}")
        if self.arch_every < 1:
            raise UserError(f"--arch-every: expected ≥ 1, got {self.arch_every}")
        if self.tau <= 1.0:
            raise UserError(f"--tau: the log base must be > 1, got {self.tau}")
        if self.lam is not None and self.lam < 0:
            raise UserError(f"--lambda: expected ≥ 0, got {self.lam}")
        if self.gamma is not None and self.gamma <= 0:
            raise UserError(f"--gamma: expected > 0, got {self.gamma}")
        if self.target_madds is not None and self.target_madds <= 0:
            raise UserError(f"--target-madds: expected a positive MAdds budget, got "
                            f"{self.target_madds}")
        if self.min_depth < 0:
            raise UserError(f"--min-depth: expected ≥ 0, got {self.min_depth}")
        from fnacli.cost.space import check_scope

        check_scope(self.cost_scope)
        if self.cost not in COSTS:
            raise UserError(f"--cost: expected one of {', '.join(COSTS)}, got {self.cost!r}")
        if self.cost == "latency" and self.latency_table is None:
            raise UserError("--cost latency needs --latency-table TABLE (measure one with "
                            "'fnacli latency')")
        if self.target_latency is not None and self.cost != "latency":
            raise UserError("--target-latency goes with --cost latency")
        if self.target_madds is not None and self.cost != "madds":
            raise UserError("--target-madds goes with --cost madds (use --target-latency)")

    def identity(self) -> dict:
        return {**self.train.identity(), "task": self.task, "size": list(self.size),
                "warmup_epochs": self.warmup_epochs, "arch_every": self.arch_every,
                "cost_form": self.cost_form, "lambda": self.lam, "tau": self.tau,
                "gamma": self.cost_gamma,
                "target_madds": self.target_madds, "min_depth": self.min_depth,
                "arch_lr": self.arch_lr, "augment": self.augment, "arch_step": self.arch_step,
                "cost_scope": self.cost_scope, "cost_size": list(self.lut_size),
                # only where a task's recipe sets them (detection runs keep their identity)
                **({"arch_weight_decay": self.arch_weight_decay,
                    "arch_fraction": self.arch_fraction}
                   if (self.arch_weight_decay, self.arch_fraction) != (ARCH_WD, 0.5) else {}),
                **self._latency_identity()}

    def _latency_identity(self) -> dict:
        if self.cost == "madds":  # keeps the identity of MAdds searches as it was
            return {}
        return {"cost": self.cost, "target_latency": self.target_latency,
                "latency_table": self.latency_table.identity()}

    def cost_unit(self) -> float:
        """The unit C is taken in: GMAdds, or milliseconds (table values are ns)."""
        return GIGA if self.cost == "madds" else 1e6

    def cost_target(self) -> float | None:
        """The target in the table's own unit (MAdds or ns)."""
        if self.cost == "madds":
            return self.target_madds
        return self.target_latency * 1e6 if self.target_latency is not None else None


class ArchParams(nn.Module):
    """α/β logits as parameters (in ``op_choices`` / ``width_choices`` order)."""

    def __init__(self, space: SpaceSpec, alpha: A.AlphaDict, beta: A.BetaDict) -> None:
        super().__init__()
        self.space = space
        self.alpha_keys = [(s, i) for s, i, _ in op_choices(space)]
        self.beta_keys = [s for s, _ in width_choices(space)]
        self.alpha = nn.ParameterList([nn.Parameter(alpha[k].clone()) for k in self.alpha_keys])
        self.beta = nn.ParameterList([nn.Parameter(beta[k].clone()) for k in self.beta_keys])

    def logits(self) -> tuple[A.AlphaDict, A.BetaDict]:
        return (dict(zip(self.alpha_keys, self.alpha, strict=True)),
                dict(zip(self.beta_keys, self.beta, strict=True)))

    def probs(self, min_depth: int = 0) -> tuple[A.AlphaDict, A.BetaDict]:
        return A.probs(self.space, *self.logits(), min_depth)

    def tensors(self) -> dict[str, torch.Tensor]:
        return A.to_tensors(*self.logits())


class _Optimizers:
    """The weight and the architecture optimiser saved/loaded as one (``save_train_state``)."""

    def __init__(self, weight: torch.optim.Optimizer, arch: torch.optim.Optimizer) -> None:
        self.weight, self.arch = weight, arch

    def state_dict(self) -> dict:
        return {"weight": self.weight.state_dict(), "arch": self.arch.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.weight.load_state_dict(state["weight"])
        self.arch.load_state_dict(state["arch"])


@dataclass
class SearchResult:
    steps: int
    arch_steps: int
    epochs: int
    finished: bool
    arch: ArchSpec
    madds: float
    expected_madds: float
    history: list[dict] = field(default_factory=list)
    warning: str | None = None
    latency_ms: float | None = None  # by the latency table, when one was given
    expected_latency_ms: float | None = None


def cost_term(expected: torch.Tensor, form: str, lam: float, tau: float,
              target: float | None, gamma: float = 1.0, unit: float = GIGA) -> torch.Tensor:
    """The regulariser on the expected cost (absolute MAdds; or ns with ``unit`` 1e6, C in
    ms), see the module docstring."""
    g = gamma * expected / unit
    if target is None:
        return lam * (torch.log(g) / math.log(tau) if form == "log" else g)
    t = gamma * target / unit
    if form == "log":
        return lam * torch.relu(torch.log(g / t)) / math.log(tau)
    return lam * torch.relu(g - t)


def resolve_lambda(cfg: SearchConfig, initial_gmadds: float) -> float:
    """λ as given, else FNA's for the task (log); the linear form's default is matched to the
    log form's pull at the start: d(λ_lin·γ·C) = d(λ·log_τ(γC)) at C = C₀."""
    if cfg.lam is not None:
        return cfg.lam
    lam = get_task(cfg.task).search_defaults.lam
    if cfg.cost_form == "linear":
        return lam / (cfg.applied_gamma * initial_gmadds * math.log(cfg.tau))
    return lam


def arch_code(arch: ArchSpec) -> str:
    """A short text of an architecture for progress lines: ``width:KEKE…`` per stage."""
    return " ".join(f"{st.out}:" + "".join(f"{o.kernel}{o.expand}" for o in st.ops)
                    for st in arch.stages)


def prob_report(space: SpaceSpec, alpha_probs: A.AlphaDict, beta_probs: A.BetaDict) -> dict:
    """α/β probabilities as JSON: {"alpha": {"S.L": {op: p}}, "beta": {"S": {width: p}}}."""
    alpha = {f"{s}.{i}": {c: round(float(p), 6) for c, p in zip(cands, alpha_probs[(s, i)],
                                                                  strict=True)}
             for s, i, cands in op_choices(space)}
    beta = {str(s): {str(c): round(float(p), 6) for c, p in zip(outs, beta_probs[s], strict=True)}
            for s, outs in width_choices(space)}
    return {"alpha": alpha, "beta": beta}


def prob_scalars(report: dict) -> dict[str, float]:
    """``prob_report`` flattened to TensorBoard tags: ``alpha/layer S.L/OP``, ``beta/stage S/W``."""
    out = {f"alpha/layer {layer}/{op}": p for layer, ps in report["alpha"].items()
           for op, p in ps.items()}
    out.update({f"beta/stage {s}/{w}": p for s, ps in report["beta"].items()
                for w, p in ps.items()})
    return out


def _wrap(detector: nn.Module, env: DistEnv, channels_last: bool) -> nn.Module:
    """Device, SyncBN and DDP. Paths leave most candidates unused in a step, hence
    ``find_unused_parameters``."""
    detector.to(env.device)
    if env.device.type == "cuda" and channels_last:
        detector.to(memory_format=torch.channels_last)
    if not env.distributed:
        return detector
    if env.device.type == "cuda":
        detector = nn.SyncBatchNorm.convert_sync_batchnorm(detector)
    return nn.parallel.DistributedDataParallel(
        detector, device_ids=[env.device.index] if env.device.type == "cuda" else None,
        find_unused_parameters=True)


class _Frozen:
    """Weights without gradients and BN statistics left as they are (momentum 0), for α/β
    steps; restored on exit."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> _Frozen:
        self.flags = [(p, p.requires_grad) for p in self.model.parameters()]
        for p, _ in self.flags:
            p.requires_grad_(False)
        self.bns = [(m, m.momentum) for m in self.model.modules() if isinstance(m, _BatchNorm)]
        for m, _ in self.bns:
            m.momentum = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        for p, flag in self.flags:
            p.requires_grad_(flag)
        for m, mom in self.bns:
            m.momentum = mom


def searched_tensors(ckpt: SupernetCheckpoint, supernet: Supernet, arch: ArchParams
                     ) -> dict[str, torch.Tensor]:
    """The supernet's current weights (tensors the module lacks, e.g. the head conv under
    RetinaNet, kept from the input) and α/β."""
    out = dict(ckpt.weights)
    out.update({k: v.detach().cpu() for k, v in supernet.state_dict().items()})
    out.update(arch.tensors())
    return out


def run_search(ckpt: SupernetCheckpoint, source: str, train_set: Any, cfg: SearchConfig,
               env: DistEnv, output: str | Path, *, state_path: str | Path | None = None,
               metrics_path: str | Path | None = None, resume: bool = False,
               stop_after: int | None = None,
               log: Callable[[str], None] | None = None) -> SearchResult:
    """Search ``ckpt``'s space on ``train_set`` (a ``CocoDetection`` with the training
    transform); writes the ``searched`` checkpoint ``output`` after every epoch (rank 0)."""
    from fnacli.checkpoint import save_checkpoint
    from fnacli.cost.lut import load_or_build_lut
    from fnacli.detection.data import split_half

    cfg.check()
    say = log or (lambda _m: None)
    tc, space = cfg.train, ckpt.space
    train_a, train_b = split_half(train_set, tc.seed, 1 - cfg.arch_fraction)
    sampler_a = EpochBatches(len(train_a), tc.batch_size, env.rank, env.world, tc.seed)
    sampler_b = EpochBatches(len(train_b), tc.batch_size, env.rank, env.world, tc.seed + 1)
    per_epoch, per_b = sampler_a.steps_per_epoch, sampler_b.steps_per_epoch
    if per_epoch == 0 or per_b == 0:
        raise UserError(f"each part of the training set ({len(train_a)} usable images for "
                        f"weights, {len(train_b)} for α/β) needs at least --batch-size "
                        f"{tc.batch_size} images")
    total = tc.epochs * per_epoch

    seed_everything(tc.seed)
    task = get_task(cfg.task)
    collate = task.collate
    supernet = Supernet(space, ckpt.masks, with_head=task.uses_head_conv,
                        output_stride=task.output_stride)
    supernet.checkpoint_activations = cfg.checkpoint_activations
    load_weights(supernet, ckpt.weights, source)
    detector = task.build_model(space.max_arch(), train_set.num_classes, cfg.size,
                                backbone=supernet)
    arch = ArchParams(space, ckpt.alpha, ckpt.beta).to(env.device)
    if env.is_main:  # rank 0 builds (and caches) the table, the others then read it
        lut = load_or_build_lut(space, cfg.task, cfg.lut_size, train_set.num_classes,
                                progress=True)
    if env.distributed:
        dist.barrier()
    if not env.is_main:
        lut = load_or_build_lut(space, cfg.task, cfg.lut_size, train_set.num_classes)

    def expected(a_p: A.AlphaDict, b_p: A.BetaDict) -> torch.Tensor:
        return lut.expected_madds(a_p, b_p)  # the detector's, for logs and reports

    def expected_cost(a_p: A.AlphaDict, b_p: A.BetaDict) -> torch.Tensor:
        if cfg.cost == "latency":
            return cfg.latency_table.expected_latency(a_p, b_p)
        return search_cost(lut, a_p, b_p, cfg)

    unit, target = cfg.cost_unit(), cfg.cost_target()
    with torch.no_grad():
        c0 = float(expected_cost(*A.probs(space, ckpt.alpha, ckpt.beta, cfg.min_depth))) / unit
    lam = resolve_lambda(cfg, c0)

    net = _wrap(detector, env, tc.channels_last)
    raw = unwrap(net)
    holder = nn.Module()
    holder.detector, holder.arch = raw, arch
    w_opt = build_optimizer(raw, tc.optimizer, tc.lr, tc.weight_decay, tc.momentum,
                            tc.rmsprop_eps)
    a_opt = torch.optim.Adam(arch.parameters(), lr=cfg.arch_lr, betas=ARCH_BETAS,
                             weight_decay=cfg.arch_weight_decay)
    optimizers = _Optimizers(w_opt, a_opt)
    scheduler = build_scheduler(w_opt, total, tc.schedule, tc.warmup_iters, tc.warmup_ratio,
                                tc.milestones, tc.gamma)
    use_amp = tc.amp and env.device.type == "cuda"
    w_scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    a_scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    identity = {**cfg.identity(), "space": space.to_dict(), "masks": ckpt.masks,
                "train_images": len(train_set)}
    epoch, batch0, step, arch_steps = 0, 0, 0, 0
    history: list[dict] = []
    # the running average of the losses not yet logged: in the state, so that a resumed run
    # logs the same numbers as an uninterrupted one
    window: dict[str, float] = {}
    window_n = 0
    if resume:
        state = restore_train_state(state_path, identity, holder, optimizers, scheduler,
                                    w_scaler if use_amp else None)
        if use_amp and state["extra"].get("arch_scaler"):
            a_scaler.load_state_dict(state["extra"]["arch_scaler"])
        epoch, batch0, step = state["epoch"], state["batch"], state["step"]
        arch_steps = state["extra"]["arch_steps"]
        history = state["extra"]["history"]
        window = dict(state["extra"].get("window", {}))
        window_n = int(state["extra"].get("window_n", 0))
    metrics = MetricsLog(metrics_path, env.is_main, step if resume else None)
    loader_a = DataLoader(train_a, batch_sampler=sampler_a, num_workers=tc.workers,
                          collate_fn=collate, pin_memory=env.device.type == "cuda",
                          generator=loader_generator(tc.seed))
    loader_b = DataLoader(train_b, batch_sampler=sampler_b, num_workers=tc.workers,
                          collate_fn=collate, pin_memory=env.device.type == "cuda",
                          generator=loader_generator(tc.seed + 1))
    b_iter: Any = None

    def next_b() -> Any:
        nonlocal b_iter
        if b_iter is None:  # (re)start where the arch-step count says
            e, start = divmod(arch_steps, per_b)
            sampler_b.set_epoch(e, start)
            b_iter = iter(loader_b)
        try:
            return next(b_iter)
        except StopIteration:
            sampler_b.set_epoch(arch_steps // per_b, 0)
            b_iter = iter(loader_b)
            return next(b_iter)

    def diverged(what: str, value: torch.Tensor) -> DivergedError:
        kept = (f"the last good training state {state_path} is kept"
                if state_path is not None and Path(state_path).exists()
                else "no training state had been saved yet")
        return DivergedError(f"search diverged: the {what} is {float(value)} at epoch "
                             f"{epoch + 1}, step {step + 1}; stopped before the update, {kept}. "
                             "Lower --lr or --lambda, or add warm-up")

    def snapshot(finished: bool) -> None:
        if not env.is_main:
            return
        meta = {k: v for k, v in ckpt.meta.items() if k != "search"}
        derived, _, p = A.derive(space, *arch.logits(), cfg.min_depth)
        meta["search"] = {"strategy": "differentiable", **cfg.identity(), "lambda": lam,
                          "num_classes": train_set.num_classes,
                          "categories": train_set.categories(), "epochs_done": epoch,
                          "steps": step, "arch_steps": arch_steps, "finished": finished,
                          "derived": derived.to_dict(), "derived_probability": p,
                          "history": history}
        save_checkpoint(output, searched_tensors(ckpt, supernet, arch), "searched", meta,
                        force=True)

    def save_state(at_epoch: int, at_batch: int) -> None:
        if state_path is not None and env.is_main:
            save_train_state(state_path, holder, optimizers, scheduler,
                             w_scaler if use_amp else None, epoch=at_epoch, batch=at_batch,
                             step=step, identity=identity,
                             extra={"arch_steps": arch_steps, "history": history,
                                    "window": window, "window_n": window_n,
                                    "arch_scaler": a_scaler.state_dict() if use_amp else {}})

    def arch_step() -> dict[str, float]:
        batch_b = next_b()
        raw.train()
        with _Frozen(raw):
            a_p, b_p = arch.probs(cfg.min_depth)
            if cfg.arch_step == "sampled":  # each process its own draws: they average
                gen = arch_step_generator(tc.seed + 7919 * env.rank, arch_steps)
                supernet.set_weighted(*sampled_gates(a_p, b_p, gen))
            else:
                supernet.set_weighted(a_p, b_p)
            try:
                with torch.autocast(env.device.type, enabled=use_amp):
                    losses = task.loss(raw, batch_b, env.device)
            finally:
                supernet.set_path(A.argmax_path(a_p, b_p))
            task_loss = sum(losses.values())
            exp = expected_cost(a_p, b_p)
            cost = cost_term(exp, cfg.cost_form, lam, cfg.tau, target,
                             cfg.applied_gamma, unit)
            loss = task_loss + cost.to(task_loss.dtype)
            if not all_ok(bool(torch.isfinite(loss).item()), env):
                raise diverged("α/β loss", loss)
            a_opt.zero_grad(set_to_none=True)
            a_scaler.scale(loss).backward()
        if env.distributed:  # the arch step ran outside DDP: average α/β gradients here
            for p in arch.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= env.world
        a_scaler.unscale_(a_opt)
        nn.utils.clip_grad_norm_(arch.parameters(), ARCH_CLIP)
        a_scaler.step(a_opt)
        a_scaler.update()
        info = {"arch_loss": float(loss.detach()), "task_loss_b": float(task_loss.detach()),
                "cost_term": float(cost.detach())}
        if cfg.cost == "latency":
            info["expected_latency_ms"] = float(exp.detach()) / 1e6
        return info

    def madds_now() -> tuple[float, float, ArchSpec]:
        with torch.no_grad():
            a_p, b_p = arch.probs(cfg.min_depth)
            exp = float(expected(a_p, b_p))
            derived = path_to_arch(space, A.argmax_path(a_p, b_p))
            return exp, float(lut.arch_madds(derived)), derived

    t0 = time.perf_counter()
    run_steps = 0

    def interrupted(sig: int) -> interrupt.Interrupted:
        saved = (f"the search state {state_path} (step {step} of {total})"
                 if state_path is not None else None)
        return interrupt.stop(sig, saved)
    if env.is_main:
        say(f"search {cfg.task} {cfg.size[0]}x{cfg.size[1]}: {len(train_a)}/{len(train_b)} "
            f"images (weights/α-β), {tc.epochs} epochs x {per_epoch} steps ({cfg.warmup_epochs} "
            f"warm-up), α/β step every {cfg.arch_every}, cost {cfg.cost_form} λ {lam:.4g}"
            + (f" τ {cfg.tau:g}" if cfg.cost_form == "log" else "") + f" γ {cfg.cost_gamma:g}"
            + (f", target {cfg.target_madds / 1e6:.1f}M" if cfg.target_madds else "")
            + (f", target {cfg.target_latency:g} ms" if cfg.target_latency else "")
            + (f", start {c0:.3f} ms expected latency" if cfg.cost == "latency"
               else f", start {c0 * 1e3:.1f}M expected MAdds ({cfg.cost_scope} at "
               f"{cfg.lut_size[0]}x{cfg.lut_size[1]})"))
    with interrupt.deferred(), TrainLogger(total, step, f"search {cfg.task}", env.is_main,
                                           epochs=tc.epochs, images_per_step=tc.batch_size,
                                           tensorboard=tc.tensorboard) as bar:
        while epoch < tc.epochs:
            sampler_a.set_epoch(epoch, batch0)
            searching = epoch >= cfg.warmup_epochs
            for b, batch in enumerate(loader_a, start=batch0):
                with torch.no_grad():
                    a_p, b_p = arch.probs(cfg.min_depth)
                path = A.sample_path(space, a_p if searching else None,
                                     b_p if searching else None,
                                     A.step_generator(tc.seed, step), cfg.min_depth)
                supernet.set_path(path)
                if not net.training:  # a walk over every module otherwise: see train.fit
                    set_train_mode(net)
                with torch.autocast(env.device.type, enabled=use_amp):
                    losses = task.loss(net, batch, env.device)
                loss = sum(losses.values())
                if not all_ok(bool(torch.isfinite(loss).item()), env):
                    raise diverged("loss", loss)
                w_opt.zero_grad(set_to_none=True)
                w_scaler.scale(loss).backward()
                w_scaler.unscale_(w_opt)
                norm = nn.utils.clip_grad_norm_(raw.parameters(), tc.clip_grad or float("inf"))
                if not use_amp and not all_ok(bool(torch.isfinite(norm).item()), env):
                    raise diverged("gradient norm", norm)
                w_scaler.step(w_opt)
                w_scaler.update()
                lr = w_opt.param_groups[0]["lr"]
                scheduler.step()
                step += 1
                run_steps += 1
                for k, v in losses.items():
                    window[k] = window.get(k, 0.0) + float(v.detach())
                window["loss"] = window.get("loss", 0.0) + float(loss.detach())
                window_n += 1
                arch_info: dict[str, float] = {}
                if searching and (step - cfg.warmup_epochs * per_epoch) % cfg.arch_every == 0:
                    arch_info = arch_step()
                    arch_steps += 1
                at_end = b + 1 == per_epoch
                if step % tc.log_every == 0 or at_end or arch_info:
                    exp, am, derived = madds_now()
                    if step % tc.log_every == 0 or at_end:
                        avg = {"loss": window["loss"] / window_n,
                               **{k: v / window_n for k, v in window.items() if k != "loss"}}
                        metrics.write(event="train", epoch=epoch + 1, step=step, lr=lr,
                                      phase="search" if searching else "warmup", **avg,
                                      expected_madds=exp, argmax_madds=am,
                                      seconds=round(time.perf_counter() - t0, 3))
                        # (the MAdds as text: on the log line, not TensorBoard's train/)
                        bar.report(step, epoch + 1, {**avg, "E[MAdds]": f"{exp / 1e6:.1f}M",
                                                     "argmax": f"{am / 1e6:.1f}M"}, lr)
                        window, window_n = {}, 0
                    if arch_info:
                        metrics.write(event="arch_step", epoch=epoch + 1, step=step,
                                      arch_step=arch_steps, **arch_info, expected_madds=exp,
                                      argmax_madds=am)
                        bar.scalars(step, {**arch_info, "expected_madds": exp,
                                           "argmax_madds": am}, "arch")
                    bar_text = (f"epoch {epoch + 1}/{tc.epochs} loss {fmt(float(loss.detach()))} "
                                f"E[MAdds] {exp / 1e6:.1f}M argmax {am / 1e6:.1f}M "
                                f"{arch_code(derived)}")
                else:
                    bar_text = f"epoch {epoch + 1}/{tc.epochs} loss {fmt(float(loss.detach()))}"
                bar.step(bar_text)
                if tc.checkpoint_every and step % tc.checkpoint_every == 0 and not at_end:
                    save_state(epoch, b + 1)
                if stop_after is not None and run_steps >= stop_after and not at_end:
                    save_state(epoch, b + 1)
                    return _result(space, arch, cfg, step, arch_steps, epoch, False, lut,
                                   history)
                if not at_end and (sig := signal_received(env)):
                    save_state(epoch, b + 1)
                    raise interrupted(sig)
            epoch, batch0 = epoch + 1, 0
            exp, am, derived = madds_now()
            with torch.no_grad():
                a_p, b_p = arch.probs(cfg.min_depth)
            _, dpath, prob = A.derive(space, *arch.logits(), cfg.min_depth)
            skipped, skippable = A.skip_report(space, dpath)
            record = {"epoch": epoch, "step": step, "expected_madds": exp,
                      "argmax_madds": am, "derived": arch_code(derived),
                      "derived_probability": prob, "skipped_layers": skipped,
                      "skippable_layers": skippable}
            history.append(record)
            probs_now = prob_report(space, a_p, b_p)
            metrics.write(event="epoch", **record, **probs_now)
            bar.epoch_end(epoch, step, {"expected MAdds": f"{exp / 1e6:.1f}M",
                                        "argmax MAdds": f"{am / 1e6:.1f}M",
                                        "derived": arch_code(derived)})
            bar.scalars(step, {"expected_madds": exp, "argmax_madds": am}, "epoch")
            bar.scalars(step, prob_scalars(probs_now), "")
            warning = A.collapse_warning(space, dpath) if epoch > cfg.warmup_epochs else None
            if warning and env.is_main:
                bar.log(f"warning: epoch {epoch}: {warning}")
            save_state(epoch, 0)
            snapshot(finished=epoch == tc.epochs)
            if env.is_main:
                _plot(output, space, metrics_path, {**record, **probs_now}, cfg, bar.log)
            if stop_after is not None and run_steps >= stop_after and epoch < tc.epochs:
                return _result(space, arch, cfg, step, arch_steps, epoch, False, lut, history)
            if epoch < tc.epochs and (sig := signal_received(env)):
                raise interrupted(sig)  # the state of the epoch's end is saved
    set_train_mode(raw)
    return _result(space, arch, cfg, step, arch_steps, epoch, True, lut, history)


def _plot(output: str | Path, space: SpaceSpec, metrics_path: str | Path | None,
          current: dict, cfg: SearchConfig, log: Callable[[str], None]) -> None:
    """Redraw SEARCHED.arch.svg and .png from every epoch in the metrics file (``current``
    alone without one). A picture is not worth a search: a failure to draw is a warning."""
    from fnacli.plots import read_epoch_records, save_figure, search_figure, search_plot_path

    try:
        records = []
        if metrics_path is not None and Path(metrics_path).exists():
            records = read_epoch_records(metrics_path, space)
        fig = search_figure(
            space, records or [current], title=f"α/β over the search: {Path(output).name}",
            subtitle=f"{space.name} space, {cfg.task} {cfg.size[0]}x{cfg.size[1]}, epoch "
                     f"{current['epoch']} of {cfg.train.epochs}",
            warmup_epochs=cfg.warmup_epochs)
        for fmt in (".svg", ".png"):
            save_figure(fig, search_plot_path(output, fmt))
    except Exception as e:  # noqa: BLE001 - see the docstring
        log(f"warning: could not draw {search_plot_path(output)}: {e}")


def _result(space: SpaceSpec, arch: ArchParams, cfg: SearchConfig, step: int, arch_steps: int,
            epoch: int, finished: bool, lut: Any, history: list[dict]) -> SearchResult:
    with torch.no_grad():
        derived, path, _ = A.derive(space, *arch.logits(), cfg.min_depth)
        exp = float(lut.expected_madds(*arch.probs(cfg.min_depth)))
        table = cfg.latency_table
        lat = (table.latency_ms(derived), float(table.expected_latency(
            *arch.probs(cfg.min_depth))) / 1e6) if table is not None else (None, None)
    return SearchResult(step, arch_steps, epoch, finished, derived,
                        float(lut.arch_madds(derived)), exp, history,
                        A.collapse_warning(space, path), *lat)

