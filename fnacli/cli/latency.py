"""`fnacli latency --space S --task T`: measure a latency lookup table on this machine, and
check it against end-to-end measurements (``--check N``). Method: docs/latency.md."""

from __future__ import annotations

import json

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

    c.setup_logging()  # the library's warnings on stderr

    r = measure_latency(c.config(LatencyConfig, options, ("as_json", "table_in"),
                                 table=table_in, progress=True))
    c.show(r.report())
    c.print_result(json.dumps(r.to_dict()) if as_json else r.text)
