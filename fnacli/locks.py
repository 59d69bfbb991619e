"""One writer per output: an exclusive ``flock`` on a lock file beside it.

While a command runs (``output_session``), every output it checks with
``fnacli.io.check_writable`` is claimed: ``.NAME.lock`` in the output's folder is created and
locked with ``fcntl.flock(LOCK_EX | LOCK_NB)`` and holds the writer's pid. A second fnacli
process claiming the same output finds the lock taken and stops with exit 2 naming the pid
of the holder, before any work. The kernel drops the lock when its holder dies (even by
``kill -9``), so a stale lock file never blocks a rerun; locks are removed when the session
ends. Outside a session (library use, tests) nothing is locked.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from fnacli.errors import UserError

_held: dict[Path, int] | None = None  # lock file -> fd, while a session is active


def lock_path(path: str | Path) -> Path:
    """``.NAME.lock`` beside ``path``; names too long for that are shortened with a hash."""
    path = Path(path)
    name = path.name
    if len(name) > 200:
        name = name[:180] + "~" + hashlib.sha256(os.fsencode(name)).hexdigest()[:8]
    return path.parent / f".{name}.lock"


@contextlib.contextmanager
def output_session() -> Iterator[None]:
    """Claim outputs while the block runs; release (and remove) every lock at its end."""
    global _held
    outer = _held
    if outer is None:
        _held = {}
    try:
        yield
    finally:
        if outer is None:
            release_all()
            _held = None


def active() -> bool:
    return _held is not None


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "another process"


def claim(path: str | Path) -> None:
    """Lock ``path`` for this process (no-op outside a session, or if already ours). Under
    torchrun only rank 0 writes outputs, so only rank 0 claims them: the processes of one
    run must not refuse each other."""
    if _held is None or os.environ.get("RANK", "0") not in ("", "0"):
        return
    lock = lock_path(path).absolute()
    if lock in _held:
        return
    while True:
        fd = _open_lock(lock, path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise UserError(f"{path}: another fnacli run ({_holder(lock)}) is writing it "
                            f"(lock {lock}); wait for it to finish or choose another output"
                            ) from None
        # the previous holder may have removed the file between our open and flock: then
        # we hold a lock nobody else can see; start over on the current file
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[lock] = fd


def _open_lock(lock: Path, path: str | Path) -> int:
    """The lock file's descriptor: created exclusively, or (left by a killed run) reopened
    without following links and checked to be what fnacli makes: a regular file of ours with
    one name, holding a pid. Anything else planted at that name is refused, untouched."""
    from fnacli.io import EXCLUSIVE, planted

    nofollow = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(lock, os.O_RDWR | EXCLUSIVE, 0o644)
    except FileExistsError:
        pass
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise planted(lock, "lock file") from None
        raise UserError(f"{path}: cannot create its lock file {lock.name} "
                        f"({os.strerror(e.errno or errno.EIO)})") from None
    try:
        fd = os.open(lock, os.O_RDWR | nofollow | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:  # its holder removed it meanwhile: create it afresh
        return _open_lock(lock, path)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENXIO):
            raise planted(lock, "lock file") from None
        raise UserError(f"{path}: cannot open its lock file {lock.name} "
                        f"({os.strerror(e.errno or errno.EIO)})") from None
    st = os.fstat(fd)
    ours = (stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_size <= 24
            and st.st_uid == os.geteuid() and _pid_text(fd))
    if not ours:
        os.close(fd)
        raise planted(lock, "lock file")
    return fd


def _pid_text(fd: int) -> bool:
    """Whether the file holds what fnacli writes into a lock: a pid line, or nothing."""
    text = os.pread(fd, 32, 0)
    return text.strip() == b"" or text.strip().isdigit()


def release_all() -> None:
    """Remove and unlock every lock this process holds."""
    if not _held:
        return
    for lock, fd in list(_held.items()):
        with contextlib.suppress(OSError):
            os.unlink(lock)  # removed while still locked: no one can take a stale name
        with contextlib.suppress(OSError):
            os.close(fd)
        del _held[lock]
