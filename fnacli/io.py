"""Atomic output files and `-` (stdin/stdout) handling shared by every command."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from fnacli.errors import UserError

# errors of the environment, not of fnacli: reported as bad input (exit 2) naming the path
ENVIRONMENT_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                      errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                      errno.EPERM: "operation not permitted", errno.ENAMETOOLONG: "name too long",
                      errno.ENOTDIR: "a path component is not a folder",
                      errno.EISDIR: "is a folder", errno.EFBIG: "file too large",
                      errno.EIO: "input/output error", errno.ENOENT: "no such file or folder"}
_TMP_RE = re.compile(r"^\.(?P<name>.+)~(?P<pid>\d+)-[0-9a-z]{6}\.tmp$")
_LEGACY_TMP = "^\\.{name}\\.[0-9a-z_]{{8}}\\.tmp$"  # mkstemp names of earlier versions


def describe_os_error(e: OSError, path: str | Path | None = None) -> str:
    """``PATH: reason`` for an OSError of the environment (full disk, permissions, …)."""
    where = path if path is not None else (e.filename or "output")
    reason = ENVIRONMENT_ERRNOS.get(e.errno or 0) or e.strerror or str(e)
    return f"{where}: {reason}"


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


def printable(path: str | Path) -> str:
    """``path`` as text any terminal takes (bytes that are not valid in the locale's
    encoding shown as \\xNN)."""
    return os.fsencode(path).decode(sys.getfilesystemencoding(), "backslashreplace")


def check_name_encodable(path: str | Path) -> None:
    """An output name must be text in the locale's encoding: fnacli records and prints its
    outputs' names (metadata, reports, JSON), which bytes that are not text cannot be."""
    try:
        str(path).encode(sys.getfilesystemencoding())
    except UnicodeEncodeError:
        raise UserError(f"{printable(path)}: the name is not valid "
                        f"{sys.getfilesystemencoding()} text; choose a name of text characters"
                        ) from None


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def check_writable(path: str | Path, force: bool, also: tuple[str, ...] = ()) -> Path:
    """Check, before any work, that ``path`` can be written: refuse to overwrite it unless
    ``force``, and check its folder exists, is a folder, takes new files (a real probe: as
    root, permissions alone say nothing) and allows its name and ``also`` (suffixes of the
    files written beside it, e.g. ``.ckpt``). While a command runs, the output is also
    locked against a second writer (``fnacli.locks``) and stale temporary files of an
    earlier, killed run are removed."""
    from fnacli import locks

    path = Path(path)
    check_name_encodable(path)
    folder = path.parent
    limit = _name_max(folder) if folder.is_dir() else 255
    for name in (path.name, *(path.name + s for s in also)):
        if (n := len(os.fsencode(name))) > limit:
            raise UserError(f"{folder / name}: file name too long ({n} bytes, the file system "
                            f"allows {limit})")
    if path.is_dir():
        raise UserError(f"{path}: is a folder; expected a file name")
    if path.exists() and not force:
        raise UserError(f"{path}: already exists (use --force to overwrite)")
    if not folder.exists():
        if any(p.exists() and not p.is_dir() for p in folder.parents):
            raise UserError(f"{folder}: a path component is not a folder")
        raise UserError(f"{folder}: output folder does not exist")
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder")
    check_folder_writable(folder)
    refuse_links([Path(f"{path}{s}") for s in also], "files beside the output")
    locks.claim(path)
    remove_stale_temps(path, also)
    return path


