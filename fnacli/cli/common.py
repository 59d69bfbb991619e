"""What every command shares: the stderr console, error reporting, option declarations used
by several commands (one spelling and one metavar per concept), the config a command's
options make, a result's report (``show``: its lines and tables) and progress bars on
stderr, result printing.

Kept free of torch so that ``fnacli --help`` starts fast.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import MISSING
from enum import StrEnum
from typing import Any, NoReturn

import typer
from rich.console import Console
from typer.core import TyperCommand

from fnacli.errors import UserError
from fnacli.pipeline.common import AUGMENTS
from fnacli.report import Report, Table
from fnacli.settings import DATA, RUN, flag_of
from fnacli.tasks import metavar, task_names

# soft_wrap: a summary is one line however wide, so `grep` finds it in a log file (rich would
# otherwise cut it at 80 columns, mid-phrase, whenever stderr is not a terminal)
err_console = Console(stderr=True, soft_wrap=True)

# Choices as enums (typer lists them in --help), from the task registry and the policies.
TaskName = StrEnum("TaskName", {n: n for n in task_names()})
Optim = StrEnum("Optim", {n: n for n in ("sgd", "rmsprop")})
Device = StrEnum("Device", {n: n for n in ("auto", "cpu", "cuda")})
# training and remapping choices, shared by finetune, compare and remap
Schedule = StrEnum("Schedule", {n: n for n in ("cosine", "step")})
Augment = StrEnum("Augment", {n: n for n in AUGMENTS})
Width = StrEnum("Width", {n: n for n in ("first", "bn", "std", "l1")})
Kernel = StrEnum("Kernel", {n: n for n in ("center", "dilate")})


class PanelCommand(TyperCommand):
    """Plain help with the options grouped under their ``rich_help_panel`` headings."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        sections: dict[str, list] = {}
        for p in self.get_params(ctx):
            record = p.get_help_record(ctx)
            if record is not None:
                title = "Arguments" if p.param_type_name == "argument" else (
                    getattr(p, "rich_help_panel", None) or "Options")
                sections.setdefault(title, []).append(record)
        for title, records in sections.items():
            with formatter.section(title):
                formatter.write_dl(records)


def debug_enabled() -> bool:
    return os.environ.get("FNACLI_DEBUG", "") not in ("", "0")


def fail(message: str) -> NoReturn:
    raise UserError(message)


class _StderrHandler(logging.StreamHandler):
    """Plain, unwrapped lines on whatever ``sys.stderr`` is when a record is logged."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def setup_logging() -> None:
    """Library messages (the ``fnacli`` logger) go to stderr as plain lines, rank 0 only."""
    logger = logging.getLogger("fnacli")
    if not logger.handlers:
        logger.addHandler(_StderrHandler())
        logger.propagate = False
    logger.setLevel(logging.INFO)


def print_result(text: str) -> None:
    """Results go to stdout (one write, newline-terminated)."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def print_json(doc: Any) -> None:
    """A command's ``--json`` result: one JSON document on stdout (``json.load`` reads it)."""
    import json

    print_result(json.dumps(doc))


def print_json_lines(docs: Iterable[Any]) -> None:
    """A stream of results, one JSON document per line (``--jsonl``, ``sample -o -``)."""
    import json

    print_result("".join(json.dumps(d) + "\n" for d in docs) or "\n")


def config(cls: type, options: dict[str, Any], leave_out: Collection[str] = ("as_json",),
           **fields: Any) -> Any:
    """The step's config dataclass ``cls`` from the command's options (enum choices as their
    values) but ``leave_out``, and ``fields``: an option the config has no field for fails."""
    values = {k: v.value if isinstance(v, StrEnum) else v for k, v in options.items()}
    return cls(**{**{k: v for k, v in values.items() if k not in leave_out}, **fields})


def given_flags(ctx: typer.Context, names: tuple[str, ...]) -> list[str]:
    """The flags of ``names`` that the command line set explicitly."""
    return [p.opts[0] for p in ctx.command.params if p.name in names
            and getattr(ctx.get_parameter_source(p.name), "name", "") == "COMMANDLINE"]


def show(report: Report) -> None:
    """A result's report on stderr: its tables drawn by rich (titles and captions
    left-justified unless centred), its lines as they are (no rich markup: a ``[...]`` in a
    line is text)."""
    from rich import table as rich

    for item in report:
        if not isinstance(item, Table):
            err_console.print(item, markup=False)
            continue
        justify = "center" if item.centred else "left"
        t = rich.Table(*(rich.Column(col, justify="right" if col in item.right else "left",
                                     style="dim" if col in item.dim else "")
                         for col in item.columns),
                       title=item.title, caption=item.caption, title_justify=justify,
                       caption_justify=justify)
        for row in item.rows:
            t.add_row(*row)
        err_console.print(t)


