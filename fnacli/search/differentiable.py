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
table (``fnacli.cost.latency``: the same expectation over the same ``cost_scope``, so by
default the searched blocks' latency, without the neck, head and constant overhead) and the
target is ``target_latency`` (ms).

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
(0.5, 0.999), weight decay 1e-3).

The code: the weight steps are ``fnacli.train.fit``'s, the loop of fine-tuning (DDP, seeding,
the epoch sampler, resume, JSON-lines metrics, training-state files, the progress bar,
divergence checks, signals). :class:`SearchHooks` adds the path of each step, the α/β step
(``fnacli.search.architect.Architect``: α/β, their optimiser, the cost term) and each epoch's
record; :func:`run_search` builds the parts and calls ``fit``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from fnacli.errors import UserError
from fnacli.nn.supernet import Supernet, op_choices, path_to_arch, width_choices
from fnacli.progress import fmt
from fnacli.search import arch as A
from fnacli.search import convergence as CV
from fnacli.search.architect import GIGA, Architect, ArchParams
from fnacli.search.supernet_io import SupernetCheckpoint, load_weights
from fnacli.spec import ArchSpec, SpaceSpec
from fnacli.tasks import get_task
from fnacli.tasks.base import ARCH_LR, ARCH_WD
from fnacli.train import (
    DistEnv,
    EpochBatches,
    Hooks,
    Loop,
    TrainConfig,
    fit,
    loader_generator,
    seed_everything,
)

COST_FORMS = ("log", "linear")
COSTS = ("madds", "latency")
ARCH_STEPS = ("full", "sampled")


def default_cost_size(task: str, size: tuple[int, int]) -> tuple[int, int]:
    """The input size the cost table counts at: the task's ``search_defaults.cost_size``
    (RetinaNet: 1088x800, as FNA and Jung et al. count it), else ``size``."""
    return get_task(task).search_defaults.cost_size or size


def search_cost(lut: Any, alpha_probs: A.AlphaDict, beta_probs: A.BetaDict,
                cfg: SearchConfig) -> torch.Tensor:
    """The expected cost the cost term sees: ``cfg.cost_scope`` of the MAdds table, or of
    the latency table for ``--cost latency`` (one expectation for both)."""
    table = cfg.latency_table if cfg.cost == "latency" else lut
    return table.expected_cost(alpha_probs, beta_probs, cfg.cost_scope)


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
    target_side: str = "above"  # with a target: the excess only, or |log C/T| ("both")

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
                **({"target_side": self.target_side} if self.target_side != "above" else {}),
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
    near_uniform: str | None = None  # α still near uniform at the end (convergence)


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
    transform); writes the ``searched`` checkpoint ``output`` after every epoch (rank 0).
    The weight steps are ``fnacli.train.fit``'s; :class:`SearchHooks` adds the rest."""
    from fnacli.detection.data import split_half

    cfg.check()
    tc = cfg.train
    train_a, train_b = split_half(train_set, tc.seed, 1 - cfg.arch_fraction)
    if len(train_a) < tc.batch_size or len(train_b) < tc.batch_size:
        raise UserError(f"each part of the training set ({len(train_a)} usable images for "
                        f"weights, {len(train_b)} for α/β) needs at least --batch-size "
                        f"{tc.batch_size} images")
    seed_everything(tc.seed)  # the detector's new layers start the same in every run
    task = get_task(cfg.task)
    detector, supernet, arch, lut = _build(ckpt, source, train_set, cfg, env)

    def expected_cost(a_p: A.AlphaDict, b_p: A.BetaDict) -> torch.Tensor:
        return search_cost(lut, a_p, b_p, cfg)

    with torch.no_grad():
        c0 = float(expected_cost(*A.probs(ckpt.space, ckpt.alpha, ckpt.beta, cfg.min_depth)))
    lam = resolve_lambda(cfg, c0 / cfg.cost_unit())
    if log is not None and env.is_main:
        log(_start_line(cfg, len(train_a), len(train_b), lam, c0 / cfg.cost_unit()))
    architect = Architect(arch, detector, supernet, task.loss, expected_cost, lam, cfg, env)
    hooks = SearchHooks(cfg, ckpt, supernet, architect, lut, env, output, metrics_path,
                        train_set, _ArchBatches(train_b, tc, env, task.collate))
    identity = {**cfg.identity(), "space": ckpt.space.to_dict(), "masks": ckpt.masks,
                "mask_scope": ckpt.mask_scope, "train_images": len(train_set)}
    # a path leaves most candidates unused in a step (under DDP); not part of the identity
    fitted = fit(detector, train_a, task.loss, replace(tc, find_unused_parameters=True), env,
                 state_path=state_path, metrics_path=metrics_path, resume=resume,
                 collate_fn=task.collate, identity=identity, stop_after=stop_after,
                 desc=f"search {cfg.task}", hooks=hooks)
    return _result(ckpt.space, arch, cfg, fitted.steps, architect.steps, fitted.epochs,
                   fitted.finished, lut, hooks.history)


