"""`fnacli latency --space S --task T`: measure a latency lookup table on this machine, and
check it against end-to-end measurements (``--check N``). Method: docs/latency.md."""

from __future__ import annotations

import json

import typer

from fnacli.cli import common as c
from fnacli.cli.app import app
from fnacli.tasks import metavar, per_task, size_text

# the backbone alone and the classifier (fnacli.lut), then the registered tasks
TASKS_METAVAR = "|".join(("none", "classifier", metavar()))
SIZE_DEFAULTS = f"224; {per_task(lambda t: size_text(t.profile_size))}"


@app.command("latency")
def latency(
    space: str = c.opt("--space", "Search space to measure (built-in name, JSON file or '-')."),
    task: str = typer.Option("ssdlite", "--task", metavar=TASKS_METAVAR,
                             help="What the table covers: the backbone (with its head conv), the "
                                  "ImageNet classifier, or a detector's backbone + neck + head (no "
                                  "resize / post-processing)."),
    size: str = c.opt("--size", f"Input size [{SIZE_DEFAULTS}]."),
    num_classes: int = c.opt("--num-classes", "Object classes without background [80; classifier "
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
                               help="Interleaved timing rounds per entry at least (the median of "
                                    "them is the entry)."),
    max_rounds: int = typer.Option(21, "--max-rounds", min=6, metavar="R",
                                   help="Rounds at most, for entries whose 95% interval is still "
                                        "wider than --tolerance."),
    tolerance: float = typer.Option(0.05, "--tolerance", min=0.001, metavar="FRAC",
                                    help="Wanted half-width of each median's 95% confidence "
                                         "interval, relative."),
    check: int = typer.Option(0, "--check", min=0, metavar="N",
                              help="Validate: N random architectures' table sums against their "
                                   "measured end-to-end latency (error %, Spearman)."),
    seed: int = c.opt("--seed", "Seed of the --check architectures and of the timing order."),
    table_in: str = typer.Option(None, "--table", metavar="TABLE",
                                 help="Check (--check) an existing table instead of measuring "
                                      "one."),
    output: str = c.opt("--output", "Where to write the table [the cache; its path is printed].",
                        metavar="TABLE", default=None),
    resume: bool = c.opt("--resume", "Continue an interrupted build from TABLE.partial."),
    force: bool = c.opt("--force", "Overwrite TABLE, start over, and accept a --table measured on "
                                   "another machine."),
    as_json: bool = c.opt("--json", "A JSON summary on stdout."),
) -> None:
    """Measure the latency of every candidate layer of a search space (and of the stem, head
    conv, neck and head) on this machine: a lookup table for --cost latency, --max-latency and
    --latency-table."""
    options = dict(locals())
    from fnacli.pipeline.latency import LatencyConfig, measure_latency

    r = measure_latency(c.config(LatencyConfig, options, ("as_json", "table_in"),
                                 table=table_in, progress=True))
    c.show(r.report())
    c.print_result(json.dumps(r.to_dict()) if as_json else r.text)
