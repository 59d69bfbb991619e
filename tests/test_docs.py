"""The docs cannot drift from the code.

- docs/cli-reference.md equals a fresh ``python -m fnacli.docgen`` (and the generator
  really renders every command, option and default of the click tree, torch-free);
- every ``fnacli …`` command line quoted in the tutorial (and the other hand-written guides
  of this folder) names an existing command and only existing options, with valid choices
  and the required arguments;
- the remapping pictures are the output of docs/img/make_figures.py, and the rules they
  draw agree with fnacli.remap;
- relative links between the docs resolve.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from fnacli import docgen

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
REFERENCE = DOCS / "cli-reference.md"
# Hand-written guides whose shell examples are checked against the CLI.
CHECKED_GUIDES = ("tutorial.md", "troubleshooting.md", "README.md")


# ---- the generated CLI reference ----------------------------------------------------------

def test_cli_reference_is_current() -> None:
    assert REFERENCE.read_text(encoding="utf-8") == docgen.render(), (
        "docs/cli-reference.md is stale: python -m fnacli.docgen > docs/cli-reference.md")


RUN_DOCGEN = """
import runpy, sys
try:
    runpy.run_module("fnacli.docgen", run_name="__main__")
except SystemExit as e:
    assert not e.code, e.code
heavy = [m for m in ("torch", "torchvision", "fvcore") if m in sys.modules]
assert not heavy, heavy
"""


def test_docgen_runs_as_a_module_without_torch() -> None:
    r = subprocess.run([sys.executable, "-c", RUN_DOCGEN], capture_output=True, timeout=60,
                       env={**os.environ, "COLUMNS": "37", "LC_ALL": "C"})
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    # independent of terminal width and locale: byte-identical to the committed file
    assert r.stdout == REFERENCE.read_bytes()


def test_docgen_check_mode(tmp_path: Path) -> None:
    assert docgen.main(["--check", str(REFERENCE)]) == 0
    stale = tmp_path / "ref.md"
    stale.write_text(REFERENCE.read_text(encoding="utf-8").replace("--spec", "--spek"))
    assert docgen.main(["--check", str(stale)]) == 1
    out = tmp_path / "out.md"
    assert docgen.main(["-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == docgen.render()


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def _table_rows(section: str) -> list[list[str]]:
    rows = []
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows.append(cells)
    return rows


def test_reference_has_every_command_option_and_default() -> None:
    """Walk the click tree independently of the renderer and find each thing in its section."""
    import typer.main

    from fnacli.cli.app import app

    sections = _sections(docgen.render())
    root = typer.main.get_command(app)
    seen = 0

    def visit(cmd: Any, path: tuple[str, ...]) -> None:
        nonlocal seen
        title = " ".join(("fnacli", *path))
        assert title in sections, f"no section for {title}"
        body = sections[title]
        rows = {r[0].strip("`"): r for r in _table_rows(body)}
        for p in cmd.params:
            if p.name == "help" or getattr(p, "hidden", False):
                continue
            if p.param_type_name == "argument":  # shown by its metavar (else its name)
                shown = (p.metavar or p.name).rstrip(".").lower()
                row = next((r for key, r in rows.items()
                            if key.split()[0].rstrip(".").lower() == shown), None)
            else:
                row = next((r for key, r in rows.items()
                            if all(o in key.replace(",", " ").split() for o in p.opts)), None)
            assert row is not None, f"{title}: {p.opts} missing from the reference"
            if p.required:
                assert row[1] == "required", (title, p.opts, row)
            if p.help:
                assert " ".join(p.help.split())[:30].replace("*", "\\*").replace("<", "&lt;") \
                    in row[2], (title, p.opts, row)
            seen += 1
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                visit(sub, (*path, name))

    visit(root, ())
    assert seen > 80  # every option of every command, not a handful
    # a few defaults, read off the CLI's own declarations
    remap = {r[0]: r for r in _table_rows(sections["fnacli remap"])}
    assert remap["`--width <first|bn|std|l1>`"][1] == "`first`"
    assert remap["`-s, --spec SPEC`"][1] == "required"
    synth = {r[0]: r for r in _table_rows(sections["fnacli data synth"])}
    assert synth["`--train <int>`"][1] == "`512`"
    finetune = {r[0]: r for r in _table_rows(sections["fnacli finetune"])}
    assert finetune["`--device <auto|cpu|cuda>`"][1] == "`auto`"  # an Enum
    assert "fnacli data synth [OPTIONS] {OUT_DIR}" in sections["fnacli data synth"]


def test_reference_tables_are_well_formed() -> None:
    """Pipes inside cells are escaped, so every row has its header's number of columns, and
    every link of the index points at a heading."""
    text = REFERENCE.read_text(encoding="utf-8")
    width = None
    for line in text.splitlines():
        if not line.startswith("|"):
            width = None
            continue
        n = len(re.split(r"(?<!\\)\|", line))
        width = width or n
        assert n == width, line
    anchors = {"-".join(h.lower().split()) for h in re.findall(r"^## (.+)$", text, flags=re.M)}
    for target in re.findall(r"\]\(#([^)]+)\)", text):
        assert target in anchors, target


# ---- command lines quoted in the guides ---------------------------------------------------

FENCE = re.compile(r"^[ \t]*```(\w*)\n(.*?)^[ \t]*```", re.M | re.S)  # also inside list items
SHELL_LANGS = {"sh", "bash", "shell", "console"}


def quoted_command_lines(markdown: str) -> list[tuple[str, bool]]:
    """(line, complete): shell lines of ```sh/bash/shell blocks and '$ ' lines of ```console
    blocks (the rest of a console block is output) are complete command lines; inline code
    spans that start with 'fnacli ' are references to a command and some of its options
    (cut at a '…' placeholder), not complete."""
    lines: list[tuple[str, bool]] = []
    for lang, body in FENCE.findall(markdown):
        if lang not in SHELL_LANGS:
            continue
        joined = re.sub(r"\\\n\s*", " ", body)  # backslash continuations
        for line in joined.splitlines():
            line = line.strip()
            if lang == "console":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            if line and not line.startswith("#"):
                lines.append((line, True))
    without_fences = FENCE.sub("", markdown)
    for span in re.findall(r"`(fnacli [^`]+)`", without_fences):
        lines.append((re.split(r"…|\.\.\.", span)[0], False))
    return lines


def fnacli_invocations(line: str) -> list[list[str]]:
    """The argument lists of every fnacli call in a shell line: `fnacli …`, `python -m fnacli
    …`, `torchrun … -m fnacli …`, in pipelines, `&&` chains and `VAR=x fnacli …`."""
    line = re.sub(r"\s\d?(>>?|<)\s*\S+", " ", f" {line}")  # redirections and their targets
    lex = shlex.shlex(line, posix=True, punctuation_chars="|&;()")
    lex.whitespace_split = True
    lex.commenters = "#"
    segments: list[list[str]] = [[]]
    try:
        for tok in lex:
            if tok and set(tok) <= set("|&;()"):
                segments.append([])
            else:
                segments[-1].append(tok)
    except ValueError:  # unbalanced quotes: fine in a heredoc's text, not in a command
        if "fnacli" in line:
            raise
        return []
    calls = []
    for seg in segments:
        for i, tok in enumerate(seg):
            if tok == "fnacli" or tok.endswith("/fnacli"):  # also `python -m fnacli`
                calls.append(seg[i + 1:])
                break
    return calls


def _option_map(cmd: Any) -> dict[str, Any]:
    return {o: p for p in cmd.params if p.param_type_name == "option"
            for o in (*p.opts, *p.secondary_opts)}


def _choices(param: Any) -> list[str] | None:
    desc = getattr(param, "type_descriptor", None)  # typer's parameters
    if desc is not None and getattr(desc, "is_choice", False) and desc.choices:
        return [str(getattr(c, "value", c)) for c in desc.choices]
    choices = getattr(getattr(param, "type", None), "choices", None)  # plain click
    return [str(getattr(c, "value", c)) for c in choices] if choices else None


def check_invocation(args: list[str], root: Any, complete: bool = True) -> list[str]:
    """Problems of one fnacli argument list against the click tree (empty: fine). Only a
    complete command line must have every required argument and option."""
    cmd, path, args = root, ["fnacli"], list(args)
    while hasattr(cmd, "commands"):  # a group: its options, then a subcommand
        opts = _option_map(cmd)
        while args and args[0].startswith("-"):
            if args[0] == "--help":  # click's own, on every command and group
                return []
            if args[0] not in opts:
                return [f"{' '.join(path)}: no option {args[0]}"]
            args.pop(0)
        if not args:
            return [f"{' '.join(path)}: no command given"] if complete else []
        name = args.pop(0)
        if name not in cmd.commands:
            return [f"{' '.join(path)}: no command {name!r} (known: {', '.join(cmd.commands)})"]
        cmd = cmd.commands[name]
        path.append(name)
    where = " ".join(path)
    opts, problems, positionals, given = _option_map(cmd), [], [], set()
    i = 0
    while i < len(args):
        tok = args[i]
        if tok == "--":
            positionals += args[i + 1:]
            break
        if tok.startswith("-") and tok != "-" and not re.fullmatch(r"-\d.*", tok):
            name, eq, value = tok.partition("=")
            if name == "--help":
                return []
            param = opts.get(name)
            if param is None:
                problems.append(f"{where}: no option {name}")
            elif param.is_flag or param.count:
                if eq:
                    problems.append(f"{where}: {name} is a flag and takes no value")
            else:
                if not eq:
                    if i + 1 >= len(args):
                        problems.append(f"{where}: {name} needs a value")
                        break
                    i += 1
                    value = args[i]
                allowed = _choices(param)
                if allowed and "$" not in value and value not in allowed:
                    problems.append(f"{where}: {name} {value!r} is not one of {allowed}")
            if param is not None:
                given.add(param.name)
        else:
            positionals.append(tok)
        i += 1
    if not complete:
        return problems
    arguments = [p for p in cmd.params if p.param_type_name == "argument"]
    slots = None if any(p.nargs == -1 for p in arguments) else sum(p.nargs for p in arguments)
    if slots is not None and len(positionals) > slots:
        problems.append(f"{where}: {len(positionals)} arguments, takes {slots}: {positionals}")
    needed = sum(p.nargs for p in arguments if p.required and p.nargs > 0)
    if len(positionals) < needed:
        problems.append(f"{where}: missing a required argument")
    for p in cmd.params:
        if p.param_type_name == "option" and p.required and p.name not in given:
            problems.append(f"{where}: missing required option {p.opts[-1]}")
    return problems


@pytest.fixture(scope="module")
def root() -> Any:
    return docgen.root_command()


def test_the_checker_catches_wrong_command_lines(root: Any) -> None:
    def problems(line: str) -> list[str]:
        return [p for call in fnacli_invocations(line) for p in check_invocation(call, root)]

    good = ("fnacli derive s.safetensors | fnacli remap seed.pth --spec - -o t.safetensors && "
            "OMP_NUM_THREADS=1 fnacli eval f.safetensors --data d --json > m.json")
    assert len(fnacli_invocations(good)) == 3 and problems(good) == []
    assert problems("torchrun --standalone --nproc-per-node 8 -m fnacli finetune t.safetensors "
                    "--task ssdlite --data coco -o f.safetensors --batch-size=512") == []
    assert problems("fnacli data synth demo/data --train 64 --format png") == []
    assert problems("fnacli --debug madds mobilenetv2 fna-ssdlite --task ssdlite") == []
    assert problems("fnacli --help") == [] and problems("fnacli data --help") == []
    for bad in ("fnacli remap seed.pth --spec a.json -o t.safetensors --bogus",
                "fnacli remapp seed.pth --spec a.json -o t.safetensors",
                "fnacli remap seed.pth -o t.safetensors",            # --spec is required
                "fnacli remap --spec a.json -o t.safetensors",       # SEED is required
                "fnacli remap seed.pth x.pth --spec a -o t.safetensors",  # one SEED only
                "fnacli finetune t.safetensors --task yolo -o f.safetensors",
                "fnacli data synth",
                "fnacli data mix out",
                "fnacli search s.safetensors -o o.safetensors --json=1",
                "fnacli expand seed.pth -o"):
        assert problems(bad), bad


@pytest.mark.parametrize("guide", CHECKED_GUIDES)
def test_command_lines_in_the_guides_are_valid(guide: str, root: Any) -> None:
    path = DOCS / guide
    # a renamed or deleted guide fails here (a skip would hide it): update CHECKED_GUIDES
    assert path.is_file(), f"docs/{guide} is in CHECKED_GUIDES but does not exist"
    calls = [(line, call, complete)
             for line, complete in quoted_command_lines(path.read_text(encoding="utf-8"))
             for call in fnacli_invocations(line)]
    problems = [f"{p}\n    in: {line}" for line, call, complete in calls
                for p in check_invocation(call, root, complete)]
    assert not problems, f"docs/{guide}:\n" + "\n".join(problems)
    if guide == "tutorial.md":
        used = {" ".join(call[:2]) if call[:1] == ["data"] else call[0]
                for _, call, complete in calls if call and complete}
        assert {"data synth", "pretrain-seed", "expand", "search", "derive", "remap",
                "finetune", "eval", "madds"} <= used, used
        assert any("torchrun" in line for line, _, _ in calls)


# ---- the remapping pictures ---------------------------------------------------------------

def _figures_module() -> Any:
    spec = importlib.util.spec_from_file_location("make_figures", DOCS / "img" / "make_figures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_figures_are_the_scripts_output() -> None:
    figures = _figures_module().render_all()
    assert len(figures) >= 4
    for name, text in figures.items():
        path = DOCS / "img" / name
        assert path.read_text(encoding="utf-8") == text, (
            f"docs/img/{name} is stale: python docs/img/make_figures.py")
        root = ET.fromstring(text)  # well-formed XML
        assert root.tag.endswith("svg") and root.find("{http://www.w3.org/2000/svg}title") \
            is not None
        assert f"img/{name}" in (DOCS / "remapping-figures.md").read_text(encoding="utf-8")


def test_figures_draw_what_fnacli_remap_does() -> None:
    import torch

    from fnacli.nn.backbone import Backbone
    from fnacli.remap import remap_kernel, remap_state, select_channels
    from fnacli.spec import ArchSpec

    fig = _figures_module()
    # kernels: mark each seed tap with its index and see where remap_kernel puts it
    for k0, k, rule in ((3, 5, "center"), (3, 7, "center"), (3, 5, "dilate"), (3, 7, "dilate"),
                        (5, 7, "dilate")):
        seed = torch.arange(1.0, k0 * k0 + 1).reshape(1, 1, k0, k0)
        out, filled = remap_kernel(seed, k, rule)
        drawn = fig.kernel_taps(k0, k, rule)
        assert [int(out[0, 0, r, c]) for r, c in drawn] == list(range(1, k0 * k0 + 1))
        assert int(filled.sum()) == k * k - k0 * k0 and float(out.abs().sum()) == float(
            seed.sum())
    # widths: the channels the picture keeps are the ones fnacli keeps
    gammas = torch.tensor(fig.GAMMAS)
    assert select_channels(gammas.abs(), 5).tolist() == fig.kept_channels(fig.GAMMAS, 5, "bn")
    assert select_channels(None, 5).tolist() == fig.kept_channels(fig.GAMMAS, 5, "first")
    assert select_channels(gammas, 11).tolist() == list(range(8))

    # depth: remap_state's per-stage sources
    def spec(depths: tuple[int, ...]) -> ArchSpec:
        return ArchSpec.from_dict({
            "schema": "fnacli/arch@1", "stem": {"out": 8, "stride": 2},
            "stages": [{"out": 8, "stride": 1, "ops": ["k3_e1"]},
                       *({"out": 8 * (i + 2), "stride": 2, "ops": ["k3_e2"] * d}
                         for i, d in enumerate(depths))]})

    seed_spec = spec((2, 4))
    state = Backbone(seed_spec, with_head=False).state_dict()
    _, report = remap_state(state, seed_spec, spec((4, 2)))
    assert report[1]["sources"] == fig.depth_sources(2, 4)
    assert report[2]["sources"] == fig.depth_sources(4, 2)
    assert fig.depth_sources(2, 4) == [0, 1, 1, 1]


# ---- links --------------------------------------------------------------------------------

def _anchors(md: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    text = FENCE.sub("", md.read_text(encoding="utf-8"))
    return {re.sub(r"[^\w\- ]", "", h.replace("`", "").strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def test_relative_links_in_the_docs_resolve() -> None:
    broken = []
    for md in sorted(DOCS.glob("*.md")):
        text = FENCE.sub("", md.read_text(encoding="utf-8"))
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = md.parent / file if file else md
            if not dest.exists():
                broken.append(f"{md.name}: {target}")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{md.name}: {target} (no such heading)")
    assert not broken, broken


def test_reference_does_not_depend_on_import_order() -> None:
    """A command module imported before the app registers itself last; the listing order
    must not change (it did, and the generated reference went stale in some test orders)."""
    code = ("import runpy, sys\n"
            "import fnacli.cli.madds  # first, on purpose\n"
            "sys.argv = ['docgen', '--check', sys.argv[1]]\n"
            "runpy.run_module('fnacli.docgen', run_name='__main__')\n")
    ref = Path(__file__).resolve().parents[1] / "docs" / "cli-reference.md"
    r = subprocess.run([sys.executable, "-c", code, str(ref)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
