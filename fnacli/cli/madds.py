"""`fnacli madds`: params and MAdds of architectures and detectors, and the cost lookup table
(``fnacli.pipeline.profile``)."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import Any

import typer

from fnacli.cli import common as c
from fnacli.cli.app import app
from fnacli.tasks import per_task, size_text, task_names

CountTask = StrEnum("CountTask", {n: n for n in ("none", "classifier", *task_names())})


def _fmt(n: float, unit: str = "") -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def _table(profiles: list[Any], title: str) -> None:
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    lat = any("latency_ms" in p.extra for p in profiles)
    for col in ("name", "params", "MAdds", "backbone", "neck", "head",
                *(["latency"] if lat else [])):
        t.add_column(col, justify="left" if col == "name" else "right")
    for p in profiles:
        ms = p.extra.get("latency_ms")
        t.add_row(p.name, _fmt(p.params), _fmt(p.madds),
                  *(_fmt(p.madds_parts.get(part, 0)) for part in ("backbone", "neck", "head")),
                  *([f"{ms:.2f} ms" if ms is not None else "not in table"] if lat else []))
    c.err_console.print(t)


@app.command("madds")
def madds(
    specs: list[str] = typer.Argument(None, metavar="SPEC...",
                                      help="Architectures: JSON files, '-' (stdin: one JSON "
                                           "document or JSON lines), built-in names, or fnacli "
                                           "checkpoints (their embedded spec)."),
    task: CountTask | None = typer.Option(None, "--task",
                                          help="What to count: the backbone (with its 1x1 head "
                                               "conv), the ImageNet classifier, or a detector "
                                               "[a detector checkpoint's own task, else none]."),
    size: str | None = c.size_opt("Input size: 320 (square) or WIDTHxHEIGHT, e.g. 1088x800. "
                                  "Default: a detector checkpoint's own, else 224 (none, "
                                  "classifier), "
                                  f"{per_task(lambda t: size_text(t.profile_size))}."),
    input_alias: str | None = c.hidden_opt("--input"),
    num_classes: int = typer.Option(None, "--num-classes", min=1, metavar="N",
                                    help="Object classes without background (default: a "
                                         "detector checkpoint's, else 80); ImageNet classes "
                                         "for --task classifier (default 1000)."),
    as_json: bool = c.json_opt("One JSON object per spec on stdout."),
    exact: bool = typer.Option(False, "--exact",
                               help="Trace every network with fvcore instead of summing the "
                                    "lookup table (slower; same numbers)."),
    space: str = typer.Option(None, "--space", metavar="SPACE",
                              help="With --lut: the search space (built-in name, JSON file "
                                   "or '-')."),
    lut: bool = typer.Option(False, "--lut",
                             help="Build the cost lookup table of --space instead of profiling "
                                  "specs (to -o, else into the cache; prints its path)."),
    output: str = typer.Option(None, "--output", "-o", metavar="OUT",
                               help="With --lut: where to write the table ('-' for stdout)."),
    latency_table: str = typer.Option(None, "--latency-table", metavar="TABLE",
                                      help="Also the predicted latency, by a table from "
                                           "'fnacli latency' (same task and size; --force: "
                                           "one measured on another machine)."),
    force: bool = c.force_opt("Overwrite OUT if it exists."),
) -> None:
    """Params and MAdds (conv + linear multiply-accumulates, counted with fvcore) of SPECs,
    split into backbone / neck / head; or the cost lookup table of a search space."""
    from fnacli.pipeline import profile as P
    from fnacli.pipeline.common import as_size

    size_wh = as_size(size or input_alias, min_side=1)  # bad sizes fail before anything else
    task_name = task.value if task else None
    if lut or space:
        if not (lut and space):
            c.fail("--lut and --space go together: fnacli madds --space SPACE --lut -o lut.json")
        if specs:
            c.fail("--lut builds the table of --space; drop the SPEC arguments")
        r = P.build_table(space, task_name or "none", size_wh, num_classes, output, force,
                          progress=True)
        if r.text is not None:
            from fnacli.io import write_output

            write_output("-", r.text, force)
        elif not output:
            c.print_result(r.where)
        w, h = r.table.size
        c.err_console.print(f"lookup table: {space} / {task_name or 'none'} @ {w}x{h}: "
                            f"{len(r.table.layers)} layer entries, {len(r.table.fixed)} "
                            f"fixed-part entries -> {r.where} ({r.seconds:.1f}s)")
        sys.stderr.flush()
        return
    if output:
        c.fail("-o/--output is only for --lut (profiles go to stdout with --json)")
    if not specs:
        c.fail("give at least one SPEC (a JSON file, '-', a built-in name or a checkpoint)")
    table = None
    if latency_table:
        from fnacli.latency import read_latency_table

        table = read_latency_table(latency_table, force)  # refused before the profiles
    named = P.load_recorded_specs(specs)
    # one table per setting: a detector checkpoint counts at its own task, size and classes
    results = P.profile_recorded(named, task_name, size_wh, num_classes, exact, progress=True)
    if table is not None:
        _add_latency(table, latency_table, results, {n: s for n, s, _ in named})
    for r in results:
        extra = f", {r.num_classes} classes" if r.task != "none" else ""
        lat = (f"; latency by {latency_table} ({table.describe()})"
               if table is not None and any("latency_ms" in p.extra for p in r.profiles)
               else "")
        _table(r.profiles, f"{r.task} @ {r.size[0]}x{r.size[1]}{extra} ({r.method}, "
                           f"{r.seconds:.1f}s){lat}")
    if as_json:  # in the order the SPECs were given (the sort is stable)
        rank = {name: i for i, (name, _, _) in reversed(list(enumerate(named)))}
        order = sorted((p for r in results for p in r.profiles),
                       key=lambda p: rank.get(p.name, len(rank)))
        c.print_result("\n".join(json.dumps(p.to_dict()) for p in order))


def _add_latency(table: Any, source: str, results: list, specs: dict) -> None:
    """Predicted latency beside MAdds for the profiles of the table's setting (task, size,
    classes); a table of none of the settings is refused."""
    from fnacli.latency import check_usage, predict_ms

    matching = [r for r in results
                if (r.task, tuple(r.size), r.num_classes) ==
                (table.task, tuple(table.size), table.num_classes)]
    if not matching:
        r = results[0]
        check_usage(table, r.task, r.size, r.num_classes, source)
    for r in matching:
        for p in r.profiles:
            p.extra["latency_ms"] = predict_ms(table, specs[p.name])
