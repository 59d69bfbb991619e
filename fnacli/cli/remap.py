"""`fnacli remap SEED --spec SPEC -o OUT`: a seed's parameters on another architecture
(``fnacli.pipeline.remap``)."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import TYPE_CHECKING

from fnacli.cli import common as c
from fnacli.cli.app import app
from fnacli.pipeline.remap import RemapConfig

if TYPE_CHECKING:
    from fnacli.spec import ArchSpec


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
    _print_table(r.stages, r.seed_spec, r.spec)
    c.err_console.print(f"wrote {output} ({r.params:,} parameters)")
    if as_json:
        c.print_result(json.dumps(r.to_dict(), indent=2))


def _ops_text(ops: list[str]) -> str:
    """Runs of equal ops compressed: k3_e6 k3_e6 k5_e3 -> k3_e6×2 k5_e3."""
    runs: list[list] = []
    for op in ops:
        if runs and runs[-1][0] == op:
            runs[-1][1] += 1
        else:
            runs.append([op, 1])
    return " ".join(op if n == 1 else f"{op}×{n}" for op, n in runs)


def _print_table(report: list[dict], seed_spec: ArchSpec, target: ArchSpec) -> None:
    def out(r: dict, side: str) -> str:  # with the stride where the remap changed it
        moved = r["seed"]["stride"] != r["new"]["stride"]
        return f"{r[side]['out']}" + (f" s{r[side]['stride']}" if moved else "")

    rows = [["stem", str(seed_spec.stem_out), "conv3x3", str(target.stem_out), "conv3x3",
             "stem"]]
    rows += [[str(r["stage"]), out(r, "seed"), _ops_text(r["seed"]["ops"]), out(r, "new"),
              _ops_text(r["new"]["ops"]), " ".join(f"L{j}" for j in r["sources"])]
             for r in report]
    if target.head_out:
        rows.append(["head", str(seed_spec.head_out or "-"), "conv1x1", str(target.head_out),
                     "conv1x1", "head" if seed_spec.head_out else "new (seed has none)"])
    c.print_table("remap: seed → new", ("stage", "seed out", "seed ops", "new out", "new ops",
                                        "copied from"), rows,
                  right=("stage", "seed out", "new out"))
