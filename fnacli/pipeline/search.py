"""Architecture search on a task: FNA's differentiable search or DetNAS's one-shot search.

- :func:`search_differentiable` (:class:`DifferentiableSearchConfig`): alternating weight /
  α-β optimisation with a MAdds cost (``fnacli.search.differentiable``). Files beside
  OUTPUT: OUTPUT.ckpt (state for ``resume``), OUTPUT.metrics.jsonl, OUTPUT.arch.svg; OUTPUT
  itself is rewritten after every epoch.
- :func:`search_oneshot` (:class:`OneShotSearchConfig`, strategy ``evolution`` or
  ``random``): train the supernet one uniform path at a time (to ``trained``, default OUTPUT
  with ``.oneshot.safetensors``, with TRAINED.ckpt / TRAINED.metrics.jsonl), then search it
  (OUTPUT.search.json state, OUTPUT.history.jsonl); see docs/evolution.md.

Both take the same data, recipe and run options (:class:`SearchOptions`); settings left at
None come from the task (``Task.recipe``, ``Task.search_defaults``, ``Task.oneshot_epochs``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fnacli.errors import UserError
from fnacli.pipeline.common import (
    AUGMENTS,
    TENSORBOARD,
    WEIGHT_DECAY,
    Reporter,
    Size,
    TrainOptions,
    as_size,
    check_fresh_run,
    in_processes,
    make_config,
    refuse_stdout,
    run_files,
    task_of,
)
from fnacli.report import Report
from fnacli.settings import DATA, RUN, SCHEDULE, number_text, setting
from fnacli.tasks import per_task, size_text

STRATEGIES = ("differentiable", "evolution", "random")
ONESHOT_STRATEGIES = ("evolution", "random")


ARCH, ONESHOT = "Architecture (differentiable)", "One-shot (evolution, random)"  # groups
_search = functools.partial(setting, kw_only=True)  # a training option, restated for a search
_arch = functools.partial(setting, group=ARCH)
_oneshot = functools.partial(setting, group=ONESHOT)


def _weights(task: Any) -> Any:
    """The weight-step recipe of ``task``'s differentiable search."""
    return task.search_defaults.weight_recipe(task.recipe)


_SEARCH_WD = per_task(lambda t: number_text(_weights(t).weight_decay))
_ARCH_LR = per_task(lambda t: number_text(t.search_defaults.arch_lr))
_ARCH_WD = per_task(lambda t: number_text(t.search_defaults.arch_weight_decay))
_METRICS = per_task(lambda t: "|".join(t.metric_names[:7]) + ("|…" * (len(t.metric_names) > 7)))


@dataclass
class SearchOptions(TrainOptions):
    """What both strategies share (and :class:`TrainOptions`)."""

    supernet: str | Path = setting(help="Supernet checkpoint from 'fnacli expand' (or, with "
                                   "--skip-training, one trained one-shot).", metavar="SUPERNET")
    output: str | Path = setting(help="Output searched checkpoint (.safetensors); SEARCHED.ckpt "
                                 "and SEARCHED.metrics.jsonl go beside it.", metavar="SEARCHED")
    # from fnacli latency (``force``: any machine)
    latency_table: str | Path | None = setting(None, "Latency table from 'fnacli latency' (same "
                                               "space, task, size): for --cost latency / "
                                               "--max-latency, and reported beside MAdds.")
    # fnacli.lut.COST_SCOPES; None: differentiable ``blocks``, one-shot ``backbone``
    cost_scope: str | None = _arch(None, "What the MAdds cost counts: the searched blocks, the "
                                   "whole backbone or the whole detector [differentiable: blocks "
                                   "(the cost term, as FNA/Jung et al.); evolution/random: "
                                   "backbone (--max-madds, as DetNAS)].",
                                   metavar="blocks|backbone|detector")
    # None: the task's ``search_defaults.cost_size``, else the input size
    cost_size: Size | None = _arch(None, "Input size MAdds are counted at [retinanet 1088x800 as "
                                   "FNA/Jung et al. report it, ssdlite --size].", metavar="N|WxH")
    task: str | None = _search(None, "Detector to search for [from the trained supernet with "
                               "--skip-training].")
    val_ann: str | Path | None = _search(None, "Reporting split (what 'fnacli eval' reports on): "
                                         "one-shot fitness images may not be in it.")
    val_images: str | Path | None = _search(None, "Reporting split's images.")
    size: Size | None = _search(None, "Input size "
                                f"[{per_task(lambda t: size_text(t.recipe.size))}; with "
                                "--skip-training the size trained at].")
    epochs: int | None = _search(None, "Epochs [differentiable: "
                                 f"{per_task('search_defaults.epochs')}; one-shot supernet "
                                 f"training: {per_task('oneshot_epochs')}].", min=1,
                                 group=SCHEDULE)
    batch_size: int | None = _search(None, "Global training batch "
                                     f"[{per_task('recipe.batch_size')}].", min=1, group=SCHEDULE)
    lr: float | None = _search(None, "Base lr of the weight steps [differentiable: {} images; "
                               "one-shot: the finetune recipe's], scaled to --batch-size.".format(
                                   per_task(lambda t: f"{number_text(_weights(t).lr)} per "
                                                      f"{_weights(t).base_batch}")),
                               min=0.0, group=SCHEDULE)
    weight_decay: float | None = _search(None, f"[differentiable: {_SEARCH_WD}; one-shot: "
                                         f"{WEIGHT_DECAY}]", min=0.0, group=SCHEDULE)
    warmup_iters: int | None = _search(None, "Linear warm-up [min(500, 10% of the steps)].",
                                       min=0, group=SCHEDULE)
    clip_grad: float | None = _search(None, "Max gradient norm [retinanet 35]; 0 = off.",
                                      min=0.0, group=SCHEDULE)
    augment: str | None = _search(None, "Training augmentation [differentiable: {} (no flip "
                                  "during a RetinaNet search, as FNA); one-shot: {}].".format(
                                      per_task(lambda t: t.search_defaults.augment
                                               or t.default_augment),
                                      per_task("default_augment")),
                                  metavar="|".join(AUGMENTS), group=DATA)
    seed: int = _search(0, "Seed of paths, data order, populations.")
    tensorboard: str | Path | None = _search(None, "Also log losses, lr, the cost term, MAdds and "
                                             "α/β (one-shot: each generation's fitness) to "
                                             "TensorBoard event files in DIR.", **TENSORBOARD)
    stop_after: int | None = _search(None, "Stop training (checkpointed) after STEPS steps of "
                                     "this run; continue with --resume.", min=1,
                                     metavar="STEPS", group=RUN)
    resume: bool = _search(False, "Continue the training and the search where they stopped.")
    force: bool = _search(False, "Overwrite outputs and start over (and accept a "
                          "--latency-table measured on another machine).")


