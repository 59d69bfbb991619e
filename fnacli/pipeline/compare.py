"""Compare architectures the way a paper's table should: every one remapped from the same seed,
fine-tuned with one recipe on K seeds and evaluated on one split, then paired by seed against
the seed's own architecture and against the best of N random architectures of matched cost.

Every run is cached in WORKDIR under a key of its content (the architecture, the seed
checkpoint's bytes, the training and evaluation data, the recipe, the remapping rules, the
fine-tuning seed and fnacli's version), so a rerun reuses exactly the runs whose inputs did
not change and continues an interrupted fine-tune from its training state. Several
``fnacli compare`` processes may share one WORKDIR (each claims a run before making it);
under torchrun all processes make each run together (DDP).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import shutil
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fnacli.errors import UserError
from fnacli.pipeline.common import Reporter, TrainOptions, as_size, in_processes, step
from fnacli.report import Report, Table
from fnacli.settings import SCHEDULE, setting
from fnacli.stats import Paired, mean_std, paired

SEED_ARM = "seed"
POLL_SECONDS = 5.0  # how often a process waits for a run another process claimed


@dataclass
class CompareConfig(TrainOptions):
    """What to compare (and :class:`TrainOptions`: the one fine-tuning recipe of every run;
    ``seed`` is the first fine-tuning seed)."""

    seed_checkpoint: str = setting(help="The seed every architecture is remapped from "
                                   "(MobileNetV2 checkpoint, as 'fnacli remap' takes it).",
                                   metavar="SEED")
    archs: list[str] = setting(help="Architectures: JSON files or built-in names, NAME=SPEC to "
                               "name one. The seed's own architecture is always compared.",
                               metavar="ARCH...")
    workdir: str | Path = setting(help="Where runs are cached and resumed (content-keyed).",
                                  flags=("--workdir", "-w"), metavar="DIR")
    seeds: int = setting(3, "Fine-tuning seeds per architecture (--seed, --seed+1, …).", min=1,
                         metavar="K")
    random: int = setting(0, "Also N random architectures of the --space, drawn uniformly and "
                          "kept within --window of --target-madds.", min=0, metavar="N")
    space: str | None = setting(None, "Search space of the random architectures.")
    target_madds: float | None = setting(None, "MAdds the random architectures match [the median "
                                         "of the given architectures'].", min=0.0, metavar="M")
    window: float = setting(0.05, "Relative MAdds window around --target-madds.", min=0.0,
                            max=1.0)
    random_seed: int = setting(0, "Seed of the random draws.", min=0)
    width: str = setting("first", "Remapping's narrowing rule (see 'fnacli remap').")
    kernel: str = setting("center", "Remapping's kernel rule (see 'fnacli remap').")
    split: str = setting("val", "The split of --data every run is evaluated on.")
    alpha: float = setting(0.05, "Significance level of the paired t-test (two-sided).",
                           min=1e-6, max=0.5)
    plot: str | Path | None = setting(None, "Also draw the comparison (.svg, .png or .pdf; "
                                      "needs matplotlib).", metavar="FILE")
    schedule: str | None = setting(None, "Cosine, or step decay (see 'fnacli finetune').",
                                   group=SCHEDULE)
    report_only: bool = setting(False, "Make nothing: compare the runs already in WORKDIR.")
    groups: tuple[str, ...] = setting((), "Pool arms into one setting, NAME=ARM,ARM,… (e.g. "
                                      "one search setting's runs on several search seeds): "
                                      "its members' mean per fine-tuning seed, paired against "
                                      "the seed's and the best random arm, and its spread over "
                                      "the members.", flags=("--group",), metavar="NAME=ARMS")


@dataclass
class ArmResult:
    """One architecture's runs and its comparisons."""

    name: str
    spec: dict
    madds: float
    values: dict[int, float]  # fine-tuning seed -> the task's metric
    runs: dict[int, dict] = field(default_factory=dict)  # seed -> every metric, seconds
    vs_seed: Paired | None = None
    vs_best_random: Paired | None = None

    @property
    def mean_std(self) -> tuple[float, float | None] | None:
        return mean_std(list(self.values.values())) if self.values else None

    def to_dict(self) -> dict:
        ms = self.mean_std
        return {"name": self.name, "spec": self.spec, "madds": self.madds,
                "values": {str(k): v for k, v in self.values.items()},
                "runs": {str(k): v for k, v in self.runs.items()},
                "mean": ms and ms[0], "std": ms and ms[1],
                "vs_seed": self.vs_seed and self.vs_seed.to_dict(),
                "vs_best_random": self.vs_best_random and self.vs_best_random.to_dict()}


