"""`fnacli finetune` (not built yet)."""

from __future__ import annotations

import typer

from fnacli.cli.app import app
from fnacli.cli.common import not_implemented


@app.command("finetune", context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
             help="(not implemented yet)")
def finetune(ctx: typer.Context) -> None:
    not_implemented("finetune")