DIFFERENTIABLE_COST_SCOPE = "blocks"  # Jung et al.'s eq. 5, FNA's searched backbone
ONESHOT_COST_SCOPE = "backbone"  # DetNAS constrains the backbone's FLOPs


@dataclass
class DifferentiableSearchConfig(SearchOptions):
    warmup_epochs: int | None = _arch(None, "Epochs of weight steps on uniform paths before α/β "
                                      "move [ssdlite 12 of 24, retinanet 8 of 14: that share of "
                                      "--epochs]; differentiable only.", min=0)
    arch_every: int | None = _arch(None, "Weight steps per α/β step "
                                   f"[{per_task('search_defaults.arch_every')}: the papers' "
                                   "alternation].", min=1, metavar="K")
    cost_form: str = _arch("log", "Cost term: FNA's λ·log_τ(γ·C) or Jung et al.'s λ·γ·C (C = "
                           "expected GMAdds within --cost-scope).", metavar="log|linear")
    lam: float | None = _arch(None, f"Cost weight λ [log: {per_task('search_defaults.lam')}; "
                              "linear: matched to the log form at the start].", min=0.0,
                              flags=("--lambda",))
    # None: the task's
    tau: float | None = _arch(None, f"Log base τ of the log cost [{per_task('search_defaults.tau')}"
                              "].")
    target_madds: str | float | None = _arch(None, "Budget (e.g. 800M, 1.2G): the cost term "
                                             "penalises only the excess over it.",
                                             metavar="MADDS")
    min_depth: int = _arch(0, "Layers 0..N-1 of every stage may not be skipped (against collapse "
                           "to all-skip).", min=0, metavar="N")
    arch_lr: float | None = _arch(None, f"Adam lr of α/β (betas 0.5/0.999; weight decay "
                                  f"{_ARCH_WD}) [{_ARCH_LR}].", min=0.0)
    gamma: float | None = _arch(None, f"Cost scale γ [{per_task('search_defaults.gamma')}]; in the "
                                "log form it shifts the loss only.", min=0.0)
    cost: str = _arch("madds", "What the cost term counts: the detector's MAdds, or its latency "
                      "by --latency-table (C in ms).", metavar="madds|latency")
    # "12ms", or milliseconds
    target_latency: str | float | None = _arch(None, "With --cost latency: a budget (e.g. 12ms); "
                                               "only the excess is penalised.", metavar="TIME")
    arch_step: str = _arch("full", "α/β step: FNA's weighted sum of every candidate (full), or "
                           "two sampled candidates per layer and width with unbiased gates "
                           "(sampled: cheaper in time and memory, noisier).",
                           metavar="full|sampled")
    checkpoint_activations: bool = _arch(False, "Recompute the mixed layers in the α/β step's "
                                         "backward pass instead of keeping every candidate's "
                                         "activations (same gradients, less memory, more "
                                         "time).")


