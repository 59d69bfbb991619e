"""FNA's differentiable search as a step: alternating weight / α-β optimisation with a
MAdds (or latency) cost (``fnacli.search.differentiable``). Files beside OUTPUT: OUTPUT.ckpt
(state for ``resume``), OUTPUT.metrics.jsonl, OUTPUT.arch.svg; OUTPUT itself is rewritten
after every epoch. What it shares with the one-shot search is ``fnacli.pipeline.search``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fnacli.errors import UserError
from fnacli.pipeline.common import (
    Reporter,
    as_size,
    check_fresh_run,
    in_processes,
    refuse_stdout,
    run_files,
    step,
    task_of,
)
from fnacli.pipeline.search_options import (
    ARCH,
    DIFFERENTIABLE_COST_SCOPE,
    SearchOptions,
    SearchResult,
    check_latency,
    latency_table,
    search_input,
    train_config,
    train_set,
)
from fnacli.settings import number_text, setting
from fnacli.tasks import per_task

_arch = functools.partial(setting, group=ARCH)
_ARCH_LR = per_task(lambda t: number_text(t.search_defaults.arch_lr))
_ARCH_WD = per_task(lambda t: number_text(t.search_defaults.arch_weight_decay))


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
    target_madds: str | float | None = _arch(None, "Budget (e.g. 800M, 1.2G, or 60% of the "
                                             "seed's): the cost term penalises only the excess "
                                             "over it.",
                                             metavar="MADDS")
    min_depth: int = _arch(0, "Layers 0..N-1 of every stage may not be skipped (against collapse "
                           "to all-skip).", min=0, metavar="N")
    arch_lr: str | float | None = _arch(None, f"Adam lr of α/β (betas 0.5/0.999; weight decay "
                                        f"{_ARCH_WD}) [{_ARCH_LR}]; auto: sized to the number "
                                        "of α/β steps (docs/search.md).", metavar="LR|auto")
    weight_recipe: str = _arch("search", "Weight steps on the task's search recipe (the "
                               "papers'), or on its fine-tuning recipe (optimiser, lr, weight "
                               "decay, clipping, warm-up; the search's epochs and schedule).",
                               metavar="search|finetune")
    target_side: str = _arch("above", "With --target-madds or --target-latency: penalise only "
                             "the excess (above: FNA-style hinge), or the distance either "
                             "side (both: λ·|log_τ(C/T)|, the search lands at the budget).",
                             metavar="above|both")
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


@step(DifferentiableSearchConfig)
def search_differentiable(cfg: DifferentiableSearchConfig) -> SearchResult:
    """FNA's differentiable search of ``supernet`` on a task: alternating weight steps (one
    path sampled from α/β) and α/β steps on the other half of the training data, the α/β
    loss being the task loss plus a MAdds (or latency) cost term; writes ``output`` after
    every epoch, with ``output``.ckpt (state for ``resume``), .metrics.jsonl and .arch.svg
    beside it. Settings left at None come from the task (``Task.search_defaults``)."""
    refuse_stdout(cfg.output)
    from fnacli.progress import tensorboard_dir

    tensorboard_dir(cfg.tensorboard)  # a missing package fails before the work
    check_latency(cfg)
    if cfg.target_madds is not None:
        from fnacli.budget import parse_amount

        parse_amount(cfg.target_madds, "madds", "target_madds")  # before the work
    return in_processes(_differentiable, cfg)


def _target_madds(o: DifferentiableSearchConfig, ckpt: Any, task: str, cfg: Any,
                  classes: int) -> float | None:
    """``target_madds`` as MAdds: given (800M), or a share of the seed's MAdds over the
    search's cost scope and size (60%)."""
    if o.target_madds is None:
        return None
    from fnacli.budget import parse_amount

    amount = parse_amount(o.target_madds, "madds", "target_madds")
    if not amount.relative:
        return amount.value
    if ckpt.seed_spec is None:
        raise UserError("target_madds: a relative budget is taken of the seed's MAdds, and "
                        "this supernet records no seed; give MAdds",
                        "--target-madds: a relative budget is taken of the seed's MAdds, and "
                        "this supernet records no seed; give MAdds")
    from fnacli.cost.lut import load_or_build_lut

    lut = load_or_build_lut(ckpt.space, task, cfg.lut_size, classes)
    return amount.value * lut.arch_cost(ckpt.seed_spec, cfg.cost_scope)