def check_folder_writable(folder: str | Path) -> None:
    """Create and remove a file in ``folder``: the only reliable test that it takes files."""
    folder = Path(folder)
    probe = folder / f".fnacli-probe~{os.getpid()}-{random_token()}.tmp"
    try:
        fd = open_exclusive(probe, "write-probe file")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        reason = ENVIRONMENT_ERRNOS.get(e.errno or 0) or e.strerror or str(e)
        raise UserError(f"{folder}: cannot write here ({reason})") from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(path: str | Path, also: tuple[str, ...] = ()) -> list[Path]:
    """Remove temporary files of ``path`` (and ``path + suffix`` for ``also``) that a killed
    fnacli run left behind: names fnacli's ``atomic_path`` makes, whose writer is gone."""
    path = Path(path)
    names = {_tmp_stem(path.name + s) for s in ("", *also)}
    legacy = [re.compile(_LEGACY_TMP.format(name=re.escape(path.name + s))) for s in ("", *also)]
    removed = []
    try:
        entries = list(os.scandir(path.parent or "."))
    except OSError:
        return removed
    for entry in entries:
        m = _TMP_RE.match(entry.name)
        stale = (m is not None and m["name"] in names and int(m["pid"]) != os.getpid()
                 and not _alive(int(m["pid"])))
        if not stale and any(r.match(entry.name) for r in legacy):
            stale = True  # no pid in the name: stale if older than a minute
            with contextlib.suppress(OSError):
                stale = time.time() - entry.stat().st_mtime > 60
        if stale and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def _tmp_stem(name: str) -> str:
    """The part of an output's name its temporary names keep (short enough for any limit)."""
    if len(name) <= 200:
        return name
    return name[:180] + "~" + hashlib.sha256(os.fsencode(name)).hexdigest()[:8]


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a folder
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    An interrupted or failing writer never leaves a half-written file behind: the earlier
    file stays as it was. The data is fsynced before the rename and the folder after it, so
    a power loss cannot leave a renamed but empty file. The temporary name is short (any
    valid output name works) and carries the writer's pid, so that the next run can remove
    what a killed one left (``remove_stale_temps``). A full disk, a read-only file system
    and the like become a ``UserError`` naming ``path``.
    """
    path = Path(path)
    folder = path.parent
    tmp = folder / f".{_tmp_stem(path.name)}~{os.getpid()}-{random_token(6)}.tmp"
    # outputs get the permissions a plain open() would give
    umask = os.umask(0)
    os.umask(umask)
    try:
        fd = open_exclusive(tmp, "temporary file", 0o666 & ~umask)
        os.close(fd)
    except OSError as e:
        raise UserError(f"cannot write {describe_os_error(e, path)}") from None
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(folder)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNOS:
            raise UserError(f"cannot write {describe_os_error(e, path)}"
                            + ("; the earlier file is unchanged" if path.exists() else "")
                            ) from None
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes_atomic(path: str | Path, data: bytes | memoryview) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def read_text_arg(arg: str, what: str = "input") -> tuple[str, str]:
    """Read a path argument or `-` (stdin). Returns (text, display name)."""
    if arg == "-":
        if sys.stdin.isatty():
            raise UserError(f"{what}: '-' means stdin, but nothing is piped in")
        try:
            return sys.stdin.read(), "<stdin>"
        except UnicodeDecodeError:
            raise UserError(f"{what}: stdin is not text (expected JSON)") from None
    p = Path(arg)
    if not p.is_file():
        raise UserError(f"{arg}: no such file")
    try:
        return p.read_text(), arg
    except UnicodeDecodeError:
        raise UserError(f"{arg}: not a text file (expected JSON)") from None
    except OSError as e:
        raise UserError(f"cannot read {describe_os_error(e, arg)}") from None


def load_json_text(text: str | bytes, name: str | Path) -> object:
    """Parse JSON a user gave (or a file fnacli wrote that a user may have damaged): any
    failure, deep nesting and oversized numbers included, is a ``UserError`` naming it."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        where = f"line {e.lineno} column {e.colno}"
        raise UserError(f"{name}: not valid JSON ({e.msg} at {where})") from None
    except RecursionError:
        raise UserError(f"{name}: JSON nested too deeply to read") from None
    except (ValueError, UnicodeDecodeError) as e:  # e.g. an integer of 5000 digits
        raise UserError(f"{name}: not valid JSON ({_first_line(e)})") from None


def load_json_file(path: str | Path, what: str = "JSON") -> object:
    """A JSON file, every failure (missing, unreadable, not text, bad JSON) a ``UserError``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (expected {what})") from None
    except OSError as e:
        raise UserError(f"cannot read {describe_os_error(e, path)}") from None
    return load_json_text(text, path)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:160] if text else type(e).__name__


def write_output(dest: str, text: str, force: bool) -> None:
    """Write ``text`` to a file atomically, or to stdout when ``dest`` is `-`."""
    if dest == "-":
        out: IO[str] = sys.stdout
        out.write(text if text.endswith("\n") else text + "\n")
        out.flush()
        return
    write_text_atomic(check_writable(dest, force), text if text.endswith("\n") else text + "\n")


def check_earlier_run(state: str | Path, resume: bool, force: bool,
                      what: str = "training state") -> None:
    """What an earlier run left decides between a fresh start, ``--resume`` and a refusal.

    ``--resume`` needs the state file. A fresh run (no ``--force``) refuses to replace an
    earlier run's state. Files without a state (a metrics log of a run that crashed or was
    killed before its first save) hold nothing to continue from and never block a rerun:
    the new run replaces them.
    """
    state = Path(state)
    if resume:
        if not state.is_file():
            raise UserError(f"{state}: no {what} to resume from (run without --resume)")
        return
    if state.exists() and not force:
        raise UserError(f"{state}: exists from an earlier run (continue it with --resume, or "
                        "start over with --force)")
