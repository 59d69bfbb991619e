"""`fnacli latency --space S --task T`: measure a latency lookup table on this machine, and
check it against end-to-end measurements (``--check N``). Method: docs/latency.md."""

from __future__ import annotations

import json
from typing import Any

from fnacli.cli import common as c
from fnacli.cli.app import app
from fnacli.pipeline.latency import LatencyConfig

o = c.options_of(LatencyConfig)


@app.command("latency")
def latency(
    space: str = o("space"),
    task: str = o("task"),
    size: str = o("size"),
    num_classes: int = o("num_classes"),
    device: str = o("device"),
    threads: int = o("threads"),
    batch: int = o("batch"),
    channels_last: str = o("channels_last"),
    rounds: int = o("rounds"),
    max_rounds: int = o("max_rounds"),
    tolerance: float = o("tolerance"),
    check: int = o("check"),
    seed: int = o("seed"),
    table_in: str = o("table"),
    output: str = o("output"),
    resume: bool = o("resume"),
    force: bool = o("force"),
    as_json: bool = c.opt("--json", "A JSON summary on stdout."),
) -> None:
    """Measure the latency of every candidate layer of a search space (and of the stem, head
    conv, neck and head) on this machine: a lookup table for --cost latency, --max-latency and
    --latency-table."""
    options = dict(locals())
    from fnacli.pipeline.latency import measure_latency

    r = measure_latency(c.config(LatencyConfig, options, ("as_json", "table_in"),
                                 table=table_in, progress=True))
    if r.check is not None:
        _print_check(r)
    if as_json:
        c.print_result(json.dumps(r.to_dict()))
    elif not r.built:
        s = r.check_summary
        c.print_result(f"{r.path}: mean abs error {s['mean_abs_error_pct']:.1f}%, "
                     f"Spearman {s['spearman']:.3f} over {check} architectures")
    else:
        c.print_result(r.path)


def _print_check(r: Any) -> None:
    result, s, n = r.check, r.check_summary, len(r.check.measured_ms)
    columns = ("#", "measured ms", "table sum ms", "predicted ms", "error")
    c.print_table(f"--check {n}: table vs measured end to end ({r.table.describe()}, "
                  f"{r.check_seconds:.1f}s)", columns,
                  [(str(i), f"{m:.3f}", f"{raw:.3f}", f"{p:.3f}", f"{100 * (p - m) / m:+.1f}%")
                   for i, (m, raw, p) in enumerate(zip(result.measured_ms, result.table_ms,
                                                       result.predicted_ms, strict=True))],
                  right=columns)
    c.err_console.print(f"mean abs error {s['mean_abs_error_pct']:.2f}% (table sum alone "
                        f"{s['mean_abs_error_pct_no_overhead']:.2f}%, overhead "
                        f"{s['overhead_ms']:.3f} ms measured at build time); Spearman "
                        f"{s['spearman']:.3f}")
    if "load_drift" in s:
        c.err_console.print(f"the build's reference networks run {s['load_drift']:.3f}x as long "
                            "as at build time (other load on this machine); scaled by that, "
                            f"the error is {s['mean_abs_error_pct_drift_corrected']:.2f}%")
