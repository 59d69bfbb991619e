"""FNA Table 5 on the synthetic segmentation data: remapped seed vs random initialisation.

FNA's segmentation ablation (Table 5: no remapping 72.4 mIoU, remapping 76.6) fine-tunes
the same DeepLabv3 architecture from the seed's parameters remapped onto it and from random
initialisation, with the same recipe and budget. This script measures it with fnacli's own
commands, like ``bench_remap_vs_scratch.py`` does for SSDLite (its helpers are reused):

1. ``fnacli data synth --task segmentation``: one synthetic Cityscapes-layout set (cached);
2. ``fnacli pretrain-seed --width 0.5``: one pretrained MobileNetV2 0.5 seed (cached);
3. the target: FNA's searched DeepLabv3 backbone (built-in ``fna-deeplabv3``: its kernels and
   depths) at the seed's widths, so remapping changes depth and kernels but not widths;
4. arm ``remap``: ``fnacli remap seed.pth --spec target.json``; arm ``scratch``: the target
   with torchvision's MobileNetV2 init, seeded per run;
5. per seed and arm: ``fnacli finetune --task deeplabv3`` with one recipe (``--seed`` = the
   run's seed: the same data order, crops and ASPP init for both arms), ``fnacli eval``.

Prints mIoU and pixel accuracy, mean ± std per arm, per seed and paired by seed (stderr);
``--json`` puts the numbers on stdout. Finished steps whose settings match are reused.

    nice -n 10 .venv/bin/python benchmarks/bench_seg_remap_vs_scratch.py \
        [--seeds 3] [--epochs 6] [--size 128] [--workdir .cache/bench_seg_remap_vs_scratch] \
        [--pretrain-steps 300 | --pretrain-seconds S] [--threads 1] [--quick] [--fresh] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.table import Table


def _detection_bench():  # the SSDLite benchmark's helpers (running fnacli, caching, init)
    if "bench_remap_vs_scratch" in sys.modules:
        return sys.modules["bench_remap_vs_scratch"]
    path = Path(__file__).resolve().with_name("bench_remap_vs_scratch.py")
    spec = importlib.util.spec_from_file_location("bench_remap_vs_scratch", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while being defined
    spec.loader.exec_module(mod)
    return mod


base = _detection_bench()
ARMS = base.ARMS
KEYS = ("mIoU", "aAcc")
err = base.err


@dataclass(frozen=True)
class Settings:
    """Everything that determines the numbers (and the cache keys of the work dir)."""

    seeds: int = 3
    epochs: int = 6
    size: int = 128  # fine-tuning crop side
    batch_size: int = 8
    lr: float = 0.02
    warmup: int = 10
    augment: str = "finetune"
    train: int = 64
    val: int = 16
    image_width: int = 256  # images are 2:1, like Cityscapes
    pretrain_seconds: float = 120.0
    pretrain_size: int = 64
    pretrain_max_steps: int = 10_000
    # a fixed step count: on a busy machine a time budget can leave the seed untrained
    pretrain_steps: int | None = 300
    width: float = 0.5

    def data(self) -> dict:
        return {"task": "segmentation", "train": self.train, "val": self.val,
                "size": self.image_width}

    def seed(self) -> dict:
        return base.Settings(pretrain_seconds=self.pretrain_seconds,
                             pretrain_size=self.pretrain_size,
                             pretrain_max_steps=self.pretrain_max_steps,
                             pretrain_steps=self.pretrain_steps, width=self.width).seed()

    def seed_args(self) -> list:
        return base.Settings(pretrain_seconds=self.pretrain_seconds,
                             pretrain_max_steps=self.pretrain_max_steps,
                             pretrain_steps=self.pretrain_steps).seed_args()

    def recipe(self) -> dict:
        return {"epochs": self.epochs, "size": self.size, "batch_size": self.batch_size,
                "lr": self.lr, "warmup": self.warmup, "augment": self.augment}


QUICK = dict(seeds=1, epochs=1, size=48, batch_size=4, warmup=0, train=8, val=2,
             image_width=96, pretrain_seconds=2.0, pretrain_size=32, pretrain_max_steps=2,
             pretrain_steps=2)


def target_spec(width: float):  # -> ArchSpec
    """FNA's searched DeepLabv3 ops and depths on MobileNetV2-``width``'s channels."""
    from fnacli.spec import ArchSpec, Stage, builtin_arch, mobilenetv2

    seed, fna = mobilenetv2(width), builtin_arch("fna-deeplabv3")
    stages = tuple(Stage(b.out, b.stride, f.ops)
                   for b, f in zip(seed.stages, fna.stages, strict=True))
    return ArchSpec(seed.stem_out, seed.stem_stride, stages, seed.head_out)


def run(cfg: Settings, workdir: Path, threads: int, quiet: bool) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    fnacli, cached, mark = base.fnacli, base.cached, base.mark

    def step(msg: str) -> None:
        err.print(f"[dim]{time.monotonic() - start:6.0f}s[/] {msg}")

    data = workdir / "data"
    if cached(data, cfg.data()):
        step(f"dataset: cached {data}")
    else:
        step("dataset: fnacli data synth --task segmentation")
        fnacli(["data", "synth", data, "--task", "segmentation", "--train", cfg.train,
                "--val", cfg.val, "--size", cfg.image_width, "--seed", 0, "--force"], threads,
               quiet)
        mark(data, cfg.data())

    seed_info, spec_path, remapped = base.seed_and_remap(
        cfg, workdir, target_spec(cfg.width), f"{cfg.pretrain_steps} steps", threads, quiet,
        step)
    spec_json = json.loads(spec_path.read_text())  # what the runs' stamps name

    runs = workdir / "runs"
    runs.mkdir(exist_ok=True)
    results: dict[str, dict[int, dict]] = {a: {} for a in ARMS}
    for seed in range(cfg.seeds):
        for arm in ARMS:
            final, result_path = runs / f"{arm}-s{seed}.safetensors", runs / f"{arm}-s{seed}.json"
            stamp = {"arm": arm, "seed": seed, "recipe": cfg.recipe(), "data": cfg.data(),
                     **({"pretrain": cfg.seed()} if arm == "remap" else {}),
                     "spec": spec_json}
            if cached(result_path, stamp):
                step(f"{arm} seed {seed}: cached {result_path}")
                results[arm][seed] = json.loads(result_path.read_text())
                continue
            init = remapped
            if arm == "scratch":
                init = runs / f"scratch-init-s{seed}.safetensors"
                base.random_backbone(spec_path, init, seed)
            step(f"{arm} seed {seed}: fnacli finetune --task deeplabv3 ({cfg.epochs} epochs) "
                 "+ eval")
            t = time.monotonic()
            ft = json.loads(fnacli(
                ["finetune", init, "--task", "deeplabv3", "--data", data, "-o", final,
                 "--epochs", cfg.epochs, "--batch-size", cfg.batch_size, "--size", cfg.size,
                 "--optimizer", "sgd", "--lr", cfg.lr, "--schedule", "cosine",
                 "--warmup-iters", cfg.warmup, "--augment", cfg.augment, "--seed", seed,
                 "--threads", threads, "--workers", 1, "--device", "cpu", "--force", "--json"],
                threads, quiet))
            seconds = time.monotonic() - t
            metrics = json.loads(fnacli(["eval", final, "--data", data, "--json", "--threads",
                                         threads, "--workers", 1, "--device", "cpu"],
                                        threads, quiet))
            res = {"steps": ft["steps"], "last_loss": ft["last_loss"],
                   "finetune_seconds": round(seconds, 1), "metrics": metrics}
            result_path.write_text(json.dumps(res, indent=1))
            mark(result_path, stamp)
            results[arm][seed] = res
            step(f"{arm} seed {seed}: mIoU {metrics['mIoU']:.3f} aAcc {metrics['aAcc']:.3f}")
    return {"settings": asdict(cfg), "seed": seed_info, "runs": results,
            "summary": summarise(results), "machine": base.machine(threads),
            "seconds": round(time.monotonic() - start, 1)}


def summarise(results: dict[str, dict[int, dict]]) -> dict:
    """Per arm: mIoU/aAcc per seed, mean, std; and remap − scratch paired by seed."""
    out: dict = {}
    for arm, by_seed in results.items():
        seeds = sorted(by_seed)
        out[arm] = {"seeds": seeds}
        for key in KEYS:
            vals = [by_seed[s]["metrics"][key] for s in seeds]
            m, sd = base.mean_std(vals)
            out[arm][key] = {"values": vals, "mean": m, "std": sd}
    seeds = sorted(set(results["remap"]) & set(results["scratch"]))
    diff: dict = {"seeds": seeds}
    for key in KEYS:
        vals = [results["remap"][s]["metrics"][key] - results["scratch"][s]["metrics"][key]
                for s in seeds]
        m, sd = base.mean_std(vals)
        diff[key] = {"values": vals, "mean": m, "std": sd,
                     "remap_wins": sum(v > 0 for v in vals)}
    out["difference"] = diff
    return out


def table(result: dict) -> Table:
    s, cfg = result["summary"], result["settings"]
    seeds = s["difference"]["seeds"]
    t = Table(title=f"remap vs random init: DeepLabv3, {cfg['epochs']} epochs, "
                    f"{cfg['size']}px crops, seeds {', '.join(map(str, seeds))}")
    for col in ("arm", "mIoU mean ± std", "aAcc mean ± std", "mIoU per seed", "steps"):
        t.add_column(col, justify="left" if col == "arm" else "right")
    for arm in ARMS:
        steps = sorted({r["steps"] for r in result["runs"][arm].values()})
        t.add_row(arm, base._pm(s[arm]["mIoU"]), base._pm(s[arm]["aAcc"]),
                  base._each(s[arm]["mIoU"]), "/".join(map(str, steps)))
    d = s["difference"]
    t.add_row("remap − scratch", base._pm(d["mIoU"], True), base._pm(d["aAcc"], True),
              base._each(d["mIoU"], True), "", end_section=True)
    t.caption = (f"remap better on mIoU in {d['mIoU']['remap_wins']}/{len(seeds)} seeds; seed: "
                 f"{result['seed'].get('steps')} pretraining steps, held-out accuracy "
                 f"{result['seed'].get('val_accuracy', float('nan')):.1%}")
    return t


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, help="runs per arm, seeds 0..N-1 [3; --quick 1]")
    p.add_argument("--epochs", type=int, help="fine-tuning epochs, both arms [6]")
    p.add_argument("--size", type=int, help="fine-tuning crop side [128]")
    p.add_argument("--pretrain-seconds", type=float,
                   help="pre-train the seed for S seconds instead of a step count")
    p.add_argument("--pretrain-steps", type=int,
                   help="seed pre-training steps [300] (machine-independent)")
    p.add_argument("--workdir", type=Path, default=Path(".cache/bench_seg_remap_vs_scratch"),
                   help="cache of the data, seed and runs [%(default)s]")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per fnacli process [%(default)s]; 0: torch's default")
    p.add_argument("--quick", action="store_true",
                   help="tiny everything (smoke test; numbers meaningless)")
    p.add_argument("--fresh", action="store_true", help="delete WORKDIR first")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON on stdout")
    args = p.parse_args(argv)

    start = Settings(**QUICK) if args.quick else Settings()
    overrides = {k: v for k, v in {"seeds": args.seeds, "epochs": args.epochs, "size": args.size,
                                   "pretrain_seconds": args.pretrain_seconds,
                                   "pretrain_steps": args.pretrain_steps}.items()
                 if v is not None}
    for k, v in overrides.items():
        if v <= 0:
            p.error(f"--{k.replace('_', '-')}: must be positive, got {v}")
    if overrides.get("size", start.size) < 32:
        p.error("--size: at least 32 pixels")
    if args.pretrain_seconds is not None and args.pretrain_steps is None:
        overrides["pretrain_steps"] = None  # the time budget replaces the step count
    cfg = Settings(**{**asdict(start), **overrides})
    if args.fresh and args.workdir.exists():
        if any(args.workdir.iterdir()) and not (args.workdir / "data.stamp.json").exists():
            p.error(f"--fresh: {args.workdir} does not look like this benchmark's work dir "
                    "(no data.stamp.json); delete it yourself")
        shutil.rmtree(args.workdir)
    result = run(cfg, args.workdir, args.threads, quiet=args.quick)
    err.print(table(result))
    m = result["machine"]
    err.print(f"{m['cpu']}, {m['cores']} cores, {m['threads']} thread(s) per process, torch "
              f"{m['torch']}; {result['seconds']:.0f}s")
    if args.json:
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