@contextmanager
def progress_bar(label: str, total: float | None = None, *columns: Any,
                 transient: bool = True) -> Iterator[Any]:
    """A bar on stderr (none in a log file): ``label``, the bar, then ``columns`` [n/total];
    yields its ``update(advance=, total=, completed=, description=)``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(TextColumn(label), BarColumn(), *(columns or (MofNCompleteColumn(),)),
                  console=err_console, transient=transient,
                  disable=not err_console.is_terminal) as bar:
        task = bar.add_task("", total=total)
        yield lambda **kw: bar.update(task, **kw)


# -- flags several commands take: one metavar, help panel and (unless a command says otherwise)
# meaning everywhere; a step's settings add their own default, help and range (``option``)
SHARED: dict[str, dict[str, Any]] = {
    "--task": {"metavar": metavar()},
    "--data": {"metavar": "DIR", "help": "COCO-layout dataset folder.", "rich_help_panel": DATA},
    **{f"--{split}-{what}": {"metavar": mv, "rich_help_panel": DATA}
       for split in ("train", "val") for what, mv in (("ann", "JSON"), ("images", "DIR"))},
    "--output": {"default": ..., "decls": ("--output", "-o")},
    "--size": {"metavar": "N|WxH"},
    "--space": {"metavar": "SPACE"},
    "--num-classes": {"metavar": "N"},
    "--latency-table": {"metavar": "TABLE"},
    "--workers": {"help": "Data-loading processes.", "rich_help_panel": RUN},
    "--threads": {"help": "CPU threads for torch ops [0: the cores left by --workers, at "
                  "least 1].", "rich_help_panel": RUN},
    "--device": {"help": "auto: CUDA when available.", "rich_help_panel": RUN},
    "--noise": {"metavar": "R", "help": "Noise std of added channels' conv weights, relative to "
                "the RMS of each seed tensor [0.01]; --widen noise only."},
    "--force": {"default": False},
    "--json": {"default": False, "help": "Print the result as one JSON document on stdout."},
}


def _with_files(names: list[str], incomplete: str) -> list[str]:
    """``names`` starting with ``incomplete``, then the files and folders that do."""
    import glob

    return [n for n in names if n.startswith(incomplete)] + sorted(
        p + ("/" if os.path.isdir(p) else "") for p in glob.glob(glob.escape(incomplete) + "*"))


def complete_arch(incomplete: str) -> list[str]:
    """Shell completion of a SPEC: built-in architecture names, then files."""
    from fnacli.spec import builtin_arch_names

    return _with_files(builtin_arch_names(), incomplete)


def complete_space(incomplete: str) -> list[str]:
    """Shell completion of a SPACE: built-in space names, then files."""
    from fnacli.spec import BUILTIN_SPACES

    return _with_files(list(BUILTIN_SPACES), incomplete)


def opt(flag: str, help: str | None = None, **override: Any) -> Any:
    """A command's own option ``flag`` (not a step's setting) as SHARED presents it, with this
    command's help text and overrides."""
    kw = {**SHARED[flag], **({"help": help} if help is not None else {}), **override}
    return typer.Option(kw.pop("default", None), *kw.pop("decls", (flag,)), **kw)


def option(cls: type, name: str, **override: Any) -> Any:
    """The option of setting ``name`` of the config dataclass ``cls``: its default, meaning and
    range from the setting (``fnacli.settings``), its flag's metavar and panel from SHARED,
    then ``override``."""
    f = cls.__dataclass_fields__[name]
    meta = {k: v for k, v in f.metadata.items() if k not in ("flags", "api")}
    decls = f.metadata.get("flags", (flag_of(f),))
    shared = {k: v for k, v in SHARED.get(decls[0], {}).items() if k != "default"}
    kw = {**shared, **meta, **override}
    if "group" in kw:
        kw["rich_help_panel"] = kw.pop("group")
    default = kw.pop("default", ... if f.default is MISSING else f.default)
    return typer.Option(default, *kw.pop("decls", decls), **kw)


def argument(cls: type, name: str) -> Any:
    """The positional argument of setting ``name`` of ``cls`` (required, or its default)."""
    f = cls.__dataclass_fields__[name]
    return typer.Argument(... if f.default is MISSING else f.default,
                          metavar=f.metadata.get("metavar"), help=f.metadata.get("help"))


def options_of(cls: type) -> Callable[..., Any]:
    """``option`` bound to ``cls``: ``o = options_of(Config)``, then ``lr: float = o("lr")``."""
    return functools.partial(option, cls)


def hidden_opt(flag: str) -> Any:
    """An old spelling, accepted for one release (see CHANGELOG.md)."""
    return typer.Option(None, flag, hidden=True)
