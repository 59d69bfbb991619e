"""The one exception type that means "the user gave us something wrong" (exit code 2)."""

from __future__ import annotations


class UserError(Exception):
    """Bad usage or bad input. ``str(err)`` names a step's parameter as a library caller
    wrote it (``epochs: …``); ``cli_message`` names the command's flag (``--epochs: …``),
    which the CLI prints as one line before exiting 2."""

    def __init__(self, message: str, cli_message: str | None = None) -> None:
        super().__init__(message)
        self.cli_message = message if cli_message is None else cli_message
