"""Content fingerprints for caches: a result is reused only while every input it was made from
has the same content (not the same file name)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

# a data set larger than this is fingerprinted by its file names and sizes, not its bytes
# (hashing COCO's 19 GB on every call would cost minutes; a changed annotation file, the
# usual edit, is always hashed in full)
CONTENT_LIMIT = 256 * 2 ** 20


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def json_sha256(obj: object) -> str:
    """The hash of ``obj`` as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _files(paths: Iterable[Path]) -> list[tuple[str, Path]]:
    """(name, file) of every file under ``paths`` (files themselves, folders walked), sorted."""
    out = []
    for root in paths:
        if root.is_file():
            out.append((root.name, root))
        elif root.is_dir():
            for folder, _, names in os.walk(root):
                out += [(os.path.relpath(os.path.join(folder, n), root), Path(folder, n))
                        for n in names]
    return sorted(out)


def paths_fingerprint(paths: Iterable[str | Path]) -> str:
    """sha256 over the files under ``paths``: their bytes, or, past ``CONTENT_LIMIT`` in all,
    the bytes of the JSON files and the names and sizes of the rest."""
    files = _files(Path(p) for p in paths)
    total = sum(f.stat().st_size for _, f in files)
    h = hashlib.sha256()
    for name, f in files:
        h.update(name.encode() + b"\0")
        if total <= CONTENT_LIMIT or f.suffix == ".json":
            h.update(file_sha256(f).encode())
        else:
            h.update(str(f.stat().st_size).encode())
    return h.hexdigest()


def split_fingerprint(files: object) -> str:
    """The fingerprint of a task's split (what ``Task.find_split`` returns): every path it
    names (annotation file, image folders, label folders)."""
    paths: list[Path] = []
    for f in dataclasses.fields(files):  # type: ignore[arg-type]
        value = getattr(files, f.name)
        for v in value if isinstance(value, tuple | list) else (value,):
            if isinstance(v, Path):
                paths.append(v)
    return paths_fingerprint(paths)
