"""A latency lookup table of a search space measured on this machine (``fnacli.cost.latency``),
and its check against end-to-end measurements of random architectures. Method:
docs/latency.md.

A build keeps ``TABLE.partial`` beside its table, so an interrupted build continues with
``resume``; ``force`` starts over (and accepts a checked ``table`` measured elsewhere).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fnacli.errors import UserError
from fnacli.pipeline.common import Message, Reporter, Size, as_size, step
from fnacli.report import Report, Table
from fnacli.settings import MAX_THREADS, ON_MESSAGE, setting
from fnacli.tasks import metavar, per_task, size_text

if TYPE_CHECKING:
    from fnacli.cost.check import CheckResult
    from fnacli.cost.latency import LatencyTable
    from fnacli.spec import SpaceSpec

MEMORY_FORMATS = {"auto": None, "on": True, "off": False}


@dataclass
class LatencyConfig:
    space: str | SpaceSpec | None = setting(None, "Search space to measure (built-in name, JSON "
                                            "file or '-').")
    task: str = setting("ssdlite", "What the table covers: the backbone (with its head conv), the "
                        "ImageNet classifier, a detector's backbone + neck + head (no resize / "
                        "post-processing), or a segmenter whole (logits at the input size).",
                        metavar="|".join(("none", "classifier", metavar())))
    size: Size | None = setting(None, "Input size [224; "
                                f"{per_task(lambda t: size_text(t.profile_size))}].")
    num_classes: int | None = setting(None, "Classes: objects without background, or a "
                                      "segmenter's [classifier 1000; "
                                      f"{per_task('default_classes')}].", min=1)
    device: str = setting("cpu", "Where to measure (cuda: the first GPU).", metavar="cpu|cuda")
    runtime: str | None = setting(None, "Where the layers run: PyTorch eager, or exported to ONNX "
                                  "and run in onnxruntime [torch; a --table's own].",
                                  metavar="torch|onnxruntime")
    precision: str | None = setting(None, "onnxruntime only: fp32, or int8 by onnxruntime's "
                                    "static quantisation (QDQ) [fp32; a --table's own].",
                                    metavar="fp32|int8")
    provider: str = setting("cpu", "onnxruntime's execution provider (cuda, tensorrt: where "
                            "onnxruntime has them; untested).", metavar="cpu|cuda|tensorrt")
    opt_level: str = setting("all", "onnxruntime's graph optimisation level.",
                             metavar="disable|basic|extended|all")
    clock: str = setting("wall", "wall: elapsed time; cpu: the thread's CPU time, which other "
                         "processes' load does not stretch (--threads 1 only).",
                         metavar="wall|cpu")
    threads: int = setting(1, "CPU threads for torch ops (fixed for every timing).", min=1,
                           max=MAX_THREADS, metavar="K")
    batch: int = setting(1, "Images per forward.", min=1, metavar="B")
    channels_last: str = setting("auto", "Memory format; auto: whichever runs the largest network "
                                 "of the space faster.", metavar="auto|on|off")
    rounds: int = setting(7, "Interleaved timing rounds per entry at least (the median of them is "
                          "the entry).", min=6, metavar="R")
    max_rounds: int = setting(21, "Rounds at most, for entries whose 95% interval is still wider "
                              "than --tolerance.", min=6, metavar="R")
    # wanted relative half-width of each median's 95% interval
    tolerance: float = setting(0.05, "Wanted half-width of each median's 95% confidence interval, "
                               "relative.", min=0.001, metavar="FRAC")
    check: int = setting(0, "Validate: N random architectures' predictions against their "
                         "measured end-to-end latency, in the table's runtime; median and 90th "
                         "percentile error, Spearman, a pass/fail verdict (N >= 10).", min=0,
                         metavar="N")
    seed: int = setting(0, "Seed of the --check architectures and of the timing order.")
    table: str | Path | None = setting(None, "Check (--check) an existing table instead of "
                                       "measuring one.", metavar="TABLE")
    output: str | Path | None = setting(None, "Where to write the table [the cache; its path is "
                                        "printed].", metavar="TABLE")
    resume: bool = setting(False, "Continue an interrupted build from TABLE.partial.")
    force: bool = setting(False, "Overwrite TABLE, start over, and accept a --table measured on "
                          "another machine.")
    progress: bool = setting(False, api="A progress bar on stderr.")
    on_message: Message | None = setting(None, api=ON_MESSAGE)


@dataclass
class LatencyResult:
    path: str  # the table written (a build) or checked (``table``)
    table: LatencyTable = field(repr=False)
    check: CheckResult | None = None
    check_seconds: float = 0.0
    built: bool = False

    @property
    def check_summary(self) -> dict | None:
        return self.check.summary() if self.check is not None else None

    def to_dict(self) -> dict:
        if not self.built:
            return {"table": self.path, "check": self.check_summary}
        t = self.table
        d: dict[str, Any] = {"table": self.path, "layers": len(t.layers), "fixed": len(t.fixed),
                             "environment": t.env, "memory_format": t.memory_format,
                             "overhead_ms": t.overhead_ns / 1e6, "stats": t.stats}
        if self.check is not None:
            d["check"] = self.check_summary
        return d

    @property
    def text(self) -> str:
        """The result in one line: the table's path, or (a check of an existing table) the
        path and how well the table predicted."""
        if self.built or self.check is None:
            return self.path
        return f"{self.path}: {self.check.verdict().line()}"

    def report(self) -> Report:
        """The check (when one ran): table sum and prediction vs measured per architecture,
        the mean error and rank correlation, and the load drift since the build."""
        if self.check is None:
            return []
        res, s = self.check, self.check_summary
        columns = ("#", "measured ms", "table sum ms", "predicted ms", "error")
        rows = [(str(i), f"{m:.3f}", f"{raw:.3f}", f"{p:.3f}", f"{100 * (p - m) / m:+.1f}%")
                for i, (m, raw, p) in enumerate(zip(res.measured_ms, res.table_ms,
                                                    res.predicted_ms, strict=True))]
        report: Report = [
            Table(f"--check {len(res.measured_ms)}: table vs measured end to end "
                  f"({self.table.describe()}, {self.check_seconds:.1f}s)", columns, rows,
                  right=columns),
            f"median abs error {s['median_abs_error_pct']:.2f}%, 90th percentile "
            f"{s['p90_abs_error_pct']:.2f}%, mean {s['mean_abs_error_pct']:.2f}% (table sum "
            f"alone {s['mean_abs_error_pct_no_overhead']:.2f}%, overhead "
            f"{s['overhead_ms']:.3f} ms measured at build time); Spearman {s['spearman']:.3f}"]
        if res.retimed:
            report.append(f"timed again (outliers; the faster timing kept): #"
                          f"{', #'.join(map(str, res.retimed))}")
        if "load_drift" in s:
            report.append(f"the build's reference networks run {s['load_drift']:.3f}x as long "
                          "as at build time (other load on this machine); scaled by that, the "
                          f"error is {s['mean_abs_error_pct_drift_corrected']:.2f}%")
        report.append(res.verdict().line())
        return report


def _check_options(cfg: LatencyConfig) -> None:
    from fnacli.pipeline.profile import count_tasks

    if cfg.task not in count_tasks():
        raise UserError(f"--task: expected one of {', '.join(count_tasks())}, got {cfg.task!r}")
    if cfg.device not in ("cpu", "cuda"):
        raise UserError(f"--device: expected cpu or cuda, got {cfg.device!r}")
    if cfg.channels_last not in MEMORY_FORMATS:
        raise UserError(f"--channels-last: expected auto, on or off, got {cfg.channels_last!r}")
    if cfg.max_rounds < cfg.rounds:
        raise UserError(f"--max-rounds {cfg.max_rounds} is below --rounds {cfg.rounds}")
    from fnacli.cost.measure import CLOCKS, RUNTIMES
    from fnacli.cost.runtime import OPT_LEVELS, PRECISIONS, PROVIDERS

    for flag, value, allowed in (("--runtime", cfg.runtime, RUNTIMES),
                                 ("--precision", cfg.precision, PRECISIONS),
                                 ("--provider", cfg.provider, PROVIDERS),
                                 ("--opt-level", cfg.opt_level, OPT_LEVELS),
                                 ("--clock", cfg.clock, CLOCKS)):
        if value is not None and value not in allowed:
            raise UserError(f"{flag}: expected one of {', '.join(allowed)}, got {value!r}")
    if cfg.precision == "int8" and cfg.runtime != "onnxruntime" and not cfg.table:
        raise UserError("--precision int8: only with --runtime onnxruntime")


def _run_check(table: LatencyTable, cfg: LatencyConfig) -> tuple[CheckResult, float]:
    from contextlib import nullcontext

    from fnacli.cost.check import check_table

    start = time.perf_counter()
    status: Any = nullcontext()
    if cfg.progress:
        from rich.console import Console

        status = Console(stderr=True).status(f"measuring {cfg.check} architectures end to end")
    with status:
        result = check_table(table, cfg.check, cfg.seed)
    return result, time.perf_counter() - start


def _check_existing(cfg: LatencyConfig) -> LatencyResult:
    from fnacli.io import check_writable, write_text_atomic
    from fnacli.pipeline.profile import read_latency

    if cfg.output:
        check_writable(cfg.output, cfg.force)
    table = read_latency(cfg.table, cfg.force)
    refuse_other_runtime(table, cfg)
    check, secs = _run_check(table, cfg)
    if cfg.output:
        write_text_atomic(cfg.output, table.to_json())
    return LatencyResult(str(cfg.table), table, check, secs)


def refuse_other_runtime(table: LatencyTable, cfg: LatencyConfig) -> None:
    """A check runs in the table's own runtime and precision: asking for another mixes two
    clocks, refused."""
    env = table.env
    have = {"runtime": env.get("runtime", "torch"), "precision": env.get("precision", "fp32")}
    want = {"runtime": cfg.runtime, "precision": cfg.precision}
    diff = [f"--{k} {v}" for k, v in want.items() if v is not None and v != have[k]]
    if diff:
        from fnacli.cost.measure import runtime_of

        raise UserError(f"{cfg.table}: timed in {runtime_of(env)}, not {' '.join(diff)}; a "
                        "table is checked in its own runtime (measure another table for that "
                        "runtime)")


@step(LatencyConfig)
def measure_latency(cfg: LatencyConfig) -> LatencyResult:
    """Measure ``space``'s latency table under ``task`` on this machine (or check an existing
    ``table``), validated against ``check`` end-to-end measurements when ``check`` > 0; the
    table is written to ``output`` (or the cache) and returned."""
    _check_options(cfg)
    if cfg.table:
        if cfg.space or cfg.output and str(cfg.output) == str(cfg.table):
            raise UserError("--table checks an existing table: drop --space (and give -o only "
                            "to save the checked table elsewhere)")
        if not cfg.check:
            raise UserError("--table without --check has nothing to do: add --check N")
        return _check_existing(cfg)
    if not cfg.space:
        raise UserError("--space: required (the search space to measure), or --table TABLE "
                        "--check N")

    from fnacli.io import check_writable, write_text_atomic
    from fnacli.pipeline.profile import cost_target, default_size
    from fnacli.spec import SpaceSpec, load_space

    sp = cfg.space if isinstance(cfg.space, SpaceSpec) else load_space(cfg.space)
    wh = as_size(cfg.size) or default_size(cfg.task)
    if cfg.output is not None and str(cfg.output) == "-":
        raise UserError("-o: give a file (a table build keeps a TABLE.partial beside it)")
    if cfg.output:
        check_writable(cfg.output, cfg.force or cfg.resume)

    import torch

    from fnacli.cost.cache import unwritable
    from fnacli.cost.latency import build_latency_table, latency_cache_path, partial_path
    from fnacli.cost.measure import MeasureConfig
    from fnacli.cost.target import default_classes

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here")
    mcfg = MeasureConfig(device=cfg.device, threads=cfg.threads, batch=cfg.batch,
                         channels_last=MEMORY_FORMATS[cfg.channels_last],
                         min_rounds=cfg.rounds, max_rounds=cfg.max_rounds,
                         rel_tol=cfg.tolerance, seed=cfg.seed,
                         runtime=cfg.runtime or "torch", precision=cfg.precision or "fp32",
                         opt_level=cfg.opt_level, provider=cfg.provider, clock=cfg.clock)
    mcfg.check()
    target = cost_target(cfg.task)
    n_cls = cfg.num_classes or default_classes(target)
    dest = Path(cfg.output) if cfg.output else latency_cache_path(sp, target, wh, n_cls, mcfg)
    why = None if cfg.output else unwritable(dest.parent)
    if why:  # the table is this command's product: refuse before measuring
        raise UserError(f"cannot save the latency table in the cache {dest.parent}: {why}; "
                        "give -o FILE, or set FNACLI_CACHE_DIR to a writable folder")
    part = partial_path(dest)
    if part.exists() and not (cfg.resume or cfg.force):
        raise UserError(f"{part}: an interrupted build is there (continue it with --resume, or "
                        "start over with --force)")
    if cfg.resume and not part.exists():
        raise UserError(f"{part}: no partial table to resume (run without --resume)")
    if cfg.force and part.exists() and not cfg.resume:
        part.unlink()

    report = Reporter(cfg.on_message)
    start = time.perf_counter()
    table = build_latency_table(sp, target, wh, n_cls, mcfg, partial=part, resume=cfg.resume,
                                progress=cfg.progress)
    name = cfg.space if isinstance(cfg.space, str | Path) else "the space"
    report(f"latency table: {name} / {cfg.task} @ {wh[0]}x{wh[1]} on {table.describe()}: "
           f"{len(table.layers)} layer entries, {len(table.fixed)} fixed-part entries, overhead "
           f"{table.overhead_ns / 1e6:.3f} ms, median 95% interval ±"
           f"{100 * (table.stats.get('median_ci_rel') or 0):.1f}% "
           f"({time.perf_counter() - start:.1f}s)")
    if table.busy_warning():
        report.warning(table.busy_warning())
    result = LatencyResult(str(dest), table, built=True)
    if cfg.check:
        result.check, result.check_seconds = _run_check(table, cfg)
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(dest, table.to_json())
    part.unlink(missing_ok=True)
    return result
