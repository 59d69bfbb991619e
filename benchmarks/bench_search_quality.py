"""Does the search find better architectures? The papers' search-quality tables, on CPU.

On the ``context`` variant of the synthetic data (``fnacli data synth --variant context``:
every object is a dark shape of any kind and only a coloured ring *around* it gives its
class), with one pretrained MobileNetV2-0.5 seed and the quickstart's search space
(``recipes/spaces/fna-mbv2-0.5-demo.json``), every architecture is fine-tuned from the seed
remapped onto it, with one recipe and budget for all, over several seeds:

1. task check: hand-picked architectures (the seed's, the seed without the last layer of
   stages 2-5, all-k3_e3, all-k7_e3);
2. DetNAS Table 4 / FNA Table 3: the seed, the differentiable search's result, the
   evolutionary search's result and N random architectures within ±5% of a MAdds target
   below the seed's;
3. Jung et al. Table IV: non-overlapping vs overlapping channel masks in a width search;
4. Jung et al. Table III: search-step cost of one shared max-width block vs one block per
   width candidate (timed in-process, whole backbone);
5. FNA Table 6: remapping rules (width first/bn/std/l1, kernel center/dilate), same arch;
6. one-shot ranking quality: Kendall τ between the one-shot supernet's fitness (BN
   recalibrated, held-out images) and the stand-alone fine-tuned AP.

Everything runs through ``fnacli`` commands (subprocesses of this interpreter), except the
random sampling, item 4 and the supernet fitness of item 6, which use the library. Finished
pieces are cached in the work dir (``*.stamp.json`` records their settings), so an
interrupted run continues. Writes the raw numbers to ``--json-out`` and the tables into
``--doc`` (between its ``results`` markers). Usage::

    nice -n 10 python benchmarks/bench_search_quality.py [--quick] [--jobs 2] [--seeds 3]
        [--workdir .cache/bench_search_quality] [--doc docs/search-quality.md]
        [--json-out docs/search-quality.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import math
import os
import queue
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, run as a script or loaded
from benchlib import machine, mean_std  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "recipes" / "spaces" / "fna-mbv2-0.5-demo.json"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
NUM_CLASSES = 3
WIDTH_RULES = ("first", "bn", "std", "l1")
KERNEL_RULES = ("center", "dilate")
MASKS = ("non-overlapping", "overlapping")
_IN_PROCESS = threading.Lock()
# item 1's architectures besides the seed and the uniform ones: staged_arch(early, late, shallow)
# the one-shot searches: arm -> (file tag, how its supernet was trained)
ONESHOT_ARMS = {"evolution": ("", "the search recipe (RMSProp, the paper's lr)"),
                "evolution-ft-recipe": ("-finetune", "the fine-tuning's SGD lr, warm-up and "
                                                      "clipping")}
# the differentiable searches: arm -> (α/β step, weight steps on the fine-tuning recipe?, the
# short-budget settings: --arch-lr auto and a two-sided target?)
DIFFERENTIABLE_ARMS = {"differentiable": ("full", False, False),
                       "differentiable-sampled": ("sampled", False, False),
                       "differentiable-ft-recipe": ("full", True, False),
                       "differentiable-short-budget": ("full", True, True)}
HAND_PICKED = {"seed-shallow": ("k3_e6", "k3_e6", True),
               "early-e3-late-k7": ("k3_e3", "k7_e6", False),
               "shallow-late-k7": ("k3_e6", "k7_e6", True)}


@dataclass(frozen=True)
class Settings:
    """Everything that determines the numbers."""

    seeds: int = 3
    # data: context variant, one split for training, one for the final evaluation, and a
    # separate held-out set (another data seed) that only the evolutionary fitness sees
    train: int = 256
    val: int = 128
    heldout: int = 64
    image_size: int = 96
    # the seed
    width: float = 0.5
    pretrain_steps: int = 500
    pretrain_size: int = 64
    # the fine-tuning recipe: every arm, every item
    # (24 epochs: at 6, every arm was still far from converged and the seed's head start
    # decided; a 100-step warm-up and clipping at norm 10 keep architectures with many new
    # weights from diverging in the first epochs, which at lr 0.03 without them took some runs
    # of the same architecture to AP 0.02 and others to 0.25)
    epochs: int = 24
    size: int = 80
    batch_size: int = 16
    lr: float = 0.03
    warmup: int = 100
    clip_grad: float = 10.0
    augment: str = "ssdlite"
    # the MAdds target (a fraction of the seed's detector MAdds) and the random baseline
    target_fraction: float = 0.9
    window: float = 0.05
    random_archs: int = 5
    # searches: FNA's SSDLite schedule shape (α/β from half-way), the quickstart's α/β lr and
    # step rhythm; DetNAS-style one-shot supernet training as long as a fine-tune, evolution
    search_seeds: int = 1  # searches per searched arm (arms -s1, -s2, … beyond the first)
    search_epochs: int = 24
    search_warmup: int = 12
    arch_lr: float = 0.05
    oneshot_epochs: int = 24
    population: int = 16
    parents: int = 4
    generations: int = 4
    calib_images: int = 64
    # item 4: timed repetitions, width-candidate counts
    timing_iters: int = 3
    timing_widths: tuple[int, ...] = (3, 6)

    def recipe(self) -> list:
        return ["--epochs", self.epochs, "--batch-size", self.batch_size, "--size", self.size,
                "--optimizer", "sgd", "--lr", self.lr, "--schedule", "cosine",
                "--warmup-iters", self.warmup, "--clip-grad", self.clip_grad,
                "--augment", self.augment]


QUICK = dict(seeds=1, train=16, val=8, heldout=4, image_size=64, pretrain_steps=2,
             pretrain_size=32, epochs=1, size=64, batch_size=8, warmup=0, random_archs=2,
             search_epochs=1, search_warmup=0, oneshot_epochs=1, population=2, parents=1,
             generations=1, calib_images=4, timing_iters=1, timing_widths=(2,))


class Bench:
    def __init__(self, cfg: Settings, work: Path, threads: int, jobs: int, log: Callable,
                 in_process: bool = False) -> None:
        self.cfg, self.work, self.threads, self.jobs, self.log = cfg, work, threads, jobs, log
        self.in_process = in_process
        self.report_only = False
        self.data, self.heldout = work / "data", work / "heldout"
        self.seed = work / "seed.pth"
        self._lut: dict = {}

    # -- running fnacli -----------------------------------------------------------------------
    def fnacli(self, *args: object, log: Path | None = None) -> str:
        """``fnacli ARGS``'s stdout: a subprocess of this interpreter (its stderr into ``log``
        when given), or (``in_process``, the smoke test: no torch import per command) the same
        app called in this process."""
        argv = list(map(str, args))
        if self.in_process:
            return self._in_process(argv)
        cmd = [sys.executable, "-m", "fnacli", *argv]
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads))
        with open(log or os.devnull, "w") as err:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        if proc.returncode:
            tail = (log.read_text() if log else "").strip().splitlines()[-3:]
            raise SystemExit(f"bench_search_quality: `fnacli {' '.join(argv)}` exited "
                             f"{proc.returncode}: {' | '.join(tail)}")
        return proc.stdout

    @staticmethod
    def _in_process(argv: list[str]) -> str:
        from fnacli.cli.app import app

        out, err = io.StringIO(), io.StringIO()
        try:  # one command at a time: sys.stdout/stderr are process-wide
            with _IN_PROCESS, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                app(args=argv, standalone_mode=False)
        except Exception as e:  # noqa: BLE001 - any failure ends the benchmark with its line
            raise SystemExit(f"bench_search_quality: `fnacli {' '.join(argv)}` failed: "
                             f"{type(e).__name__}: {e}") from None
        return out.getvalue()

    def once(self, path: Path, stamp: object, make: Callable[[], object],
             inputs: Sequence[Path] = ()) -> None:
        """Make ``path`` unless it exists with the same stamp: its settings, fnacli's version
        and the content of the files it is made from (``inputs``), never their names alone;
        with ``report_only``, raise ``Missing`` instead of making it."""
        s = path.with_name(path.name + ".stamp.json")
        key = stamp_text(stamp, inputs)
        if path.exists() and s.exists() and s.read_text() == key:
            return
        if self.report_only:
            raise Missing(path)
        make()
        s.write_text(key)

    def cached_json(self, name: str, stamp: object, compute: Callable[[], object],
                    inputs: Sequence[Path] = ()) -> object:
        """``compute()``, kept in WORKDIR/name with its stamp (reused in --report-only)."""
        path = self.work / name
        s = path.with_name(path.name + ".stamp.json")
        key = stamp_text(stamp, inputs)
        if not (self.report_only and path.exists() and s.exists() and s.read_text() == key):
            path.write_text(json.dumps(compute()))
            s.write_text(key)
        return json.loads(path.read_text())

    # -- shared pieces --------------------------------------------------------------------------
    def prepare(self) -> None:
        c = self.cfg
        self.work.mkdir(parents=True, exist_ok=True)
        for folder, n_train, n_val, seed in ((self.data, c.train, c.val, 0),
                                             (self.heldout, 1, c.heldout, 1)):
            self.once(folder, ["data", n_train, n_val, c.image_size, seed], lambda f=folder,
                      t=n_train, v=n_val, s=seed: self.fnacli(
                          "data", "synth", f, "--variant", "context", "--train", t, "--val", v,
                          "--size", c.image_size, "--seed", s, "--format", "png", "--force"))
        self.log("data ready")
        info = self.work / "seed.json"
        self.once(self.seed, ["seed", c.width, c.pretrain_steps, c.pretrain_size],
                  lambda: info.write_text(self.fnacli(
                      "pretrain-seed", self.seed, "--width", c.width, "--size",
                      c.pretrain_size, "--seconds", 7 * 86_400, "--max-steps",
                      c.pretrain_steps, "--seed", 0, "--json", "--force")))
        self.seed_info = json.loads(info.read_text())
        self.log(f"seed ready ({self.seed_info.get('steps')} steps)")

    def lut(self, space):  # -> CostTable of the detector at the fine-tuning size
        from fnacli.cost.lut import load_or_build_lut
        from fnacli.tasks import get_task

        key = space.to_json()
        if key not in self._lut:
            self._lut[key] = load_or_build_lut(space, get_task("ssdlite"),
                                               (self.cfg.size, self.cfg.size), NUM_CLASSES)
        return self._lut[key]

    def madds(self, arch) -> float:
        from fnacli.spec import load_space

        return self.lut(load_space(str(SPACE))).arch_madds(arch)

    def write_arch(self, name: str, arch) -> Path:
        path = self.work / "archs" / f"{name}.json"
        path.parent.mkdir(exist_ok=True)
        text = arch.to_json()
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        return path

    # -- fine-tuning and comparing: ``fnacli compare`` ---------------------------------------
    def compare(self, archs: dict[str, Path], random_archs: int = 0, target: float = 0.0,
                width: str = "first", kernel: str = "center", log_name: str = "compare") -> dict:
        """``fnacli compare`` of the seed's architecture and ``archs`` (plus ``random_archs``
        drawn within the window of ``target``), every fine-tuning run cached by content in
        WORKDIR/compare. ``jobs`` processes share the work dir (each claims a run)."""
        c = self.cfg
        args = ["compare", self.seed, *[f"{n}={p}" for n, p in archs.items()], "-w",
                self.work / "compare", "--task", "ssdlite", "--data", self.data, *c.recipe(),
                "--seeds", c.seeds, "--width", width, "--kernel", kernel, "--workers", 0,
                "--threads", self.threads, "--device", "cpu", "--json"]
        if random_archs:
            args += ["--random", random_archs, "--space", SPACE, "--target-madds", int(target),
                     "--window", c.window, "--random-seed", 0]
        if self.report_only:
            args.append("--report-only")
        procs = 1 if self.in_process or self.report_only else self.jobs
        logs = [self.work / f"{log_name}-{i}.log" for i in range(procs)]
        with ThreadPoolExecutor(procs) as pool:
            outs = list(pool.map(lambda log: self.fnacli(*args, log=log), logs))
        return json.loads(outs[0])

    # -- searches -----------------------------------------------------------------------------
    def supernet(self, space: Path, masks: str = "non-overlapping") -> Path:
        out = self.work / "search" / f"super-{space.stem}-{masks}.safetensors"
        out.parent.mkdir(exist_ok=True)
        self.once(out, ["expand", masks], lambda: self.fnacli(
            "expand", self.seed, "--space", space, "--masks", masks, "-o", out, "--force"),
            inputs=[self.seed, space])
        return out

    def differentiable(self, supernet: Path, target: float, arm: str = "differentiable",
                       seed: int = 0) -> tuple[Path, float]:
        """FNA's search (search seed ``seed``) as ``DIFFERENTIABLE_ARMS[arm]`` sets it up:
        the α/β step, the weight steps' recipe and the α/β settings."""
        c = self.cfg
        step, ft_weights, short = DIFFERENTIABLE_ARMS[arm]
        tag = arm.removeprefix("differentiable") + (f"-s{seed}" if seed else "")
        out = supernet.with_name(supernet.stem.replace("super", "diff") + tag + ".safetensors")
        arch = out.with_suffix(".json")
        extra = [*(["--arch-step", step] if step != "full" else []),
                 *(self.finetune_weights() if ft_weights else []),
                 *(["--arch-lr", "auto", "--target-side", "both"] if short
                   else ["--arch-lr", c.arch_lr])]

        def make() -> None:
            t = time.monotonic()
            self.fnacli("search", supernet, "--task", "ssdlite", "--data", self.data, "-o", out,
                        "--size", c.size, "--epochs", c.search_epochs, "--warmup-epochs",
                        c.search_warmup, "--batch-size", c.batch_size, "--workers", 0,
                        "--seed", seed, "--arch-every", 1, "--target-madds", int(target),
                        "--cost-scope", "detector", *extra, "--device", "cpu", "--force")
            # every arm of a matched-cost table lies in the same window: the most likely
            # architecture within it (derive --min/--max-madds), as the random ones are drawn
            arch.write_text(self.fnacli("derive", out, *self.window_args(target)))
            (arch.parent / (arch.stem + ".seconds")).write_text(f"{time.monotonic() - t:.1f}")

        # the target is the detector's MAdds, so the cost is taken over the detector
        self.once(arch, ["diff", "detector", c.search_epochs, c.search_warmup, c.batch_size,
                         c.size, int(target), seed, extra, self.window_args(target)], make,
                  inputs=[supernet, self.data])
        return arch, float((arch.parent / (arch.stem + ".seconds")).read_text())

    def finetune_weights(self) -> list:
        """The weight-side flags of the fine-tuning recipe, for a search's weight steps (the
        step schedule stays the search's)."""
        c = self.cfg
        return ["--optimizer", "sgd", "--lr", c.lr, "--warmup-iters", c.warmup, "--clip-grad",
                c.clip_grad, "--augment", c.augment]

    def evolution(self, supernet: Path, target: float, recipe: str = "search", seed: int = 0
                  ) -> tuple[Path, Path, float]:
        """DetNAS's one-shot search (search seed ``seed``). ``recipe`` "search": the supernet
        trains with the task's search recipe (the papers'); "finetune": with the fine-tuning's
        optimiser, lr, warm-up and clipping (the step schedule stays the search's). The
        fitness images are the search's default (``fnacli.search.fitness_data.default_count``:
        77 of 256 training images since issue #22, 51 before), a seeded choice held out of the
        supernet's training; the held-out data set is
        only the search's reporting split, which the fitness images must not overlap."""
        c = self.cfg
        tag = ("" if recipe == "search" else f"-{recipe}") + (f"-s{seed}" if seed else "")
        out = self.work / "search" / f"evo{tag}.safetensors"
        trained = self.work / "search" / f"oneshot{tag}.safetensors"
        arch = out.with_suffix(".json")
        weights = [] if recipe == "search" else self.finetune_weights()

        def make() -> None:
            t = time.monotonic()
            self.fnacli("search", supernet, "--strategy", "evolution", "--task", "ssdlite",
                        "--data", self.data, "--val-ann",
                        self.heldout / "annotations" / "instances_val.json", "--val-images",
                        self.heldout / "val", "-o", out, "--trained", trained, "--size", c.size,
                        "--epochs", c.oneshot_epochs, "--batch-size", c.batch_size,
                        "--workers", 0, "--seed", seed, "--population", c.population,
                        "--parents", c.parents, "--generations", c.generations,
                        *self.window_args(target), "--calib-images",
                        c.calib_images, "--calib-batch", c.batch_size, "--device", "cpu",
                        *weights, "--force")
            arch.write_text(self.fnacli("derive", out))
            (arch.parent / f"evo{tag}.seconds").write_text(f"{time.monotonic() - t:.1f}")

        self.once(arch, ["evo", "detector", c.oneshot_epochs, c.population, c.parents,
                         c.generations, c.calib_images, c.batch_size, c.size, int(target), seed,
                         self.window_args(target), *([weights] if weights else [])], make,
                  inputs=[supernet, self.data, self.heldout])
        return arch, trained, float((arch.parent / f"evo{tag}.seconds").read_text())

    def window_args(self, target: float) -> list:
        """The matched-cost window, detector MAdds within ±window of the target."""
        w = self.cfg.window
        return ["--min-madds", int(target * (1 - w)), "--max-madds", int(target * (1 + w)),
                "--cost-scope", "detector"]

    # -- item 4: the search-step cost, shared max-width block vs one block per width --------
    def width_cost(self) -> list[dict]:
        import torch

        torch.set_num_threads(max(1, self.threads))
        return [measure_width_blocks(channel_space(k), self.cfg.size, self.cfg.batch_size,
                                     self.cfg.timing_iters) for k in self.cfg.timing_widths]

    # -- item 6: fitness of architectures on the trained one-shot supernet --------------------
    def oneshot_fitness(self, trained: Path, archs: dict[str, object]) -> dict[str, float]:
        import torch

        from fnacli.detection.data import find_split, load_split
        from fnacli.search.arch import path_of_arch
        from fnacli.search.bn_recal import calibration_subset
        from fnacli.search.evolution import Encoding
        from fnacli.search.oneshot import PathEvaluator, build_oneshot_detector, load_trained
        from fnacli.tasks import get_task

        torch.set_num_threads(max(1, self.threads))
        ckpt, info = load_trained(trained)
        offset = get_task("ssdlite").label_offset
        train = load_split(find_split(self.data, "train", None, None), train=True,
                           label_offset=offset)
        val = load_split(find_split(self.heldout, "val", None, None), train=False,
                         label_offset=offset)
        calib = calibration_subset(train, self.cfg.calib_images, 0)
        detector, supernet = build_oneshot_detector(ckpt, "ssdlite", info.num_classes,
                                                    info.size, str(trained))
        enc = Encoding(ckpt.space)
        score = PathEvaluator(detector, supernet, enc, calib, val, self.cfg.batch_size, 0,
                              "cpu")
        return {name: score(enc.encode(path_of_arch(ckpt.space, arch)))["AP"]
                for name, arch in archs.items()}


