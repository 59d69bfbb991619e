"""A search on an onnxruntime latency table against a search on MAdds, at matched predicted
cost: both derived networks (and the seed) timed end to end in onnxruntime, side by side.

    python benchmarks/bench_latency_search.py --work W --data DATA --supernet super.safetensors \
        --seed-checkpoint seed.pth --space SPACE [--size 80] [--num-classes 3] \
        [--precision int8] [--budget 0.9] [--epochs 8] [--seeds 0] [--json out.json]

For the given supernet (expanded from the seed over SPACE) and detection data it

1. builds the onnxruntime latency tables of SPACE at the search's input size (``fnacli
   latency --runtime onnxruntime``, fp32 and int8, 1 thread, ``--clock cpu``) with their
   ``--check 20``, unless W already has them;
2. runs two differentiable searches per search seed with the same recipe and budget factor:
   one priced in MAdds (``--target-madds budget x seed``), one priced by the ``--precision``
   table (``--cost latency --target-latency budget x seed's predicted latency``), both with
   ``--target-side both`` and ``--cost-scope detector`` so that each lands at its budget on
   its own clock;
3. derives each twice, the argmax and the most likely architecture within ±``--window`` of
   its budget on its own clock (``derive --min/--max-madds`` or ``--min/--max-latency``:
   matched predicted cost), and times the seed and every derived network as whole exported
   networks in onnxruntime, fp32 and int8, interleaved (the tables' own timing: warm-up,
   median with a 95% interval), and prints MAdds, predicted and measured latency, each as a
   ratio to the seed.

Searches and tables are reused when W has them (delete a file to redo it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PRECISIONS = ("fp32", "int8")


def fnacli(*args: str, stdout: Path | None = None, log: Path | None = None) -> str:
    """Run ``python -m fnacli ARGS`` (one thread), raising with its stderr when it fails."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log or os.devnull, "w") as err:
        r = subprocess.run([sys.executable, "-m", "fnacli", *args], stdout=subprocess.PIPE,
                           stderr=err, text=True, env=env)
    if r.returncode:
        raise SystemExit(f"fnacli {' '.join(args)}: exit {r.returncode} (see {log})")
    if stdout is not None:
        stdout.write_text(r.stdout)
    return r.stdout


def build_table(a: argparse.Namespace, w: Path, precision: str) -> Path:
    path = w / f"ort-{precision}.json"
    if not path.is_file():
        start = time.perf_counter()
        fnacli("latency", "--space", a.space, "--task", "ssdlite", "--size", str(a.size),
               "--num-classes", str(a.num_classes), "--runtime", "onnxruntime",
               "--precision", precision, "--threads", "1", "--clock", "cpu", "-o", str(path),
               "--check", "20", "--json", "--force",
               stdout=w / f"ort-{precision}.check.json", log=w / f"ort-{precision}.log")
        print(f"table {precision}: built and checked in {time.perf_counter() - start:.0f} s",
              flush=True)
    check = json.loads((w / f"ort-{precision}.check.json").read_text())
    print(f"table {precision}: check {json.dumps(check.get('check', check).get('verdict'))}")
    return path


def profile(a: argparse.Namespace, archs: list[Path], table: Path) -> list[dict]:
    """MAdds and the table's predicted latency of each architecture (one ``fnacli madds``)."""
    out = fnacli("madds", *map(str, archs), "--task", "ssdlite", "--size", str(a.size),
                 "--num-classes", str(a.num_classes), "--latency-table", str(table), "--json")
    return json.loads(out)