@dataclass
class GroupResult:
    """Arms pooled into one setting (``--group``): e.g. a search setting on several search
    seeds, each searched network fine-tuned on the same fine-tuning seeds."""

    name: str
    members: list[str]
    values: dict[int, float]  # fine-tuning seed -> the members' mean (seeds all members have)
    runs: int
    mean: float | None = None  # over every run of every member
    std: float | None = None  # over every run
    std_members: float | None = None  # of the members' means: the spread over search seeds
    vs_seed: Paired | None = None  # over fine-tuning seeds: the members' mean - the seed's
    vs_seed_members: Paired | None = None  # over members: each one's mean - the seed's mean
    vs_best_random: Paired | None = None  # over fine-tuning seeds

    def to_dict(self) -> dict:
        return {"name": self.name, "members": self.members, "runs": self.runs,
                "values": {str(k): v for k, v in self.values.items()}, "mean": self.mean,
                "std": self.std, "std_members": self.std_members,
                **{k: getattr(self, k) and getattr(self, k).to_dict()
                   for k in ("vs_seed", "vs_seed_members", "vs_best_random")}}


@dataclass
class CompareResult:
    metric: str
    seeds: list[int]
    arms: list[ArmResult]
    best_random: str | None
    trained: int  # runs made by this call
    reused: int  # runs found in WORKDIR
    missing: list[tuple[str, int]] = field(default_factory=list)  # not made (stopped early)
    alpha: float = 0.05
    is_main: bool = True
    groups: list[GroupResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"metric": self.metric, "seeds": self.seeds, "best_random": self.best_random,
                "arms": [a.to_dict() for a in self.arms], "trained": self.trained,
                "reused": self.reused, "missing": [list(m) for m in self.missing],
                "alpha": self.alpha, "groups": [g.to_dict() for g in self.groups]}

    def report(self) -> Report:
        seed_madds = next(a.madds for a in self.arms if a.name == SEED_ARM)
        rows = []
        for a in self.arms:
            ms = a.mean_std
            mean = "–" if ms is None else (f"{ms[0]:.3f}" + ("" if ms[1] is None
                                                               else f" ± {ms[1]:.3f}"))
            rows.append((a.name, f"{a.madds / 1e6:.2f}M", f"{a.madds / seed_madds:.2f}×",
                         str(len(a.values)), mean, *_paired_cells(a.vs_seed),
                         *_paired_cells(a.vs_best_random)))
        best = (f"the best random architecture is {self.best_random}" if self.best_random
                else "no random architectures")
        report: Report = [Table(
            f"compare: {self.metric} over fine-tuning seeds {_seeds_text(self.seeds)}",
            ("arch", "MAdds", "× seed", "runs", f"{self.metric} mean ± std", "Δ vs seed",
             "p (t)", "W/L (p)", "Δ vs best random", "p (t) ", "W/L (p) "), rows,
            right=("MAdds", "× seed", "runs"),
            caption=f"Δ: mean paired difference ± std over seeds; p (t): paired t-test, "
                    f"▲ better / ▼ worse at p < {self.alpha:g}; W/L: seeds won/lost, sign-test "
                    f"p; {best}")]
        if self.groups:
            report.append(self._groups_table())
        if self.missing:
            report.append(f"incomplete: {len(self.missing)} runs not made yet (run the same "
                          "command again to continue)")
        report.append(f"{self.trained} runs made now, {self.reused} reused from the work dir")
        return report


    def _groups_table(self) -> Table:
        rows = []
        for g in self.groups:
            spread = "–" if g.std_members is None else f"{g.std_members:.3f}"
            mean = "–" if g.mean is None else (f"{g.mean:.3f}" + ("" if g.std is None else
                                                                  f" ± {g.std:.3f}"))
            by_search = g.vs_seed_members
            rows.append((g.name, str(len(g.members)), str(g.runs), mean, spread,
                         *_paired_cells(g.vs_seed),
                         "–" if by_search is None or by_search.p_t is None
                         else f"{by_search.p_t:.3f}",
                         *_paired_cells(g.vs_best_random)))
        return Table(
            f"settings: arms pooled (--group), {self.metric}",
            ("setting", "arms", "runs", "mean ± std (runs)", "std (arms)", "Δ vs seed",
             "p (t)", "W/L (p)", "p over arms", "Δ vs best random", "p (t) ", "W/L (p) "),
            rows, right=("arms", "runs"),
            caption="Δ and p (t): per fine-tuning seed, the arms' mean minus the seed's (or the "
                    "best random arm's), paired t-test over fine-tuning seeds; p over arms: "
                    "each arm's mean minus the seed's mean, t-test over the arms (search "
                    "seeds); std (arms): the spread of the arms' means")


