"""`fnacli derive SEARCHED|SUPERNET [-o ARCH.json|-]`: the architecture a search chose.

argmax α per layer (skips dropped), argmax β per stage, as a canonical ``fnacli/arch@1`` spec
on stdout (or -o). ``--show`` draws it on stderr with MAdds/params against the seed;
``--top K`` lists the K most likely architectures (one-shot searches: the K best evaluated);
``--plot`` / ``--diagram`` write SVG pictures (``fnacli.plots``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from fnacli.cli.app import app
from fnacli.cli.common import err_console, fail, print_result


@app.command("derive", help="Derive the searched architecture (argmax α per layer, argmax β per "
                            "stage) as an arch spec: stdout by default, pipe it into 'fnacli "
                            "remap SEED --spec -'.")
def derive(
    checkpoint: str = typer.Argument(..., metavar="SEARCHED|SUPERNET",
                                     help="A searched checkpoint (any epoch) or a supernet."),
    output: str = typer.Option("-", "-o", "--output", metavar="ARCH.json|-",
                               help="Where the spec goes ('-': stdout)."),
    show: bool = typer.Option(False, "--show", help="Draw the architecture on stderr: ops per "
                                                   "layer, widths, MAdds/params vs the seed."),
    top: int | None = typer.Option(None, "--top", min=1, metavar="K",
                                   help="List the K most likely architectures with their "
                                        "probabilities and MAdds (stderr; in --json output)."),
    as_json: bool = typer.Option(False, "--json",
                                 help="Print a JSON report (spec, probability, MAdds, top K) "
                                      "on stdout instead of the bare spec."),
    task: str | None = typer.Option(None, "--task", metavar="ssdlite|retinanet|none",
                                    help="Detector the MAdds are counted for [the search's, "
                                         "else ssdlite]."),
    size: str | None = typer.Option(None, "--size", metavar="N|WxH",
                                    help="Input size of the MAdds [the search's, else the "
                                         "task's]."),
    num_classes: int | None = typer.Option(None, "--num-classes", min=1,
                                           help="Classes of the detector [the search's, else "
                                                "80]."),
    min_depth: int | None = typer.Option(None, "--min-depth", min=0, metavar="N",
                                         help="Never drop layers 0..N-1 of a stage [the "
                                              "search's]."),
    plot: str | None = typer.Option(None, "--plot", metavar="OUT.svg",
                                    help="Draw α/β probabilities per epoch (from "
                                         "SEARCHED.metrics.jsonl, else the checkpoint's "
                                         "current α/β) as SVG."),
    diagram: str | None = typer.Option(None, "--diagram", metavar="OUT.svg",
                                       help="Draw the derived architecture as SVG, beside the "
                                            "seed's when the checkpoint records it."),
    metrics: str | None = typer.Option(None, "--metrics", metavar="FILE.jsonl",
                                       help="The search's metrics for --plot [SEARCHED"
                                            ".metrics.jsonl when it exists]."),
    latency_table: str | None = typer.Option(None, "--latency-table", metavar="TABLE",
                                             help="Report predicted latency beside MAdds, by "
                                                  "a table from 'fnacli latency' (--force: "
                                                  "one measured on another machine)."),
    force: bool = typer.Option(False, "--force",
                               help="Overwrite -o ARCH.json, --plot and --diagram files."),
) -> None:
    from fnacli.io import check_writable, write_output
    from fnacli.search import arch as A
    from fnacli.search.supernet_io import read_supernet

    for opt, dest in (("--plot", plot), ("--diagram", diagram)):
        if dest == "-":
            fail(f"{opt}: give a file name (stdout carries the spec)")
        if dest is not None:
            check_writable(dest, force)  # refuse before any work, and before the spec goes out
    table = None
    if latency_table:
        from fnacli.latency import read_latency_table

        table = read_latency_table(latency_table, force)
    ck = read_supernet(checkpoint)
    searched = ck.meta.get("search", {})
    depth = ck.min_depth if min_depth is None else min_depth
    arch, path, prob = A.derive(ck.space, ck.alpha, ck.beta, depth)
    if plot is not None:
        _plot(ck, checkpoint, metrics, depth, plot)
    if diagram is not None:
        from fnacli.plots import render_arch_diagram, write_svg

        write_svg(diagram, render_arch_diagram(
            arch, ck.seed_spec, title=f"derived from {Path(checkpoint).name}"))
    if output != "-" or not as_json:
        write_output(output, arch.to_json(), force)
    warning = A.collapse_warning(ck.space, path)
    if warning:
        err_console.print(f"warning: {warning}")
    if not (show or top or as_json):
        return

    cost = _Costs(searched, task, size, num_classes)
    if table is not None:
        from fnacli.latency import check_usage, predict_ms

        check_usage(table, cost.task, cost.size, cost.num_classes, str(latency_table))
        cost.latency = lambda spec: predict_ms(table, spec)
    seed = ck.seed_spec
    specs = [arch] + ([seed] if seed is not None else [])
    tops = _top(ck, searched, top, depth) if top else []
    profiles = cost.profiles(specs + [t["spec"] for t in tops])
    mine, seed_p = profiles[0], (profiles[1] if seed is not None else None)
    for t, p in zip(tops, profiles[len(specs):], strict=True):
        t["madds"] = p.madds
        if cost.latency is not None:
            t["latency_ms"] = cost.latency(t["spec"])
    if show:
        _show(arch, seed, mine, seed_p, prob, cost)
    if top:
        _show_top(tops, cost)
    if as_json:
        report: dict[str, Any] = {"spec": arch.to_dict(), "probability": prob,
                                  "task": cost.task, "input": list(cost.size),
                                  "madds": mine.madds, "params": mine.params,
                                  "backbone_params": mine.params_parts["backbone"],
                                  "skipped_layers": A.skip_report(ck.space, path)[0]}
        if cost.latency is not None:
            report["latency_ms"] = cost.latency(arch)
        if seed_p is not None:
            report["seed"] = {"spec": seed.to_dict(), "madds": seed_p.madds,
                              "params": seed_p.params}
            if cost.latency is not None:
                report["seed"]["latency_ms"] = cost.latency(seed)
        if top:
            report["top"] = [{**{k: v for k, v in t.items() if k != "spec"},
                              "spec": t["spec"].to_dict()} for t in tops]
        print_result(json.dumps(report))


class _Costs:
    """MAdds/params of specs for the search's task and size (from its metadata by default)."""

    def __init__(self, searched: dict, task: str | None, size: str | None,
                 num_classes: int | None) -> None:
        from fnacli.cli.finetune import RECIPES, parse_size

        self.task = task or searched.get("task") or "ssdlite"
        if self.task not in ("ssdlite", "retinanet", "none"):
            fail(f"--task: expected ssdlite, retinanet or none, got {self.task!r}")
        if size:
            self.size = parse_size(size)
        elif searched.get("size"):
            self.size = tuple(searched["size"])
        else:
            self.size = RECIPES[self.task]["size"] if self.task in RECIPES else (224, 224)
        self.num_classes = num_classes or searched.get("num_classes") or 80
        self.latency: Any = None  # spec -> predicted ms (None: not in the table)

    def profiles(self, specs: list) -> list:
        from fnacli.lut import profile_specs

        return profile_specs(specs, self.task, self.size, self.num_classes)

    @property
    def where(self) -> str:
        what = "backbone" if self.task == "none" else self.task
        return f"{what} {self.size[0]}x{self.size[1]}"


