"""What every command shares: the stderr console, error reporting, option declarations used
by several commands (one spelling and one metavar per concept), result printing.

Kept free of torch so that ``fnacli --help`` starts fast.
"""

from __future__ import annotations

import logging
import os
import sys
from enum import StrEnum
from typing import Any, NoReturn

import typer
from rich.console import Console
from typer.core import TyperCommand

from fnacli.errors import UserError
from fnacli.tasks import metavar, per_task, task_names

# soft_wrap: a summary is one line however wide, so `grep` finds it in a log file (rich would
# otherwise cut it at 80 columns, mid-phrase, whenever stderr is not a terminal)
err_console = Console(stderr=True, soft_wrap=True)

# Choices as enums (typer lists them in --help), from the task registry and the policies.
TaskName = StrEnum("TaskName", {n: n for n in task_names()})
Optim = StrEnum("Optim", {n: n for n in ("sgd", "rmsprop")})
Device = StrEnum("Device", {n: n for n in ("auto", "cpu", "cuda")})

DATA, SCHEDULE, RUN = "Data", "Schedule", "Run"
WD = per_task(lambda t: f"{t.recipe.weight_decay:g}".replace("e-0", "e-"))  # 4e-5, not 4e-05


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


def setup_logging(enabled: bool = True) -> None:
    """Library messages (the ``fnacli`` logger) go to stderr as plain lines, rank 0 only."""
    logger = logging.getLogger("fnacli")
    if not logger.handlers:
        logger.addHandler(_StderrHandler())
        logger.propagate = False
    logger.setLevel(logging.INFO if enabled else logging.WARNING)


def print_result(text: str) -> None:
    """Results go to stdout (one write, newline-terminated)."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def value(v: Any) -> Any:
    """An enum choice as its plain value (None stays None)."""
    return v.value if isinstance(v, StrEnum) else v


def given_flags(ctx: typer.Context, names: tuple[str, ...]) -> list[str]:
    """The flags of ``names`` that the command line set explicitly."""
    return [p.opts[0] for p in ctx.command.params if p.name in names
            and getattr(ctx.get_parameter_source(p.name), "name", "") == "COMMANDLINE"]


# -- options several commands take (same flag, metavar and meaning everywhere) -----------------
def task_opt(help: str, extra: tuple[str, ...] = ()) -> Any:
    return typer.Option(None, "--task", metavar=metavar(extra), help=help)


def data_opt() -> Any:
    return typer.Option(None, "--data", metavar="DIR", help="COCO-layout dataset folder.",
                        rich_help_panel=DATA)


def ann_opt(split: str, help: str) -> Any:
    return typer.Option(None, f"--{split}-ann", metavar="JSON", help=help, rich_help_panel=DATA)


def images_opt(split: str, help: str) -> Any:
    return typer.Option(None, f"--{split}-images", metavar="DIR", help=help,
                        rich_help_panel=DATA)


def hidden_opt(flag: str) -> Any:
    """An old spelling, accepted for one release (see CHANGELOG.md)."""
    return typer.Option(None, flag, hidden=True)


def size_opt(help: str) -> Any:
    return typer.Option(None, "--size", metavar="N|WxH", help=help)


def workers_opt() -> Any:
    return typer.Option(2, "--workers", min=0, help="Data-loading processes.", rich_help_panel=RUN)


def threads_opt(help: str = "CPU threads for torch ops (0: torch's default).") -> Any:
    return typer.Option(0, "--threads", min=0, help=help, rich_help_panel=RUN)


def device_opt() -> Any:
    return typer.Option(Device.auto, "--device", help="auto: CUDA when available.",
                        rich_help_panel=RUN)


def force_opt(help: str) -> Any:
    return typer.Option(False, "--force", help=help)


def json_opt(help: str = "Print a JSON summary on stdout.") -> Any:
    return typer.Option(False, "--json", help=help)


def seed_opt(help: str) -> Any:
    return typer.Option(0, "--seed", help=help)


def stop_after_opt(help: str) -> Any:
    return typer.Option(None, "--stop-after", min=1, metavar="STEPS", help=help,
                        rich_help_panel=RUN)


def checkpoint_every_opt() -> Any:
    return typer.Option(0, "--checkpoint-every", min=0, metavar="STEPS",
                        help="Training state every STEPS steps (always at the end of every "
                             "epoch).", rich_help_panel=RUN)


def log_every_opt() -> Any:
    return typer.Option(10, "--log-every", min=1, metavar="STEPS", rich_help_panel=RUN,
                        help="A metrics line every STEPS steps (and, when stderr is not a "
                             "terminal, a plain log line).")


def tensorboard_opt(what: str) -> Any:
    return typer.Option(None, "--tensorboard", metavar="DIR", envvar="FNACLI_TENSORBOARD",
                        show_envvar=True, rich_help_panel=RUN,
                        help=f"Also log {what} to TensorBoard event files in DIR.")