def parse_groups(groups: list[str] | tuple[str, ...], names: list[str]
                 ) -> list[tuple[str, list[str]]]:
    """(name, member arms) of each ``--group NAME=ARM,ARM,…``; members must be arms."""
    out: list[tuple[str, list[str]]] = []
    for g in groups:
        name, sep, rest = g.partition("=")
        members = [m.strip() for m in rest.split(",") if m.strip()]
        if not sep or not name or not members:
            raise UserError(f"--group {g!r}: expected NAME=ARM,ARM,…")
        unknown = [m for m in members if m not in names]
        if unknown:
            raise UserError(f"--group {g!r}: no arm named {', '.join(map(repr, unknown))} "
                            f"(arms: {', '.join(names)})")
        if len(set(members)) != len(members) or name in dict(out):
            raise UserError(f"--group {g!r}: an arm twice, or a second group of that name")
        out.append((name, members))
    return out


def pool(name: str, members: list[ArmResult], seed: ArmResult | None,
         best_random: ArmResult | None, alpha: float) -> GroupResult:
    """``members`` pooled: their mean per fine-tuning seed that all of them (and the seed's
    arm) have, paired over those seeds against the seed's arm and the best random arm; and
    each member's mean against the seed's mean over the same seeds (a t-test over members:
    the search seeds' variance in the test)."""
    seeds = sorted(set.intersection(*(set(m.values) for m in members)))
    values = {s: statistics.fmean(m.values[s] for m in members) for s in seeds}
    every = [m.values[s] for m in members for s in seeds]
    g = GroupResult(name, [m.name for m in members], values, len(every))
    if every:
        g.mean, g.std = mean_std(every)
        g.std_members = mean_std([statistics.fmean(m.values[s] for s in seeds)
                                  for m in members])[1]

    def against(other: ArmResult | None) -> tuple[list[int], Paired | None]:
        common = [s for s in seeds if other is not None and s in other.values]
        if not common:
            return common, None
        return common, paired([values[s] for s in common], [other.values[s] for s in common],
                              alpha)

    common, g.vs_seed = against(seed)
    if common and seed is not None:
        ref = statistics.fmean(seed.values[s] for s in common)
        g.vs_seed_members = paired([statistics.fmean(m.values[s] for s in common)
                                    for m in members], [ref] * len(members), alpha)
    g.vs_best_random = against(best_random)[1]
    return g


def _seeds_text(seeds: list[int]) -> str:
    return f"{seeds[0]}..{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])


