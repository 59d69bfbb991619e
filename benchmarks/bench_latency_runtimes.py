"""MAdds, eager PyTorch and onnxruntime (fp32, int8) as clocks for ranking architectures,
measured side by side in one run.

    python benchmarks/bench_latency_runtimes.py [--space fna] [--task ssdlite] [--size 320]
        [--n 30] [--clock cpu] [--json out.json]

For one space, task and input size it builds three latency tables (torch eager, onnxruntime
fp32, onnxruntime int8; 1 thread, batch 1) and the MAdds table, draws N random architectures
(seeded), times each of them end to end in all three runtimes (``fnacli.cost.check``: the
table's check, so every runtime also gets its check and verdict on the same N networks), and
prints:

1. the build time of each table and the check of each (median / 90th percentile error,
   Spearman, verdict);
2. Spearman's rank correlation between MAdds and each runtime's measured latency, and
   between the runtimes;
3. the latency ratios (per architecture, then the median): eager / onnxruntime fp32,
   onnxruntime int8 / fp32;
4. for each searched stage, the candidate ops ranked by MAdds, eager, fp32 and int8 time at
   one layer of that stage: which ops change rank between the clocks.

``--clock cpu`` (default) times the thread's CPU time, which other processes' load does not
stretch (this machine is shared); ``--clock wall`` times elapsed time.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from statistics import median

from fnacli.cost.check import check_table
from fnacli.cost.latency import LatencyTable, build_latency_table
from fnacli.cost.lut import build_lut
from fnacli.cost.measure import MeasureConfig
from fnacli.cost.space import random_arch
from fnacli.cost.verdict import spearman
from fnacli.pipeline.profile import cost_target
from fnacli.spec import load_space

RUNTIMES = {"eager": ("torch", "fp32"), "ort fp32": ("onnxruntime", "fp32"),
            "ort int8": ("onnxruntime", "int8")}


def op_ranks(tables: dict[str, object], stage: int, space: object) -> dict[str, list[str]]:
    """Per clock, the stage's candidate ops (no skip) fastest/cheapest first, at the stage's
    second layer (input = output width, stride 1) as the MAdds table keys it."""
    keys = [k for k in tables["MAdds"].layers
            if k[3] == 1 and k[1] == k[2] == space.stages[stage].outs[0]
            and k[0] in space.stages[stage].candidates]
    if not keys:
        return {}
    res = max((k[4], k[5]) for k in keys)  # one resolution of the stage
    keys = [k for k in keys if (k[4], k[5]) == res]
    return {clock: [k[0] for k in sorted(keys, key=lambda k: t.layers[k][0])]
            for clock, t in tables.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default="fna")
    ap.add_argument("--task", default="ssdlite")
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--clock", default="cpu", choices=("cpu", "wall"))
    ap.add_argument("--runtimes", default=",".join(RUNTIMES))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    space = load_space(args.space)
    size = (args.size, args.size)
    t0 = time.perf_counter()
    task = cost_target(args.task)
    madds = build_lut(space, task, size)
    out: dict = {"space": args.space, "task": args.task, "size": args.size, "n": args.n,
                 "clock": args.clock, "runtimes": {}}
    tables: dict[str, LatencyTable] = {}
    measured: dict[str, list[float]] = {}
    for name in args.runtimes.split(","):
        runtime, precision = RUNTIMES[name]
        cfg = MeasureConfig(threads=1, runtime=runtime, precision=precision, clock=args.clock,
                            seed=args.seed)
        start = time.perf_counter()
        table = build_latency_table(space, task, size, None, cfg, progress=True)
        built = time.perf_counter() - start
        start = time.perf_counter()
        check = check_table(table, args.n, seed=args.seed)
        checked = time.perf_counter() - start
        tables[name], measured[name] = table, check.measured_ms
        v = check.verdict()
        out["runtimes"][name] = {"build_s": round(built, 1), "check_s": round(checked, 1),
                                 "entries": len(table.layers) + len(table.fixed),
                                 "overhead_ms": table.overhead_ns / 1e6,
                                 "load_drift": check.drift, **v.to_dict(),
                                 "measured_ms": check.measured_ms,
                                 "predicted_ms": check.predicted_ms}
        print(f"{name}: built in {built:.0f} s, checked in {checked:.0f} s: {v.line()}",
              flush=True)
    rng = random.Random(args.seed)
    archs = [random_arch(space, rng) for _ in range(args.n)]  # check_table's draw
    cost = [madds.arch_madds(a) for a in archs]
    names = list(measured)
    rho = {f"MAdds vs {n}": spearman(cost, measured[n]) for n in names}
    rho.update({f"{a} vs {b}": spearman(measured[a], measured[b])
                for i, a in enumerate(names) for b in names[i + 1:]})
    out["spearman"] = rho
    ratios = {}
    if "eager" in measured and "ort fp32" in measured:
        ratios["eager / ort fp32"] = median(
            e / o for e, o in zip(measured["eager"], measured["ort fp32"], strict=True))
    if "ort int8" in measured and "ort fp32" in measured:
        ratios["ort int8 / ort fp32"] = median(
            q / o for q, o in zip(measured["ort int8"], measured["ort fp32"], strict=True))
    out["median_ratio"] = ratios
    ranks = {s: op_ranks({"MAdds": madds, **tables}, s, space)
             for s in range(len(space.stages)) if space.stages[s].searchable}
    out["op_ranks"] = {str(s): r for s, r in ranks.items() if r}
    out["total_s"] = round(time.perf_counter() - t0, 1)

    print(f"\n{args.space} / {args.task} @ {args.size}, N = {args.n}, 1 thread, batch 1, "
          f"clock {args.clock}")
    print("\n| runtime | table build | check | median err | p90 err | Spearman (table vs "
          "measured) | verdict | median measured ms |")
    print("|---|---|---|---|---|---|---|---|")
    for n, r in out["runtimes"].items():
        print(f"| {n} | {r['build_s']:.0f} s | {r['check_s']:.0f} s | "
              f"{r['median_abs_error_pct']:.1f}% | {r['p90_abs_error_pct']:.1f}% | "
              f"{r['spearman']:.3f} | {r['verdict']} | {median(r['measured_ms']):.2f} |")
    print("\n| Spearman over measured latencies | ρ |\n|---|---|")
    for k, v in rho.items():
        print(f"| {k} | {v:.3f} |")
    print("\n| median ratio (per architecture) | |\n|---|---|")
    for k, v in ratios.items():
        print(f"| {k} | {v:.3f} |")
    print("\n| stage | " + " | ".join(["MAdds", *tables]) + " |")
    print("|---|" + "---|" * (1 + len(tables)))
    for s, r in out["op_ranks"].items():
        print(f"| {s} | " + " | ".join(" < ".join(r[c]) for c in ["MAdds", *tables]) + " |")
    print(f"\ntotal {out['total_s']:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
