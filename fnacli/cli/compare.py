"""`fnacli compare SEED [ARCH...] --task TASK --data DIR -w WORKDIR`: architectures remapped
from one seed, fine-tuned on K seeds with one recipe, paired against the seed's architecture
and the best random one (``fnacli.pipeline.compare``)."""

from __future__ import annotations

import typer

from fnacli.cli import common as c
from fnacli.cli.app import app
from fnacli.pipeline.compare import CompareConfig

o = c.options_of(CompareConfig)
_ARCHS = CompareConfig.__dataclass_fields__["archs"].metadata
_GROUPS = CompareConfig.__dataclass_fields__["groups"].metadata


@app.command("compare", cls=c.PanelCommand)
def compare(
    seed_checkpoint: str = c.argument(CompareConfig, "seed_checkpoint"),
    archs: list[str] = typer.Argument(None, metavar=_ARCHS["metavar"], help=_ARCHS["help"]),
    workdir: str = o("workdir"),
    task: c.TaskName | None = o("task", metavar=None,  # its choices
                                help="The task every architecture is fine-tuned for."),
    data: str | None = o("data"),
    train_ann: str | None = o("train_ann"),
    train_images: str | None = o("train_images"),
    val_ann: str | None = o("val_ann"),
    val_images: str | None = o("val_images"),
    split: str = o("split"),
    seeds: int = o("seeds"),
    seed: int = o("seed", help="The first fine-tuning seed."),
    random: int = o("random"),
    space: str | None = o("space"),
    target_madds: float | None = o("target_madds"),
    window: float = o("window"),
    random_seed: int = o("random_seed"),
    width: c.Width = o("width"),
    kernel: c.Kernel = o("kernel"),
    epochs: int | None = o("epochs"),
    batch_size: int | None = o("batch_size"),
    lr: float | None = o("lr"),
    optimizer: c.Optim | None = o("optimizer"),
    momentum: float = o("momentum"),
    schedule: c.Schedule | None = o("schedule"),
    warmup_iters: int | None = o("warmup_iters"),
    weight_decay: float | None = o("weight_decay"),
    clip_grad: float | None = o("clip_grad"),
    size: str | None = o("size"),
    augment: c.Augment | None = o("augment"),
    alpha: float = o("alpha"),
    plot: str | None = o("plot"),
    workers: int = o("workers"),
    threads: int = o("threads"),
    device: c.Device = o("device"),
    log_every: int = o("log_every"),
    stop_after: int | None = o("stop_after", help="Stop (checkpointed) after STEPS steps of "
                                                  "one fine-tune; run again to continue."),
    report_only: bool = o("report_only"),
    group: list[str] = typer.Option(None, "--group", metavar=_GROUPS["metavar"],
                                    help=_GROUPS["help"] + " Repeat for several."),
    force: bool = o("force", help="Start these inputs' runs over (one process only)."),
    as_json: bool = c.opt("--json"),
) -> None:
    """Compare architectures with evidence: each remapped from SEED, fine-tuned with one
    recipe on K seeds, paired against the seed's architecture and the best random one.

    The arms: the seed's own architecture, the ARCHs and --random N architectures of the
    --space at matched MAdds. Every run is evaluated on one split; the table gives each arm's
    mean ± std and its paired differences, with a paired t-test and a sign test.

    Every run is cached in WORKDIR by content and continued after an interruption. Several
    processes may share WORKDIR; under torchrun all processes make each run together (DDP).
    """
    options = dict(locals())
    from fnacli.pipeline.compare import compare as run

    c.setup_logging()
    options["groups"] = tuple(options.pop("group") or ())
    result = run(c.config(CompareConfig, {**options, "archs": list(archs or [])}))
    if result.is_main:
        c.show(result.report())
        if as_json:
            c.print_json(result.to_dict())