def _paired_cells(p: Paired | None) -> tuple[str, str, str]:
    """Δ ± std, the t-test's p with ▲/▼ when significant, wins/losses with the sign test's p."""
    if p is None:
        return "", "", ""
    sd = "" if p.std is None else f" ± {p.std:.3f}"
    mark = {"better": " ▲", "worse": " ▼"}.get(p.verdict, "")
    test = "–" if p.p_t is None else f"{p.p_t:.3f}{mark}"
    return f"{p.mean:+.3f}{sd}", test, f"{p.wins}/{p.losses} ({p.p_sign:.2f})"


@step(CompareConfig)
def compare(cfg: CompareConfig) -> CompareResult:
    """Remap every architecture from one seed, fine-tune each on K seeds with one recipe
    (or reuse the cached runs), and pair them against the seed's architecture and the best
    random one. Runs under torchrun."""
    as_size(cfg.size)
    if not cfg.task:
        raise UserError("--task: required (the task every architecture is fine-tuned for)")
    if cfg.random and not cfg.space:
        raise UserError("--random: give --space (the search space to draw architectures from)")
    if cfg.random and not cfg.target_madds and not cfg.archs:
        raise UserError("--random: give --target-madds (no architecture to match)")
    if cfg.data is None and cfg.train_ann is None:
        raise UserError("no data: give --data DIR (COCO layout) or --train-ann/--val-ann")
    if not cfg.seed_checkpoint.startswith(("torchvision:", "timm:")) and not Path(
            cfg.seed_checkpoint).is_file():
        raise UserError(f"{cfg.seed_checkpoint}: no such file")
    if cfg.plot is not None:
        from fnacli.plots import PICTURE_FORMATS

        if Path(cfg.plot).suffix.lower() not in PICTURE_FORMATS:
            raise UserError(f"--plot: {cfg.plot}: a picture is .svg, .png or .pdf")
    from fnacli.spec import load_arch, load_space

    named = [(n, load_arch(a)) for n, a in parse_arch_args(cfg.archs)]
    parse_groups(cfg.groups, [SEED_ARM, *(n for n, _ in named),
                              *(f"random-{i}" for i in range(cfg.random))])  # before any work
    space = load_space(cfg.space) if cfg.random else None
    return in_processes(lambda c, env: _run(c, env, named, space), cfg)


def parse_arch_args(args: list[str]) -> list[tuple[str, str]]:
    """(name, spec argument) of each ARCH: ``NAME=SPEC``, else the file's stem or the name."""
    out: list[tuple[str, str]] = []
    for a in args:
        name, sep, spec = a.partition("=")
        if not sep:
            name, spec = Path(a).stem if a.endswith(".json") else a, a
        if not name or not spec:
            raise UserError(f"ARCH {a!r}: expected SPEC or NAME=SPEC")
        if name == SEED_ARM or name.startswith("random-"):
            raise UserError(f"ARCH {a!r}: the names '{SEED_ARM}' and 'random-N' are "
                            "compare's own; name it NAME=SPEC")
        if name in dict(out):
            raise UserError(f"ARCH {a!r}: two architectures named {name!r}; use NAME=SPEC")
        out.append((name, spec))
    return out