def search(a: argparse.Namespace, w: Path, name: str, seed: int, cost: list[str]) -> Path:
    out = w / f"{name}-s{seed}.safetensors"
    arch = w / f"{name}-s{seed}.json"
    if not arch.is_file():
        resume = ["--resume"] if Path(f"{out}.ckpt").is_file() else ["--force"]
        fnacli("search", a.supernet, "--task", "ssdlite", "--data", a.data, "-o", str(out),
               "--size", str(a.size), "--epochs", str(a.epochs),
               "--warmup-epochs", str(a.epochs // 2), "--batch-size", "16", "--workers", "0",
               "--seed", str(seed), "--arch-every", "1", "--arch-lr", "auto",
               "--target-side", "both", "--cost-scope", "detector", "--optimizer", "sgd",
               "--lr", "0.03", "--warmup-iters", "100", "--clip-grad", "10",
               "--device", "cpu", *cost, *resume, log=w / f"{name}-s{seed}.log")
        fnacli("derive", str(out), "-o", str(arch), "--force")
    return out


def derive_in_window(a: argparse.Namespace, searched: Path, window: list[str]) -> Path:
    """The most likely architecture of ``searched`` within the budget's window."""
    arch = searched.with_name(searched.name.replace(".safetensors", "-window.json"))
    if not arch.is_file():
        fnacli("derive", str(searched), "-o", str(arch), "--force", *window)
    return arch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--supernet", required=True)
    ap.add_argument("--seed-checkpoint", required=True)
    ap.add_argument("--space", required=True)
    ap.add_argument("--size", type=int, default=80)
    ap.add_argument("--num-classes", type=int, default=3)
    ap.add_argument("--precision", default="int8", choices=PRECISIONS)
    ap.add_argument("--budget", type=float, default=0.9)
    ap.add_argument("--window", type=float, default=0.05, help="relative half-width of the "
                    "matched-cost derivation's window around the budget")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seeds", default="0", help="search seeds, comma-separated")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    w = Path(a.work)
    w.mkdir(parents=True, exist_ok=True)
    tables = {p: build_table(a, w, p) for p in PRECISIONS}

    from fnacli.pipeline.profile import read_latency
    from fnacli.pipeline.remap import seed_spec
    from fnacli.spec import load_arch

    seed_arch = w / "seed-arch.json"
    seed_arch.write_text(seed_spec(a.seed_checkpoint).to_json())
    seed_prof = profile(a, [seed_arch], tables[a.precision])[0]
    target_madds = a.budget * seed_prof["madds"]
    target_ms = a.budget * seed_prof["latency_ms"]
    print(f"seed: {seed_prof['madds'] / 1e6:.2f}M MAdds, {seed_prof['latency_ms']:.3f} ms "
          f"predicted ({a.precision}); targets {target_madds / 1e6:.2f}M and "
          f"{target_ms:.3f} ms", flush=True)
    priced = {"madds": ["--target-madds", str(round(target_madds))],
              "latency": ["--cost", "latency", "--latency-table", str(tables[a.precision]),
                          "--target-latency", f"{target_ms:.4f}ms"]}
    runs = [(clock, s) for clock in priced for s in map(int, a.seeds.split(","))]
    start = time.perf_counter()
    with ThreadPoolExecutor(a.jobs) as pool:
        searched = list(pool.map(lambda r: search(a, w, r[0], r[1], priced[r[0]]), runs))
    print(f"searches: {time.perf_counter() - start:.0f} s", flush=True)
    lo, hi = 1 - a.window, 1 + a.window
    windows = {"madds": ["--min-madds", str(round(lo * target_madds)), "--max-madds",
                         str(round(hi * target_madds)), "--cost-scope", "detector", "--task",
                         "ssdlite", "--size", str(a.size)],
               "latency": ["--latency-table", str(tables[a.precision]),
                           "--min-latency", f"{lo * target_ms:.4f}ms",
                           "--max-latency", f"{hi * target_ms:.4f}ms"]}
    named = [("seed", seed_arch)]
    for (clock, seed), out in zip(runs, searched, strict=True):
        named.append((f"{clock}-s{seed} argmax", out.with_suffix(".json")))
        named.append((f"{clock}-s{seed} in window", derive_in_window(a, out, windows[clock])))
    specs = [load_arch(p) for _, p in named]
    profiles = profile(a, [p for _, p in named], tables[a.precision])
    rows: dict[str, dict] = {n: {"madds": pr["madds"]}
                             for (n, _), pr in zip(named, profiles, strict=True)}
    for prec, path in tables.items():
        table = read_latency(path)
        measured = table.measure_networks(specs)  # interleaved: under the same load
        for (n, _), spec, t in zip(named, specs, measured, strict=True):
            rows[n][f"{prec}_predicted_ms"] = table.latency_ms(spec)
            rows[n][f"{prec}_ms"] = t.median_s * 1e3
            rows[n][f"{prec}_ci_ms"] = [t.low_s * 1e3, t.high_s * 1e3]
    base = rows["seed"]
    print(f"\n{a.space} / ssdlite @ {a.size}, {a.num_classes} classes, budget {a.budget}x the "
          f"seed (window ±{a.window:.0%}), searched on the {a.precision} table, {a.epochs} "
          "epochs; onnxruntime 1 thread, batch 1, CPU clock\n")
    print("| network | MAdds | /seed | fp32 predicted | fp32 measured | /seed | int8 predicted "
          "| int8 measured | /seed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n, r in rows.items():
        print(f"| {n} | {r['madds'] / 1e6:.2f}M | {r['madds'] / base['madds']:.3f} | "
              + " | ".join(f"{r[f'{p}_predicted_ms']:.3f} ms | {r[f'{p}_ms']:.3f} ms | "
                           f"{r[f'{p}_ms'] / base[f'{p}_ms']:.3f}" for p in PRECISIONS) + " |")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
