"""What every command shares: the stderr console, error reporting, option types.

Kept free of torch so that ``fnacli --help`` starts fast.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from rich.console import Console

from fnacli.errors import UserError

err_console = Console(stderr=True)


def debug_enabled() -> bool:
    return os.environ.get("FNACLI_DEBUG", "") not in ("", "0")


def fail(message: str) -> NoReturn:
    raise UserError(message)


def not_implemented(command: str) -> NoReturn:
    raise UserError(f"'{command}' is not implemented yet in this version of fnacli")


def print_result(text: str) -> None:
    """Results go to stdout (one write, newline-terminated)."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()
