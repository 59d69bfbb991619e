"""`fnacli search SUPERNET --task … --data DIR -o SEARCHED`: architecture search
(``fnacli.pipeline.search``): FNA's differentiable search (default) or DetNAS's one-shot
evolution/random search. Options of the other strategy are refused.

Files beside SEARCHED: SEARCHED.ckpt (training state, --resume) and SEARCHED.metrics.jsonl
(JSON lines: training steps, α/β steps, and α/β probabilities per epoch), SEARCHED.arch.svg
and .png (those probabilities and the MAdds over the epochs, as a picture). SEARCHED itself is
rewritten after every epoch, so 'fnacli derive' works on a search in progress.
"""

from __future__ import annotations

from dataclasses import fields
from enum import StrEnum

import typer

from fnacli.cli import common as c
from fnacli.cli.app import app
from fnacli.pipeline.search import STRATEGIES
from fnacli.pipeline.search_differentiable import DifferentiableSearchConfig as D
from fnacli.pipeline.search_oneshot import OneShotSearchConfig as ONE

Strategy = StrEnum("Strategy", {n: n for n in STRATEGIES})
d, one = c.options_of(D), c.options_of(ONE)


@app.command("search", cls=c.PanelCommand,
             help="Search an architecture on a detection task: FNA's differentiable search "
                  "(default) or DetNAS's one-shot evolution/random search.")
def search(
    ctx: typer.Context,
    supernet: str = c.argument(D, "supernet"),
    output: str = d("output"),
    strategy: Strategy = typer.Option(Strategy.differentiable, "--strategy",
                                      help="differentiable (FNA, default) or one-shot (DetNAS)."),
    task: str | None = d("task"),
    data: str | None = d("data"),
    train_ann: str | None = d("train_ann"),
    train_images: str | None = d("train_images"),
    val_ann: str | None = d("val_ann"),
    val_images: str | None = d("val_images"),
    size: str | None = d("size"),
    epochs: int | None = d("epochs"),
    batch_size: int | None = d("batch_size"),
    lr: float | None = d("lr"),
    optimizer: c.Optim | None = d("optimizer"),
    momentum: float = d("momentum"),
    weight_decay: float | None = d("weight_decay"),
    warmup_iters: int | None = d("warmup_iters"),
    clip_grad: float | None = d("clip_grad"),
    augment: str | None = d("augment"),
    cost_scope: str | None = d("cost_scope"),
    cost_size: str | None = d("cost_size"),
    workers: int = d("workers"),
    threads: int = d("threads"),
    seed: int = d("seed"),
    device: c.Device = d("device"),
    checkpoint_every: int = d("checkpoint_every"),
    log_every: int = d("log_every"),
    tensorboard: str | None = d("tensorboard"),
    stop_after: int | None = d("stop_after"),
    resume: bool = d("resume"),
    force: bool = d("force"),
    as_json: bool = c.opt("--json"),
    latency_table: str | None = d("latency_table"),
    # -- differentiable only
    warmup_epochs: int | None = d("warmup_epochs"),
    arch_every: int | None = d("arch_every"),
    cost_form: str = d("cost_form"),
    lam: float | None = d("lam"),
    tau: float | None = d("tau"),
    gamma: float | None = d("gamma"),
    target_madds: str | None = d("target_madds"),
    min_depth: int = d("min_depth"),
    arch_lr: str | None = d("arch_lr"),
    weight_recipe: str = d("weight_recipe"),
    target_side: str = d("target_side"),
    arch_step: str = d("arch_step"),
    checkpoint_activations: bool = d("checkpoint_activations"),
    cost: str = d("cost"),
    target_latency: str | None = d("target_latency"),
    # -- one-shot only
    skip_training: bool = one("skip_training"),
    train_only: bool = one("train_only"),
    trained: str | None = one("trained"),
    population: int = one("population"),
    parents: int = one("parents"),
    parent_pool: str = one("parent_pool"),
    mutation_prob: float = one("mutation_prob"),
    generations: int = one("generations"),
    freeze_bn: bool = one("freeze_bn"),
    candidates: int | None = one("candidates"),
    max_madds: str | None = one("max_madds"),
    min_madds: str | None = one("min_madds"),
    max_latency: str | None = one("max_latency"),
    max_params: str | None = one("max_params"),
    fitness_images: str | None = one("fitness_images"),
    fitness_ann: str | None = one("fitness_ann"),
    fitness_img_dir: str | None = one("fitness_img_dir"),
    retrain: int | None = one("retrain"),
    metric: str | None = one("metric"),
    calib_images: int = one("calib_images"),
    calib_batch: int = one("calib_batch"),
    calib_draws: int = one("calib_draws"),
    remap_prior: float = one("remap_prior"),
    eval_images: int | None = one("eval_images"),
    record_top: int = one("record_top"),
    stop_after_candidates: int | None = one("stop_after_candidates"),
    confirm_top: int = one("confirm_top"),
    confirm_epochs: int | None = one("confirm_epochs"),
    seed_checkpoint: str | None = one("seed_checkpoint"),
) -> None:
    options = dict(locals())
    cls, other = (D, ONE) if strategy is Strategy.differentiable else (ONE, D)
    foreign = {f.name for f in fields(other)} - {f.name for f in fields(cls)}
    for flag in c.given_flags(ctx, tuple(foreign - {"strategy"})):
        c.fail(f"{flag} does not apply to --strategy {strategy.value}")
    c.setup_logging()
    if cls is D:
        from fnacli.pipeline.search_differentiable import search_differentiable as run
    else:
        from fnacli.pipeline.search_oneshot import search_oneshot as run
    result = run(c.config(cls, options, ("ctx", "as_json", *foreign)))
    if not result.is_main:
        return
    if as_json:
        c.print_json(result.to_dict())
        return
    # the result is a file: stdout stays empty without --json, the summary goes to stderr
    c.show(result.report())
