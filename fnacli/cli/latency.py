"""`fnacli latency --space S --task T`: measure a latency lookup table on this machine, and
check it against end-to-end measurements (``--check N``). Method: docs/latency.md."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

from fnacli.cli.app import app
from fnacli.cli.common import err_console, fail, print_result

DEFAULT_SIZE = {"none": "224", "classifier": "224", "ssdlite": "320", "retinanet": "1088x800"}


@app.command("latency")
def latency(
    space: str = typer.Option(None, "--space", metavar="SPACE",
                              help="Search space to measure (built-in name, JSON file or '-')."),
    task: str = typer.Option("ssdlite", "--task", metavar="none|classifier|ssdlite|retinanet",
                             help="What the table covers: the backbone (with its head conv), "
                                  "the ImageNet classifier, or a detector's backbone + neck + "
                                  "head (no resize / post-processing)."),
    size: str = typer.Option(None, "--size", metavar="N|WxH",
                             help="Input size [224; ssdlite 320; retinanet 1088x800]."),
    num_classes: int = typer.Option(None, "--num-classes", min=1, metavar="N",
                                    help="Object classes without background [80; classifier "
                                         "1000]."),
    device: str = typer.Option("cpu", "--device", metavar="cpu|cuda",
                               help="Where to measure (cuda: the first GPU)."),
    threads: int = typer.Option(1, "--threads", min=1, metavar="K",
                                help="CPU threads for torch ops (fixed for every timing)."),
    batch: int = typer.Option(1, "--batch", min=1, metavar="B", help="Images per forward."),
    channels_last: str = typer.Option("auto", "--channels-last", metavar="auto|on|off",
                                      help="Memory format; auto: whichever runs the largest "
                                           "network of the space faster."),
    rounds: int = typer.Option(7, "--rounds", min=6, metavar="R",
                               help="Interleaved timing rounds per entry at least (the median "
                                    "of them is the entry)."),
    max_rounds: int = typer.Option(21, "--max-rounds", min=6, metavar="R",
                                   help="Rounds at most, for entries whose 95% interval is "
                                        "still wider than --tolerance."),
    tolerance: float = typer.Option(0.05, "--tolerance", min=0.001, metavar="FRAC",
                                    help="Wanted half-width of each median's 95% confidence "
                                         "interval, relative."),
    check: int = typer.Option(0, "--check", min=0, metavar="N",
                              help="Validate: N random architectures' table sums against their "
                                   "measured end-to-end latency (error %, Spearman)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the --check architectures and of the "
                                               "timing order."),
    table_in: str = typer.Option(None, "--table", metavar="TABLE",
                                 help="Check (--check) an existing table instead of measuring "
                                      "one."),
    output: str = typer.Option(None, "--output", "-o", metavar="TABLE",
                               help="Where to write the table [the cache; its path is "
                                    "printed]."),
    resume: bool = typer.Option(False, "--resume",
                                help="Continue an interrupted build from TABLE.partial."),
    force: bool = typer.Option(False, "--force",
                               help="Overwrite TABLE, start over, and accept a --table "
                                    "measured on another machine."),
    as_json: bool = typer.Option(False, "--json", help="A JSON summary on stdout."),
) -> None:
    """Measure the latency of every candidate layer of a search space (and of the stem, head
    conv, neck and head) on this machine: a lookup table for --cost latency, --max-latency and
    --latency-table."""
    from fnacli.lut import LUT_TASKS
    from fnacli.pipeline.common import parse_size

    if task not in LUT_TASKS:
        fail(f"--task: expected one of {', '.join(LUT_TASKS)}, got {task!r}")
    if device not in ("cpu", "cuda"):
        fail(f"--device: expected cpu or cuda, got {device!r}")
    if channels_last not in ("auto", "on", "off"):
        fail(f"--channels-last: expected auto, on or off, got {channels_last!r}")
    if max_rounds < rounds:
        fail(f"--max-rounds {max_rounds} is below --rounds {rounds}")
    if table_in:
        if space or output and output == table_in:
            fail("--table checks an existing table: drop --space (and give -o only to save "
                 "the checked table elsewhere)")
        if not check:
            fail("--table without --check has nothing to do: add --check N")
        _check_existing(table_in, check, seed, output, force, as_json)
        return
    if not space:
        fail("--space: required (the search space to measure), or --table TABLE --check N")

    from fnacli.io import check_writable
    from fnacli.spec import load_space

    sp = load_space(space)
    wh = parse_size(size or DEFAULT_SIZE[task])
    if output == "-":
        fail("-o: give a file (a table build keeps a TABLE.partial beside it)")
    if output:
        check_writable(output, force or resume)

    import torch

    from fnacli.cost import default_classes
    from fnacli.latency import (
        MeasureConfig,
        build_latency_table,
        latency_cache_path,
        partial_path,
    )

    if device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda: no CUDA device is available here")
    cfg = MeasureConfig(device=device, threads=threads, batch=batch,
                        channels_last={"auto": None, "on": True, "off": False}[channels_last],
                        min_rounds=rounds, max_rounds=max_rounds, rel_tol=tolerance, seed=seed)
    n_cls = num_classes or default_classes(task)
    dest = Path(output) if output else latency_cache_path(sp, task, wh, n_cls, cfg)
    part = partial_path(dest)
    if part.exists() and not (resume or force):
        fail(f"{part}: an interrupted build is there (continue it with --resume, or start "
             "over with --force)")
    if resume and not part.exists():
        fail(f"{part}: no partial table to resume (run without --resume)")
    if force and part.exists() and not resume:
        part.unlink()

    start = time.perf_counter()
    table = build_latency_table(sp, task, wh, n_cls, cfg, partial=part, resume=resume,
                                progress=True)
    err_console.print(f"latency table: {space} / {task} @ {wh[0]}x{wh[1]} on "
                      f"{table.describe()}: {len(table.layers)} layer entries, "
                      f"{len(table.fixed)} fixed-part entries, overhead "
                      f"{table.overhead_ns / 1e6:.3f} ms, median 95% interval ±"
                      f"{100 * (table.stats.get('median_ci_rel') or 0):.1f}% "
                      f"({time.perf_counter() - start:.1f}s)")
    if table.busy_warning():
        err_console.print(f"warning: {table.busy_warning()}")
    summary: dict[str, Any] = {"table": str(dest), "layers": len(table.layers),
                               "fixed": len(table.fixed), "environment": table.env,
                               "memory_format": table.memory_format,
                               "overhead_ms": table.overhead_ns / 1e6, "stats": table.stats}
    if check:
        summary["check"] = _run_check(table, check, seed)
    from fnacli.io import write_text_atomic

    dest.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(dest, table.to_json())
    part.unlink(missing_ok=True)
    print_result(json.dumps(summary) if as_json else str(dest))


def _check_existing(path: str, n: int, seed: int, output: str | None, force: bool,
                    as_json: bool) -> None:
    from fnacli.io import check_writable, write_text_atomic
    from fnacli.latency import read_latency_table

    if output:
        check_writable(output, force)
    table = read_latency_table(path, force)
    summary = {"table": path, "check": _run_check(table, n, seed)}
    if output:
        write_text_atomic(output, table.to_json())
    print_result(json.dumps(summary) if as_json else
                 f"{path}: mean abs error {summary['check']['mean_abs_error_pct']:.1f}%, "
                 f"Spearman {summary['check']['spearman']:.3f} over {n} architectures")


def _run_check(table: Any, n: int, seed: int) -> dict:
    from rich.table import Table

    from fnacli.latency import check_table

    start = time.perf_counter()
    with err_console.status(f"measuring {n} architectures end to end"):
        result = check_table(table, n, seed)
    s = result.summary()
    t = Table(title=f"--check {n}: table vs measured end to end ({table.describe()}, "
                    f"{time.perf_counter() - start:.1f}s)", title_justify="left")
    for col in ("#", "measured ms", "table sum ms", "predicted ms", "error"):
        t.add_column(col, justify="right")
    for i, (m, raw, p) in enumerate(zip(result.measured_ms, result.table_ms,
                                        result.predicted_ms, strict=True)):
        t.add_row(str(i), f"{m:.3f}", f"{raw:.3f}", f"{p:.3f}", f"{100 * (p - m) / m:+.1f}%")
    err_console.print(t)
    err_console.print(f"mean abs error {s['mean_abs_error_pct']:.2f}% (table sum alone "
                      f"{s['mean_abs_error_pct_no_overhead']:.2f}%, overhead "
                      f"{s['overhead_ms']:.3f} ms measured at build time); Spearman "
                      f"{s['spearman']:.3f}")
    if "load_drift" in s:
        err_console.print(f"the build's reference networks run {s['load_drift']:.3f}x as long "
                          "as at build time (other load on this machine); scaled by that, "
                          f"the error is {s['mean_abs_error_pct_drift_corrected']:.2f}%")
    return s