# -- the runs -----------------------------------------------------------------------------------
class Runs:
    """Keys, files and the making of one comparison's runs."""

    def __init__(self, cfg: CompareConfig, env: Any, say: Reporter) -> None:
        import fnacli
        from fnacli.fingerprint import file_sha256, split_fingerprint
        from fnacli.pipeline.finetune import _settings
        from fnacli.tasks import get_task

        self.cfg, self.env, self.say = cfg, env, say
        self.task = get_task(cfg.task)
        self.work = Path(cfg.workdir)
        seed = cfg.seed_checkpoint
        self.seed_hash = file_sha256(seed) if Path(seed).is_file() else seed
        self.train_files = self.task.find_split(cfg.data, "train", cfg.train_ann,
                                                cfg.train_images)
        self.eval_files = self.task.find_split(cfg.data, cfg.split, cfg.val_ann,
                                               cfg.val_images)
        # the processes too: on CPU each keeps its own BN statistics (no SyncBatchNorm)
        self.recipe = {**_settings(cfg, self.task, as_size(cfg.size)), "momentum": cfg.momentum,
                       "warmup_iters": cfg.warmup_iters, "freeze_bn": False,
                       "processes": env.world}
        self.inputs = {"seed": self.seed_hash, "train": split_fingerprint(self.train_files),
                       "eval": [cfg.split, split_fingerprint(self.eval_files)],
                       "task": self.task.name, "recipe": self.recipe,
                       "remap": [cfg.width, cfg.kernel], "fnacli": fnacli.__version__}
        self._remapped: dict[str, tuple[Path, str]] = {}

    def remap_key(self, spec: dict) -> str:
        from fnacli.fingerprint import json_sha256

        i = self.inputs
        return json_sha256(["remap", spec, i["seed"], i["remap"], i["fnacli"]])

    def run_key(self, spec: dict, seed: int) -> str:
        """The run's key: what it starts from is the remapped weights' content (so an arm whose
        remapping does not depend on the rules, the seed's own, is shared by every rule), then
        the data, recipe, seed and version."""
        from fnacli.fingerprint import json_sha256

        inputs = {k: v for k, v in self.inputs.items() if k not in ("seed", "remap")}
        return json_sha256(["run", spec, self.remapped(spec)[1], seed, inputs])

    def folder(self, spec: dict, seed: int) -> Path:
        return self.work / "runs" / self.run_key(spec, seed)[:20]

    def result(self, spec: dict, seed: int) -> dict | None:
        path = self.folder(spec, seed) / "result.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def remapped(self, spec: dict) -> tuple[Path, str]:
        """The seed remapped onto ``spec`` and its weights' hash (made once: rank 0 writes
        them, WORKDIR/remapped keeps them)."""
        from fnacli.io import write_text_atomic
        from fnacli.pipeline.remap import remap
        from fnacli.spec import ArchSpec
        from fnacli.train import barrier

        key = json.dumps(spec, sort_keys=True)
        if key in self._remapped:
            return self._remapped[key]
        out = self.work / "remapped" / f"{self.remap_key(spec)[:20]}.safetensors"
        digest = out.with_suffix(".sha256")
        if self.cfg.report_only and not digest.is_file():
            return out, "not made"  # a key no run has
        if self.env.is_main and not (out.is_file() and digest.is_file()):
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f"{out.stem}.{os.getpid()}.tmp.safetensors")
            r = remap(self.cfg.seed_checkpoint, ArchSpec.from_dict(spec), tmp,
                      width=self.cfg.width, kernel=self.cfg.kernel, force=True)
            tmp.replace(out)
            write_text_atomic(digest, tensors_sha256(r.state))
        barrier(self.env)
        self._remapped[key] = (out, digest.read_text())
        return self._remapped[key]

    def make(self, name: str, spec: Any, seed: int) -> bool:
        """Fine-tune and evaluate one run (continuing its training state); False when it
        stopped early (``stop_after``)."""
        from fnacli.io import write_text_atomic
        from fnacli.pipeline.evaluate import evaluate
        from fnacli.pipeline.finetune import FinetuneConfig, _run
        from fnacli.train import barrier

        cfg, folder = self.cfg, self.folder(spec.to_dict(), seed)
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / "final.safetensors"
        start = time.monotonic()
        if not final.is_file():
            init = self.remapped(spec.to_dict())[0]
            resume = Path(f"{final}.ckpt").is_file()
            self.say(f"compare: {name} seed {seed}: " + ("continuing" if resume else "training"))
            train = {k: getattr(cfg, k) for k in TrainOptions.__dataclass_fields__
                     if k not in ("seed", "resume", "force", "on_message", "tensorboard")}
            ft = _run(FinetuneConfig(**{**train, "target": str(init), "output": str(final),
                                        "seed": seed, "resume": resume, "force": not resume,
                                        "threads": cfg.threads, "schedule": cfg.schedule,
                                        "on_message": cfg.on_message}), self.env)
            if not ft.finished:
                return False
        if self.env.is_main:
            ev = evaluate(final, data=cfg.data, split=cfg.split, ann=cfg.val_ann,
                          images=cfg.val_images, workers=cfg.workers, device=cfg.device)
            write_text_atomic(folder / "result.json", json.dumps(
                {"arch": name, "spec": spec.to_dict(), "seed": seed, "inputs": self.inputs,
                 "metrics": ev.stats, "seconds": round(time.monotonic() - start, 1)}))
            self.say(f"compare: {name} seed {seed}: {self.task.metric} "
                     f"{ev.stats[self.task.metric]:.4f}")
        barrier(self.env)
        return True


