"""`fnacli search` (not built yet)."""

from __future__ import annotations

import typer

from fnacli.cli.app import app
from fnacli.cli.common import not_implemented


@app.command("search", context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
             help="(not implemented yet)")
def search(ctx: typer.Context) -> None:
    not_implemented("search")
