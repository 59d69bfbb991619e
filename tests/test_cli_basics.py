"""CLI conventions every command shares: help without torch, version, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import fnacli
from fnacli.cli.app import app


def _python(code: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def _commands() -> list[str]:
    import typer.main

    group = typer.main.get_command(app)
    return sorted(group.commands)


HELP_WITHOUT_TORCH = """
import sys
from fnacli.cli.app import app
for args in [["--help"]] + [[c, "--help"] for c in sys.argv[1:]]:
    try:
        app(args, prog_name="fnacli")
    except SystemExit as e:
        assert e.code in (0, None), (args, e.code)
heavy = sorted(m for m in ("torch", "torchvision", "fvcore", "timm", "safetensors.torch")
               if m in sys.modules)
assert not heavy, heavy
print("ok")
"""


def test_help_of_every_command_does_not_import_torch() -> None:
    commands = _commands()
    assert {"expand", "search", "derive", "remap", "finetune", "madds", "eval"} <= set(commands)
    r = _python(HELP_WITHOUT_TORCH, *commands)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
    assert "remap" in r.stdout and "--spec" in r.stdout  # the helps were really printed


def test_version() -> None:
    r = subprocess.run([sys.executable, "-m", "fnacli", "--version"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == f"fnacli {fnacli.__version__}"


def test_usage_errors_exit_2(run_cli: object) -> None:
    code, out, err = run_cli(["no-such-command"])
    assert code == 2 and "No such command" in err and out == ""
    code, _, err = run_cli(["remap"])
    assert code == 2 and "Missing argument" in err
    code, _, err = run_cli(["remap", "seed.pth", "--spec", "mobilenetv2", "-o", "x",
                            "--kernel", "bicubic"])
    assert code == 2 and "Invalid value for '--kernel'" in err


def test_bad_input_is_one_line_unless_debug(tmp_path: Path) -> None:
    args = ["-m", "fnacli", "remap", str(tmp_path / "missing.pth"), "--spec", "mobilenetv2",
            "-o", str(tmp_path / "o.safetensors")]
    env = {k: v for k, v in os.environ.items() if k != "FNACLI_DEBUG"}
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [f"fnacli: error: {tmp_path / 'missing.pth'}: no such file"]
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                       env={**env, "FNACLI_DEBUG": "1"}, timeout=120)
    assert r.returncode != 0 and "Traceback" in r.stderr and "UserError" in r.stderr
    r = subprocess.run([sys.executable, "-m", "fnacli", "--debug", *args[2:]],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_h_is_help_on_every_command(run_cli) -> None:
    for args in (["-h"], ["finetune", "-h"], ["data", "synth", "-h"]):
        code, out, err = run_cli(args)
        assert code == 0 and out.startswith("Usage: ") and "-h, --help" in out, err


def test_shell_completion_script_and_completions() -> None:
    """--show-completion prints a script for the shell; the script's protocol (the
    _FNACLI_COMPLETE variable) completes commands and options, without importing torch."""
    env = {"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    # sys.argv[0] as the installed `fnacli` script has it (the script names its variable)
    r = _python("import sys; sys.argv[0] = 'fnacli'\nfrom fnacli.cli.app import main; main()",
                "--show-completion", "bash",
                env={**env, "SHELL": "/bin/bash"})
    assert r.returncode == 0, r.stderr
    assert "_FNACLI_COMPLETE=complete_bash" in r.stdout and "complete " in r.stdout
    code = ("import sys; sys.argv = ['fnacli']\n"
            "from fnacli.cli.app import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    for words, cword, want in (("fnacli fin", "1", "finetune"),
                               ("fnacli finetune --ta", "2", "--task")):
        r = _python(code, env={"_FNACLI_COMPLETE": "complete_bash", "COMP_WORDS": words,
                               "COMP_CWORD": cword})
        assert r.returncode == 0, r.stderr
        assert want in r.stdout.split() and "NO-TORCH" in r.stdout, r.stdout
