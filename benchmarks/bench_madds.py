"""Benchmark the cost lookup table and the MAdds fast path.

    .venv/bin/python benchmarks/bench_madds.py [--specs 1000] [--trace-specs 8] [--quick]

Prints one table: LUT build time (fna, fna-channels; SSDLite at 320, RetinaNet at 1088x800),
cache reload time, and specs/second of the fast path (cold: empty caches; warm: from a built
table) against a full fvcore trace per spec. Targets (issue #3): fna-channels SSDLite@320
builds in < 60 s and reloads in < 1 s on the 2-core dev machine; 1,000 specs in seconds.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from typing import TypeVar

from rich.console import Console
from rich.table import Table

import fnacli.cost.units as units_mod
from fnacli.cost.count import profile_exact
from fnacli.cost.lut import load_or_build_lut
from fnacli.cost.table import CostTable
from fnacli.spec import SKIP, ArchSpec, Op, Stage, builtin_space

T = TypeVar("T")
CASES = [("fna", "ssdlite", (320, 320)), ("fna-channels", "ssdlite", (320, 320)),
         ("fna", "retinanet", (1088, 800)), ("fna-channels", "retinanet", (1088, 800))]


def random_arch(space_name: str, rng: random.Random) -> ArchSpec:
    space = builtin_space(space_name)
    stages = []
    for st in space.stages:
        ops = [rng.choice(st.layer_candidates(i)) for i in range(st.layers)]
        stages.append(Stage(rng.choice(st.outs), st.stride,
                            tuple(Op.parse(o) for o in ops if o != SKIP)))
    return ArchSpec(space.stem_out, space.stem_stride, tuple(stages), space.head_out)


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def cold_units() -> None:
    """Forget every per-unit count, in memory and on disk (the cost table file stays)."""
    units_mod.PP.clear()
    units_mod._PP_DISK.clear()
    units_mod.unit_cache_path().unlink(missing_ok=True)


def run_case(name: str, task: str, size: tuple[int, int], n_specs: int,
             n_trace: int) -> list[str]:
    space = builtin_space(name)
    rng = random.Random(0)
    specs = [random_arch(name, rng) for _ in range(n_specs)]
    cold_units()  # honest cold numbers: no per-layer costs from earlier cases
    lut, build_s = timed(lambda: load_or_build_lut(space, task, size))
    _, reload_s = timed(lambda: load_or_build_lut(space, task, size))
    cold_units()
    _, cold_s = timed(lambda: CostTable(task, size).profile_many(specs))
    warm, warm_s = timed(lambda: lut.profile_many(specs))
    traced, trace_s = timed(lambda: [profile_exact(s, task, size, 80) for s in specs[:n_trace]])
    for fast, exact in zip(warm, traced, strict=False):  # the fast path is exact
        assert fast.madds_parts == exact.madds_parts, (fast, exact)
    trace_rate = len(traced) / trace_s
    return [name, f"{task} @ {size[0]}x{size[1]}", f"{build_s:.1f}", f"{reload_s:.2f}",
            f"{len(lut.layers) + len(lut.fixed)}", f"{len(specs) / cold_s:.0f}",
            f"{len(specs) / warm_s:.0f}", f"{trace_rate:.2f}",
            f"{len(specs) / warm_s / trace_rate:.0f}x"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--specs", type=int, default=1000, help="specs for the fast path")
    ap.add_argument("--trace-specs", type=int, default=8, help="specs for the full trace")
    ap.add_argument("--quick", action="store_true", help="SSDLite cases only")
    args = ap.parse_args()
    table = Table(title=f"fnacli madds benchmark ({os.cpu_count()} CPUs)")
    for col in ("space", "task @ input", "LUT build s", "reload s", "entries",
                "fast cold spec/s", "fast warm spec/s", "trace spec/s", "warm/trace"):
        table.add_column(col, justify="left" if col in ("space", "task @ input") else "right")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["FNACLI_CACHE_DIR"] = cache
        for name, task, size in CASES[:2] if args.quick else CASES:
            table.add_row(*run_case(name, task, size, args.specs, args.trace_specs))
            print(f"done: {name} {task}", file=sys.stderr)
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