def _differentiable(o: DifferentiableSearchConfig, env: Any) -> SearchResult:
    from fnacli.io import check_writable
    from fnacli.search.differentiable import ARCH_STEPS, run_search
    from fnacli.search.evolution import format_madds
    from fnacli.search.supernet_io import read_supernet
    from fnacli.validation import check_bn_batch, check_lr

    if o.arch_step not in ARCH_STEPS:
        raise UserError(f"--arch-step: expected one of {', '.join(ARCH_STEPS)}, got "
                        f"{o.arch_step!r}")
    say = Reporter(o.on_message, env.is_main)
    task = task_of(o.task)
    check_lr(o.lr)
    check_lr(None if o.arch_lr == "auto" else parse_arch_lr(o.arch_lr), "--arch-lr")
    check_bn_batch(task, o.batch_size or task.recipe.batch_size, env.world, freeze_flag=False)
    output = Path(o.output)
    state_path, metrics_path = run_files(output)
    # the state first: a stopped search has written OUTPUT already (after every epoch)
    check_fresh_run(state_path, metrics_path, o.resume, o.force, "search")
    check_writable(output, o.force or o.resume, also=(".ckpt", ".metrics.jsonl", ".arch.svg"))
    ckpt = read_supernet(o.supernet)
    size, augment = search_input(o, task)
    dataset = train_set(o, task, augment, size)
    from fnacli.cost.latency import parse_latency

    cfg = differentiable_config(o, task, len(dataset))
    cfg.target_madds = _target_madds(o, ckpt, task.name, cfg, dataset.num_classes)
    cfg.cost = o.cost
    cfg.target_latency = (parse_latency(o.target_latency, "--target-latency")
                          if o.target_latency is not None else None)
    cfg.latency_table = latency_table(o, ckpt.space, task.name, cfg.size,
                                       dataset.num_classes)
    table = cfg.latency_table
    cfg.check()
    result = run_search(ckpt, str(o.supernet), dataset, cfg, env, output,
                        state_path=state_path, metrics_path=metrics_path, resume=o.resume,
                        stop_after=o.stop_after, log=say if env.is_main else None)
    details = {"task": task.name, "steps": result.steps, "arch_steps": result.arch_steps,
               "epochs": result.epochs, "derived": result.arch.to_dict(),
               "madds": result.madds, "expected_madds": result.expected_madds,
               "warning": result.warning, "near_uniform_warning": result.near_uniform}
    if table is not None:
        details["latency_ms"] = result.latency_ms
        details["expected_latency_ms"] = result.expected_latency_ms
    if result.warning:
        say.warning(result.warning)
    if result.near_uniform:
        say.warning(result.near_uniform)
    if not result.finished:
        return SearchResult("differentiable", False, f"search stopped after {result.steps} "
                            f"steps; state in {state_path} (continue with --resume)",
                            str(output), details)
    if env.is_main:
        state_path.unlink(missing_ok=True)  # finished: nothing left to resume
    return SearchResult(
        "differentiable", True,
        f"{output}: searched {task.name} ({result.steps} weight steps, {result.arch_steps} "
        f"α/β steps); derived architecture {format_madds(result.madds)} detector MAdds "
        f"(expected {format_madds(result.expected_madds)})"
        + (f", {result.latency_ms:.2f} ms predicted (expected {result.expected_latency_ms:.2f} "
           "ms)" if table is not None else ""), str(output), details)


WEIGHT_RECIPES = ("search", "finetune")
TARGET_SIDES = ("above", "both")