def _top(ck: Any, searched: dict, k: int, depth: int) -> list[dict]:
    """The K most likely architectures (α/β), or the K best a one-shot search recorded."""
    from fnacli.search import arch as A
    from fnacli.spec import ArchSpec

    if searched.get("strategy") in ("evolution", "random") and "top" in searched:
        return [{"rank": c["rank"], "fitness": c["fitness"],
                 "spec": ArchSpec.from_dict(c["arch"], f"{ck.kind} top[{c['rank']}]")}
                for c in searched["top"][:k]]
    a, b = A.probs(ck.space, ck.alpha, ck.beta, depth)
    ranked, exact = A.top_k(ck.space, a, b, k)
    if not exact:
        err_console.print("note: the space is too large to enumerate a stage exactly; the "
                          "top list is a beam-search approximation")
    return [{"rank": r + 1, "probability": p, "spec": s} for r, (p, s) in enumerate(ranked)]


def _plot(ck: Any, checkpoint: str, metrics: str | None, depth: int, dest: str) -> None:
    """SEARCHED.arch.svg again: every epoch of the metrics file, or the checkpoint's α/β."""
    from fnacli.plots import read_epoch_records, render_search_plot, write_svg
    from fnacli.search import arch as A
    from fnacli.search.differentiable import prob_report

    searched = ck.meta.get("search", {})
    source = Path(metrics) if metrics else Path(f"{checkpoint}.metrics.jsonl")
    if metrics and not source.is_file():
        fail(f"--metrics {metrics}: no such file")
    records = read_epoch_records(source, ck.space) if source.is_file() else []
    if records:
        note = f"{len(records)} epoch{'s' if len(records) != 1 else ''} from {source.name}"
    else:  # no history: one column of what the checkpoint holds now
        done = searched.get("epochs_done")
        probs = A.probs(ck.space, ck.alpha, ck.beta, depth)
        records = [{"epoch": done - 1 if done else None, **prob_report(ck.space, *probs)}]
        note = f"no metrics file ({source.name}): the checkpoint's current α/β"
        err_console.print(f"note: {note}")
    if searched.get("strategy") in ("evolution", "random"):
        note += "; a one-shot search does not train α/β"
    what = f"{searched['task']} {searched['size'][0]}x{searched['size'][1]}, " if (
        searched.get("task") and searched.get("size")) else ""
    write_svg(dest, render_search_plot(
        ck.space, records, title=f"α/β over the search: {Path(checkpoint).name}",
        subtitle=f"{ck.space.name} space, {what}{note}",
        warmup_epochs=searched.get("warmup_epochs")))


