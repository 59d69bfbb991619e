"""What every command shares: the stderr console, error reporting, option types.

Kept free of torch so that ``fnacli --help`` starts fast.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

from rich.console import Console

from fnacli.errors import UserError

# soft_wrap: a summary is one line however wide, so `grep` finds it in a log file (rich would
# otherwise cut it at 80 columns, mid-phrase, whenever stderr is not a terminal)
err_console = Console(stderr=True, soft_wrap=True)


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
    """Library log lines (skipped boxes, …) go to stderr as plain lines, rank 0 only."""
    logger = logging.getLogger("fnacli")
    if not logger.handlers:
        logger.addHandler(_StderrHandler())
        logger.propagate = False
    logger.setLevel(logging.INFO if enabled else logging.WARNING)


def checkpoint_output(output: object) -> None:
    """Refuse `-o -` for a checkpoint: it is binary, and stdout carries text results."""
    if str(output) == "-":
        fail("-o: a checkpoint is binary and cannot go to stdout; give a .safetensors path")


def print_result(text: str) -> None:
    """Results go to stdout (one write, newline-terminated)."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()
