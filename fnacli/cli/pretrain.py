"""`fnacli pretrain-seed`: a quick stand-in for an ImageNet MobileNetV2 checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer

from fnacli.cli import common as c
from fnacli.cli.app import app


@app.command("pretrain-seed")
def pretrain_seed(
    out: Path = typer.Argument(..., help="Output .pth (a torchvision mobilenet_v2 state dict)."),
    width: float = typer.Option(0.5, help="Width multiplier (torchvision's width_mult)."),
    size: int = typer.Option(64, help="Image side of the synthetic classification task."),
    seconds: float = typer.Option(120.0, help="Training budget in wall-clock seconds."),
    max_steps: int = typer.Option(10_000, min=1, help="Stop after this many steps at the latest."),
    batch_size: int = typer.Option(32, min=1),
    seed: int = typer.Option(0),
    json_out: bool = c.opt("--json"),
    force: bool = c.opt("--force", "Overwrite OUT."),
) -> None:
    """Pre-train torchvision's MobileNetV2 on synthetic shapes (12 classes) as a seed.

    Stands in for an ImageNet checkpoint where none can be downloaded; the output is a plain
    torchvision state dict that every fnacli command reads like a real seed.
    """
    import json

    from rich.progress import TextColumn, TimeRemainingColumn

    from fnacli.io import check_writable
    from fnacli.seed_pretrain import check_settings, pretrain
    from fnacli.train import write_torch_atomic

    check_settings(width, size, seconds)
    dest = check_writable(out, force)
    with c.progress_bar("pretrain-seed", seconds, TextColumn("{task.description}"),
                        TimeRemainingColumn(), transient=False) as update:
        model, res = pretrain(width, size, seconds, max_steps, batch_size, seed=seed,
                              on_step=lambda step, loss, elapsed: update(
                                  completed=elapsed, description=f"step {step} loss {loss:.3f}"))
        update(completed=seconds)
    write_torch_atomic(dest, model.state_dict())
    c.err_console.print(f"seed: {res.steps} steps in {res.seconds:.0f}s, held-out accuracy "
                        f"{res.val_accuracy:.1%} (12 classes, chance 8.3%) -> {dest}")
    if json_out:
        c.print_result(json.dumps({"output": str(dest), "width": width, "steps": res.steps,
                                   "seconds": round(res.seconds, 1),
                                   "train_loss": res.train_loss if res.steps else None,
                                   "val_accuracy": res.val_accuracy}))
