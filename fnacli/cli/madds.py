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


# what a detector checkpoint records: (task, (width, height), classes)
Recorded = tuple[str, tuple[int, int], int]


def load_specs(args: list[str]) -> list[tuple[str, ArchSpec, Recorded | None]]:
    """SPEC arguments: JSON files, '-', built-in names, or fnacli checkpoints; with each, the
    task, input size and classes a detector checkpoint was trained with (else None)."""
    from fnacli.spec import load_arch

    if args.count("-") > 1:
        fail("SPEC: '-' (stdin) can be given only once")
    out: list[tuple[str, ArchSpec, Recorded | None]] = []
    for arg in args:
        path = Path(arg)
        if arg == "-":
            out += [(name, spec, None) for name, spec in _specs_from_stdin()]
        elif path.is_file() and not _is_json_file(path):
            from fnacli.checkpoint import read_checkpoint

            ck = read_checkpoint(path)
            if ck.spec is None:
                hint = " (derive an architecture first: fnacli derive)" if ck.space else ""
                fail(f"{arg}: this {ck.kind} checkpoint carries no architecture spec{hint}")
            recorded = None
            if ck.kind == "detector":
                from fnacli.detection.checkpoint import detector_info

                info = detector_info(ck, path)
                recorded = (info.task, info.size, info.num_classes)
            out.append((arg, ck.spec, recorded))
        else:
            out.append((arg, load_arch(arg), None))
    return out


def settings_for(recorded: Recorded | None, task: str | None, input_size: str | None,
                 num_classes: int | None) -> tuple[str, tuple[int, int], int]:
    """(task, size, classes) of one profile: the options given, else what a detector
    checkpoint records (when its task is the one counted), else the task's defaults."""
    from fnacli.cost import default_classes

    t = task or (recorded[0] if recorded else "none")
    own = recorded is not None and recorded[0] == t
    size = parse_input(input_size) if input_size else (
        recorded[1] if own else parse_input(DEFAULT_INPUT[t]))
    n = num_classes or (recorded[2] if own else default_classes(t))
    return t, size, n


def _fmt(n: float, unit: str = "") -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def _table(profiles: list[Profile], title: str) -> None:
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for col in ("name", "params", "MAdds", "backbone", "neck", "head"):
        t.add_column(col, justify="left" if col == "name" else "right")
    for p in profiles:
        t.add_row(p.name, _fmt(p.params), _fmt(p.madds),
                  *(_fmt(p.madds_parts.get(part, 0)) for part in ("backbone", "neck", "head")))
    err_console.print(t)


@app.command("madds")
def madds(
    specs: list[str] = typer.Argument(None, metavar="SPEC...",
                                      help="Architectures: JSON files, '-' (stdin: one JSON "
                                           "document or JSON lines), built-in names, or fnacli "
                                           "checkpoints (their embedded spec)."),
    task: Task | None = typer.Option(None, "--task",
                                     help="What to count: the backbone (with its 1x1 head "
                                          "conv), the ImageNet classifier, or a detector "
                                          "[a detector checkpoint's own task, else none]."),
    input_size: str = typer.Option(None, "--input", metavar="SIZE",
                                   help="Input size: 320 (square) or WIDTHxHEIGHT, e.g. 1088x800. "
                                        "Default: a detector checkpoint's own, else 224 (none, "
                                        "classifier), 320 (ssdlite), 1088x800 (retinanet)."),
    num_classes: int = typer.Option(None, "--num-classes", min=1, metavar="N",
                                    help="Object classes without background (default: a "
                                         "detector checkpoint's, else 80); ImageNet classes for "
                                         "--task classifier (default 1000)."),
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
    force: bool = typer.Option(False, "--force", help="Overwrite OUT if it exists."),
) -> None:
    """Params and MAdds (conv + linear multiply-accumulates, counted with fvcore) of SPECs,
    split into backbone / neck / head; or the cost lookup table of a search space."""
    task_name = task.value if task else None
    if input_size:
        parse_input(input_size)  # a bad size fails before any work
    if lut or space:
        if not (lut and space):
            fail("--lut and --space go together: fnacli madds --space SPACE --lut -o lut.json")
        if specs:
            fail("--lut builds the table of --space; drop the SPEC arguments")
        t = task_name or "none"
        _build_lut(space, t, parse_input(input_size or DEFAULT_INPUT[t]), num_classes, output,
                   force)
        return
    if output:
        fail("-o/--output is only for --lut (profiles go to stdout with --json)")
    if not specs:
        fail("give at least one SPEC (a JSON file, '-', a built-in name or a checkpoint)")
    named = load_specs(specs)

    from fnacli.cost import profile_exact
    from fnacli.lut import profile_specs

    # one table per setting (task, size, classes): detector checkpoints bring their own
    groups: dict[tuple[str, tuple[int, int], int], list[int]] = {}
    for i, (_, _, recorded) in enumerate(named):
        groups.setdefault(settings_for(recorded, task_name, input_size, num_classes),
                          []).append(i)
    profiles: list[Profile | None] = [None] * len(named)
    for (t, size, n_cls), idx in groups.items():
        start = time.perf_counter()
        if exact:
            done = [profile_exact(named[i][1], t, size, n_cls, named[i][0]) for i in idx]
        else:
            done = profile_specs([named[i][1] for i in idx], t, size, n_cls,
                                 [named[i][0] for i in idx], progress=True)
        for i, p in zip(idx, done, strict=True):
            profiles[i] = p
        took = time.perf_counter() - start
        how = "fvcore trace" if exact else "lookup table"
        extra = f", {n_cls} classes" if t != "none" else ""
        _table(done, f"{t} @ {size[0]}x{size[1]}{extra} ({how}, {took:.1f}s)")
    if as_json:
        print_result("\n".join(json.dumps(p.to_dict()) for p in profiles if p is not None))


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
