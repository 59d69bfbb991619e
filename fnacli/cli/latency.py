"""`fnacli latency --space S --task T`: measure a latency lookup table on this machine, and
check it against end-to-end measurements (``--check N``). Method: docs/latency.md."""

from __future__ import annotations

import json
from typing import Any

import typer

from fnacli.cli.app import app
from fnacli.cli.common import err_console, print_result
from fnacli.tasks import metavar, per_task, size_text

# the backbone alone and the classifier (fnacli.lut), then the registered tasks
TASKS_METAVAR = "|".join(("none", "classifier", metavar()))
SIZE_DEFAULTS = f"224; {per_task(lambda t: size_text(t.profile_size))}"


@app.command("latency")
def latency(
    space: str = typer.Option(None, "--space", metavar="SPACE",
                              help="Search space to measure (built-in name, JSON file or '-')."),
    task: str = typer.Option("ssdlite", "--task", metavar=TASKS_METAVAR,
                             help="What the table covers: the backbone (with its head conv), "
                                  "the ImageNet classifier, or a detector's backbone + neck + "
                                  "head (no resize / post-processing)."),
    size: str = typer.Option(None, "--size", metavar="N|WxH",
                             help=f"Input size [{SIZE_DEFAULTS}]."),
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
    from fnacli.pipeline.latency import measure_latency

    r = measure_latency(space=space, task=task, size=size, num_classes=num_classes,
                        device=device, threads=threads, batch=batch,
                        channels_last=channels_last, rounds=rounds, max_rounds=max_rounds,
                        tolerance=tolerance, check=check, seed=seed, table=table_in,
                        output=output, resume=resume, force=force, progress=True)
    if r.check is not None:
        _print_check(r)
    if as_json:
        print_result(json.dumps(r.to_dict()))
    elif not r.built:
        s = r.check_summary
        print_result(f"{r.path}: mean abs error {s['mean_abs_error_pct']:.1f}%, "
                     f"Spearman {s['spearman']:.3f} over {check} architectures")
    else:
        print_result(r.path)


def _print_check(r: Any) -> None:
    from rich.table import Table

    result, s, n = r.check, r.check_summary, len(r.check.measured_ms)
    t = Table(title=f"--check {n}: table vs measured end to end ({r.table.describe()}, "
                    f"{r.check_seconds:.1f}s)", title_justify="left")
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
