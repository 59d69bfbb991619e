"""Where cost tables are cached between runs, and saving there without failing a run.

The directory follows the XDG convention: ``$FNACLI_CACHE_DIR``, else
``$XDG_CACHE_HOME/fnacli``, else ``~/.cache/fnacli``. A cache that cannot be written (a
read-only or missing home, a file where a folder should be) costs a recount next time, never
a failed run; the ``fnacli`` logger says so once per file, and :func:`save_text` tells the
caller, so nothing reports a path that was not written.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("fnacli")
_warned: set[str] = set()  # cache files whose failed save was reported already


def cache_dir() -> Path:
    """``$FNACLI_CACHE_DIR``, ``$XDG_CACHE_HOME/fnacli`` or ``~/.cache/fnacli`` (an
    ``XDG_CACHE_HOME`` that is not absolute is ignored, as the XDG spec says)."""
    own = os.environ.get("FNACLI_CACHE_DIR")
    if own:
        return Path(own)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "fnacli"
    try:
        home = Path.home()
    except RuntimeError:  # no HOME and no password entry: a relative path, refused on save
        home = Path("~")
    return home / ".cache" / "fnacli"


def save_text(path: Path, text: str, what: str = "cost table") -> bool:
    """Write ``text`` to the cache file ``path`` atomically; False (and one warning on the
    ``fnacli`` logger) when it cannot be written."""
    from fnacli.errors import UserError
    from fnacli.io import remove_stale_temps, write_text_atomic

    try:
        if not path.is_absolute():
            raise OSError("no home directory to cache in (set FNACLI_CACHE_DIR)")
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)  # what a run killed while writing left
        write_text_atomic(path, text)
        return True
    except (OSError, UserError) as e:
        if str(path) not in _warned:
            _warned.add(str(path))
            reason = getattr(e, "strerror", None) or str(e)
            log.warning("could not save the %s cache in %s (%s); it is computed again next "
                        "time (set FNACLI_CACHE_DIR to a writable folder)", what, path.parent,
                        reason)
        return False
