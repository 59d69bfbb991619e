"""`fnacli pretrain-seed`: a quick stand-in for an ImageNet MobileNetV2 checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer

from fnacli.cli import common as c
from fnacli.cli.app import app
from fnacli.pipeline.pretrain import PretrainSeedConfig

o = c.options_of(PretrainSeedConfig)


@app.command("pretrain-seed")
def pretrain_seed(
    out: Path = c.argument(PretrainSeedConfig, "output"),
    width: float = o("width"),
    size: int = o("size", metavar=None),  # one number
    seconds: float = o("seconds"),
    max_steps: int = o("max_steps"),
    batch_size: int = o("batch_size"),
    seed: int = typer.Option(0),
    threads: int = o("threads"),
    json_out: bool = c.opt("--json"),
    force: bool = o("force"),
) -> None:
    """Pre-train torchvision's MobileNetV2 on synthetic shapes (12 classes) as a seed.

    Stands in for an ImageNet checkpoint where none can be downloaded; the output is a plain
    torchvision state dict that every fnacli command reads like a real seed.
    """

    from rich.progress import TextColumn, TimeRemainingColumn

    from fnacli.pipeline.pretrain import check, pretrain_seed

    cfg = PretrainSeedConfig(out, width, size, seconds, max_steps, batch_size, seed, threads,
                             force)
    check(cfg)  # before the progress bar takes stderr
    # the budget is fixed: whichever of the seconds and the steps runs out first
    with c.progress_bar("pretrain-seed", 1.0, TextColumn("{task.description}"),
                        TimeRemainingColumn(), transient=False) as update:
        update(completed=0.0)
        cfg.on_step = lambda step, loss, elapsed: update(
            completed=min(1.0, max(elapsed / seconds, step / max_steps)),
            description=f"step {step} loss {loss:.3f}")
        r = pretrain_seed(cfg)
        update(completed=1.0)
    c.show(r.report())
    if json_out:
        c.print_json(r.to_dict())
