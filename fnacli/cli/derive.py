"""`fnacli derive SEARCHED|SUPERNET [-o ARCH.json|-]`: the architecture a search chose
(``fnacli.pipeline.derive``), as a canonical ``fnacli/arch@1`` spec on stdout (or -o);
``--show`` / ``--top`` tables on stderr."""

from __future__ import annotations

import json

import typer

from fnacli.cli import common as c
from fnacli.cli.app import app
from fnacli.tasks import metavar


@app.command("derive", help="Derive the searched architecture (argmax α per layer, argmax β per "
                            "stage) as an arch spec: stdout by default, pipe it into 'fnacli remap "
                            "SEED --spec -'.")
def derive(
    checkpoint: str = typer.Argument(..., metavar="SEARCHED|SUPERNET",
                                     help="A searched checkpoint (any epoch) or a supernet."),
    output: str = c.opt("--output", "Where the spec goes ('-': stdout).", metavar="ARCH.json|-",
                        default="-"),
    show: bool = typer.Option(False, "--show", help="Draw the architecture on stderr: ops per "
                                                    "layer, widths, MAdds/params vs the seed."),
    top: int | None = typer.Option(None, "--top", min=1, metavar="K",
                                   help="List the K most likely architectures with their "
                                        "probabilities and MAdds (stderr; in --json output)."),
    as_json: bool = c.opt("--json", "Print a JSON report (spec, probability, MAdds, top K) on "
                                    "stdout instead of the bare spec."),
    task: str | None = c.opt("--task", "Detector the MAdds are counted for [the search's, else "
                                       "ssdlite].", metavar=metavar(("none",))),
    size: str | None = c.opt("--size", "Input size of the MAdds [the search's, else the task's]."),
    num_classes: int | None = c.opt("--num-classes", "Classes of the detector [the search's, else "
                                                     "80]."),
    min_depth: int | None = typer.Option(None, "--min-depth", min=0, metavar="N",
                                         help="Never drop layers 0..N-1 of a stage [the "
                                              "search's]."),
    plot: str | None = typer.Option(None, "--plot", metavar="OUT.svg|OUT.png",
                                    help="Draw α/β probabilities per epoch (from "
                                         "SEARCHED.metrics.jsonl, else the checkpoint's current "
                                         "α/β); the suffix picks SVG, PNG or PDF."),
    diagram: str | None = typer.Option(None, "--diagram", metavar="OUT.svg|OUT.png",
                                       help="Draw the derived architecture (SVG, PNG or PDF), "
                                            "beside the seed's when the checkpoint records it."),
    metrics: str | None = typer.Option(None, "--metrics", metavar="FILE.jsonl",
                                       help="The search's metrics for --plot [SEARCHED"
                                            ".metrics.jsonl when it exists]."),
    latency_table: str | None = c.opt("--latency-table", "Report predicted latency beside MAdds, "
                                      "by a table from 'fnacli latency' (--force: one measured on "
                                      "another machine)."),
    min_madds: str | None = typer.Option(None, "--min-madds", metavar="MADDS",
                                         help="Derive the most likely architecture with at least "
                                              "these MAdds (e.g. 300M), for comparisons at matched "
                                              "cost."),
    max_madds: str | None = typer.Option(None, "--max-madds", metavar="MADDS",
                                         help="... and at most these MAdds."),
    cost_scope: str | None = typer.Option(None, "--cost-scope", metavar="SCOPE",
                                          help="What --min/--max-madds count: blocks, backbone or "
                                               "detector, at --size [the search's cost size] "
                                               "[backbone]."),
    force: bool = c.opt("--force", "Overwrite -o ARCH.json, --plot and --diagram files."),
) -> None:
    options = dict(locals())
    from fnacli.io import write_output
    from fnacli.pipeline.derive import DeriveConfig
    from fnacli.pipeline.derive import derive as run

    c.setup_logging()
    r = run(c.config(DeriveConfig, options, ("output", "show", "as_json"),
                     profile=show or as_json))
    if output != "-" or not as_json:
        write_output(output, r.arch.to_json(), force)
    c.show(r.report(show=show))
    if as_json:
        c.print_result(json.dumps(r.to_dict()))