@dataclass
class OneShotSearchConfig(SearchOptions):
    strategy: str = "evolution"
    skip_training: bool = _oneshot(False, "SUPERNET is already trained one-shot (a --trained "
                                   "file): search it directly.")
    train_only: bool = _oneshot(False, "Train the one-shot supernet (to --trained) and stop; "
                                "search it later with --skip-training.")
    trained: str | Path | None = _oneshot(None, "Where the trained supernet goes [OUT with "
                                          ".oneshot.safetensors].", metavar="PATH")
    population: int = _oneshot(50, "Candidates per generation (random: per batch).", min=1)
    parents: int = _oneshot(10, "Top-k candidates that parent the next generation.", min=1)
    mutation_prob: float = _oneshot(0.1, "Probability to resample each choice when mutating.",
                                    min=0.0, max=1.0)
    generations: int = _oneshot(20, "Generations.", min=1)
    candidates: int | None = _oneshot(None, "random: architectures to evaluate [population x "
                                      "generations].", min=1)
    max_madds: str | float | None = _oneshot(None, "MAdds limit of every candidate (e.g. 300M, "
                                             "1.2G), on the backbone as DetNAS (or what "
                                             "--cost-scope says).", metavar="MADDS")
    # with max_madds: a matched-cost window
    min_madds: str | float | None = _oneshot(None, "Lower MAdds limit of every candidate: with "
                                             "--max-madds a matched-cost window (DetNAS's random "
                                             "baseline).", metavar="MADDS")
    # "12ms", or milliseconds (needs latency_table)
    max_latency: str | float | None = _oneshot(None, "Latency limit of every candidate by "
                                               "--latency-table (e.g. 12ms, 800us).",
                                               metavar="TIME")
    metric: str | None = _oneshot(None, f"Fitness: one of the task's numbers ({_METRICS}) "
                                  f"[{per_task('metric')}].")
    calib_images: int = _oneshot(256, "Training images for each candidate's BN recalibration.",
                                 min=1)
    calib_batch: int = _oneshot(16, "Batch size of BN recalibration and evaluation.", min=1)
    eval_images: int | None = _oneshot(None, "Score on a fixed subset of N held-out images "
                                       "[all].", min=1)
    record_top: int = _oneshot(20, "Best candidates listed in the output (derive --top).", min=1)
    stop_after_candidates: int | None = _oneshot(None, "Stop the search after N evaluations of "
                                                 "this run; continue with --resume.", min=1,
                                                 metavar="N")
    # held out of train [min(5000, 20%)]
    fitness_images: str | float | int | None = _oneshot(
        None, "Fitness images held out of the training split (a count, or a fraction below 1); "
        "the supernet trains on the rest [min(5000, 20%)].", metavar="N|FRACTION")
    fitness_ann: str | Path | None = _oneshot(None, "An explicit fitness annotation file instead "
                                              "(its images are left out of supernet training).",
                                              metavar="JSON")
    fitness_img_dir: str | Path | None = _oneshot(None, "Images of --fitness-ann.",
                                                  metavar="DIR")
    # random: DetNAS's baseline, N specs to fine-tune
    retrain: int | None = _oneshot(None, "random only: DetNAS's random baseline. Draw N "
                                   "architectures uniformly under --max-madds and write their "
                                   "specs into the folder -o, to be fine-tuned with the searched "
                                   "one's settings (no supernet training, no fitness).", min=1,
                                   metavar="N")


@dataclass
class SearchResult:
    """A search's outcome; ``message`` is its one-line summary."""

    strategy: str
    finished: bool
    message: str
    output: str | None = None
    details: dict = field(default_factory=dict)
    is_main: bool = True  # False in the other processes of a distributed run
    files: dict[str, str] = field(default_factory=dict)  # role (FILE_ROLES) -> path

    def to_dict(self) -> dict:
        d = dict(self.details)
        d.update({"strategy": self.strategy, "finished": self.finished, "output": self.output})
        d.setdefault("message", self.message)
        if self.files:
            d["files"] = dict(self.files)
        return d

    def report(self) -> Report:
        """The one-line summary and (one-shot) the files the search left, by role."""
        report: Report = [self.message]
        if self.files:
            report.append("files: " + ", ".join(f"{FILE_ROLES[k]} {p}"
                                                for k, p in self.files.items()))
        return report


def search(*args: Any, strategy: str | None = None, **kwargs: Any) -> SearchResult:
    """Either strategy: ``search(DifferentiableSearchConfig(...))``,
    ``search(OneShotSearchConfig(...))`` or the fields with ``strategy=``."""
    if args and isinstance(args[0], DifferentiableSearchConfig):
        return search_differentiable(*args, **kwargs)
    if args and isinstance(args[0], OneShotSearchConfig):
        return search_oneshot(*args, **kwargs)
    strategy = strategy or "differentiable"
    if strategy not in STRATEGIES:
        raise UserError(f"--strategy: expected one of {', '.join(STRATEGIES)}, got "
                        f"{strategy!r}")
    if strategy == "differentiable":
        return search_differentiable(*args, **kwargs)
    return search_oneshot(*args, strategy=strategy, **kwargs)