def stamp_text(stamp: object, inputs: Sequence[Path] = ()) -> str:
    """What a cached piece was made from: its settings, fnacli's version and the content
    fingerprint of every input file or folder."""
    from fnacli import __version__
    from fnacli.fingerprint import paths_fingerprint

    return json.dumps({"settings": stamp, "fnacli": __version__,
                       "inputs": [paths_fingerprint([p]) for p in inputs]},
                      sort_keys=True, default=str)


class Missing(Exception):
    """--report-only: a piece that has not been made yet."""


class Jobs:
    """``workers`` threads running submitted calls, lowest priority number first (FIFO within
    one priority): searches before fine-tuning, every arm's seed 0 before any seed 1."""

    def __init__(self, workers: int) -> None:
        self.queue: queue.PriorityQueue = queue.PriorityQueue()
        self.count = itertools.count()
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(workers)]
        for t in self.threads:
            t.start()

    def submit(self, priority: int, fn: Callable, *args: object) -> Future:
        fut: Future = Future()
        self.queue.put((priority, next(self.count), fn, args, fut))
        return fut

    def _work(self) -> None:
        while True:
            _, _, fn, args, fut = self.queue.get()
            if fn is None:
                return
            try:
                fut.set_result(fn(*args))
            except BaseException as e:  # noqa: BLE001 - handed to whoever waits on it
                fut.set_exception(e)

    def close(self) -> None:
        for _ in self.threads:
            self.queue.put((math.inf, next(self.count), None, (), None))


