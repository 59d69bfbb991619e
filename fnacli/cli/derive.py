"""`fnacli derive SEARCHED|SUPERNET [-o ARCH.json|-]`: the architecture a search chose
(``fnacli.pipeline.derive``), as a canonical ``fnacli/arch@1`` spec on stdout (or -o);
``--show`` / ``--top`` tables on stderr."""

from __future__ import annotations

import json
from typing import Any

import typer

from fnacli.cli import common as c
from fnacli.cli.app import app
from fnacli.pipeline.derive import DeriveConfig

o = c.options_of(DeriveConfig)


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
    cost_scope: str | None = o("cost_scope"),
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
