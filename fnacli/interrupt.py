"""SIGINT and SIGTERM: stop a long run at a step boundary, saving what ``--resume`` needs.

``install()`` (the CLI does it) turns both signals into ``Interrupted``. Outside a training
loop it is raised at once: nothing is half-written, since every output is written
atomically. Inside one (``with deferred():``) the handler only records the signal; the loop
calls ``pending()`` after each step, saves its state there and raises
``Interrupted(signum, saved=...)``, whose message says what was saved and how to resume. A
second signal during a deferred section does not wait for the step to end.

The CLI exits 130 for SIGINT and 143 for SIGTERM (128 + the signal number, as shells do).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

_pending: int | None = None
_depth = 0
_previous: dict[int, object] | None = None  # the handlers ``install`` replaced


class Interrupted(BaseException):
    """A run stopped by a signal. ``saved`` says what was saved (one phrase) or is None.

    A BaseException, like KeyboardInterrupt: ``except Exception`` clauses must not swallow it.
    """

    def __init__(self, signum: int, saved: str | None = None) -> None:
        self.signum = signum
        self.saved = saved
        super().__init__(self.message())

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def message(self) -> str:
        if self.saved:
            return (f"interrupted by {self.name}: saved {self.saved}; continue with the same "
                    "command and --resume")
        return (f"interrupted by {self.name}; no state was saved at this point (outputs are "
                "written atomically, nothing is half-written): rerun the command (with "
                "--resume where it has one)")


def _handler(signum: int, frame: FrameType | None) -> None:
    global _pending
    if _depth > 0 and _pending is None:
        _pending = signum  # the loop saves at the end of its step and raises then
        return
    raise Interrupted(signum)


def install() -> None:
    """Route SIGINT and SIGTERM to ``Interrupted`` (SIGINT only where it is not ignored:
    a job started in the background keeps ignoring it)."""
    global _previous
    if _previous is not None:
        return
    _previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        old = signal.getsignal(sig)
        if sig == signal.SIGINT and old is signal.SIG_IGN:
            continue
        try:
            signal.signal(sig, _handler)
        except ValueError:  # not the main thread: signals stay as they are
            continue
        _previous[sig] = old


def uninstall() -> None:
    """Put back the handlers ``install`` replaced."""
    global _previous, _pending
    for sig, old in (_previous or {}).items():
        signal.signal(sig, old)  # type: ignore[arg-type]
    _previous, _pending = None, None


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the block a signal waits for ``pending()`` (the loop's next step boundary)."""
    global _depth, _pending
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            signum, _pending = _pending, None
            if signum is not None:  # arrived after the last check: stop now
                raise Interrupted(signum)


def pending() -> int | None:
    """The signal received since the deferred section began, if any."""
    return _pending


def stop(signum: int, saved: str | None) -> Interrupted:
    """The exception a loop raises at its step boundary after saving for ``signum``."""
    global _pending
    _pending = None
    return Interrupted(signum, saved)
