"""Run ``fnacli ARGS`` in this process, dying by SIGKILL at a chosen point (fault injection).

    python tests/fault_runner.py ARGS...

FNACLI_TEST_KILL="module:attr:N[:inside[:SUFFIX]]" wraps ``module.attr`` (``attr`` may be
``Class.method``) and sends SIGKILL to this process when its N-th call returns; with
``inside`` the attribute is a context manager like ``fnacli.io.atomic_path`` and the kill
comes inside its N-th block (the temporary file written, not yet renamed), counting only
calls whose first argument ends with SUFFIX. Several specs are separated by ``;``.

FNACLI_TEST_SLOW="module:attr:SECONDS" sleeps that long after every call (so that a signal
test can find a run still running).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import time
from collections.abc import Callable


def _resolve(spec: str) -> tuple[object, str, Callable]:
    modname, attr = spec.split(":")[:2]
    owner: object = importlib.import_module(modname)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    return owner, name, getattr(owner, name)


def _die() -> None:
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def arm_kill(spec: str) -> None:
    owner, name, orig = _resolve(spec)
    parts = spec.split(":")
    n = int(parts[2])
    inside = len(parts) > 3 and parts[3] == "inside"
    suffix = parts[4] if len(parts) > 4 else ""
    calls = [0]
    if inside:
        @contextlib.contextmanager
        def wrapped(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
            with orig(*args, **kwargs) as tmp:
                yield tmp
                if str(args[0] if args else "").endswith(suffix):
                    calls[0] += 1
                    if calls[0] == n:
                        _die()
    else:
        def wrapped(*args: object, **kwargs: object) -> object:  # type: ignore[misc]
            result = orig(*args, **kwargs)
            calls[0] += 1
            if calls[0] == n:
                _die()
            return result
    setattr(owner, name, wrapped)


def arm_slow(spec: str) -> None:
    owner, name, orig = _resolve(spec)
    seconds = float(spec.split(":")[2])

    def wrapped(*args: object, **kwargs: object) -> object:
        result = orig(*args, **kwargs)
        time.sleep(seconds)
        return result

    setattr(owner, name, wrapped)


def main() -> None:
    for spec in filter(None, os.environ.get("FNACLI_TEST_KILL", "").split(";")):
        arm_kill(spec)
    for spec in filter(None, os.environ.get("FNACLI_TEST_SLOW", "").split(";")):
        arm_slow(spec)
    from fnacli.cli.app import main as fnacli_main

    sys.argv = ["fnacli", *sys.argv[1:]]
    fnacli_main()


if __name__ == "__main__":
    main()
