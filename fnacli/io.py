"""Atomic output files and `-` (stdin/stdout) handling shared by every command."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from fnacli.errors import UserError


def check_writable(path: str | Path, force: bool) -> Path:
    """Refuse to overwrite an existing output unless ``force``; make sure its folder exists."""
    path = Path(path)
    if path.exists() and not force:
        raise UserError(f"{path}: already exists (use --force to overwrite)")
    if path.parent and not path.parent.exists():
        raise UserError(f"{path.parent}: output folder does not exist")
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    An interrupted or failing writer never leaves a half-written file behind.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    os.close(fd)
    # mkstemp creates 0600; outputs get the permissions a plain open() would give
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_text_arg(arg: str, what: str = "input") -> tuple[str, str]:
    """Read a path argument or `-` (stdin). Returns (text, display name)."""
    if arg == "-":
        if sys.stdin.isatty():
            raise UserError(f"{what}: '-' means stdin, but nothing is piped in")
        return sys.stdin.read(), "<stdin>"
    p = Path(arg)
    if not p.is_file():
        raise UserError(f"{arg}: no such file")
    try:
        return p.read_text(), arg
    except UnicodeDecodeError:
        raise UserError(f"{arg}: not a text file (expected JSON)") from None


def load_json_text(text: str, name: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        where = f"line {e.lineno} column {e.colno}"
        raise UserError(f"{name}: not valid JSON ({e.msg} at {where})") from None


def write_output(dest: str, text: str, force: bool) -> None:
    """Write ``text`` to a file atomically, or to stdout when ``dest`` is `-`."""
    if dest == "-":
        out: IO[str] = sys.stdout
        out.write(text if text.endswith("\n") else text + "\n")
        out.flush()
        return
    write_text_atomic(check_writable(dest, force), text if text.endswith("\n") else text + "\n")
