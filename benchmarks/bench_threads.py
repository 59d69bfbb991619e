"""Threads per process against data-loading workers: a small fine-tune (synthetic data,
MobileNetV2-0.35 SSDLite) at --threads 1, at every core, and at fnacli's default
(``choose_threads``: the cores left by the workers), side by side, each in a fresh process.

    python benchmarks/bench_threads.py [--images 48] [--size 128] [--workers 2] [--repeats 2]

Prints images per second per setting and the ratio to --threads 1 (ratios, not times: the
machine's other load moves the times).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import machine, mean_std  # noqa: E402

RUN = """
import json, sys, time
import fnacli
a = json.loads(sys.argv[1])
t = time.perf_counter()
r = fnacli.finetune(a["target"], a["out"], task="ssdlite", data=a["data"], epochs=1,
                    batch_size=8, size=a["size"], workers=a["workers"], threads=a["threads"],
                    device="cpu", force=True, log_every=1000)
import torch
print(json.dumps({"seconds": time.perf_counter() - t, "threads": torch.get_num_threads(),
                  "steps": r.steps}))
"""


def prepare(root: Path, images: int, size: int) -> tuple[Path, Path]:
    import torch
    import torchvision

    import fnacli
    from fnacli.detection.synthetic import SynthConfig, generate

    generate(root / "data", SynthConfig(train=images, val=4, size=size, classes=3, seed=0))
    torch.manual_seed(0)
    seed = root / "seed.pth"
    torch.save(torchvision.models.mobilenet_v2(width_mult=0.35).state_dict(), seed)
    fnacli.remap(seed, "mobilenetv2-0.35", output=root / "t.safetensors", force=True)
    return root / "data", root / "t.safetensors"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    from fnacli.pipeline.common import choose_threads, cpu_cores

    cores = cpu_cores()
    settings = {"1": 1, f"all cores ({cores})": cores,
                f"default ({choose_threads(0, args.workers)})": 0}
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    results: dict[str, list[float]] = {k: [] for k in settings}
    with tempfile.TemporaryDirectory() as tmp:
        data, target = prepare(Path(tmp), args.images, args.size)
        for _ in range(args.repeats):  # interleaved: drifting load hits every setting alike
            for name, threads in settings.items():
                a = {"target": str(target), "out": str(Path(tmp) / "f.safetensors"),
                     "data": str(data), "size": args.size, "workers": args.workers,
                     "threads": threads}
                start = time.perf_counter()
                r = subprocess.run([sys.executable, "-c", RUN, json.dumps(a)], env=env,
                                   capture_output=True, text=True, check=True)
                doc = json.loads(r.stdout.strip().splitlines()[-1])
                results[name].append(args.images / doc["seconds"])
                print(f"{name}: {args.images / doc['seconds']:.2f} img/s "
                      f"({time.perf_counter() - start:.0f}s with start-up)", file=sys.stderr)
    base = mean_std(results["1"])[0]
    print(json.dumps({"machine": machine(0), "workers": args.workers,
                      "images_per_s": {k: round(mean_std(v)[0], 2) for k, v in results.items()},
                      "ratio_to_1": {k: round(mean_std(v)[0] / base, 3)
                                     for k, v in results.items()}}, indent=1))


if __name__ == "__main__":
    main()