def _train_config(o: SearchOptions, task: Any, epochs: int, steps: int, schedule: str,
                  milestones: tuple[float, ...], warmup_cap: int, recipe: Any = None) -> Any:
    """The weight-side recipe: given options, else ``recipe`` (the task's fine-tuning recipe
    by default)."""
    from fnacli.progress import tensorboard_dir
    from fnacli.train import TrainConfig

    r = recipe or task.recipe
    batch = o.batch_size or r.batch_size
    clip = o.clip_grad if o.clip_grad is not None else r.clip_grad
    return TrainConfig(
        epochs=epochs, batch_size=batch, lr=o.lr if o.lr is not None else r.lr_for(batch),
        optimizer=o.optimizer or r.optimizer, momentum=o.momentum,
        weight_decay=o.weight_decay if o.weight_decay is not None else r.weight_decay,
        schedule=schedule, milestones=milestones,
        warmup_iters=(o.warmup_iters if o.warmup_iters is not None
                      else min(warmup_cap, steps // 10)),
        clip_grad=clip or None, seed=o.seed, workers=o.workers,
        checkpoint_every=o.checkpoint_every, log_every=o.log_every,
        tensorboard=tensorboard_dir(o.tensorboard))


def _train_set(o: SearchOptions, task: Any, augment: str, size: tuple[int, int]) -> Any:
    files = task.find_split(o.data, "train", o.train_ann, o.train_images)
    return task.load_split(files, train=True, transform=task.train_transform(augment, size),
                           seed=o.seed)


def _search_input(o: SearchOptions, task: Any) -> tuple[tuple[int, int], str]:
    """(input size, augmentation) of a search: given, else the task's search recipe, else its
    fine-tuning recipe."""
    d = task.search_defaults
    return (as_size(o.size) or d.size or task.recipe.size,
            o.augment or d.augment or task.default_augment)


# -- differentiable ---------------------------------------------------------------------------
def search_differentiable(*args: Any, **kwargs: Any) -> SearchResult:
    """FNA's differentiable search (see the module docstring)."""
    cfg = make_config(DifferentiableSearchConfig, args, kwargs)
    refuse_stdout(cfg.output)
    from fnacli.progress import tensorboard_dir

    tensorboard_dir(cfg.tensorboard)  # a missing package fails before the work
    _check_latency(cfg)
    return in_processes(_differentiable, cfg)


def _check_latency(o: Any) -> None:
    """The latency options, refused before any work."""
    from fnacli.cost.latency import parse_latency, read_latency_table

    cost = getattr(o, "cost", "madds")
    if cost not in ("madds", "latency"):
        raise UserError(f"--cost: expected madds or latency, got {cost!r}")
    target = getattr(o, "target_latency", None)
    if target is not None:
        parse_latency(target, "--target-latency")
        if cost != "latency":
            raise UserError("--target-latency goes with --cost latency")
    if getattr(o, "target_madds", None) is not None and cost != "madds":
        raise UserError("--target-madds goes with --cost madds (use --target-latency)")
    limit = getattr(o, "max_latency", None)
    if limit is not None:
        parse_latency(limit, "--max-latency")
    if (cost == "latency" or limit is not None) and not o.latency_table:
        what = "--cost latency" if cost == "latency" else "--max-latency"
        raise UserError(f"{what} needs --latency-table TABLE (measure one with 'fnacli "
                        "latency')")
    if o.latency_table:
        read_latency_table(o.latency_table, _task_of, o.force)


def _task_of(name: str) -> Any:
    """A task name a latency table records, as the cost package takes it."""
    from fnacli.cost.target import PLAIN
    from fnacli.tasks import lookup

    return lookup(name, PLAIN)


def _latency_table(o: Any, space: Any, task: str, size: tuple[int, int], classes: int) -> Any:
    from fnacli.cost.latency import search_latency_table
    from fnacli.tasks import get_task

    if not o.latency_table:
        return None
    return search_latency_table(o.latency_table, space, get_task(task), size, classes, _task_of,
                                o.force)


def _differentiable(o: DifferentiableSearchConfig, env: Any) -> SearchResult:
    from fnacli.io import check_writable
    from fnacli.search.differentiable import ARCH_STEPS, run_search
    from fnacli.search.evolution import format_madds, parse_madds
    from fnacli.search.supernet_io import read_supernet
    from fnacli.validation import check_bn_batch, check_lr

    if o.arch_step not in ARCH_STEPS:
        raise UserError(f"--arch-step: expected one of {', '.join(ARCH_STEPS)}, got "
                        f"{o.arch_step!r}")
    say = Reporter(o.on_message, env.is_main)
    task = task_of(o.task)
    check_lr(o.lr)
    check_lr(o.arch_lr, "--arch-lr")
    check_bn_batch(task, o.batch_size or task.recipe.batch_size, env.world, freeze_flag=False)
    output = Path(o.output)
    state_path, metrics_path = run_files(output)
    # the state first: a stopped search has written OUTPUT already (after every epoch)
    check_fresh_run(state_path, metrics_path, o.resume, o.force, "search")
    check_writable(output, o.force or o.resume, also=(".ckpt", ".metrics.jsonl", ".arch.svg"))
    ckpt = read_supernet(o.supernet)
    target = None
    if o.target_madds is not None:
        try:
            target = parse_madds(o.target_madds)
        except Exception as e:  # noqa: BLE001 - its message names --max-madds
            raise UserError(str(e).replace("--max-madds", "--target-madds")) from None
    size, augment = _search_input(o, task)
    dataset = _train_set(o, task, augment, size)
    from fnacli.cost.latency import parse_latency

    cfg = differentiable_config(o, task, len(dataset), target)
    cfg.cost = o.cost
    cfg.target_latency = (parse_latency(o.target_latency, "--target-latency")
                          if o.target_latency is not None else None)
    cfg.latency_table = _latency_table(o, ckpt.space, task.name, cfg.size,
                                       dataset.num_classes)
    table = cfg.latency_table
    cfg.check()
    result = run_search(ckpt, str(o.supernet), dataset, cfg, env, output,
                        state_path=state_path, metrics_path=metrics_path, resume=o.resume,
                        stop_after=o.stop_after, log=say if env.is_main else None)
    details = {"task": task.name, "steps": result.steps, "arch_steps": result.arch_steps,
               "epochs": result.epochs, "derived": result.arch.to_dict(),
               "madds": result.madds, "expected_madds": result.expected_madds,
               "warning": result.warning}
    if table is not None:
        details["latency_ms"] = result.latency_ms
        details["expected_latency_ms"] = result.expected_latency_ms
    if result.warning:
        say.warning(result.warning)
    if not result.finished:
        return SearchResult("differentiable", False, f"search stopped after {result.steps} "
                            f"steps; state in {state_path} (continue with --resume)",
                            str(output), details)
    if env.is_main:
        state_path.unlink(missing_ok=True)  # finished: nothing left to resume
    return SearchResult(
        "differentiable", True,
        f"{output}: searched {task.name} ({result.steps} weight steps, {result.arch_steps} "
        f"α/β steps); derived architecture {format_madds(result.madds)} MAdds (expected "
        f"{format_madds(result.expected_madds)})"
        + (f", {result.latency_ms:.2f} ms predicted (expected {result.expected_latency_ms:.2f} "
           "ms)" if table is not None else ""), str(output), details)


def differentiable_config(o: DifferentiableSearchConfig, task: Any, train_images: int,
                          target_madds: float | None = None) -> Any:
    """The differentiable search's settings: what ``o`` leaves at None comes from the task's
    ``search_defaults`` (the papers' search recipe) and, behind it, its fine-tuning recipe."""
    from fnacli.cost.space import check_scope
    from fnacli.search.differentiable import SearchConfig

    task = task_of(task) if isinstance(task, str) else task
    from dataclasses import replace


    d = task.search_defaults
    r = d.weight_recipe(task.recipe)
    size, augment = _search_input(o, task)
    batch = o.batch_size or r.batch_size
    epochs = o.epochs or d.epochs
    warmup_epochs = o.warmup_epochs if o.warmup_epochs is not None else d.warmup_for(epochs)
    steps = epochs * (round(train_images * (1 - d.arch_fraction)) // batch)
    tc = _train_config(o, task, epochs, steps, d.schedule, d.milestones, r.warmup_iters, r)
    if d.warmup_ratio is not None:
        tc = replace(tc, warmup_ratio=d.warmup_ratio)
    scope = check_scope(o.cost_scope or DIFFERENTIABLE_COST_SCOPE)
    return SearchConfig(task=task.name, size=size, train=tc, warmup_epochs=warmup_epochs,
                        arch_every=o.arch_every or d.arch_every, cost_form=o.cost_form,
                        lam=o.lam, tau=o.tau if o.tau is not None else d.tau, gamma=o.gamma,
                        target_madds=target_madds, min_depth=o.min_depth,
                        arch_lr=o.arch_lr if o.arch_lr is not None else d.arch_lr,
                        arch_weight_decay=d.arch_weight_decay,
                        arch_fraction=d.arch_fraction, augment=augment,
                        cost_scope=scope, cost_size=as_size(o.cost_size, "--cost-size"),
                        arch_step=o.arch_step,
                        checkpoint_activations=o.checkpoint_activations)


# -- one-shot ---------------------------------------------------------------------------------
# Every file of a one-shot search, in one place (docs/evolution.md describes them).
FILE_ROLES = {"output": "result", "trained": "trained supernet",
              "train_state": "training state (--resume)", "train_metrics": "training metrics",
              "state": "search state (--resume)", "history": "candidates and generations"}


def _oneshot_files(output: str | Path, trained: str | Path | None) -> dict[str, Path]:
    out = Path(output)
    stem = out.with_suffix("") if out.suffix == ".safetensors" else out
    tr = Path(trained) if trained else Path(f"{stem}.oneshot.safetensors")
    return {"output": out, "trained": tr, "train_state": Path(f"{tr}.ckpt"),
            "train_metrics": Path(f"{tr}.metrics.jsonl"),
            "state": Path(f"{out}.search.json"), "history": Path(f"{out}.history.jsonl")}


def search_oneshot(*args: Any, **kwargs: Any) -> SearchResult:
    """DetNAS's one-shot search: train the supernet (unless ``skip_training``), then search
    it by evolution or random sampling (see the module docstring)."""
    o = make_config(OneShotSearchConfig, args, kwargs)
    if o.strategy not in ONESHOT_STRATEGIES:
        raise UserError(f"--strategy: expected one of {', '.join(ONESHOT_STRATEGIES)} here, "
                        f"got {o.strategy!r}")
    refuse_stdout(o.output)
    if o.skip_training and o.train_only:
        raise UserError("--skip-training and --train-only exclude each other")
    if o.task is not None:
        task_of(o.task)
    if o.retrain is not None and o.strategy != "random":
        raise UserError("--retrain: DetNAS's random baseline needs --strategy random")
    if o.fitness_img_dir and not o.fitness_ann:
        raise UserError("--fitness-img-dir needs --fitness-ann")
    if o.fitness_ann and o.fitness_images is not None:
        raise UserError("--fitness-images and --fitness-ann exclude each other")
    from fnacli.cost.space import check_scope
    from fnacli.search.fitness_data import parse_amount

    check_scope(o.cost_scope or ONESHOT_COST_SCOPE)
    parse_amount(o.fitness_images)
    as_size(o.cost_size, "--cost-size")
    _check_latency(o)
    if o.metric is not None:
        from fnacli.tasks import tasks

        names = dict.fromkeys(n for t in tasks() for n in t.metric_names)
        if o.metric not in names:
            raise UserError(f"--metric: expected one of {', '.join(names)}, got {o.metric!r}")
    from fnacli.search.evolution import parse_madds
    from fnacli.validation import check_lr

    check_lr(o.lr)
    if o.max_madds:  # parsed now, not after the supernet has been trained
        parse_madds(o.max_madds)
    if o.min_madds:
        parse_madds(o.min_madds, "--min-madds")
    if o.retrain is not None:
        return random_baseline(o)
    from fnacli.progress import tensorboard_dir

    tensorboard_dir(o.tensorboard)  # a missing package fails before the work
    result = in_processes(_oneshot, o)
    files = _oneshot_files(o.output, o.trained)
    if o.skip_training:
        files["trained"] = Path(o.supernet)
    result.files = {k: str(p) for k, p in files.items() if p.exists()}
    return result


def _oneshot(o: OneShotSearchConfig, env: Any) -> SearchResult:
    from fnacli.io import check_writable
    from fnacli.train import barrier

    say = Reporter(o.on_message, env.is_main)
    files = _oneshot_files(o.output, o.trained)
    again = o.force or o.resume
    if not o.train_only:
        # fail before the slow part
        check_writable(files["output"], again, also=(".search.json", ".history.jsonl"))
        for p in (files["state"], files["history"]):
            if p.exists() and not again:
                raise UserError(f"{p}: exists from an earlier search (continue it with "
                                "--resume, or start over with --force)")
    if o.skip_training:
        trained = Path(o.supernet)
    else:
        # ours to write (or written by this run before it stopped): claimed either way
        check_writable(files["trained"], True, also=(".ckpt", ".metrics.jsonl"))
        trained = files["trained"]
        if o.resume and trained.is_file() and not files["train_state"].is_file():
            say(f"{trained}: already trained, going on with the search")
        else:
            result = _train(o, files, env, say)
            if not result.finished:
                return SearchResult(o.strategy, False, f"training stopped after "
                                    f"{result.steps} steps; continue with --resume",
                                    details={"trained": None, "steps": result.steps})
            if env.is_main:
                files["train_state"].unlink(missing_ok=True)  # done: resume goes to search
        if o.train_only:
            return SearchResult(o.strategy, True, f"{trained}: one-shot supernet trained",
                                details={"trained": str(trained)})
    # decided by every process before rank 0 may write a fresh search state (after the barrier)
    resume = o.resume and files["state"].is_file()
    barrier(env)
    return _evolve(o, trained, files, env, resume, say)


def _train(o: OneShotSearchConfig, files: dict[str, Path], env: Any, say: Reporter) -> Any:
    from fnacli.io import check_earlier_run, check_writable
    from fnacli.search.oneshot import OneshotInfo, train_oneshot
    from fnacli.search.supernet_io import read_supernet
    from fnacli.tasks import get_task, task_names
    from fnacli.validation import check_bn_batch

    ckpt = read_supernet(o.supernet)
    info = OneshotInfo.from_meta(ckpt.meta, str(o.supernet))
    name = o.task or (info.task if info else None)
    if name is None:
        raise UserError("--task: needed to train the one-shot supernet "
                        f"({' or '.join(task_names())})")
    task = get_task(name)
    check_bn_batch(task, o.batch_size or task.recipe.batch_size, env.world, freeze_flag=False)
    if not o.resume:
        check_earlier_run(files["train_state"], False, o.force)
    resume = o.resume and files["train_state"].is_file()
    if not resume and files["trained"].exists() and not o.force:
        raise UserError(f"{files['trained']}: a trained supernet is already there: search it "
                        "with --skip-training, or train again with --force")
    check_writable(files["trained"], True, also=(".ckpt", ".metrics.jsonl"))
    r = task.recipe
    size, augment = _search_input(o, task)
    epochs = o.epochs or task.oneshot_epochs
    dataset = _train_set(o, task, augment, size)
    dataset, fitness = hold_out_fitness(o, dataset, task)
    batch = o.batch_size or r.batch_size
    tc = _train_config(o, task, epochs, epochs * (len(dataset) // batch), r.schedule,
                       r.milestones, r.warmup_iters)
    say(f"one-shot supernet training: {task.name} at {size[0]}x{size[1]}, {len(dataset)} "
        f"images ({fitness['images']} held out for fitness), {epochs} epochs of "
        f"{len(dataset) // batch} steps, uniform single-path sampling")
    return train_oneshot(ckpt, str(o.supernet), dataset, task.name, size, tc, env,
                         files["trained"], fitness=fitness, state_path=files["train_state"],
                         metrics_path=files["train_metrics"], resume=resume,
                         stop_after=o.stop_after, force=o.force or o.resume,
                         log=say if env.is_main else None)


def _evolve(o: OneShotSearchConfig, trained: Path, files: dict[str, Path], env: Any,
            resume: bool, say: Reporter) -> SearchResult:
    from fnacli.checkpoint import save_checkpoint
    from fnacli.cost.lut import load_or_build_lut
    from fnacli.progress import tensorboard_dir
    from fnacli.search import evolution as E
    from fnacli.search.bn_recal import calibration_subset
    from fnacli.search.oneshot import (
        PathEvaluator,
        build_oneshot_detector,
        distributed_evaluate,
        load_trained,
    )
    from fnacli.tasks import get_task
    from fnacli.train import signal_received

    ckpt, info = load_trained(trained)
    if o.task and o.task != info.task:
        raise UserError(f"--task {o.task}: {trained} was trained one-shot for {info.task}")
    task = get_task(info.task)
    size = as_size(o.size) or info.size
    from fnacli.cost.latency import parse_latency

    cfg = E.SearchConfig(strategy=o.strategy, population=o.population, parents=o.parents,
                         mutation_prob=o.mutation_prob, generations=o.generations,
                         candidates=o.candidates,
                         max_madds=E.parse_madds(o.max_madds) if o.max_madds else None,
                         min_madds=(E.parse_madds(o.min_madds, "--min-madds")
                                    if o.min_madds else None),
                         max_latency=(parse_latency(o.max_latency, "--max-latency")
                                      if o.max_latency is not None else None),
                         metric=o.metric or task.metric, seed=o.seed)
    latency = _latency_table(o, ckpt.space, task.name, size, info.num_classes)
    fit_set, calib_pool, fitness = fitness_sets(o, info, task)
    task.check_categories(info.categories, fit_set.categories(), str(trained),
                          str(fit_set.files.ann))
    if o.eval_images:
        fit_set = calibration_subset(fit_set, o.eval_images, o.seed)
    calib = calibration_subset(calib_pool, o.calib_images, o.seed)
    scope = o.cost_scope or ONESHOT_COST_SCOPE
    cost_size = _cost_size(o, task, size)
    detector, supernet = build_oneshot_detector(ckpt, task.name, info.num_classes, size,
                                                str(trained))
    lut = load_or_build_lut(ckpt.space, task, cost_size, info.num_classes,
                            progress=env.is_main)
    enc = E.Encoding(ckpt.space)
    score = PathEvaluator(detector, supernet, enc, calib, fit_set, o.calib_batch, o.workers,
                          env.device, task=task.name)
    # the file's name, not its path: the same run in another folder gives the same bytes
    identity = {"supernet": trained.name, "task": task.name, "size": list(size),
                "calib_images": len(calib), "eval_images": len(fit_set),
                "cost_scope": scope, "cost_size": list(cost_size), "fitness": fitness}
    if latency is not None:
        identity["latency_table"] = latency.identity()

    def cost(arch: Any) -> float:
        return lut.arch_cost(arch, scope)

    search = E.OneShotSearch(enc, cost, distributed_evaluate(score, env), cfg,
                             files["state"], files["history"], chunk=env.world,
                             write=env.is_main, identity=identity,
                             signal=lambda: signal_received(env),
                             latency=latency.latency_ms if latency is not None else None)
    limit = (f" within {E.window_text(cfg.min_madds, cfg.max_madds)} MAdds ({scope} at "
             f"{cost_size[0]}x{cost_size[1]})" if cfg.max_madds or cfg.min_madds else "")
    limit += f" within {cfg.max_latency:g} ms" if cfg.max_latency else ""
    say(f"{o.strategy} search on {trained}: {cfg.total_candidates} candidates{limit}, fitness "
        f"{cfg.metric} on {len(fit_set)} images ({fitness['source']}), BN recalibrated on "
        f"{len(calib)} training images")
    with _SearchProgress(cfg, env.is_main, tensorboard_dir(o.tensorboard)) as progress:
        search.on_candidate = progress.candidate
        search.on_round = progress.round
        result = search.run(resume=resume, stop_after=o.stop_after_candidates)
    if not search.cache:
        raise UserError("the search evaluated no architecture")
    ranked = search.ranked()
    best = ranked[0]
    details = {"metric": cfg.metric, "best_fitness": best.fitness, "best_madds": best.madds,
               "best_arch": enc.arch(best.genome).to_dict(), "evaluated": len(ranked),
               "rounds": result.rounds}
    lat = ""
    if latency is not None:
        details["best_latency_ms"] = latency.latency_ms(enc.arch(best.genome))
        lat = f", {details['best_latency_ms']:.2f} ms predicted"
    if not result.finished:
        return SearchResult(o.strategy, False, f"search stopped after {len(ranked)} "
                            "evaluations; continue with --resume", None, details)
    if env.is_main:
        tensors = dict(ckpt.weights)
        tensors.update(E.arch_logits(enc, best.genome))
        meta = {k: v for k, v in ckpt.meta.items() if k != "search"}
        meta["search"] = {"strategy": o.strategy, "task": task.name, "size": list(size),
                          **{k: v for k, v in cfg.identity().items() if k != "strategy"},
                          "num_classes": info.num_classes, "categories": info.categories,
                          "generations": cfg.generations, "candidates": cfg.total_candidates,
                          "rounds": result.rounds, "evaluated": len(ranked),
                          "calib_images": len(calib), "eval_images": len(fit_set),
                          "cost_scope": scope, "cost_size": list(cost_size),
                          "fitness": {k: v for k, v in fitness.items() if k != "ids"},
                          "supernet": trained.name, "finished": True,
                          "derived": details["best_arch"],
                          "top": E.candidates_meta(ranked[:o.record_top], enc)}
        save_checkpoint(files["output"], tensors, "searched", meta, force=o.force or o.resume)
    return SearchResult(o.strategy, True,
                        f"{files['output']}: best {cfg.metric} {best.fitness:.4f} at "
                        f"{E.format_madds(best.madds)} MAdds{lat} ({o.strategy}, {len(ranked)} "
                        "architectures evaluated)", str(files["output"]), details)


def _cost_size(o: SearchOptions, task: Any, size: tuple[int, int]) -> tuple[int, int]:
    from fnacli.search.differentiable import default_cost_size

    return as_size(o.cost_size, "--cost-size") or default_cost_size(task.name, size)


def _reporting_split(o: SearchOptions, task: Any) -> Any:
    """The split 'fnacli eval' reports on (val), or None when the data has none."""
    try:
        files = task.find_split(o.data, "val", o.val_ann, o.val_images)
    except UserError:
        if o.val_ann or o.val_images:
            raise
        return None
    return task.load_split(files, train=False)


def hold_out_fitness(o: OneShotSearchConfig, train: Any, task: Any) -> tuple[Any, dict]:
    """DetNAS's split before supernet training: the training images minus the fitness ones,
    and what to record about the fitness set (``fnacli.search.fitness_data``)."""
    from fnacli.search import fitness_data as FD

    task = task_of(task) if isinstance(task, str) else task
    report = _reporting_split(o, task)
    if o.fitness_ann:
        fit = task.load_split(FD.fitness_files(o.fitness_ann, o.fitness_img_dir), train=False,
                              transform=task.eval_transform())
        FD.check_not_reporting(fit, report, o.force)
        rest = FD.without_files(train, fit)
        if len(rest) == 0:
            raise UserError(f"{o.fitness_ann}: every training image is a fitness image")
        return rest, {"source": "file", "ann": str(fit.files.ann), "images": len(fit)}
    ids = FD.holdout_ids(train, FD.parse_amount(o.fitness_images), o.seed)
    fit = FD.only_ids(task.load_split(train.files, train=False), ids)
    FD.check_not_reporting(fit, report, o.force)
    return FD.without_ids(train, ids), {"source": "train", "ann": str(train.files.ann),
                                        "images": len(ids), "seed": o.seed, "ids": ids}


def fitness_sets(o: OneShotSearchConfig, info: Any, task: Any) -> tuple[Any, Any, dict]:
    """(fitness set, training images for BN calibration, fitness record) of a search: the
    trained supernet's held-out images when it recorded them, else as the options say."""
    from fnacli.search import fitness_data as FD

    task = task_of(task) if isinstance(task, str) else task
    report = _reporting_split(o, task)
    train = task.load_split(task.find_split(o.data, "train", o.train_ann, o.train_images),
                            train=True, transform=task.eval_transform())
    recorded = info.trained.get("fitness") or {}
    if o.fitness_ann:
        fit = task.load_split(FD.fitness_files(o.fitness_ann, o.fitness_img_dir), train=False,
                              transform=task.eval_transform())
        record = {"source": "file", "ann": str(fit.files.ann), "images": len(fit)}
        calib = FD.without_files(train, fit)
    else:
        if recorded.get("source") == "train" and o.fitness_images is None:
            ids = [int(i) for i in recorded["ids"]]
        else:
            if recorded and o.fitness_images is not None:
                Reporter(o.on_message).warning("--fitness-images differs from the supernet's "
                                               "training, whose held-out images are not these")
            ids = FD.holdout_ids(train, FD.parse_amount(o.fitness_images), o.seed)
        fit = FD.only_ids(task.load_split(train.files, train=False,
                                          transform=task.eval_transform()), ids)
        record = {"source": "train", "ann": str(train.files.ann), "images": len(ids),
                  "seed": int(recorded.get("seed", o.seed)), "ids": ids}
        calib = FD.without_ids(train, ids)
    FD.check_not_reporting(fit, report, o.force)
    return fit, calib, record


def random_baseline(o: OneShotSearchConfig) -> SearchResult:
    """DetNAS's random baseline: ``retrain`` architectures drawn uniformly from the space of
    the supernet under ``max_madds``, written as specs into the folder ``output`` (fine-tune
    each with the searched architecture's settings; recipes/detnas_random_baseline.sh does).
    Nothing is trained or scored."""
    import json

    from fnacli.cost.lut import load_or_build_lut
    from fnacli.io import write_text_atomic
    from fnacli.search import evolution as E
    from fnacli.search.supernet_io import read_supernet

    if o.task is None:
        raise UserError("--task: needed to count MAdds for --retrain")
    task = task_of(o.task)
    out = Path(o.output)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: --retrain writes a folder of specs; this is a file")
    if (out / "baseline.json").exists() and not o.force:
        raise UserError(f"{out}/baseline.json: exists (use --force to draw again)")
    ckpt = read_supernet(o.supernet)
    size = _cost_size(o, task, as_size(o.size) or task.recipe.size)
    scope = o.cost_scope or ONESHOT_COST_SCOPE
    lut = load_or_build_lut(ckpt.space, task, size, progress=True)
    limit = E.parse_madds(o.max_madds) if o.max_madds else None
    floor = E.parse_madds(o.min_madds, "--min-madds") if o.min_madds else None
    enc = E.Encoding(ckpt.space)
    picks = E.random_baseline(enc, lambda a: lut.arch_cost(a, scope), o.retrain, limit, o.seed,
                              min_madds=floor)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for k, (genome, madds) in enumerate(picks, start=1):
        path = out / f"random-{k}.json"
        write_text_atomic(path, enc.arch(genome).to_json())
        entries.append({"spec": str(path), "madds": madds,
                        "detector_madds": lut.arch_madds(enc.arch(genome))})
    doc = {"strategy": "random-baseline", "task": task.name, "space": ckpt.space.name,
           "max_madds": limit, "min_madds": floor, "cost_scope": scope,
           "cost_size": list(size), "seed": o.seed,
           "architectures": entries}
    write_text_atomic(out / "baseline.json", json.dumps(doc, indent=2) + "\n")
    message = (f"{out}: {len(entries)} random architectures of the space"
               + (f" within {E.window_text(floor, limit)} MAdds ({scope})"
                  if limit or floor else "")
               + "; fine-tune each with the searched architecture's settings")
    return SearchResult("random", True, message, str(out), doc)


class _SearchProgress:
    """Candidates on the training loop's progress bar, one line per generation (rank 0)."""

    def __init__(self, cfg: Any, enabled: bool, tensorboard: Path | None = None) -> None:
        from fnacli.progress import TrainLogger

        self.cfg = cfg
        self.bar = TrainLogger(cfg.total_candidates, 0, cfg.strategy, enabled, unit="candidate",
                               tensorboard=tensorboard)

    def __enter__(self) -> _SearchProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)

    def candidate(self, c: Any, reused: bool) -> None:
        self.bar.step(f"last {self.cfg.metric} {c.fitness:.4f}")

    def round(self, r: dict) -> None:
        from fnacli.progress import fmt_duration
        from fnacli.search.evolution import format_madds

        if r["event"] == "stop":
            self.bar.log(f"stopped early: {r['reason']}")
            return
        if r["event"] == "resume":
            self.bar.step(f"resumed after generation {r['generation']}", r["evaluated"])
            self.bar.done0 = self.bar.done  # the ETA counts this run's pace only
            return
        m = self.cfg.metric
        # TensorBoard: per generation, at the number of candidates evaluated so far
        self.bar.scalars(r["evaluated"], {f"best_{m}": r["best"], f"median_{m}": r["median"],
                                          f"overall_best_{m}": r["top_fitness"],
                                          "best_madds": r["best_madds"]}, "generation")
        eta = self.bar.eta()
        self.bar.log(
            f"generation {r['generation'] + 1}/{self.cfg.rounds}: best {m} {r['best']:.4f} "
            f"({format_madds(r['best_madds'])} MAdds), median {r['median']:.4f} "
            f"({format_madds(r['median_madds'])}); overall best {r['top_fitness']:.4f} "
            f"({format_madds(r['top_madds'])}); {r['evaluated']} evaluated"
            + (f", eta {fmt_duration(eta)}" if eta is not None else ""))
