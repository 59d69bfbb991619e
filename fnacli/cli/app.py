"""The ``fnacli`` Typer app. Command modules register themselves on import; none of them
imports torch at module level, so ``fnacli --help`` stays fast."""

from __future__ import annotations

import os
import sys

import typer
from typer.core import TyperGroup

from fnacli import __version__

# The order `fnacli --help` (and the generated reference) lists commands in: the pipeline's.
COMMAND_ORDER = ("expand", "search", "derive", "remap", "finetune", "eval", "export", "madds",
                 "latency", "data", "pretrain-seed")


class _PipelineOrder(TyperGroup):
    """Lists commands in COMMAND_ORDER, not in registration order, which depends on which
    command module happened to be imported first."""

    def list_commands(self, ctx: object) -> list[str]:
        rank = {name: i for i, name in enumerate(COMMAND_ORDER)}
        return sorted(super().list_commands(ctx), key=lambda n: (rank.get(n, len(rank)), n))


app = typer.Typer(
    cls=_PipelineOrder,
    name="fnacli",
    help="Adapt ImageNet MobileNetV2 checkpoints into detection backbones "
         "(FNA/FNA++, channel search, DetNAS): expand, search, derive, remap, finetune, eval.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        print(f"fnacli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks (also FNACLI_DEBUG=1)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    if debug:
        os.environ["FNACLI_DEBUG"] = "1"


# Registration order is the order `fnacli --help` lists them: the pipeline's order.
from fnacli.cli import (  # noqa: E402,F401
    data,
    derive,
    eval,
    expand,
    export,
    finetune,
    latency,
    madds,
    pretrain,
    remap,
    search,
)


def _click_exception_types() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """Exit / Abort / usage-error classes of click *and* of the click copy that newer typer
    versions vendor (``typer._click``): usage errors raised by typer are not click's."""
    import click

    exits: list[type] = [click.exceptions.Exit, typer.Exit]
    aborts: list[type] = [click.exceptions.Abort, typer.Abort]
    errors: list[type] = [click.ClickException]
    try:
        from typer._click.exceptions import ClickException as VendoredClickException
    except ImportError:
        pass
    else:
        errors.append(VendoredClickException)
    return tuple(exits), tuple(aborts), tuple(errors)


def main() -> None:
    """Entry point: exit 2 with one line for bad input, 1 for internal errors."""
    from fnacli.cli.common import debug_enabled
    from fnacli.errors import UserError

    if "--debug" in sys.argv[1:]:
        os.environ["FNACLI_DEBUG"] = "1"
    try:
        app(standalone_mode=False)
    except UserError as e:
        if debug_enabled():
            raise
        print(f"fnacli: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("fnacli: interrupted (outputs are written atomically; rerun with --resume "
              "where the command has it)", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001
        exit_types, abort_types, click_errors = _click_exception_types()
        if isinstance(e, exit_types):
            sys.exit(e.exit_code)
        if isinstance(e, abort_types):
            print("fnacli: aborted", file=sys.stderr)
            sys.exit(130)
        if isinstance(e, click_errors):  # usage errors: click's message, exit 2
            e.show()
            sys.exit(e.exit_code)
        if debug_enabled():
            raise
        print(f"fnacli: internal error: {type(e).__name__}: {e} (rerun with --debug for the "
              "traceback)", file=sys.stderr)
        sys.exit(1)
