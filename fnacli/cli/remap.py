"""`fnacli remap SEED --spec SPEC -o OUT`: a seed's parameters on another architecture
(``fnacli.pipeline.remap``)."""

from __future__ import annotations

from enum import StrEnum

from fnacli.cli import common as c
from fnacli.cli.app import app
from fnacli.pipeline.remap import RemapConfig

Width = StrEnum("Width", {n: n for n in ("first", "bn", "std", "l1")})
Kernel = StrEnum("Kernel", {n: n for n in ("center", "dilate")})
Widen = StrEnum("Widen", {n: n for n in ("noise", "zeros", "split")})

o = c.options_of(RemapConfig)


@app.command("remap")
def remap(
    seed: str = c.argument(RemapConfig, "seed"),
    spec: str = o("spec", default=...),
    output: str = o("output", default=...),
    width: Width = o("width"),
    kernel: Kernel = o("kernel"),
    widen: Widen = o("widen"),
    noise: float | None = o("noise"),
    rng_seed: int = o("rng_seed"),
    as_json: bool = c.opt("--json"),
    force: bool = o("force"),
) -> None:
    """Remap SEED's parameters onto the architecture SPEC (depth, width, kernel; FNA)."""
    options = dict(locals())
    from fnacli.pipeline.remap import remap as run

    r = run(c.config(RemapConfig, options))
    c.show(r.report())
    if as_json:
        c.print_json(r.to_dict())
