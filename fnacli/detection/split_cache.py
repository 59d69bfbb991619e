"""A loaded split on disk, so that the next run starts without parsing and checking it again.

One ``.npz`` file per (annotation file, image folders), in ``$FNACLI_CACHE_DIR/data``
(default ``~/.cache/fnacli/data``). It holds the validated records (``Records``), the
categories and the counts the load logs, valid while the annotation file keeps its path, size
and modification time; and, per image, the file's size and modification time when it was
checked and how far (header or decode). A later load re-checks only the images whose size or
time changed (or that were checked less deeply than asked). A cache that cannot be read or
written is ignored: it only ever saves time.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fnacli.detection.records import Records

log = logging.getLogger(__name__)

VERSION = 1


def cache_folder() -> Path:
    return Path(os.environ.get("FNACLI_CACHE_DIR") or Path.home() / ".cache" / "fnacli") / "data"


@dataclass
class CachedSplit:
    records: Records
    categories: list[dict]  # [{id, name}] in label order
    counts: dict[str, int]  # clipped, degenerate, crowd boxes
    file_size: np.ndarray  # int64 per image: st_size when checked
    file_mtime: np.ndarray  # int64 per image: st_mtime_ns when checked
    checked: np.ndarray  # int8 per image: index into image_check.LEVELS


def split_key(ann: Path, image_dirs: tuple[Path, ...]) -> dict | None:
    """What a cached split must match; None if the annotation file cannot be stat'ed."""
    try:
        st = os.stat(ann)
        real = os.path.realpath(ann)
    except OSError:
        return None
    return {"version": VERSION, "ann": real, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "dirs": [os.path.realpath(d) for d in image_dirs]}


def _file_of(key: dict) -> Path:
    name = hashlib.sha256(json.dumps([key["ann"], key["dirs"]]).encode()).hexdigest()[:24]
    return cache_folder() / f"split-{name}.npz"


def load(key: dict | None) -> CachedSplit | None:
    if key is None:
        return None
    path = _file_of(key)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes())
            if meta.get("key") != key:
                return None
            layout = tuple((n, d, tuple(s)) for n, d, s in meta["layout"])
            return CachedSplit(Records(z["records"], layout), meta["categories"],
                               meta["counts"], z["file_size"], z["file_mtime"], z["checked"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        if not isinstance(e, FileNotFoundError):
            log.debug("%s: split cache not used (%s)", path, e)
        return None


def save(key: dict | None, split: CachedSplit) -> None:
    if key is None:
        return
    path = _file_of(key)
    meta = {"key": key, "layout": [list(x) for x in split.records.layout],
            "categories": split.categories, "counts": split.counts}
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
             records=split.records.buffer, file_size=split.file_size,
             file_mtime=split.file_mtime, checked=split.checked)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(buf.getbuffer())
        os.replace(tmp, path)
    except OSError as e:
        log.debug("%s: split cache not written (%s)", path, e)
        with contextlib.suppress(OSError):
            tmp.unlink()