def _build(ckpt: SupernetCheckpoint, source: str, train_set: Any, cfg: SearchConfig,
           env: DistEnv) -> tuple[torch.nn.Module, Supernet, ArchParams, Any]:
    """The detector around the supernet, α/β (on the device) and the MAdds table."""
    from fnacli.cost.lut import load_or_build_lut

    task, space = get_task(cfg.task), ckpt.space
    supernet = Supernet(space, ckpt.masks, with_head=task.uses_head_conv,
                        output_stride=task.output_stride, mask_scope=ckpt.mask_scope)
    supernet.checkpoint_activations = cfg.checkpoint_activations
    load_weights(supernet, ckpt.weights, source)
    detector = task.build_model(space.max_arch(), train_set.num_classes, cfg.size,
                                backbone=supernet)
    arch = ArchParams(space, ckpt.alpha, ckpt.beta).to(env.device)
    if env.is_main:  # rank 0 builds (and caches) the table, the others then read it
        lut = load_or_build_lut(space, task, cfg.lut_size, train_set.num_classes,
                                progress=True)
    if env.distributed:
        dist.barrier()
    if not env.is_main:
        lut = load_or_build_lut(space, task, cfg.lut_size, train_set.num_classes)
    return detector, supernet, arch, lut


def _start_line(cfg: SearchConfig, images_a: int, images_b: int, lam: float, c0: float) -> str:
    """What the search is about to do, in one line."""
    tc = cfg.train
    return (f"search {cfg.task} {cfg.size[0]}x{cfg.size[1]}: {images_a}/{images_b} "
            f"images (weights/α-β), {tc.epochs} epochs x {images_a // tc.batch_size} steps "
            f"({cfg.warmup_epochs} warm-up), α/β step every {cfg.arch_every}, cost "
            f"{cfg.cost_form} λ {lam:.4g}"
            + (f" τ {cfg.tau:g}" if cfg.cost_form == "log" else "") + f" γ {cfg.cost_gamma:g}"
            + (f", target {cfg.target_madds / 1e6:.1f}M" if cfg.target_madds else "")
            + (f", target {cfg.target_latency:g} ms" if cfg.target_latency else "")
            + (f", start {c0:.3f} ms expected latency" if cfg.cost == "latency"
               else f", start {c0 * 1e3:.1f}M expected MAdds ({cfg.cost_scope} at "
               f"{cfg.lut_size[0]}x{cfg.lut_size[1]})"))


