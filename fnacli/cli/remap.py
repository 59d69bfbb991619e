"""`fnacli remap SEED --spec SPEC -o OUT`: a seed's parameters on another architecture
(``fnacli.pipeline.remap``)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import typer
from typer.core import TyperCommand

from fnacli.cli import common as c
from fnacli.cli.app import app
from fnacli.pipeline.remap import RemapConfig

Widen = StrEnum("Widen", {n: n for n in ("noise", "zeros", "split")})

o = c.options_of(RemapConfig)


class _RemapCommand(TyperCommand):
    """--spec and -o are required, except beside --show-spec (which only reads SEED)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if "--show-spec" in args:  # this invocation's command object: built per run
            for p in self.params:
                if p.name in ("spec", "output"):
                    p.required = False
        return super().parse_args(ctx, args)


@app.command("remap", cls=_RemapCommand)
def remap(
    seed: str = c.argument(RemapConfig, "seed"),
    spec: str = o("spec", default=..., autocompletion=c.complete_arch),
    output: str = o("output", default=...),
    show_spec: bool = typer.Option(False, "--show-spec", help="Print the architecture fnacli "
                                   "infers from SEED (a spec, on stdout) and stop; no --spec or "
                                   "-o needed."),
    width: c.Width = o("width"),
    kernel: c.Kernel = o("kernel"),
    widen: Widen = o("widen"),
    noise: float | None = o("noise"),
    rng_seed: int = o("rng_seed"),
    as_json: bool = c.opt("--json"),
    force: bool = o("force"),
) -> None:
    """Remap SEED's parameters onto the architecture SPEC (depth, width, kernel; FNA)."""
    options = dict(locals())
    if show_spec:
        from fnacli.pipeline.remap import seed_spec

        arch = seed_spec(seed)
        c.print_json(arch.to_dict()) if as_json else c.print_result(arch.to_json())
        return
    from fnacli.pipeline.remap import remap as run

    r = run(c.config(RemapConfig, options, ("as_json", "show_spec")))
    c.show(r.report())
    if as_json:
        c.print_json(r.to_dict())
