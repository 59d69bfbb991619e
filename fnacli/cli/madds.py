"""`fnacli madds` (not built yet)."""

from __future__ import annotations

import typer

from fnacli.cli.app import app
from fnacli.cli.common import not_implemented


@app.command("madds", context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
             help="(not implemented yet)")
def madds(ctx: typer.Context) -> None:
    not_implemented("madds")
