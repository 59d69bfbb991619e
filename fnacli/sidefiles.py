"""Side files (write probes, temporary files, locks, markers): created with ``O_EXCL |
O_NOFOLLOW`` under names nobody can guess, so that fnacli never writes through a link somebody
planted (docs/troubleshooting.md, "Side files and links"). Used by ``fnacli.io`` and
``fnacli.locks``, which import nothing of each other for it."""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from fnacli.errors import UserError

# side files (probes, temporary files, locks, markers) are created with these flags: never
# through a link somebody planted, never onto a file that is already there
EXCLUSIVE = os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def random_token(n: int = 10) -> str:
    """A random name part: side files get names nobody can plant a link at in advance."""
    return "".join(secrets.choice("0123456789abcdefghijklmnopqrstuvwxyz") for _ in range(n))


def planted(path: str | Path, what: str) -> UserError:
    """The error for a link (or other file) found where fnacli creates ``what``."""
    path = Path(path)
    kind = "a symbolic link" if path.is_symlink() else "a file fnacli did not make"
    return UserError(f"{path}: {kind} is in the way of fnacli's {what}; fnacli never "
                     "writes through it (remove it and rerun)")


def open_exclusive(path: str | Path, what: str, mode: int = 0o600) -> int:
    """Create ``path`` for writing with ``O_EXCL | O_NOFOLLOW`` and return its descriptor;
    whatever is already at that name (a planted link above all) is a ``UserError`` naming
    it, the link's target untouched."""
    try:
        return os.open(path, os.O_WRONLY | EXCLUSIVE, mode)
    except FileExistsError:
        raise planted(path, what) from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise planted(path, what) from None
        raise


def refuse_links(paths: Iterable[Path], what: str) -> None:
    """Before any work: none of ``paths`` (files fnacli will replace or append to) may be
    a symbolic link."""
    for p in paths:
        if Path(p).is_symlink():
            raise planted(p, what)