def tensors_sha256(state: dict) -> str:
    """sha256 over a state dict's names, dtypes, shapes and values (not its file's metadata)."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@contextlib.contextmanager
def claim(folder: Path, env: Any) -> Iterator[bool]:
    """Whether this process may make the run in ``folder`` (an exclusive, non-blocking flock
    while the block runs; the kernel drops it if the process dies). Under torchrun every
    process makes every run together, so there is nothing to claim."""
    if env.distributed:
        yield True
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".claim", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _make_all(runs: Runs, arms: list[tuple[str, Any]], seeds: list[int]
              ) -> tuple[int, int, bool]:
    """Every (arm, seed) run, seed by seed (so a partial comparison has whole pairs); runs
    claimed by another process are waited for. (made, reused, stopped early)."""
    made = reused = 0
    pending = [(s, name, spec) for s in seeds for name, spec in arms]
    while pending:
        waiting = []
        for s, name, spec in pending:
            folder = runs.folder(spec.to_dict(), s)
            if runs.result(spec.to_dict(), s) is not None:
                reused += 1
                continue
            with claim(folder, runs.env) as mine:
                if not mine:
                    waiting.append((s, name, spec))
                    continue
                if runs.result(spec.to_dict(), s) is None:
                    if not runs.make(name, spec, s):
                        return made, reused, True
                    made += 1
        if waiting:
            runs.say(f"compare: waiting for {len(waiting)} runs other processes are making")
            time.sleep(POLL_SECONDS)
        pending = waiting
    return made, reused, False


def _arms(cfg: CompareConfig, runs: Runs, named: list[tuple[str, Any]], space: Any,
          say: Reporter) -> tuple[list[tuple[str, Any]], dict[str, float]]:
    """(name, spec) of every arm (the seed's architecture, the given ones, the random ones)
    and their MAdds (the task's whole network at the recipe's size)."""
    from fnacli.checkpoint import load_seed
    from fnacli.cost.table import CostTable

    _, seed_spec = load_seed(cfg.seed_checkpoint)
    arms = [(SEED_ARM, seed_spec), *named]
    classes = len(runs.task.load_split(runs.train_files, train=False).categories())
    table = CostTable(runs.task, runs.recipe["size"], classes)
    madds = {n: float(table.profile(s, n).madds) for n, s in arms}
    if cfg.random:
        target = cfg.target_madds or (statistics.median(madds[n] for n, _ in arms[1:])
                                      if len(arms) > 1 else None)
        if target is None:
            raise UserError("--random: give --target-madds (no architecture to match)")
        for i, spec in enumerate(draw_random(space, cfg, table, target)):
            arms.append((f"random-{i}", spec))
            madds[f"random-{i}"] = float(table.profile(spec).madds)
        say(f"compare: {cfg.random} random architectures within ±{cfg.window:.0%} of "
            f"{target / 1e6:.2f}M MAdds")
    return arms, madds


def draw_random(space: Any, cfg: CompareConfig, table: Any, target: float,
                tries: int = 200_000) -> list[Any]:
    """DetNAS's random baseline: genomes of ``space`` drawn uniformly (every choice of every
    layer equally likely), kept while their MAdds lie within ``window`` of ``target``."""
    from fnacli.search.evolution import Encoding

    enc = Encoding(space)
    rng, found, seen = random.Random(cfg.random_seed), [], set()
    for _ in range(tries):
        arch = enc.arch(enc.random(rng))
        key = arch.to_json(compact=True)
        if key in seen:
            continue
        seen.add(key)
        if abs(table.profile(arch).madds / target - 1) <= cfg.window:
            found.append(arch)
            if len(found) == cfg.random:
                return found
    raise UserError(f"--random {cfg.random}: only {len(found)} architectures of {cfg.space} "
                    f"within ±{cfg.window:.0%} of {target / 1e6:.2f}M MAdds in {tries} draws "
                    "(widen --window or move --target-madds)")


def _run(cfg: CompareConfig, env: Any, named: list[tuple[str, Any]], space: Any
         ) -> CompareResult:
    from fnacli.train import barrier

    say = Reporter(cfg.on_message, env.is_main)
    runs = Runs(cfg, env, say)
    arms, madds = _arms(cfg, runs, named, space, say)
    seeds = list(range(cfg.seed, cfg.seed + cfg.seeds))
    if env.is_main:
        runs.work.mkdir(parents=True, exist_ok=True)
        (runs.work / "compare.json").write_text(json.dumps(
            {"arms": {n: s.to_dict() for n, s in arms}, "inputs": runs.inputs}, indent=1))
    if cfg.force and env.is_main:  # these inputs' runs start over (one process only)
        for s in seeds:
            for _, spec in arms:
                shutil.rmtree(runs.folder(spec.to_dict(), s), ignore_errors=True)
    barrier(env)
    made, reused, stopped = (0, 0, False) if cfg.report_only else _make_all(runs, arms, seeds)
    result = summarise(runs, arms, madds, seeds, cfg.alpha,
                       parse_groups(cfg.groups, [n for n, _ in arms]))
    result.trained = made
    # (--report-only: every run found was made before)
    result.reused = sum(len(a.values) for a in result.arms) if cfg.report_only else reused
    if stopped:
        say(f"compare: stopped after --stop-after {cfg.stop_after} steps; run again to continue")
    if cfg.plot is not None and env.is_main:
        from fnacli.plots import compare_figure, save_figure

        save_figure(compare_figure(result), cfg.plot)
        say(f"compare: plot -> {cfg.plot}")
    return result


def summarise(runs: Runs, arms: list[tuple[str, Any]], madds: dict[str, float],
              seeds: list[int], alpha: float,
              groups: list[tuple[str, list[str]]] | None = None) -> CompareResult:
    """Every arm's metric per seed, paired against the seed's architecture and the random arm
    of the highest mean (picked after the fact: the hardest random arm to beat)."""
    metric = runs.task.metric
    rows, missing = [], []
    for name, spec in arms:
        values, made = {}, {}
        for s in seeds:
            r = runs.result(spec.to_dict(), s)
            if r is None:
                missing.append((name, s))
            else:
                values[s] = float(r["metrics"][metric])
                made[s] = {"metrics": r["metrics"], "seconds": r["seconds"]}
        rows.append(ArmResult(name, spec.to_dict(), madds[name], values, made))
    by_name = {a.name: a for a in rows}
    randoms = [a for a in rows if a.name.startswith("random-") and a.values]
    best = max(randoms, key=lambda a: a.mean_std[0]).name if randoms else None
    for a in rows:
        if a.name != SEED_ARM:
            a.vs_seed = _pair(a, by_name[SEED_ARM], alpha)
        if best is not None and a.name != best:
            a.vs_best_random = _pair(a, by_name[best], alpha)
    pooled = [pool(name, [by_name[m] for m in members], by_name.get(SEED_ARM),
                   by_name.get(best) if best else None, alpha)
              for name, members in groups or []]
    return CompareResult(metric, seeds, rows, best, 0, 0, missing, alpha, groups=pooled)


def _pair(a: ArmResult, b: ArmResult, alpha: float) -> Paired | None:
    common = [s for s in a.values if s in b.values]
    if not common:
        return None
    return paired([a.values[s] for s in common], [b.values[s] for s in common], alpha)
