"""FNA's central claim on the synthetic data: remapped seed vs random initialisation.

FNA (Table 5, "remap vs random init") fine-tunes the same detection architecture twice with
the same recipe and budget: once starting from the seed's parameters remapped onto it, once
from random initialisation. This script measures that with fnacli's own commands:

1. ``fnacli data synth``: one synthetic detection dataset (cached in the work dir);
2. ``fnacli pretrain-seed --width 0.5``: one pretrained MobileNetV2 0.5 seed (cached);
3. the target: FNA's published SSDLite architecture (built-in ``fna-ssdlite``: its kernels
   and depths) at the seed's channel widths, so remapping changes depth (up and down) and
   kernels (3 -> 5/7) but not widths; written to ``WORKDIR/target.json``;
4. arm ``remap``: ``fnacli remap seed.pth --spec target.json`` (one checkpoint for all seeds);
   arm ``scratch``: ``Backbone(target)`` randomly initialised per seed, saved as a backbone
   checkpoint with ``save_checkpoint`` (torchvision's MobileNetV2 init: the init the seed
   itself started from, so pre-training + remapping is the only difference);
5. per seed and arm: ``fnacli finetune`` with one recipe (``--seed`` = the run's seed, so
   both arms see the same data order, augmentation and detector-head init), ``fnacli eval``.

Prints a rich table (stderr): AP and AP50 mean ± std per arm, per-seed numbers and the paired
difference; ``--json`` puts the numbers on stdout. Re-runnable: finished steps whose settings
match are reused (``--fresh`` redoes everything). Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_remap_vs_scratch.py \
        [--seeds 3] [--epochs 4] [--size 160] [--workdir .cache/bench_remap_vs_scratch] \
        [--pretrain-seconds 150 | --pretrain-steps N] [--threads 1] [--quick] [--fresh] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, run as a script or loaded
from benchlib import machine, mean_std  # noqa: E402

ARMS = ("remap", "scratch")
err = Console(stderr=True, width=140)


@dataclass(frozen=True)
class Settings:
    """Everything that determines the numbers (and the cache keys of the work dir)."""

    seeds: int = 3
    epochs: int = 4
    size: int = 160
    batch_size: int = 16
    lr: float = 0.03
    warmup: int = 20
    augment: str = "ssdlite"
    train: int = 512
    val: int = 128
    image_size: int = 320
    pretrain_seconds: float = 150.0
    pretrain_size: int = 64
    pretrain_max_steps: int = 10_000
    pretrain_steps: int | None = None  # a fixed step count instead of the time budget
    width: float = 0.5

    def data(self) -> dict:
        return {"train": self.train, "val": self.val, "size": self.image_size}

    def seed(self) -> dict:
        if self.pretrain_steps:
            return {"width": self.width, "size": self.pretrain_size,
                    "steps": self.pretrain_steps}
        return {"width": self.width, "seconds": self.pretrain_seconds,
                "size": self.pretrain_size, "max_steps": self.pretrain_max_steps}

    def seed_args(self) -> list:
        """pretrain-seed's budget: wall-clock seconds (steps depend on the machine and its
        load), or exactly ``pretrain_steps`` steps (the cosine schedule then follows the
        steps alone: the same seed on any machine)."""
        if self.pretrain_steps:
            return ["--seconds", 7 * 86_400, "--max-steps", self.pretrain_steps]
        return ["--seconds", self.pretrain_seconds, "--max-steps", self.pretrain_max_steps]

    def recipe(self) -> dict:
        return {"epochs": self.epochs, "size": self.size, "batch_size": self.batch_size,
                "lr": self.lr, "warmup": self.warmup, "augment": self.augment}


QUICK = dict(seeds=1, epochs=1, size=64, batch_size=8, warmup=0, train=16, val=8,
             image_size=64, pretrain_seconds=2.0, pretrain_size=32, pretrain_max_steps=2)


# -- running fnacli ------------------------------------------------------------------------
def fnacli(args: Sequence[str], threads: int, capture_err: bool = False) -> str:
    """Run ``python -m fnacli ARGS`` (this interpreter, so the same install); returns stdout.

    Its progress (stderr) goes to ours; the thread count goes through OMP_NUM_THREADS too,
    for pretrain-seed, which has no --threads.
    """
    cmd = [sys.executable, "-m", "fnacli", *map(str, args)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env,
                          stderr=subprocess.PIPE if capture_err else None)
    if proc.returncode:
        tail = (proc.stderr or "").strip().splitlines()[-1:] if capture_err else []
        sys.exit(f"bench_remap_vs_scratch: `fnacli {' '.join(map(str, args))}` exited "
                 f"{proc.returncode}{': ' + tail[0] if tail else ''}")
    return proc.stdout


def cached(path: Path, stamp: dict) -> bool:
    """True when ``path`` exists and was made with exactly ``stamp`` (its settings)."""
    s = path.with_name(path.name + ".stamp.json")
    return path.exists() and s.exists() and json.loads(s.read_text()) == stamp


def mark(path: Path, stamp: dict) -> None:
    path.with_name(path.name + ".stamp.json").write_text(json.dumps(stamp, sort_keys=True))


# -- the pieces ------------------------------------------------------------------------------
def target_spec(width: float):  # -> ArchSpec (torch-free import kept lazy)
    """FNA's searched SSDLite ops and depths on MobileNetV2-``width``'s channels."""
    from fnacli.spec import ArchSpec, Stage, builtin_arch, mobilenetv2

    base, fna = mobilenetv2(width), builtin_arch("fna-ssdlite")
    stages = tuple(Stage(b.out, b.stride, f.ops)
                   for b, f in zip(base.stages, fna.stages, strict=True))
    return ArchSpec(base.stem_out, base.stem_stride, stages, base.head_out)


def random_backbone(spec_path: Path, out: Path, seed: int) -> None:
    """A randomly initialised backbone checkpoint of the spec, with torchvision's MobileNetV2
    init (Kaiming-normal fan-out convs, BN γ=1 β=0): what ``pretrain-seed`` starts from."""
    import torch
    from torch import nn

    from fnacli.checkpoint import save_checkpoint
    from fnacli.nn.backbone import Backbone
    from fnacli.spec import load_arch

    spec = load_arch(str(spec_path))
    torch.manual_seed(seed)
    net = Backbone(spec)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    save_checkpoint(out, net.state_dict(), "backbone",
                    {"spec": spec.to_dict(), "init": {"scheme": "torchvision", "seed": seed}},
                    force=True)



def seed_and_remap(cfg, workdir: Path, spec, budget: str, threads: int, quiet: bool,  # noqa: ANN001
                   step: Callable[[str], None]) -> tuple[dict, Path, Path]:
    """The pre-trained seed (``fnacli pretrain-seed``) and its remap onto ``spec``, each
    reused when its stamp matches: (the seed's JSON summary, target.json, remap.safetensors).
    Shared with the segmentation benchmark."""
    seed_path, seed_info_path = workdir / "seed.pth", workdir / "seed.json"
    if cached(seed_path, cfg.seed()) and seed_info_path.exists():
        step(f"seed: cached {seed_path}")
    else:
        step(f"seed: fnacli pretrain-seed --width {cfg.width} ({budget})")
        out = fnacli(["pretrain-seed", seed_path, "--width", cfg.width, "--size",
                      cfg.pretrain_size, *cfg.seed_args(), "--seed", 0, "--json", "--force"],
                     threads, quiet)
        seed_info_path.write_text(out)
        mark(seed_path, cfg.seed())
    spec_path = workdir / "target.json"
    spec_path.write_text(spec.to_json())
    remapped = workdir / "remap.safetensors"
    remap_stamp = {"seed": cfg.seed(), "spec": json.loads(spec_path.read_text())}
    if cached(remapped, remap_stamp):
        step(f"remap: cached {remapped}")
    else:
        step("remap: fnacli remap seed.pth --spec target.json")
        fnacli(["remap", seed_path, "--spec", spec_path, "-o", remapped, "--force"], threads,
               quiet)
        mark(remapped, remap_stamp)
    return json.loads(seed_info_path.read_text()), spec_path, remapped

def run(cfg: Settings, workdir: Path, threads: int, quiet: bool) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()

    def step(msg: str) -> None:
        err.print(f"[dim]{time.monotonic() - start:6.0f}s[/] {msg}")

    data = workdir / "data"
    if cached(data, cfg.data()):
        step(f"dataset: cached {data}")
    else:
        step("dataset: fnacli data synth")
        fnacli(["data", "synth", data, "--train", cfg.train, "--val", cfg.val,
                "--size", cfg.image_size, "--seed", 0, "--force"], threads, quiet)
        mark(data, cfg.data())

    budget = (f"{cfg.pretrain_steps} steps" if cfg.pretrain_steps
              else f"{cfg.pretrain_seconds:g} s")
    seed_info, spec_path, remapped = seed_and_remap(cfg, workdir, target_spec(cfg.width),
                                                    budget, threads, quiet, step)
    spec_json = json.loads(spec_path.read_text())  # what the runs' stamps name

    runs = workdir / "runs"
    runs.mkdir(exist_ok=True)
    results: dict[str, dict[int, dict]] = {a: {} for a in ARMS}
    for seed in range(cfg.seeds):
        for arm in ARMS:
            final = runs / f"{arm}-s{seed}.safetensors"
            result_path = runs / f"{arm}-s{seed}.json"
            stamp = {"arm": arm, "seed": seed, "recipe": cfg.recipe(), "data": cfg.data(),
                     **({"pretrain": cfg.seed()} if arm == "remap" else {}),
                     "spec": spec_json}
            if cached(result_path, stamp):
                step(f"{arm} seed {seed}: cached {result_path}")
                results[arm][seed] = json.loads(result_path.read_text())
                continue
            if arm == "remap":
                init = remapped
            else:
                init = runs / f"scratch-init-s{seed}.safetensors"
                random_backbone(spec_path, init, seed)
            step(f"{arm} seed {seed}: fnacli finetune ({cfg.epochs} epochs) + eval")
            t = time.monotonic()
            ft = json.loads(fnacli(
                ["finetune", init, "--task", "ssdlite", "--data", data, "-o", final,
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
            step(f"{arm} seed {seed}: AP {metrics['AP']:.3f} AP50 {metrics['AP50']:.3f}")
    return {"settings": asdict(cfg), "seed": seed_info, "runs": results,
            "summary": summarise(results), "machine": machine(threads),
            "seconds": round(time.monotonic() - start, 1)}


# -- numbers and the table ------------------------------------------------------------------


def summarise(results: dict[str, dict[int, dict]]) -> dict:
    """Per arm: AP/AP50 per seed, mean, std; and remap − scratch paired by seed."""
    out: dict = {}
    for arm, by_seed in results.items():
        seeds = sorted(by_seed)
        out[arm] = {"seeds": seeds}
        for key in ("AP", "AP50"):
            vals = [by_seed[s]["metrics"][key] for s in seeds]
            m, sd = mean_std(vals)
            out[arm][key] = {"values": vals, "mean": m, "std": sd}
    seeds = sorted(set(results["remap"]) & set(results["scratch"]))
    diff: dict = {"seeds": seeds}
    for key in ("AP", "AP50"):
        vals = [results["remap"][s]["metrics"][key] - results["scratch"][s]["metrics"][key]
                for s in seeds]
        m, sd = mean_std(vals)
        diff[key] = {"values": vals, "mean": m, "std": sd,
                     "remap_wins": sum(v > 0 for v in vals)}
    out["difference"] = diff
    return out


def _pm(stat: dict, signed: bool = False) -> str:
    fmt = "+.3f" if signed else ".3f"
    sd = "–" if stat["std"] is None else f"{stat['std']:.3f}"
    return f"{stat['mean']:{fmt}} ± {sd}"


def _each(stat: dict, signed: bool = False) -> str:
    return " ".join(f"{v:{'+.3f' if signed else '.3f'}}" for v in stat["values"])


def table(result: dict) -> Table:
    s, cfg = result["summary"], result["settings"]
    seeds = s["difference"]["seeds"]
    t = Table(title=f"remap vs random init: SSDLite, {cfg['epochs']} epochs at "
                    f"{cfg['size']}px, seeds {', '.join(map(str, seeds))}")
    for col in ("arm", "AP mean ± std", "AP50 mean ± std", "AP per seed", "AP50 per seed",
                "steps"):
        t.add_column(col, justify="left" if col == "arm" else "right")
    for arm in ARMS:
        steps = sorted({r["steps"] for r in result["runs"][arm].values()})
        t.add_row(arm, _pm(s[arm]["AP"]), _pm(s[arm]["AP50"]), _each(s[arm]["AP"]),
                  _each(s[arm]["AP50"]), "/".join(map(str, steps)))
    d = s["difference"]
    t.add_row("remap − scratch", _pm(d["AP"], True), _pm(d["AP50"], True),
              _each(d["AP"], True), _each(d["AP50"], True), "", end_section=True)
    t.caption = (f"remap better on AP in {d['AP']['remap_wins']}/{len(seeds)} seeds, on AP50 in "
                 f"{d['AP50']['remap_wins']}/{len(seeds)}; seed: "
                 f"{result['seed'].get('steps')} pretraining steps, held-out accuracy "
                 f"{result['seed'].get('val_accuracy', float('nan')):.1%}")
    return t




def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, help="runs per arm, seeds 0..N-1 [3; --quick 1]")
    p.add_argument("--epochs", type=int, help="fine-tuning epochs, both arms [4]")
    p.add_argument("--size", type=int, help="detector input side [160]")
    p.add_argument("--pretrain-seconds", type=float, help="seed pre-training budget [150]")
    p.add_argument("--pretrain-steps", type=int,
                   help="pre-train the seed for exactly N steps instead (machine-independent)")
    p.add_argument("--workdir", type=Path, default=Path(".cache/bench_remap_vs_scratch"),
                   help="cache of the data, seed and runs [%(default)s]")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per fnacli process [%(default)s]; 0: torch's default")
    p.add_argument("--quick", action="store_true",
                   help="tiny everything (smoke test, well under a minute; numbers meaningless)")
    p.add_argument("--fresh", action="store_true", help="delete WORKDIR first")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON on stdout")
    args = p.parse_args(argv)

    base = Settings(**QUICK) if args.quick else Settings()
    overrides = {k: v for k, v in {"seeds": args.seeds, "epochs": args.epochs, "size": args.size,
                                   "pretrain_seconds": args.pretrain_seconds,
                                   "pretrain_steps": args.pretrain_steps}.items()
                 if v is not None}
    for k, v in overrides.items():
        if v <= 0:
            p.error(f"--{k.replace('_', '-')}: must be positive, got {v}")
    if overrides.get("size", base.size) < 32:
        p.error("--size: at least 32 pixels")
    cfg = Settings(**{**asdict(base), **overrides})
    if args.fresh and args.workdir.exists():
        # only ever delete a work dir this script made (a typo must not wipe a folder)
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