class _ArchBatches:
    """The α/β images' batches, in the order the α/β step count says (a resumed search
    goes on where the stopped one was)."""

    def __init__(self, dataset: Any, tc: TrainConfig, env: DistEnv, collate: Callable) -> None:
        self.sampler = EpochBatches(len(dataset), tc.batch_size, env.rank, env.world,
                                    tc.seed + 1)
        self.loader = DataLoader(dataset, batch_sampler=self.sampler, num_workers=tc.workers,
                                 collate_fn=collate, pin_memory=env.device.type == "cuda",
                                 generator=loader_generator(tc.seed + 1))
        self.batches: Any = None

    def next(self, done: int) -> Any:
        """The batch of α/β step ``done + 1``."""
        per = self.sampler.steps_per_epoch
        if self.batches is None:  # (re)start where the step count says
            self.sampler.set_epoch(*divmod(done, per))
            self.batches = iter(self.loader)
        try:
            return next(self.batches)
        except StopIteration:
            self.sampler.set_epoch(done // per, 0)
            self.batches = iter(self.loader)
            return next(self.batches)


class SearchHooks(Hooks):
    """``fit``'s hooks of the search. Before each weight step: a path sampled from α/β
    (uniform in warm-up). After it, every ``arch_every`` steps past warm-up: the α/β step
    (``Architect.step``). At an epoch's end: its record, the searched checkpoint as it
    stands, the plot. The α/β step's state and the history travel in the training state."""

    def __init__(self, cfg: SearchConfig, ckpt: SupernetCheckpoint, supernet: Supernet,
                 architect: Architect, lut: Any, env: DistEnv, output: str | Path,
                 metrics_path: str | Path | None, train_set: Any,
                 arch_batches: _ArchBatches) -> None:
        self.cfg, self.ckpt, self.supernet, self.architect = cfg, ckpt, supernet, architect
        self.space, self.arch, self.lut, self.env = ckpt.space, architect.arch, lut, env
        self.output, self.metrics_path, self.arch_batches = output, metrics_path, arch_batches
        self.data = {"num_classes": train_set.num_classes,
                     "categories": train_set.categories()}
        self.history: list[dict] = []  # one record an epoch

    def searching(self, loop: Loop) -> bool:
        return loop.epoch >= self.cfg.warmup_epochs

    def before_step(self, loop: Loop) -> None:
        searching, cfg = self.searching(loop), self.cfg
        with torch.no_grad():
            a_p, b_p = self.arch.probs(cfg.min_depth) if searching else (None, None)
        self.supernet.set_path(A.sample_path(self.space, a_p, b_p,
                                             A.step_generator(cfg.train.seed, loop.step),
                                             cfg.min_depth))

    def after_step(self, loop: Loop) -> None:
        cfg, terms = self.cfg, {}
        warm = cfg.warmup_epochs * loop.per_epoch
        if self.searching(loop) and (loop.step - warm) % cfg.arch_every == 0:
            terms = self.architect.step(self.arch_batches.next(self.architect.steps))
        where = f"epoch {loop.epoch + 1}/{cfg.train.epochs} loss {fmt(loop.loss)}"
        if not (loop.log_due or terms):
            loop.status = where
            return
        exp, am, derived = self.madds_now()
        madds = {"expected_madds": exp, "argmax_madds": am}
        if loop.log_due:
            loop.log_train({"phase": "search" if self.searching(loop) else "warmup"}, madds,
                           {"detector E[MAdds]": f"{exp / 1e6:.1f}M",
                            "argmax": f"{am / 1e6:.1f}M"})
        if terms:
            loop.metrics.write(event="arch_step", epoch=loop.epoch + 1, step=loop.step,
                               arch_step=self.architect.steps, **terms, **madds)
            loop.bar.scalars(loop.step, {**terms, **madds}, "arch")
        # the whole detector's MAdds (the cost term's scope is named on the first line)
        loop.status = (f"{where} detector E[MAdds] {exp / 1e6:.1f}M argmax {am / 1e6:.1f}M "
                       f"{arch_code(derived)}")

    def end_epoch(self, loop: Loop) -> dict:
        """The epoch's record (history, metrics line, TensorBoard, a collapse warning), the
        searched checkpoint as it stands and the plot; returns what the progress line
        shows."""
        record, probs, per_layer = self.epoch_record(loop)
        self.history.append(record)
        loop.metrics.write(event="epoch", **record, **probs, **per_layer)
        if self.env.is_main and loop.epoch > self.cfg.warmup_epochs:
            loop.bar.log(f"epoch {loop.epoch}: {CV.summary_text(record['convergence'])}")
        loop.bar.scalars(loop.step, {k: record[k] for k in ("expected_madds", "argmax_madds")},
                         "epoch")
        loop.bar.scalars(loop.step, prob_scalars(probs), "")
        _, path, _ = A.derive(self.space, *self.arch.logits(), self.cfg.min_depth)
        warning = (A.collapse_warning(self.space, path)
                   if loop.epoch > self.cfg.warmup_epochs else None)
        if warning and self.env.is_main:
            loop.bar.log(f"warning: epoch {loop.epoch}: {warning}")
        if self.env.is_main:
            self.snapshot(loop, finished=loop.epoch == self.cfg.train.epochs)
            _plot(self.output, self.space, self.metrics_path, {**record, **probs}, self.cfg,
                  loop.bar.log)
        return {"expected detector MAdds": f"{record['expected_madds'] / 1e6:.1f}M",
                "argmax detector MAdds": f"{record['argmax_madds'] / 1e6:.1f}M",
                "derived": record["derived"]}

    def epoch_record(self, loop: Loop) -> tuple[dict, dict, dict]:
        """Epoch ``loop.epoch``'s history record (with its convergence numbers,
        ``fnacli.search.convergence``), α/β's probabilities, and for the metrics line alone
        every layer's entropy and the layers whose argmax changed."""
        exp, am, derived = self.madds_now()
        with torch.no_grad():
            a_p, b_p = self.arch.probs(self.cfg.min_depth)
        _, path, prob = A.derive(self.space, *self.arch.logits(), self.cfg.min_depth)
        skipped, skippable = A.skip_report(self.space, path)
        conv = CV.epoch_record(a_p, b_p, CV.previous_argmax(self.history))
        record = {"epoch": loop.epoch, "step": loop.step, "expected_madds": exp,
                  "argmax_madds": am, "derived": arch_code(derived),
                  "derived_probability": prob, "skipped_layers": skipped,
                  "skippable_layers": skippable, "convergence": CV.history_fields(conv)}
        return record, prob_report(self.space, a_p, b_p), {
            "layer_entropy": conv.get("entropy", {}),
            "argmax_changed_layers": conv.get("argmax_changed_layers")}

    def madds_now(self) -> tuple[float, float, ArchSpec]:
        """The detector's expected MAdds under α/β now, the argmax architecture's, and it."""
        with torch.no_grad():
            a_p, b_p = self.arch.probs(self.cfg.min_depth)
            derived = path_to_arch(self.space, A.argmax_path(a_p, b_p))
            return (float(self.lut.expected_madds(a_p, b_p)),
                    float(self.lut.arch_madds(derived)), derived)

    def snapshot(self, loop: Loop, finished: bool) -> None:
        """The searched checkpoint as it stands (``fnacli derive`` reads it mid-search)."""
        from fnacli.checkpoint import save_checkpoint

        meta = {k: v for k, v in self.ckpt.meta.items() if k != "search"}
        derived, _, p = A.derive(self.space, *self.arch.logits(), self.cfg.min_depth)
        meta["search"] = {"strategy": "differentiable", **self.cfg.identity(),
                          "lambda": self.architect.lam, **self.data, "epochs_done": loop.epoch,
                          "steps": loop.step, "arch_steps": self.architect.steps,
                          "finished": finished, "derived": derived.to_dict(),
                          "derived_probability": p, "history": self.history}
        save_checkpoint(self.output, searched_tensors(self.ckpt, self.supernet, self.arch),
                        "searched", meta, force=True)

    def state_dict(self) -> dict:
        return {**self.architect.state_dict(), "history": self.history}

    def load_state_dict(self, state: dict) -> None:
        self.architect.load_state_dict(state)
        self.history = list(state["history"])
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
    last = history[-1].get("convergence", {}) if history else {}
    near = (CV.near_uniform_warning(last, arch_steps, cfg.arch_lr, CV.most_candidates(space))
            if finished and arch_steps else None)
    return SearchResult(step, arch_steps, epoch, finished, derived,
                        float(lut.arch_madds(derived)), exp, history,
                        A.collapse_warning(space, path), *lat, near)


