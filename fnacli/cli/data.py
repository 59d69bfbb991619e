"""`fnacli data …` (not built yet)."""

from __future__ import annotations

import typer

from fnacli.cli.app import app
from fnacli.cli.common import not_implemented

data_app = typer.Typer(help="Datasets: generate the built-in synthetic COCO-format data.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("synth", context_settings={"ignore_unknown_options": True,
                                             "allow_extra_args": True},
                  help="(not implemented yet)")
def synth(ctx: typer.Context) -> None:
    not_implemented("data synth")
