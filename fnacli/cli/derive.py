"""`fnacli derive SEARCHED|SUPERNET [-o ARCH.json|-]`: the architecture a search chose
(``fnacli.pipeline.derive``), as a canonical ``fnacli/arch@1`` spec on stdout (or -o);
``--show`` / ``--top`` tables on stderr."""

from __future__ import annotations

from enum import StrEnum

import typer

from fnacli.cli import common as c
from fnacli.cli.app import app
from fnacli.pipeline.derive import DERIVE_BY, DeriveConfig

o = c.options_of(DeriveConfig)
By = StrEnum("By", {n: n for n in DERIVE_BY})


@app.command("derive", help="Derive the searched architecture (argmax α per layer, argmax β per "
                            "stage) as an arch spec: stdout by default, pipe it into 'fnacli remap "
                            "SEED --spec -'.")
def derive(
    checkpoint: str = c.argument(DeriveConfig, "checkpoint"),
    output: str = c.opt("--output", "Where the spec goes ('-': stdout).", metavar="ARCH.json|-",
                        default="-"),
    show: bool = typer.Option(False, "--show", help="Draw the architecture on stderr: ops per "
                                                    "layer, widths, MAdds/params vs the seed."),
    top: int | None = o("top"),
    as_json: bool = c.opt("--json", "Print a JSON report (spec, probability, MAdds, top K) on "
                                    "stdout instead of the bare spec."),
    task: str | None = o("task"),
    size: str | None = o("size"),
    num_classes: int | None = o("num_classes"),
    min_depth: int | None = o("min_depth"),
    plot: str | None = o("plot"),
    diagram: str | None = o("diagram"),
    metrics: str | None = o("metrics"),
    latency_table: str | None = o("latency_table"),
    min_madds: str | None = o("min_madds"),
    max_madds: str | None = o("max_madds"),
    min_latency: str | None = o("min_latency"),
    max_latency: str | None = o("max_latency"),
    cost_scope: str | None = o("cost_scope"),
    by: By = o("by"),
    remap_prior: float = o("remap_prior"),
    force: bool = o("force"),
) -> None:
    options = dict(locals())
    from fnacli.io import write_output
    from fnacli.pipeline.derive import derive as run

    c.setup_logging()
    r = run(c.config(DeriveConfig, options, ("output", "show", "as_json"),
                     profile=show or as_json))
    if output != "-" or not as_json:
        write_output(output, r.arch.to_json(), force)
    c.show(r.report(show=show))
    if as_json:
        c.print_json(r.to_dict())
