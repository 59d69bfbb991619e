"""`fnacli madds`: params and MAdds of architectures and detectors, and the cost lookup table."""

from __future__ import annotations

import json
import re
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

from fnacli.cli.app import app
from fnacli.cli.common import err_console, fail, print_result

if TYPE_CHECKING:
    from fnacli.cost import Profile
    from fnacli.spec import ArchSpec


class Task(StrEnum):
    none = "none"
    classifier = "classifier"
    ssdlite = "ssdlite"
    retinanet = "retinanet"


DEFAULT_INPUT = {"none": "224", "classifier": "224", "ssdlite": "320", "retinanet": "1088x800"}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*(?:[xX×]\s*(\d+))?\s*$")


def parse_input(text: str) -> tuple[int, int]:
    """``320`` -> (320, 320); ``1088x800`` -> width 1088, height 800."""
    m = _SIZE_RE.match(text)
    if not m:
        raise_input(text)
    w = int(m.group(1))
    h = int(m.group(2)) if m.group(2) else w
    if w < 1 or h < 1:
        raise_input(text)
    return w, h


def raise_input(text: str) -> NoReturn:
    fail(f"--input: expected a size like 320 (square) or 1088x800 (WIDTHxHEIGHT), got {text!r}")


def _specs_from_stdin() -> list[tuple[str, ArchSpec]]:
    """One JSON document, or JSON lines with one spec per line."""
    from fnacli.io import read_text_arg
    from fnacli.spec import ArchSpec

    text, _ = read_text_arg("-", "SPEC")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        doc = None
    if isinstance(doc, dict):
        return [("<stdin>", ArchSpec.from_dict(doc, "<stdin>"))]
    if isinstance(doc, list):
        return [(f"<stdin>[{i}]", ArchSpec.from_dict(d, f"<stdin>[{i}]"))
                for i, d in enumerate(doc)]
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name = f"<stdin>:{n}"
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            fail(f"{name}: not valid JSON ({e.msg} at column {e.colno}); expected one spec "
                 "document or JSON lines with one spec per line")
        out.append((name, ArchSpec.from_dict(d, name)))
    if not out:
        fail("<stdin>: no spec given (empty input)")
    return out


def _is_json_file(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(64).lstrip()
    return head[:1] in (b"{", b"[")


def load_specs(args: list[str]) -> list[tuple[str, ArchSpec]]:
    """SPEC arguments: JSON files, '-', built-in names, or fnacli checkpoints."""
    from fnacli.spec import load_arch

    if args.count("-") > 1:
        fail("SPEC: '-' (stdin) can be given only once")
    out: list[tuple[str, ArchSpec]] = []
    for arg in args:
        path = Path(arg)
        if arg == "-":
            out += _specs_from_stdin()
        elif path.is_file() and not _is_json_file(path):
            from fnacli.checkpoint import read_checkpoint

            ck = read_checkpoint(path)
            if ck.spec is None:
                hint = " (derive an architecture first: fnacli derive)" if ck.space else ""
                fail(f"{arg}: this {ck.kind} checkpoint carries no architecture spec{hint}")
            out.append((arg, ck.spec))
        else:
            out.append((arg, load_arch(arg)))
    return out


def _fmt(n: float, unit: str = "") -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def _table(profiles: list[Profile], title: str) -> None:
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
    err_console.print(t)


@app.command("madds")
def madds(
    specs: list[str] = typer.Argument(None, metavar="SPEC...",
                                      help="Architectures: JSON files, '-' (stdin: one JSON "
                                           "document or JSON lines), built-in names, or fnacli "
                                           "checkpoints (their embedded spec)."),
    task: Task = typer.Option(Task.none, "--task",
                              help="What to count: the backbone (with its 1x1 head conv), the "
                                   "ImageNet classifier, or a detector."),
    input_size: str = typer.Option(None, "--input", metavar="SIZE",
                                   help="Input size: 320 (square) or WIDTHxHEIGHT, e.g. 1088x800. "
                                        "Default: 224 (none, classifier), 320 (ssdlite), "
                                        "1088x800 (retinanet)."),
    num_classes: int = typer.Option(None, "--num-classes", min=1, metavar="N",
                                    help="Object classes without background (default 80); "
                                         "ImageNet classes for --task classifier (default 1000)."),
    as_json: bool = typer.Option(False, "--json",
                                 help="One JSON object per spec on stdout."),
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
                                           "'fnacli latency' (same task and input; --force: "
                                           "one measured on another machine)."),
    force: bool = typer.Option(False, "--force", help="Overwrite OUT if it exists."),
) -> None:
    """Params and MAdds (conv + linear multiply-accumulates, counted with fvcore) of SPECs,
    split into backbone / neck / head; or the cost lookup table of a search space."""
    size = parse_input(input_size or DEFAULT_INPUT[task.value])
    if lut or space:
        if not (lut and space):
            fail("--lut and --space go together: fnacli madds --space SPACE --lut -o lut.json")
        if specs:
            fail("--lut builds the table of --space; drop the SPEC arguments")
        _build_lut(space, task.value, size, num_classes, output, force)
        return
    if output:
        fail("-o/--output is only for --lut (profiles go to stdout with --json)")
    if not specs:
        fail("give at least one SPEC (a JSON file, '-', a built-in name or a checkpoint)")
    named = load_specs(specs)

    from fnacli.cost import default_classes, profile_exact
    from fnacli.lut import profile_specs

    n_cls = num_classes or default_classes(task.value)
    table = None
    if latency_table:
        from fnacli.latency import check_usage, read_latency_table

        table = read_latency_table(latency_table, force)
        check_usage(table, task.value, size, n_cls, latency_table)
    start = time.perf_counter()
    if exact:
        profiles = [profile_exact(s, task.value, size, n_cls, name) for name, s in named]
    else:
        profiles = profile_specs([s for _, s in named], task.value, size, n_cls,
                                 [name for name, _ in named], progress=True)
    took = time.perf_counter() - start
    how = "fvcore trace" if exact else "lookup table"
    extra = f", {n_cls} classes" if task.value != "none" else ""
    if table is not None:
        from fnacli.latency import predict_ms

        for p, (_, s) in zip(profiles, named, strict=True):
            p.extra["latency_ms"] = predict_ms(table, s)
    _table(profiles, f"{task.value} @ {size[0]}x{size[1]}{extra} ({how}, {took:.1f}s)"
           + (f"; latency by {latency_table} ({table.describe()})" if table else ""))
    if as_json:
        print_result("\n".join(json.dumps(p.to_dict()) for p in profiles))


def _build_lut(space_arg: str, task: str, size: tuple[int, int], num_classes: int | None,
               output: str | None, force: bool) -> None:
    from fnacli.io import check_writable, write_output
    from fnacli.spec import load_space

    space = load_space(space_arg)
    if output and output != "-":
        check_writable(output, force)  # fail before the build, not after

    from fnacli.lut import build_lut, cache_path, load_or_build_lut

    start = time.perf_counter()
    if output:
        table = build_lut(space, task, size, num_classes, progress=True)
        write_output(output, table.to_json(), force)
        where = "stdout" if output == "-" else output
    else:
        table = load_or_build_lut(space, task, size, num_classes, progress=True)
        where = str(cache_path(space, task, size, table.num_classes))
        print_result(where)
    err_console.print(f"lookup table: {space_arg} / {task} @ {size[0]}x{size[1]}: "
                      f"{len(table.layers)} layer entries, {len(table.fixed)} fixed-part entries "
                      f"-> {where} ({time.perf_counter() - start:.1f}s)")
    sys.stderr.flush()