# -- the pieces that use the library -------------------------------------------------------------
def uniform_arch(op: str):  # -> ArchSpec: MobileNetV2-0.5's depths and widths, op everywhere
    from fnacli.spec import ArchSpec, Op, Stage, mobilenetv2

    base = mobilenetv2(0.5)
    stages = [base.stages[0]] + [Stage(s.out, s.stride, (Op.parse(op),) * s.depth)
                                 for s in base.stages[1:]]
    return ArchSpec(base.stem_out, base.stem_stride, tuple(stages), base.head_out)


def staged_arch(early: str = "k3_e6", late: str = "k3_e6", shallow: bool = False):  # -> ArchSpec
    """MobileNetV2-0.5 with op ``early`` in stages 1-3 and ``late`` in stages 4-6 (the
    low-resolution ones, where a large kernel costs least); ``shallow`` drops the last layer
    of stages 2-5. The defaults are the seed."""
    from fnacli.spec import ArchSpec, Op, Stage, mobilenetv2

    base = mobilenetv2(0.5)
    stages = [base.stages[0]]
    for i, st in enumerate(base.stages[1:], start=1):
        depth = st.depth - 1 if shallow and 2 <= i <= 5 else st.depth
        stages.append(Stage(st.out, st.stride, (Op.parse(early if i <= 3 else late),) * depth))
    return ArchSpec(base.stem_out, base.stem_stride, tuple(stages), base.head_out)


