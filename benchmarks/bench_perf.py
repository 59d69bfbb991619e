"""The cost of fnacli's training and search paths, in one table (issue 16), measured honestly.

Every row times two sides A and B *interleaved* (A B, then B A, ... for ``--reps`` rounds after
a warm-up round), so load from other processes on a shared machine hits both sides alike; it
prints the median and the min-max of the per-round ratios A/B, with the target beside them.
Threads are fixed (``--threads``, default 1) and printed. Random weights and synthetic data: no
downloads. Rows:

- finetune: ``fnacli.train.fit`` (the loop of ``fnacli finetune``: progress bar, metrics,
  checkpoints) vs a plain hand-written loop, same model, data, batches and steps; at the step
  rows' batch and size (``--batch``/``--size``), where the loop's bookkeeping shows, and at a
  real batch (``--real-batch 16``, ``--real-size 320``), where it should not (≤ 1.02×);
- weight step: a supernet weight step on a sampled path vs a plain step of that path's
  network built on its own;
- α/β step (``fna`` and ``fna-channels``): full (FNA's weighted sum), full with
  ``--checkpoint-activations``, and ``sampled`` vs a plain training step of the space's
  largest network; memory is how much the peak resident set grows during one step (each
  side in a forked child, before any step ran);
- one-shot scoring: one candidate (BN recalibration + COCO evaluation, as
  ``fnacli search --strategy evolution`` does it) vs just its forward passes, and the same
  with 1 vs 2 gloo processes under torchrun;
- cost table: cold build of ``fna-channels`` SSDLite 320 (no cache at all), a build with
  the per-unit cache on disk (what `fnacli madds SPEC` meets after its first call), reload;
- imports: ``fnacli remap`` as a process vs ``python -c "import torch"``.

Usage::

    python benchmarks/bench_perf.py [--reps 5] [--threads 1] [--only finetune,lut,...] [--json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

NUM_CLASSES = 2
SECTIONS = ("finetune", "weight", "arch", "oneshot", "dist", "lut", "imports")


# -- timing ---------------------------------------------------------------------------------
def interleaved(sides: dict[str, Callable[[], object]], reps: int,
                sync: Callable[[], None] = lambda: None,
                each_round: Callable[[int], None] = lambda r: None) -> dict[str, list[float]]:
    """Seconds of each side per round; one untimed warm-up round, then ``reps`` rounds in a
    rotating order (A B C, B C A, ...) so drifting load hits every side alike.
    ``each_round(r)`` runs (untimed) before round r (-1: the warm-up)."""
    names = list(sides)
    each_round(-1)
    for n in names:
        sides[n]()
    sync()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        each_round(r)
        k = r % len(names)
        for n in names[k:] + names[:k]:
            t = time.perf_counter()
            sides[n]()
            sync()
            times[n].append(time.perf_counter() - t)
    return times


def spread(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


@dataclass
class Row:
    name: str
    a: str
    b: str
    a_s: list[float]
    b_s: list[float]
    target: str = ""
    ok: bool | None = None  # None: no target
    note: str = ""
    ratios: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.ratios and self.b_s:
            self.ratios = [x / y for x, y in zip(self.a_s, self.b_s, strict=True)]


def ratio_row(name: str, a: str, b: str, times: dict[str, list[float]], ka: str, kb: str,
              limit: float | None, note: str = "", at_least: bool = False) -> Row:
    """A/B per round, its median checked against ``≤ limit`` (``≥ limit`` with ``at_least``,
    e.g. a speed-up)."""
    row = Row(name, a, b, times[ka], times[kb], note=note)
    if limit is not None:
        med = statistics.median(row.ratios)
        row.ok = med >= limit if at_least else med <= limit
        row.target = f"{'≥' if at_least else '≤'} {limit:g}×"
    return row


# -- shared pieces --------------------------------------------------------------------------
def fake_batch(batch: int, size: int, seed: int = 0) -> tuple[list[torch.Tensor], list[dict]]:
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, size, size, generator=g) for _ in range(batch)]
    targets = []
    for _ in range(batch):
        xy = torch.rand(3, 2, generator=g) * size * 0.6
        wh = torch.rand(3, 2, generator=g) * size * 0.3 + 8
        targets.append({"boxes": torch.cat([xy, xy + wh], 1),
                        "labels": torch.randint(1, NUM_CLASSES + 1, (3,), generator=g)})
    return images, targets


def supernet_of(space_name: str):  # noqa: ANN201 - a Supernet
    from torchvision.models import mobilenet_v2

    from fnacli.checkpoint import from_state_dict
    from fnacli.nn.supernet import Supernet
    from fnacli.remap import supernet_state_from_seed
    from fnacli.spec import builtin_space

    torch.manual_seed(0)
    seed_state, seed_spec = from_state_dict(mobilenet_v2().state_dict(), "torchvision random")
    space = builtin_space(space_name)
    net = Supernet(space)
    net.load_state_dict(supernet_state_from_seed(space, seed_state, seed_spec))
    return net


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: tuple) -> None:
    if not model.training:  # as the search's weight step does
        model.train()
    loss = sum(model(*batch).values())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def synthetic_data(root: Path, train: int, val: int, size: int) -> Path:
    from fnacli.detection.synthetic import SynthConfig, generate

    data = root / f"synth-{train}-{val}-{size}"
    if not data.exists():
        generate(data, SynthConfig(train=train, val=val, size=size, classes=NUM_CLASSES, seed=0))
    return data


# -- rows -----------------------------------------------------------------------------------
def bench_finetune(args: argparse.Namespace, tmp: Path) -> list[Row]:
    """The loop's cost at the step rows' small batch (bookkeeping shows) and at a real one
    (batch 16, 320 px: what fnacli's per-step overhead costs in practice)."""
    return [finetune_row(args, tmp, args.batch, args.size, 16, 1.10),
            finetune_row(args, tmp, args.real_batch, args.real_size, 3, 1.02)]


def finetune_row(args: argparse.Namespace, tmp: Path, batch: int, size: int, steps: int,
                 limit: float) -> Row:
    from torch.utils.data import DataLoader

    from fnacli.detection.data import batch_to, collate, find_split, load_split
    from fnacli.detection.transforms import train_transform
    from fnacli.spec import load_arch
    from fnacli.tasks import build_detector
    from fnacli.train import EpochBatches, TrainConfig, fit

    data = synthetic_data(tmp, steps * batch, 4, size)
    ds = load_split(find_split(data, "train"), train=True, label_offset=1,
                    transform=train_transform("ssd"), seed=0)
    torch.manual_seed(0)
    model = build_detector(load_arch("mobilenetv2-0.35"), "ssdlite", NUM_CLASSES, (size, size))
    start = copy.deepcopy(model.state_dict())
    cfg = TrainConfig(epochs=1, batch_size=batch, lr=0.01, schedule="cosine", seed=0)
    steps = len(ds) // batch
    runs = [0]

    def ours() -> None:
        model.load_state_dict(start)
        runs[0] += 1
        d = tmp / f"fit-{batch}-{size}-{runs[0]}"
        d.mkdir()
        fit(model, ds, lambda m, b, dev: m(*batch_to(b, dev)), cfg, state_path=d / "state.pt",
            metrics_path=d / "metrics.jsonl", collate_fn=collate)

    def plain() -> None:
        model.load_state_dict(start)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        loader = DataLoader(ds, batch_sampler=EpochBatches(len(ds), batch, seed=0),
                            collate_fn=collate)
        model.train()
        for b in loader:
            loss = sum(model(*batch_to(b, "cpu")).values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()

    t = interleaved({"ours": ours, "plain": plain}, args.reps)
    return ratio_row(f"finetune loop ({steps} steps, batch {batch}, {size} px)",
                     "fnacli.train.fit", "plain loop", t, "ours", "plain", limit)


def bench_weight_step(args: argparse.Namespace) -> list[Row]:
    from fnacli.nn.supernet import path_to_arch
    from fnacli.search import arch as A
    from fnacli.tasks import build_detector

    net = supernet_of("fna")
    space = net.space
    det = build_detector(space.max_arch(), "ssdlite", NUM_CLASSES, (args.size, args.size),
                         backbone=net)
    opt = torch.optim.SGD(det.parameters(), lr=1e-4, momentum=0.9)
    batch = fake_batch(args.batch, args.size)
    g = torch.Generator().manual_seed(1)
    sides = {}
    for k in range(args.paths):
        path = A.sample_path(space, None, None, g)
        torch.manual_seed(0)
        ref = build_detector(path_to_arch(space, path), "ssdlite", NUM_CLASSES,
                             (args.size, args.size))
        ref_opt = torch.optim.SGD(ref.parameters(), lr=1e-4, momentum=0.9)

        def ours(path=path) -> None:  # noqa: ANN001
            net.set_path(path)
            train_step(det, opt, batch)

        sides[f"ours{k}"] = ours
        sides[f"plain{k}"] = lambda m=ref, o=ref_opt: train_step(m, o, batch)
    t = interleaved(sides, args.reps)
    a = [sum(t[f"ours{k}"][r] for k in range(args.paths)) for r in range(args.reps)]
    b = [sum(t[f"plain{k}"][r] for k in range(args.paths)) for r in range(args.reps)]
    return [ratio_row(f"weight step (fna, {args.paths} sampled paths)", "supernet, path",
                      "same net on its own", {"a": a, "b": b}, "a", "b", 1.10)]


def peak_growth(fn: Callable[[], object]) -> int:
    """Bytes the peak resident set grows by while ``fn`` runs once, in a forked child (so
    each side starts from the same heap: call it before any step ran in this process)."""
    import resource

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: measure, report, leave without cleanup
        try:
            with open("/proc/self/statm") as f:
                start = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            fn()
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            os.write(write, str(max(0, peak - start)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        text = f.read()
    os.waitpid(pid, 0)
    return int(text or 0)


def bench_arch_steps(args: argparse.Namespace, space_name: str) -> list[Row]:
    from fnacli.cost.lut import load_or_build_lut
    from fnacli.search import arch as A
    from fnacli.search.architect import ArchParams, _Frozen, cost_term
    from fnacli.search.gates import arch_step_generator, sampled_gates
    from fnacli.tasks import build_detector, get_task

    size = (args.size, args.size)
    net = supernet_of(space_name)
    space = net.space
    det = build_detector(space.max_arch(), "ssdlite", NUM_CLASSES, size, backbone=net)
    lut = load_or_build_lut(space, get_task("ssdlite"), size, NUM_CLASSES)
    alpha, beta = A.init_logits(space, 0)
    arch = ArchParams(space, alpha, beta)
    a_opt = torch.optim.Adam(arch.parameters(), lr=3e-4, betas=(0.5, 0.999))
    batch = fake_batch(args.batch, args.size)
    torch.manual_seed(0)
    plain_net = build_detector(space.max_arch(), "ssdlite", NUM_CLASSES, size)
    plain_opt = torch.optim.SGD(plain_net.parameters(), lr=1e-4, momentum=0.9)
    steps = [0]

    def arch_step(mode: str, checkpoint: bool = False) -> Callable[[], None]:
        def run() -> None:
            net.checkpoint_activations = checkpoint
            det.train()
            with _Frozen(det):
                a_p, b_p = arch.probs()
                if mode == "sampled":
                    steps[0] += 1
                    net.set_weighted(*sampled_gates(a_p, b_p, arch_step_generator(0, steps[0])))
                else:
                    net.set_weighted(a_p, b_p)
                loss = sum(det(*batch).values())
                loss = loss + cost_term(lut.expected_madds(a_p, b_p), "log", 0.15, 10.0, None)
                a_opt.zero_grad(set_to_none=True)
                loss.backward()
            a_opt.step()
            net.checkpoint_activations = False
        return run

    sides = {"plain": lambda: train_step(plain_net, plain_opt, batch),
             "full": arch_step("full"), "checkpointed": arch_step("full", True),
             "sampled": arch_step("sampled")}
    mem = {k: peak_growth(fn) for k, fn in sides.items()}  # before any step ran here
    mem["sampled"] = statistics.median([peak_growth(sides["sampled"]) for _ in range(4)])
    t = interleaved(sides, args.reps)
    gib = {k: v / 2 ** 30 for k, v in mem.items()}
    rows = [
        ratio_row(f"α/β step full ({space_name})", "weighted sum", "plain step", t, "full",
                  "plain", None, note=f"memory {mem['full'] / mem['plain']:.2f}× "
                                      f"({gib['full']:.2f} vs {gib['plain']:.2f} GiB)"),
        ratio_row(f"α/β step sampled ({space_name})", "2 sampled", "plain step", t, "sampled",
                  "plain", 2.0, note=f"memory {mem['sampled'] / mem['plain']:.2f}× "
                                     "(target ≤ 2×)"),
        ratio_row(f"α/β step checkpointed ({space_name})", "checkpointed", "full", t,
                  "checkpointed", "full", 1.3,
                  note=f"memory {mem['checkpointed'] / mem['full']:.2f}× of full "
                       "(target ≤ 0.5×)"),
    ]
    rows[1].ok = rows[1].ok and mem["sampled"] <= 2 * mem["plain"]
    rows[2].ok = rows[2].ok and mem["checkpointed"] <= 0.5 * mem["full"]
    for r in rows:
        r.note += f" [batch {args.batch}, {args.size} px]"
    return rows


def oneshot_setup(data: Path, calib_images: int, eval_images: int, size: int):  # noqa: ANN201
    from fnacli.detection.data import find_split, load_split
    from fnacli.search import evolution as E
    from fnacli.search.bn_recal import calibration_subset
    from fnacli.tasks import build_detector

    net = supernet_of("fna")
    det = build_detector(net.space.max_arch(), "ssdlite", NUM_CLASSES, (size, size),
                         backbone=net)
    val = calibration_subset(load_split(find_split(data, "val"), train=False, label_offset=1),
                             eval_images)
    calib = calibration_subset(load_split(find_split(data, "train"), train=True,
                                          label_offset=1), calib_images)
    return det, net, E.Encoding(net.space), calib, val


def bench_oneshot(args: argparse.Namespace, tmp: Path, size: int = 64,
                  compare_before: bool = True) -> list[Row]:
    from fnacli.detection.evaluate import evaluate
    from fnacli.search.bn_recal import calibration_batches, path_batchnorms, stats_forward
    from fnacli.search.oneshot import PathEvaluator
    from fnacli.train import recalibrate_bn

    data = synthetic_data(tmp, 16, 8, size)
    det, net, enc, calib, val = oneshot_setup(data, 4, 4, size)
    rng = random.Random(0)
    genomes = [enc.random(rng) for _ in range(args.reps + 1)]
    score = PathEvaluator(det, net, enc, calib, val, 4)
    val_batches = calibration_batches(score.val, 4)  # the decoded fitness images
    uncached = PathEvaluator(det, net, enc, calib, val, 4, cache_images=False)
    forward = stats_forward("cpu")
    state = {"i": 0}

    def genome() -> tuple:
        return genomes[state["i"] % len(genomes)]

    def ours() -> None:
        score(genome())

    def forwards() -> None:  # the passes scoring cannot avoid, on the same (cached) images:
        path = enc.path(genome())  # calibration with the path's BN in train mode, then eval
        net.set_path(path)
        bns = path_batchnorms(det, net, path, score.outside)
        with torch.no_grad():
            for m in bns:
                m.training = True
            for batch in score.batches:
                forward(det, batch)
            for m in bns:
                m.training = False
            for images, _ in val_batches:
                det(images)

    def before() -> None:  # the recipe before issue 16: every BN, images read per candidate
        net.set_path(enc.path(genome()))
        recalibrate_bn(det, calibration_batches(calib, 4), forward)
        evaluate(det, val, 4)

    def next_genome(r: int) -> None:  # every side of a round scores the same candidate
        state["i"] = r + 1

    sides = {"ours": ours, "forwards": forwards}
    if compare_before:
        sides |= {"uncached": lambda: uncached(genome()), "before": before}
    t = interleaved(sides, args.reps, each_round=next_genome)
    note = f"fna, {size} px, 4 calibration + 4 scoring images"
    first = ratio_row(f"one-shot scoring / candidate, {size} px", "recal + COCO eval",
                      "its forwards", t, "ours", "forwards", 1.5, note=note)
    if not compare_before:
        return [first]
    return [first,
            ratio_row("one-shot scoring, images not cached", "recal + COCO eval",
                      "its forwards", t, "uncached", "forwards", None, note=note),
            ratio_row("one-shot scoring before (all BN, no cache)", "recal + COCO eval",
                      "its forwards", t, "before", "forwards", None, note=note)]


def dist_worker(args: argparse.Namespace) -> None:
    """Under torchrun: score ``args.candidates`` genomes split over the processes."""
    import torch.distributed as dist

    from fnacli.search.oneshot import PathEvaluator, distributed_evaluate
    from fnacli.train import DistEnv

    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo")
    env = DistEnv(dist.get_rank(), dist.get_world_size(), dist.get_rank())
    det, net, enc, calib, val = oneshot_setup(Path(args.dist_worker), 4, 4, 64)
    rng = random.Random(0)
    genomes = [enc.random(rng) for _ in range(args.candidates)]
    run = distributed_evaluate(PathEvaluator(det, net, enc, calib, val, 4), env)
    run(genomes[:env.world])  # warm-up
    dist.barrier()
    t = time.perf_counter()
    results = []
    for lo in range(0, len(genomes), env.world):
        results += run(genomes[lo:lo + env.world])
    dist.barrier()
    if env.is_main:
        print(json.dumps({"seconds": time.perf_counter() - t, "scored": len(results)}))
    dist.destroy_process_group()


def bench_dist(args: argparse.Namespace, tmp: Path) -> list[Row]:
    data = synthetic_data(tmp, 16, 8, 64)

    def launch(n: int) -> Callable[[], float]:
        def run() -> float:
            out = subprocess.run(
                [sys.executable, "-m", "torch.distributed.run", "--standalone",
                 f"--nproc-per-node={n}", __file__, "--dist-worker", str(data),
                 "--threads", str(args.threads), "--candidates", str(args.candidates)],
                capture_output=True, text=True, check=True,
                env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
            return float(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
        return run

    seconds: dict[str, list[float]] = {"one": [], "two": []}
    reps = max(2, args.reps // 2)  # each launch imports torch twice over: fewer rounds
    for r in range(reps):
        for n, key in ((1, "one"), (2, "two")) if r % 2 == 0 else ((2, "two"), (1, "one")):
            seconds[key].append(launch(n)())
    return [ratio_row(f"one-shot scoring, 2 gloo processes ({args.candidates} candidates)",
                      "1 process", "2 processes", seconds, "one", "two", 1.6, at_least=True,
                      note=f"speed-up; {reps} rounds, scoring time only (no start-up)")]


def bench_lut(args: argparse.Namespace, tmp: Path) -> list[Row]:
    import fnacli.cost.lut as L
    import fnacli.cost.units as U
    import fnacli.detection.models  # noqa: F401 - imports are not the build
    from fnacli.spec import builtin_space
    from fnacli.tasks import get_task

    space = builtin_space("fna-channels")
    old = os.environ.get("FNACLI_CACHE_DIR")
    n = [0]
    cold, warm, reload = [], [], []
    U.unit_madds([(8, 8, 1, 1)])  # fvcore and the tracer imported
    try:
        for _ in range(args.reps):
            n[0] += 1
            os.environ["FNACLI_CACHE_DIR"] = str(tmp / f"lut{n[0]}")
            U.PP.clear()
            U._PP_DISK.clear()
            t = time.perf_counter()
            L.load_or_build_lut(space, get_task("ssdlite"), (320, 320), 80)
            cold.append(time.perf_counter() - t)
            t = time.perf_counter()
            L.load_or_build_lut(space, get_task("ssdlite"), (320, 320), 80)
            reload.append(time.perf_counter() - t)
            U.PP.clear()
            U._PP_DISK.clear()  # a new process: per-unit counts only on disk
            t = time.perf_counter()
            L.build_lut(space, get_task("ssdlite"), (320, 320), 80)
            warm.append(time.perf_counter() - t)
    finally:
        if old is None:
            os.environ.pop("FNACLI_CACHE_DIR", None)
        else:
            os.environ["FNACLI_CACHE_DIR"] = old
    cores, load = L._usable_cores(), os.getloadavg()[0]
    note = (f"fna-channels SSDLite 320, {cores} core{'s' if cores > 1 else ''}, load "
            f"{load:.1f} (a second process only below {cores - 1.5:g})")
    rows = [Row("cost table build, cold", "seconds", "", cold, [], "< 10 s",
                statistics.median(cold) < 10, note),
            Row("cost table build, per-unit cache warm", "seconds", "", warm, [], "", None,
                note + " (madds SPEC after its first call)"),
            Row("cost table reload", "seconds", "", reload, [], "< 0.1 s",
                statistics.median(reload) < 0.1, note)]
    return rows


def bench_imports(args: argparse.Namespace, tmp: Path) -> list[Row]:
    from torchvision.models import mobilenet_v2

    seed = tmp / "mbv2.pth"
    torch.save(mobilenet_v2().state_dict(), seed)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}

    def proc(argv: list[str]) -> Callable[[], None]:
        return lambda: subprocess.run([sys.executable, *argv], check=True, env=env,
                                      capture_output=True)

    remap = ["-m", "fnacli", "remap", str(seed), "--spec", "mobilenetv2-0.75", "-o",
             str(tmp / "t.safetensors"), "--force"]
    t = interleaved({"remap": proc(remap), "torch": proc(["-c", "import torch"])}, args.reps)
    return [ratio_row("fnacli remap (process)", "remap", "import torch", t, "remap", "torch",
                      1.3)]


# -- the table ------------------------------------------------------------------------------
def fmt_s(v: list[float]) -> str:
    if not v:
        return ""
    med, lo, hi = spread(v)
    return f"{med:.3g} s [{lo:.3g}-{hi:.3g}]"


def render(rows: list[Row], header: str) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(header), title_justify="left")
    for col in ("measurement", "A", "A time", "B", "B time", "A/B (min-max)", "target", "ok",
                "note"):
        table.add_column(col)
    for r in rows:
        ratio = ""
        if r.ratios:
            med, lo, hi = spread(r.ratios)
            ratio = f"{med:.2f}× [{lo:.2f}-{hi:.2f}]"
        ok = "" if r.ok is None else ("yes" if r.ok else "NO")
        table.add_row(*map(escape, (r.name, r.a, fmt_s(r.a_s), r.b, fmt_s(r.b_s), ratio,
                                    r.target, ok, r.note)))
    Console(stderr=True, width=220).print(table)


def header_text(args: argparse.Namespace) -> str:
    return (f"fnacli performance: {args.reps} interleaved rounds per row (median "
            f"[min-max]), {args.threads} torch thread{'s' if args.threads > 1 else ''}, "
            f"{os.cpu_count()} CPUs, torch {torch.__version__}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5, help="timed rounds per row (medians)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (fixed)")
    ap.add_argument("--size", type=int, default=128, help="image side of the step rows")
    ap.add_argument("--batch", type=int, default=2, help="batch of the step rows")
    ap.add_argument("--real-batch", type=int, default=16, help="batch of the second finetune row")
    ap.add_argument("--real-size", type=int, default=320, help="image side of that row")
    ap.add_argument("--paths", type=int, default=3, help="sampled paths of the weight row")
    ap.add_argument("--candidates", type=int, default=8, help="genomes of the gloo row")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"comma-separated sections: {', '.join(SECTIONS)}")
    ap.add_argument("--json", action="store_true", help="the rows as JSON on stdout")
    ap.add_argument("--dist-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.dist_worker:
        dist_worker(args)
        return
    torch.set_num_threads(args.threads)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        ap.error(f"--only: unknown sections {', '.join(sorted(unknown))}")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        os.environ.setdefault("FNACLI_CACHE_DIR", str(tmp / "cache"))
        steps = {"finetune": lambda: bench_finetune(args, tmp),
                 "weight": lambda: bench_weight_step(args),
                 "arch": lambda: [*bench_arch_steps(args, "fna"),
                                  *bench_arch_steps(args, "fna-channels")],
                 "oneshot": lambda: [*bench_oneshot(args, tmp),
                                     *bench_oneshot(args, tmp, 320, compare_before=False)],
                 "dist": lambda: bench_dist(args, tmp),
                 "lut": lambda: bench_lut(args, tmp),
                 "imports": lambda: bench_imports(args, tmp)}
        for name in SECTIONS:
            if name in only:
                t = time.perf_counter()
                rows += steps[name]()
                print(f"[{name}: {time.perf_counter() - t:.0f} s]", file=sys.stderr)
    header = header_text(args)
    render(rows, header)
    if args.json:
        print(json.dumps({"header": header, "rows": [asdict(r) for r in rows]}))


if __name__ == "__main__":
    main()
