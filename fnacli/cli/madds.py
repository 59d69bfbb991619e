"""`fnacli madds`: params and MAdds of architectures and detectors, and the cost lookup table
(``fnacli.pipeline.profile``)."""

from __future__ import annotations

import sys
from enum import StrEnum

import typer

from fnacli.cli import common as c
from fnacli.cli.app import app
from fnacli.pipeline.profile import ProfileConfig, TableConfig
from fnacli.tasks import task_names

CountTask = StrEnum("CountTask", {n: n for n in ("none", "classifier", *task_names())})
o, table = c.options_of(ProfileConfig), c.options_of(TableConfig)


@app.command("madds")
def madds(
    specs: list[str] = typer.Argument(None, metavar="SPEC...", autocompletion=c.complete_arch,
                                      help="Architectures: JSON files, '-' (stdin: one JSON "
                                           "document or JSON lines), built-in names, or fnacli "
                                           "checkpoints (their embedded spec)."),
    task: CountTask | None = o("task", default=None, metavar=None),  # its choices
    size: str | None = o("size"),
    input_alias: str | None = c.hidden_opt("--input"),
    num_classes: int = o("num_classes"),
    as_json: bool = c.opt("--json", "One JSON document on stdout: a list with one object per "
                                    "spec, in the order given."),
    as_jsonl: bool = typer.Option(False, "--jsonl", help="JSON Lines on stdout instead: one "
                                  "object per spec and line (for streams)."),
    exact: bool = o("exact"),
    space: str = table("space", default=None, autocompletion=c.complete_space),
    reference: str = typer.Option(None, "--seed-spec", metavar="SPEC", help="With --space: the "
                                  "seed architecture to show [mobilenetv2]."),
    lut: bool = typer.Option(False, "--lut", help="Build the cost lookup table of --space instead "
                             "of profiling specs (to -o, else into the cache; prints its path)."),
    output: str = table("output"),
    latency_table: str = c.opt("--latency-table", "Also the predicted latency, by a table from "
                                                  "'fnacli latency' (same task and size; --force: "
                                                  "one measured on another machine)."),
    force: bool = table("force"),
) -> None:
    """Params and MAdds (conv + linear multiply-accumulates, counted with fvcore) of SPECs,
    split into backbone / neck / head; or the cost lookup table of a search space."""
    from fnacli.pipeline import profile as P
    from fnacli.pipeline.common import as_size

    c.setup_logging()  # the library's warnings (a cache that cannot be saved) on stderr

    size_wh = as_size(size or input_alias, min_side=1)  # bad sizes fail before anything else
    task_name = task.value if task else None
    if lut:
        if not space:
            c.fail("--lut builds the table of --space: fnacli madds --space SPACE --lut -o "
                   "lut.json")
        if specs:
            c.fail("--lut builds the table of --space; drop the SPEC arguments")
        r = P.build_table(space, task_name or "none", size_wh, num_classes, output, force,
                          progress=True)
        if r.text is not None:
            from fnacli.io import write_output

            write_output("-", r.text, force)
        elif not output and r.where:
            c.print_result(r.where)
        c.show(r.report())
        sys.stderr.flush()
        return
    if space:
        if specs:
            c.fail("--space profiles the space's cheapest, seed and most costly architectures; "
                   "drop the SPEC arguments (or give --lut to build its table)")
        from fnacli.pipeline.sample import profile_space

        results = [profile_space(space, task_name or "none", size_wh, num_classes, reference,
                                 progress=True)]
        named = [(p.name, s, None) for p, s in zip(results[0].profiles, results[0].specs,
                                                   strict=True)]
        if latency_table:
            P.add_latency(results, named, P.read_latency(latency_table, force), latency_table)
        _print(results, named, as_json, as_jsonl)
        return
    if output:
        c.fail("-o/--output is only for --lut (profiles go to stdout with --json)")
    if not specs:
        c.fail("give at least one SPEC (a JSON file, '-', a built-in name or a checkpoint)")
    table = None
    if latency_table:
        table = P.read_latency(latency_table, force)  # refused before the profiles
    named = P.load_recorded_specs(specs)
    # one table per setting: a detector checkpoint counts at its own task, size and classes
    results = P.profile_recorded(named, task_name, size_wh, num_classes, exact, progress=True)
    if table is not None:
        P.add_latency(results, named, table, latency_table)
    _print(results, named, as_json, as_jsonl)


def _print(results: list, named: list, as_json: bool, as_jsonl: bool) -> None:
    """The tables on stderr; the profiles, in the order given, on stdout when asked."""
    from fnacli.pipeline import profile as P

    for r in results:
        c.show(r.report())
    rows = [p.to_dict() for p in P.in_given_order(results, named)]
    if as_json:
        c.print_json(rows)
    elif as_jsonl:
        c.print_json_lines(rows)

