"""`fnacli remap SEED --spec SPEC -o OUT`: a seed's parameters on another architecture
(``fnacli.pipeline.remap``)."""

from __future__ import annotations

import json
from enum import StrEnum

import typer

from fnacli.cli import common as c
from fnacli.cli.app import app

Width = StrEnum("Width", {n: n for n in ("first", "bn", "std", "l1")})
Kernel = StrEnum("Kernel", {n: n for n in ("center", "dilate")})
Widen = StrEnum("Widen", {n: n for n in ("noise", "zeros", "split")})


@app.command("remap")
def remap(
    seed: str = typer.Argument(..., metavar="SEED", help="MobileNetV2 checkpoint: torchvision/timm "
                               ".pth/.pt (plain, wrapped or prefixed), fnacli .safetensors, "
                               "torchvision:IMAGENET1K_V1 or timm:mobilenetv2_100."),
    spec: str = typer.Option(..., "--spec", "-s", metavar="SPEC",
                             help="Target architecture: JSON file, '-' for stdin, or a built-in "
                                  "name (e.g. mobilenetv2-0.75, fna-ssdlite)."),
    output: str = typer.Option(..., "--output", "-o", metavar="OUT",
                               help="Output backbone checkpoint (.safetensors)."),
    width: Width = typer.Option(Width.first, "--width", help="Narrowing rule: first channels "
                                "(FNA), or the top |BN γ|, filter std or filter L1 channels."),
    kernel: Kernel = typer.Option(Kernel.center, "--kernel", help="Kernel rule: centre (pad/crop), "
                                  "or taps on a dilated grid."),
    widen: Widen = typer.Option(Widen.noise, "--widen", help="How added channels are filled: zeros "
                                "plus small noise (Jung et al.; trainable), zeros (function "
                                "preserving, but all-zero channels get no gradient), or split "
                                "(Net2Net-style copies with divided outgoing weights: function "
                                "preserving and trainable)."),
    noise: float | None = c.opt("--noise"),
    rng_seed: int = c.opt("--seed", "Random seed for --noise and new layers."),
    as_json: bool = c.opt("--json"),
    force: bool = c.opt("--force", "Overwrite OUT if it exists."),
) -> None:
    """Remap SEED's parameters onto the architecture SPEC (depth, width, kernel; FNA)."""
    options = dict(locals())
    from fnacli.pipeline.remap import RemapConfig
    from fnacli.pipeline.remap import remap as run

    r = run(c.config(RemapConfig, options))
    c.show(r.report())
    if as_json:
        c.print_result(json.dumps(r.to_dict(), indent=2))