def channel_space(k: int, op: str = "k3_e6"):  # -> SpaceSpec
    """A Jung-style width space on MobileNetV2-0.5: the seed's op and depths in every stage,
    ``k`` output-width candidates per searchable stage, from half to the full width."""
    from fnacli.spec import SpaceSpec, SpaceStage, make_divisible, mobilenetv2

    base = mobilenetv2(0.5)
    stages = [SpaceStage((base.stages[0].out,), 1, 1, fixed_ops=base.stages[0].ops)]
    for st in base.stages[1:]:
        fr = [0.5 + 0.5 * i / (k - 1) for i in range(k)] if k > 1 else [1.0]
        outs = tuple(sorted({make_divisible(st.out * f, 4) for f in fr}))
        stages.append(SpaceStage(outs, st.stride, st.depth, (op,)))
    return SpaceSpec(base.stem_out, base.stem_stride, tuple(stages), base.head_out,
                     f"mbv2-0.5-widths{k}")


def measure_width_blocks(space, size: int, batch: int, iters: int) -> dict:
    """One relaxed (β-weighted) backbone forward + backward to β, the whole network:

    - shared: fnacli's supernet, one max-width block per layer whose output is multiplied by
      the β-mixed channel masks (Jung et al.);
    - separate: one MBConv per width candidate and layer (``fnacli.nn.blocks.MBConv``), each
      at its own width, whose outputs are zero-padded to the max width and mixed by β; the
      next stage's blocks take that mixed map.

    Also the weight step of a sampled path (the same in both: one block runs) on the detector,
    so the whole search step (weight step + α/β step) can be compared."""
    import torch

    from fnacli.nn.blocks import MBConv
    from fnacli.nn.supernet import Supernet, width_choices
    from fnacli.search import arch as A
    from fnacli.tasks import build_detector

    torch.manual_seed(0)
    net = Supernet(space, with_head=False).train()  # the α/β step of the backbone alone
    x = torch.rand(batch, 3, size, size)
    _, beta0 = A.init_logits(space, 0)
    betas = {s: b.clone().requires_grad_(True) for s, b in beta0.items()}

    def shared() -> None:
        b = {s: torch.softmax(v, 0) for s, v in betas.items()}
        net.set_weighted({}, b)
        sum(f.mean() for f in net(x).values()).backward()

    blocks: dict = {}
    cin = space.stem_out
    for s, st in enumerate(space.stages):
        for c in st.outs:
            layers = []
            for i in range(st.layers):
                op = st.layer_candidates(i)[0]
                k, e = int(op[1]), int(op.split("_e")[1])
                layers.append(MBConv(cin if i == 0 else c, c, k, e, st.stride if i == 0 else 1))
            blocks[(s, c)] = torch.nn.Sequential(*layers)
        cin = max(st.outs)
    stem = net.stem

    def separate() -> None:
        h = stem(x)
        loss = 0
        for s, st in enumerate(space.stages):
            if len(st.outs) == 1:
                h = blocks[(s, st.outs[0])](h)
            else:
                p = torch.softmax(betas[s], 0)
                width = max(st.outs)
                h = sum(p[j] * torch.nn.functional.pad(blocks[(s, c)](h),
                                                       (0, 0, 0, 0, 0, width - c))
                        for j, c in enumerate(st.outs))
            loss = loss + h.mean()
        loss.backward()

    full = Supernet(space).train()
    det = build_detector(space.max_arch(), "ssdlite", NUM_CLASSES, (size, size),
                         backbone=full).train()
    opt = torch.optim.SGD(det.parameters(), lr=1e-4, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, size, size, generator=g) for _ in range(batch)]
    targets = [{"boxes": torch.tensor([[4.0, 4.0, size / 2, size / 2]]),
                "labels": torch.tensor([1])} for _ in range(batch)]

    def weight_step() -> None:
        full.set_path(A.sample_path(space, None, None, g))
        loss = sum(det(images, targets).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t_shared, t_sep = timed(shared, iters), timed(separate, iters)
    t_weight = timed(weight_step, iters)
    widths = [len(o) for _, o in width_choices(space)]
    return {"space": space.name, "widths_per_stage": widths, "size": size, "batch": batch,
            "shared_s": t_shared, "separate_s": t_sep, "weight_step_s": t_weight,
            "arch_step_speedup": t_sep / t_shared,
            "search_step_speedup": (t_weight + t_sep) / (t_weight + t_shared)}


def timed(fn: Callable[[], object], iters: int) -> float:
    """Median seconds of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# -- statistics ------------------------------------------------------------------------------


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's τ-b (ties in either ranking handled as in scipy.stats.kendalltau)."""
    n, conc, disc, ta, tb = len(a), 0, 0, 0, 0
    for i in range(n):
        for j in range(i + 1, n):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ta += 1
            elif db == 0:
                tb += 1
            elif (da > 0) == (db > 0):
                conc += 1
            else:
                disc += 1
    denom = math.sqrt((conc + disc + ta) * (conc + disc + tb))
    return (conc - disc) / denom if denom else float("nan")


def summary(runs: list[dict]) -> dict:
    out: dict = {"seeds": len(runs), "steps": sorted({r["steps"] for r in runs})}
    for key in ("AP", "AP50"):
        vals = [r["metrics"][key] for r in runs]
        m, sd = mean_std(vals)
        out[key] = {"values": vals, "mean": m, "std": sd}
    return out


# -- the whole benchmark ----------------------------------------------------------------------
def run(cfg: Settings, work: Path, threads: int, jobs: int, log: Callable,
        in_process: bool = False, report_only: bool = False) -> dict:
    from fnacli.spec import ArchSpec, load_arch, mobilenetv2

    start = time.monotonic()
    b = Bench(cfg, work, threads, 1 if in_process else jobs,
              lambda m: log(f"{time.monotonic() - start:6.0f}s {m}"), in_process)
    b.report_only = report_only
    try:
        b.prepare()
    except Missing as e:
        raise SystemExit(f"bench_search_quality: --report-only: {e} is not made yet") from None
    seed_arch = mobilenetv2(cfg.width)
    seed_madds = b.madds(seed_arch)
    target = cfg.target_fraction * seed_madds
    b.log(f"seed MAdds {seed_madds / 1e6:.2f}M, target {target / 1e6:.2f}M ±{cfg.window:.0%}")
    archs: dict[str, object] = {"seed": seed_arch, "all-k3_e3": uniform_arch("k3_e3"),
                                "all-k7_e3": uniform_arch("k7_e3"),
                                **{n: staged_arch(*a) for n, a in HAND_PICKED.items()}}
    timings: dict[str, float] = {}
    work_queue = Jobs(b.jobs)

    # the searches (items 2-3), search seeds 0..search_seeds-1 of every searched arm
    super_ops = b.supernet(SPACE)
    width_space = b.work / "archs" / "width-space.json"
    width_space.parent.mkdir(exist_ok=True)
    width_space.write_text(channel_space(3).to_json())
    searches: dict[str, Future] = {}
    for s in range(cfg.search_seeds):
        tag = f"-s{s}" if s else ""
        for arm in DIFFERENTIABLE_ARMS:
            searches[f"{arm}{tag}"] = work_queue.submit(s, b.differentiable, super_ops, target,
                                                        arm, s)
        for arm in ONESHOT_ARMS:
            searches[f"{arm}{tag}"] = work_queue.submit(
                s, b.evolution, super_ops, target,
                "search" if arm == "evolution" else "finetune", s)
    for masks in MASKS:
        searches[f"width-{masks}"] = work_queue.submit(
            0, b.differentiable, b.supernet(width_space, masks), target)
    width_archs, trained = {}, {}
    for name, fut in searches.items():
        try:
            out = fut.result()
        except Missing as e:
            raise SystemExit(f"bench_search_quality: --report-only: {e} is not made yet"
                             ) from None
        timings[name] = out[-1]
        if name in ONESHOT_ARMS:
            trained[name] = out[1]
        arch = load_arch(str(out[0]))
        (width_archs if name.startswith("width-") else archs)[name] = arch
        b.log(f"{name} search done ({timings[name]:.0f} s): {b.madds(arch) / 1e6:.2f}M MAdds")
    work_queue.close()

    # fine-tuning and the paired comparisons: fnacli compare (items 1-3, 5)
    b.log(f"fine-tuning: {len(archs)} architectures and {cfg.random_archs} random ones within "
          f"±{cfg.window:.0%} of the target, {cfg.seeds} seeds each")
    paths = {n: b.write_arch(n, a) for n, a in archs.items() if n != "seed"}
    main = b.compare(paths, cfg.random_archs, target)
    arms = {a["name"]: a for a in main["arms"]}
    for n, a in arms.items():
        if n.startswith("random-"):
            archs[n] = ArchSpec.from_dict(a["spec"])
    widths = b.compare({n: b.write_arch(n, a) for n, a in width_archs.items()},
                       log_name="compare-widths")
    arms.update({a["name"]: a for a in widths["arms"] if a["name"] != "seed"})
    for w, k in [(w, "center") for w in WIDTH_RULES] + [("first", "dilate")]:
        rule = b.compare({"all-k7_e3": paths["all-k7_e3"]}, width=w, kernel=k,
                         log_name=f"compare-{w}-{k}")
        arms[f"rule {w}/{k}"] = next(a for a in rule["arms"] if a["name"] == "all-k7_e3")
    steps = cfg.epochs * (cfg.train // cfg.batch_size)
    runs = {n: [{"steps": steps, **a["runs"][str(s)]} for s in range(cfg.seeds)
                if str(s) in a["runs"]] for n, a in arms.items()}
    missing = {n: cfg.seeds - len(r) for n, r in runs.items() if len(r) < cfg.seeds}
    if missing:
        b.log(f"--report-only: runs not made yet: {missing}")
    runs = {n: r for n, r in runs.items() if r}
    stats = {n: summary(r) for n, r in runs.items()}
    significance = {n: {"vs_seed": a.get("vs_seed"), "vs_best_random": a.get("vs_best_random")}
                    for n, a in arms.items()}
    madds = {n: b.madds(a) for n, a in {**archs, **width_archs}.items()}

    b.log("item 4: shared max-width block vs one block per width")
    width_cost = b.cached_json("width_cost.json", [cfg.size, cfg.batch_size, cfg.timing_iters,
                                                   cfg.timing_widths], b.width_cost)

    b.log("item 6: one-shot fitness of every architecture in the space")
    ranking = {}
    for arm, (tag, label) in ONESHOT_ARMS.items():
        fitness = b.cached_json(f"fitness{tag}.json",
                                [cfg.calib_images, cfg.heldout,
                                 {n: a.to_dict() for n, a in archs.items()}],
                                lambda arm=arm: b.oneshot_fitness(trained[arm], archs),
                                inputs=[trained[arm], b.data, b.heldout])
        names = [n for n in fitness if n in stats]
        ranking[arm] = {"supernet": label, "fitness_AP": fitness, "archs": names,
                        "kendall_tau": kendall_tau([fitness[n] for n in names],
                                                   [stats[n]["AP"]["mean"] for n in names])}
    return {"settings": asdict(cfg), "seed": b.seed_info, "seed_madds": seed_madds,
            "target_madds": target, "madds": madds,
            "archs": {n: a.to_dict() for n, a in {**archs, **width_archs}.items()},
            "runs": runs, "summary": stats, "significance": significance,
            "best_random": main["best_random"], "search_seconds": timings,
            "width_cost": width_cost,
            "ranking": ranking["evolution"], "ranking_ft_recipe": ranking["evolution-ft-recipe"],
            "missing_runs": missing,
            "machine": machine(threads), "seconds": round(time.monotonic() - start, 1)}


# -- the Markdown ------------------------------------------------------------------------------
def _pm(stat: dict) -> str:
    sd = "–" if stat["std"] is None else f"{stat['std']:.3f}"
    return f"{stat['mean']:.3f} ± {sd}"


def _paired(p: dict | None) -> str:
    """A paired comparison: Δ mean, the t-test's p (bold when below 0.05), seeds won/lost."""
    if not p:
        return ""
    pt = "–" if p["p_t"] is None else f"{p['p_t']:.3f}"
    if p["p_t"] is not None and p["p_t"] < 0.05:
        pt = f"**{pt}**"
    return f"{p['mean']:+.3f} (p {pt}; {p['wins']}/{p['losses']})"


def _row(res: dict, name: str, label: str | None = None) -> str:
    if name not in res["summary"]:
        return f"| {label or name} | | not run | | | | |"
    s, m = res["summary"][name], res["madds"].get(name)
    rel = f"{m / res['seed_madds']:.2f}×" if m else ""
    madds = f"{m / 1e6:.2f}M ({rel})" if m else ""
    each = " ".join(f"{v:.3f}" for v in s["AP"]["values"])
    sig = res.get("significance", {}).get(name, {})
    return (f"| {label or name} | {madds} | {_pm(s['AP'])} | {_pm(s['AP50'])} | {each} | "
            f"{_paired(sig.get('vs_seed'))} | {_paired(sig.get('vs_best_random'))} |")


def search_arm(name: str) -> str:
    """The searched arm a result belongs to: ``differentiable-s2`` -> ``differentiable``."""
    return re.sub(r"-s\d+$", "", name)


def pooled(res: dict, arm: str) -> dict | None:
    """An arm searched with several search seeds (``arm``, ``arm-s1``, …): AP mean ± std over
    every (search seed, fine-tuning seed) run, and paired tests against the seed and the best
    random architecture with the fine-tuning seed as the unit (the arm's AP averaged over
    search seeds per fine-tuning seed, so the search's variance is inside each pair)."""
    from fnacli.stats import mean_std as ms
    from fnacli.stats import paired

    names = [n for n in res["summary"] if search_arm(n) == arm]
    if len(names) < 2:
        return None
    per_seed = {}
    for n in names:
        for i, v in enumerate(res["summary"][n]["AP"]["values"]):
            per_seed.setdefault(i, []).append(v)
    seeds = sorted(k for k, v in per_seed.items() if len(v) == len(names))
    allv = [v for n in names for v in res["summary"][n]["AP"]["values"]]
    mean, sd = ms(allv)
    out = {"arms": names, "runs": len(allv), "mean": mean, "std": sd,
           "madds": [res["madds"][n] for n in names]}
    for key, ref in (("vs_seed", "seed"), ("vs_best_random", res.get("best_random"))):
        if ref in res["summary"] and len(seeds) > 1:
            a = [statistics.fmean(per_seed[i]) for i in seeds]
            b = [res["summary"][ref]["AP"]["values"][i] for i in seeds]
            out[key] = paired(a, b).to_dict()
    return out


HEAD = ("| arm | MAdds (× seed) | AP mean ± std | AP50 mean ± std | AP per seed (0, 1, …) | "
        "Δ AP vs seed (paired t p; won/lost) | Δ AP vs best random |\n"
        "|---|---|---|---|---|---|---|")


def _code(arch: dict) -> str:
    """Per stage: ops joined by spaces (kK_eE), stages by ' | '."""
    return " \\| ".join(" ".join(st["ops"]) or "–" for st in arch["stages"][1:])


def markdown(res: dict) -> str:
    c = res["settings"]
    target, window = res["target_madds"], c["window"]
    done = {json.dumps(r, sort_keys=True): r for runs in res["runs"].values()
            for r in runs}.values()  # an arm sharing another's backbone shares its runs
    lines = [f"Generated by `benchmarks/bench_search_quality.py` from {len(done)} fine-tuning "
             f"runs ({sum(r['seconds'] for r in done) / 3600:.1f} process-hours of wall time, "
             f"evaluation included); raw numbers in [search-quality.json](search-quality.json)."
             f" Every AP is "
             f"COCOeval's on the {c['val']} validation images after fine-tuning the seed "
             f"remapped onto the architecture with one recipe: {c['epochs']} epochs of "
             f"{c['train']} images ({res['runs']['seed'][0]['steps']} steps, batch "
             f"{c['batch_size']}) at {c['size']}×{c['size']}, SGD lr {c['lr']} cosine, "
             f"{c['warmup']}-step warm-up, gradients clipped at norm {c.get('clip_grad')}. ± is "
             f"the sample standard deviation over fine-tuning seeds 0..{c['seeds'] - 1}. "
             f"MAdds: the SSDLite detector (3 classes) at {c['size']}×{c['size']}; the "
             f"seed's is {res['seed_madds'] / 1e6:.2f}M, the target of item 2 is "
             f"{target / 1e6:.2f}M (×{c['target_fraction']}) ±{window:.0%}.", "",
             "### 1. The task: hand-picked architectures", "", HEAD]
    if res.get("missing_runs"):
        lines[1:1] = ["", "**Incomplete**: fine-tuning runs not made in time (arm: missing "
                      "seeds): " + ", ".join(f"{k}: {v}" for k, v in
                                             res["missing_runs"].items()) + "."]
    for n in ("seed", "all-k3_e3", "all-k7_e3", *HAND_PICKED):
        lines.append(_row(res, n))
    lines += ["", "### 2. Search vs random at matched MAdds (DetNAS Table 4, FNA Table 3)", "",
              HEAD]
    searched = [*DIFFERENTIABLE_ARMS, *ONESHOT_ARMS]
    for n in ["seed"] + [k for k in res["summary"] if search_arm(k) in searched] + sorted(
            k for k in res["summary"] if k.startswith("random-")):
        m = res["madds"][n]
        flag = "" if n == "seed" or abs(m / target - 1) <= window else " (outside ±5%)"
        lines.append(_row(res, n, n + flag))
    rnd = [res["summary"][k]["AP"]["mean"] for k in res["summary"] if k.startswith("random-")]
    if rnd:
        m, sd = mean_std(rnd)
        lines.append(f"| random, mean of the {len(rnd)} archs' means | | {m:.3f} ± "
                     f"{'–' if sd is None else f'{sd:.3f}'} | | best {max(rnd):.3f} "
                     f"({res.get('best_random')}) | | |")
    for arm in searched:
        if (p := pooled(res, arm)) is not None:
            lines.append(f"| {arm}, pooled over {len(p['arms'])} search seeds × fine-tuning "
                         f"seeds ({p['runs']} runs) | {min(p['madds']) / 1e6:.2f}-"
                         f"{max(p['madds']) / 1e6:.2f}M | {p['mean']:.3f} ± {p['std']:.3f} | | "
                         f"| {_paired(p.get('vs_seed'))} | {_paired(p.get('vs_best_random'))} |")
    lines += ["", "Architectures (stages 1-6; layers by op, ` | ` between stages):", "",
              "| arm | ops |", "|---|---|"]
    for n, a in res["archs"].items():
        if not n.startswith("width-"):
            lines.append(f"| {n} | {_code(a)} |")
    lines += ["", "Search cost (wall time, this machine): " + ", ".join(
        f"{k} {v:.0f} s" for k, v in res["search_seconds"].items()) + ".", "",
              "### 3. Channel masks in a width search (Jung et al. Table IV)", "", HEAD]
    for m in MASKS:
        lines.append(_row(res, f"width-{m}", f"{m} masks"))
    lines += ["", "| masks | stage widths (1-6) |", "|---|---|"]
    for m in MASKS:
        a = res["archs"][f"width-{m}"]
        lines.append(f"| {m} | {' '.join(str(st['out']) for st in a['stages'][1:])} |")
    lines += ["", "### 4. Search-step cost: one shared max-width block vs one block per width "
              "(Jung et al. Table III)", "",
              "| space | widths per stage | α/β step, shared | α/β step, per width | α/β step "
              "speed-up | weight step | whole search step speed-up |",
              "|---|---|---|---|---|---|---|"]
    for w in res["width_cost"]:
        lines.append(f"| {w['space']} | {'/'.join(map(str, w['widths_per_stage']))} | "
                     f"{w['shared_s'] * 1e3:.0f} ms | {w['separate_s'] * 1e3:.0f} ms | "
                     f"{w['arch_step_speedup']:.2f}× | {w['weight_step_s'] * 1e3:.0f} ms | "
                     f"{w['search_step_speedup']:.2f}× |")
    lines += ["", "### 5. Remapping rules, same architecture (all-k7_e3, "
              f"{res['madds']['all-k7_e3'] / 1e6:.2f}M MAdds; FNA Table 6)", "",
              HEAD.replace("| arm |", "| width/kernel rule |")]
    for k in res["summary"]:
        if k.startswith("rule "):
            lines.append(_row({**res, "madds": {}}, k, k[5:]))
    lines += ["", "### 6. One-shot ranking quality", ""]
    rankings = [res["ranking"]] + ([res["ranking_ft_recipe"]] if "ranking_ft_recipe" in res
                                   else [])
    for r in rankings:
        lines += [f"Kendall τ-b between the one-shot supernet's fitness (AP on the "
                  f"{c['heldout']} held-out images after BN recalibration on "
                  f"{c['calib_images']} training images) and the stand-alone fine-tuned AP "
                  f"(mean over seeds), {len(r['archs'])} architectures, supernet trained with "
                  f"{r.get('supernet', 'the search recipe')}: **τ = {r['kendall_tau']:.2f}**.",
                  ""]
    lines += ["| arch | stand-alone AP | " + " | ".join(
        f"one-shot fitness AP ({'search' if i == 0 else 'fine-tuning'} recipe)"
        for i in range(len(rankings))) + " |", "|---|---|" + "---|" * len(rankings)]
    first = rankings[0]
    for n in sorted(first["archs"], key=lambda n: -res["summary"][n]["AP"]["mean"]):
        lines.append(f"| {n} | {res['summary'][n]['AP']['mean']:.3f} | " + " | ".join(
            f"{r['fitness_AP'][n]:.3f}" if n in r["fitness_AP"] else "" for r in rankings)
            + " |")
    mc = res["machine"]
    lines += ["", f"Machine: {mc['cpu']}, {mc['cores']} cores, {mc['threads']} torch "
              f"thread(s) per process, torch {mc['torch']}, Python {mc['python']}."]
    return "\n".join(lines) + "\n"


def write_doc(path: Path, body: str) -> None:
    """Replace the text between the results markers (the rest is written by hand)."""
    text = path.read_text() if path.exists() else f"# Search quality\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(f"{head}{BEGIN}\n{body}{END}{tail}")




def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="tiny everything, every command in this process: the smoke test "
                        "(numbers meaningless)")
    p.add_argument("--seeds", type=int, help="fine-tuning seeds per arm [3; --quick 1]")
    p.add_argument("--epochs", type=int, help="fine-tuning epochs, every arm [6]")
    p.add_argument("--random-archs", type=int, help="random baseline size [5]")
    p.add_argument("--workdir", type=Path, default=Path(".cache/bench_search_quality"))
    p.add_argument("--threads", type=int, default=1, help="torch threads per process [1]")
    p.add_argument("--jobs", type=int, default=2, help="fine-tuning runs at a time [2]")
    p.add_argument("--doc", type=Path, help="Markdown file whose results section to rewrite")
    p.add_argument("--json-out", type=Path, help="write the raw numbers here")
    p.add_argument("--json", action="store_true", help="print the raw numbers on stdout")
    p.add_argument("--fresh", action="store_true", help="delete WORKDIR first")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: report the runs already in WORKDIR (an arm lists "
                        "the seeds it has)")
    args = p.parse_args(argv)
    cfg = Settings(**QUICK) if args.quick else Settings()
    over = {"seeds": args.seeds, "epochs": args.epochs, "random_archs": args.random_archs}
    for k, v in over.items():
        if v is not None and v < 1:
            p.error(f"--{k.replace('_', '-')}: must be at least 1, got {v}")
    if args.jobs < 1 or args.threads < 1:
        p.error("--jobs/--threads: must be at least 1")
    cfg = replace(cfg, **{k: v for k, v in over.items() if v is not None})
    if args.fresh and args.workdir.exists():
        if any(args.workdir.iterdir()) and not (args.workdir / "seed.pth.stamp.json").exists():
            p.error(f"--fresh: {args.workdir} does not look like this benchmark's work dir")
        shutil.rmtree(args.workdir)

    def log(msg: str) -> None:
        # sys.__stderr__: in-process commands redirect sys.stderr while they run
        print(f"bench_search_quality {msg}", file=sys.__stderr__, flush=True)

    res = run(cfg, args.workdir, args.threads, args.jobs, log, in_process=args.quick,
              report_only=args.report_only)
    md = markdown(res)
    print(md, file=sys.stderr)
    if args.json_out:
        args.json_out.write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")
    if args.doc:
        write_doc(args.doc, md)
    if args.json:
        print(json.dumps(res, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
