"""`fnacli derive SEARCHED|SUPERNET [-o ARCH.json|-]`: the architecture a search chose
(``fnacli.pipeline.derive``), as a canonical ``fnacli/arch@1`` spec on stdout (or -o);
``--show`` / ``--top`` tables on stderr."""

from __future__ import annotations

import json
from typing import Any

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
    if r.warning:
        c.err_console.print(f"warning: {r.warning}", markup=False)
    if show:
        _show(r)
    if top:
        _show_top(r)
    if as_json:
        c.print_result(json.dumps(r.to_dict()))


def _ops_text(st: Any) -> str:
    return " ".join(f"K{o.kernel}_E{o.expand}" for o in st.ops)


def _show(r: Any) -> None:
    from rich.table import Column

    arch, seed = r.arch, r.seed
    rows = []
    for s, st in enumerate(arch.stages):
        rows.append([str(s), str(st.stride), str(st.out), str(st.depth), _ops_text(st)])
        if seed is not None and s < len(seed.stages):
            sd = seed.stages[s]
            rows[-1].append(f"{sd.out} x{sd.depth} "
                            f"{_ops_text(sd) if sd.ops != st.ops else '(same)'}")
    c.print_table(f"derived architecture (path probability {r.probability:.3g})",
                  ("stage", "stride", "width", "depth", "ops (per layer)",
                   *([Column("seed", style="dim")] if seed is not None else [])), rows,
                  right=("stage", "stride"))

    def line(name: str, p: Any, ms: float | None = None) -> str:
        lat = ""
        if r.latency_table is not None:
            lat = f", {ms:.2f} ms predicted" if ms is not None else ", latency: not in the table"
        return (f"{name}: {p.madds / 1e6:,.1f}M MAdds{lat}, {p.params / 1e6:.2f}M params "
                f"(backbone {p.params_parts['backbone'] / 1e6:.2f}M)")

    mine = r.profile
    c.err_console.print(line(f"derived ({r.where})", mine, r.latency_ms))
    if r.seed_profile is not None:
        ratio = mine.madds / max(r.seed_profile.madds, 1)
        c.err_console.print(line("seed", r.seed_profile, r.seed_latency_ms)
                            + f"; derived/seed MAdds {ratio:.3f}")


def _show_top(r: Any) -> None:
    """Rank, probability/fitness, MAdds, and the ops and width of every stage in which the K
    architectures differ (the stages they share are named once in the caption)."""
    from fnacli.search.arch import differing_stages, stage_text

    tops = r.top
    key = "probability" if tops and "probability" in tops[0] else "fitness"
    specs = [t["spec"] for t in tops]
    differ = differing_stages(specs)
    lat = ["latency"] if r.latency_table is not None else []
    rows = [[str(t["rank"]), f"{t[key]:.4g}", f"{t['madds'] / 1e6:,.1f}M",
             *([f"{ms:.2f} ms" if (ms := t.get("latency_ms")) is not None else "-"] * len(lat)),
             *(stage_text(t["spec"].stages[s]) if s < len(t["spec"].stages) else "-"
               for s in differ)] for t in tops]
    same = [s for s in range(len(specs[0].stages)) if s not in differ] if specs else []
    caption = []
    if same:
        caption.append(f"the same in all: stage{'s' if len(same) > 1 else ''} "
                       + ", ".join(f"{s} ({stage_text(specs[0].stages[s])})" for s in same))
    if key == "probability":
        caption.append(f"total probability of the listed: {sum(t[key] for t in tops):.4g}")
    c.print_table(f"top {len(tops)} ({r.where})",
                  ("rank", key, "MAdds", *lat, *(f"stage {s} (width: ops)" for s in differ)),
                  rows, right=("rank", key, "MAdds", *lat), caption="; ".join(caption) or None)