def _ops_text(st: Any) -> str:
    return " ".join(f"K{o.kernel}_E{o.expand}" for o in st.ops)


def _show(arch: Any, seed: Any, mine: Any, seed_p: Any, prob: float, cost: _Costs) -> None:
    from rich.table import Table

    table = Table(title=f"derived architecture (path probability {prob:.3g})",
                  title_justify="left")
    for col in ("stage", "stride", "width", "depth", "ops (per layer)"):
        table.add_column(col, justify="right" if col in ("stage", "stride") else "left")
    if seed is not None:
        table.add_column("seed", style="dim")
    for s, st in enumerate(arch.stages):
        row = [str(s), str(st.stride), str(st.out), str(st.depth), _ops_text(st)]
        if seed is not None and s < len(seed.stages):
            sd = seed.stages[s]
            row.append(f"{sd.out} x{sd.depth} {_ops_text(sd) if sd.ops != st.ops else '(same)'}")
        table.add_row(*row)
    err_console.print(table)

    def line(name: str, p: Any, spec: Any) -> str:
        lat = ""
        if cost.latency is not None:
            ms = cost.latency(spec)
            lat = f", {ms:.2f} ms predicted" if ms is not None else ", latency: not in the table"
        return (f"{name}: {p.madds / 1e6:,.1f}M MAdds{lat}, {p.params / 1e6:.2f}M params "
                f"(backbone {p.params_parts['backbone'] / 1e6:.2f}M)")

    err_console.print(line(f"derived ({cost.where})", mine, arch))
    if seed_p is not None:
        err_console.print(line("seed", seed_p, seed)
                          + f"; derived/seed MAdds {mine.madds / max(seed_p.madds, 1):.3f}")


def _show_top(tops: list[dict], cost: _Costs) -> None:
    from rich.table import Table

    key = "probability" if tops and "probability" in tops[0] else "fitness"
    table = Table(title=f"top {len(tops)} ({cost.where})", title_justify="left")
    lat = cost.latency is not None
    for col in ("rank", key, "MAdds", *(["latency"] if lat else []), "depths", "widths"):
        table.add_column(col, justify="right" if col != "depths" else "left")
    for t in tops:
        spec = t["spec"]
        ms = t.get("latency_ms")
        table.add_row(str(t["rank"]), f"{t[key]:.4g}", f"{t['madds'] / 1e6:,.1f}M",
                      *([f"{ms:.2f} ms" if ms is not None else "-"] if lat else []),
                      "-".join(str(st.depth) for st in spec.stages),
                      "-".join(str(st.out) for st in spec.stages))
    if key == "probability":
        table.caption = f"total probability of the listed: {sum(t[key] for t in tops):.4g}"
    err_console.print(table)