def parse_arch_lr(value: str | float | None) -> float | None:
    """--arch-lr as a number (None: the task's); "auto" is resolved by ``resolve_arch_lr``."""
    if value is None or isinstance(value, int | float):
        return value
    try:
        return float(value)
    except ValueError:
        raise UserError(f"--arch-lr: expected a learning rate or auto, got {value!r}") from None


def task_space_candidates(o: DifferentiableSearchConfig) -> int:
    """The most candidates any layer (or channel-searched stage) of the supernet offers."""
    from fnacli.search.convergence import most_candidates
    from fnacli.search.supernet_io import read_supernet

    return most_candidates(read_supernet(o.supernet).space)


def resolve_arch_lr(value: str | float | None, default: float, candidates: Any,
                    search_epochs: int, steps_per_epoch: int, arch_every: int) -> float:
    """--arch-lr: given, the task's recipe (None), or auto: ``fnacli.search.convergence.
    auto_arch_lr`` for the α/β steps the schedule will take (never below the recipe's);
    ``candidates()`` gives the most candidates of a layer."""
    if value != "auto":
        lr = parse_arch_lr(value)
        return default if lr is None else lr
    from fnacli.search.convergence import auto_arch_lr

    steps = search_epochs * steps_per_epoch // arch_every
    return auto_arch_lr(steps, candidates(), floor=default)


def differentiable_config(o: DifferentiableSearchConfig, task: Any, train_images: int,
                          target_madds: float | None = None) -> Any:
    """The differentiable search's settings: what ``o`` leaves at None comes from the task's
    ``search_defaults`` (the papers' search recipe) and, behind it, its fine-tuning recipe."""
    from fnacli.cost.space import check_scope
    from fnacli.search.differentiable import SearchConfig

    task = task_of(task) if isinstance(task, str) else task
    d = task.search_defaults
    if o.weight_recipe not in WEIGHT_RECIPES:
        raise UserError(f"--weight-recipe: expected {' or '.join(WEIGHT_RECIPES)}, got "
                        f"{o.weight_recipe!r}")
    if o.target_side not in TARGET_SIDES:
        raise UserError(f"--target-side: expected {' or '.join(TARGET_SIDES)}, got "
                        f"{o.target_side!r}")
    # the fine-tuning recipe's weight-side settings on the search's epochs and schedule shape
    r = (replace(task.recipe, epochs=d.epochs, schedule=d.schedule, milestones=d.milestones)
         if o.weight_recipe == "finetune" else d.weight_recipe(task.recipe))
    size, augment = search_input(o, task)
    batch = o.batch_size or r.batch_size
    epochs = o.epochs or d.epochs
    warmup_epochs = o.warmup_epochs if o.warmup_epochs is not None else d.warmup_for(epochs)
    steps = epochs * (round(train_images * (1 - d.arch_fraction)) // batch)
    tc = train_config(o, task, epochs, steps, d.schedule, d.milestones, r.warmup_iters, r)
    if d.warmup_ratio is not None:
        tc = replace(tc, warmup_ratio=d.warmup_ratio)
    scope = check_scope(o.cost_scope or DIFFERENTIABLE_COST_SCOPE)
    return SearchConfig(task=task.name, size=size, train=tc, warmup_epochs=warmup_epochs,
                        arch_every=o.arch_every or d.arch_every, cost_form=o.cost_form,
                        lam=o.lam, tau=o.tau if o.tau is not None else d.tau, gamma=o.gamma,
                        target_madds=target_madds, min_depth=o.min_depth,
                        arch_lr=resolve_arch_lr(o.arch_lr, d.arch_lr,
                                                lambda: task_space_candidates(o),
                                                epochs - warmup_epochs, steps // epochs,
                                                o.arch_every or d.arch_every),
                        target_side=o.target_side,
                        arch_weight_decay=d.arch_weight_decay,
                        arch_fraction=d.arch_fraction, augment=augment,
                        cost_scope=scope, cost_size=as_size(o.cost_size, "--cost-size"),
                        arch_step=o.arch_step,
                        checkpoint_activations=o.checkpoint_activations)
