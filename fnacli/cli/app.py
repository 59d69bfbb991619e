"""The ``fnacli`` Typer app. Command modules register themselves on import; none of them
imports torch at module level, so ``fnacli --help`` stays fast."""

from __future__ import annotations

import errno
import importlib
import os
import sys
from typing import NoReturn

import typer
from typer._click.exceptions import ClickException  # typer's vendored click
from typer.core import TyperGroup

from fnacli import __version__

# The order `fnacli --help` (and the generated reference) lists commands in: the pipeline's.
COMMAND_ORDER = ("expand", "search", "derive", "remap", "finetune", "eval", "compare", "export",
                 "madds", "sample", "latency", "data", "pretrain-seed")


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
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, pwsh)
    context_settings={"help_option_names": ["-h", "--help"]},
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


# Each command's module (fnacli/cli/<command>.py, pretrain.py for pretrain-seed) registers it.
for _command in COMMAND_ORDER:
    importlib.import_module(f"fnacli.cli.{_command.removesuffix('-seed')}")


def _exit(code: int, message: str | None = None) -> NoReturn:
    if message is not None:
        print(f"fnacli: {message}", file=sys.stderr)
    sys.exit(code)


def _check_standard_streams() -> None:
    """A closed stdout (``>&-``) is refused before any work: results and reports go there.
    Names that are not text in the locale (an input file's, say) print as \\xNN instead
    of failing half-way through a report."""
    if sys.stdout is None:
        if sys.stderr is not None:
            print("fnacli: error: standard output is closed (fnacli prints its results "
                  "there); redirect it to a file or /dev/null instead", file=sys.stderr)
        sys.exit(2)
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and getattr(stream, "errors", "") == "strict":
            reconfigure(errors="backslashreplace")


def main() -> None:
    """Entry point: exit 2 with one line for bad input (the environment's faults included: a
    full disk, a read-only folder, a locked output), 130/143 for SIGINT/SIGTERM (after the
    training loops saved their state), 1 for internal errors."""
    from fnacli import interrupt, locks
    from fnacli.cli.common import debug_enabled
    from fnacli.errors import UserError
    from fnacli.io import ENVIRONMENT_ERRNOS, describe_os_error

    if "--debug" in sys.argv[1:]:
        os.environ["FNACLI_DEBUG"] = "1"
    _check_standard_streams()
    interrupt.install()
    try:
        with locks.output_session():
            rv = app(standalone_mode=False, prog_name="fnacli")
    except UserError as e:
        if debug_enabled():
            raise
        _exit(2, f"error: {e.cli_message}")
    except interrupt.Interrupted as e:
        _exit(e.exit_code, e.message())
    except KeyboardInterrupt:  # SIGINT where our handler was not installed
        _exit(130, interrupt.Interrupted(2).message())
    except typer.Exit as e:
        _exit(e.exit_code)
    except typer.Abort:
        _exit(130, "aborted")
    except ClickException as e:  # usage errors (typer's vendored click): its message, exit 2
        e.show()
        _exit(e.exit_code)
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001
        if debug_enabled():
            raise
        if isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNOS and (
                e.filename or e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)):
            # the environment, not fnacli: a file that vanished, a disk that filled up
            _exit(2, f"error: {describe_os_error(e)}")
        _exit(1, f"internal error: {type(e).__name__}: {e} (rerun with --debug for the "
                 "traceback)")
    finally:
        interrupt.uninstall()
    # typer returns the exit code of `raise typer.Exit(n)` when not in standalone mode
    sys.exit(rv if isinstance(rv, int) else 0)
