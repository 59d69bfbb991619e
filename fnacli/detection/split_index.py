"""Loading a COCO split once: the annotation file validated into ``Records``, every image found
and checked, and the result cached (``split_cache``) so that the next run only stats files.

Order of work (and of errors): the annotation file, then every image's file (missing, or the
same file as another image), then the image checks (``image_check``: unreadable, or another
size than the annotation says).
"""

from __future__ import annotations

import logging
import os
import stat
import time
from pathlib import Path

import numpy as np

from fnacli.detection import split_cache
from fnacli.detection.annotations import load_columns
from fnacli.detection.image_check import LEVELS, image_sizes
from fnacli.detection.records import Records, pack_paths
from fnacli.detection.split_cache import CachedSplit
from fnacli.errors import UserError

log = logging.getLogger(__name__)

# a file changed less than this before the cache was written may change again unseen
# within one tick of the file system's clock (git's "racy" entries): not trusted
_RACY_NS = 2_000_000_000


def check_level(check_images: bool | str | None) -> str:
    """One of ``LEVELS`` from ``True``/``False`` (the old flag), a level, or None: the
    ``FNACLI_IMAGE_CHECK`` environment variable's level, else ``header``."""
    if check_images is None:
        check_images = os.environ.get("FNACLI_IMAGE_CHECK") or "header"
        where = "FNACLI_IMAGE_CHECK"
    else:
        where = "image check"
    if check_images is True:
        return "header"
    if check_images is False:
        return "none"
    if check_images not in LEVELS:
        raise UserError(f"{where}: expected one of {', '.join(LEVELS)}, got {check_images!r}")
    return str(check_images)


def find_images(ann: Path, dirs: tuple[Path, ...], ids: list[int],
                names: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Each image's file (the first folder that has it), with its size and modification time.
    ``UserError`` for a missing file or two images that are the same file (their boxes would
    count twice); hard links are different files, as they always were."""
    folders = [str(d) for d in dirs]
    real_folder: dict[str, str] = {}
    owner: dict[str, int] = {}
    paths, sizes, mtimes = [], np.empty(len(ids), np.int64), np.empty(len(ids), np.int64)
    for k, (iid, rel) in enumerate(zip(ids, names, strict=True)):
        for folder in folders:
            path = os.path.join(folder, rel)
            try:
                st = os.lstat(path)
                link = stat.S_ISLNK(st.st_mode)
                if link:
                    st = os.stat(path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                break
        else:
            where = ", ".join(folders) or "(no image folder found)"
            raise UserError(f"{ann}: image id {iid} {rel!r} not found in {where}")
        head, tail = os.path.split(path)
        if link:
            real = os.path.realpath(path)
        else:  # one realpath per folder, not per image
            if head not in real_folder:
                real_folder[head] = os.path.realpath(head)
            real = os.path.join(real_folder[head], tail)
        if real in owner:
            raise UserError(f"{ann}: image ids {owner[real]} and {iid} are the same file {path} "
                            "(each image may appear once: its boxes would count twice)")
        owner[real] = iid
        paths.append(path)
        sizes[k], mtimes[k] = st.st_size, st.st_mtime_ns
    return paths, sizes, mtimes


def check_images(ann: Path, records: Records, rows: np.ndarray, level: str) -> None:
    """``UserError`` for the first of these images that cannot be read or has another size on
    disk than the annotation says."""
    if level == "none" or not len(rows):
        return
    paths = [records.path(int(r)) for r in rows]
    for row, path, got in zip(rows.tolist(), paths, image_sizes(paths, level), strict=True):
        iid, w, h = (int(records.image_id[row]), int(records.width[row]),
                     int(records.height[row]))
        if isinstance(got, str):
            raise UserError(f"{path}: {got} (image id {iid} of {ann})")
        if got != (w, h):
            raise UserError(f"{path}: is {got[0]}x{got[1]} on disk but {ann} says {w}x{h} "
                            f"(image id {iid})")


def _fresh(ann: Path, dirs: tuple[Path, ...], level: str) -> CachedSplit:
    c = load_columns(ann)
    ids = c.image_id.tolist()
    paths, sizes, mtimes = find_images(ann, dirs, ids, c.file_name)
    path_bytes, path_end = pack_paths(paths)
    records = Records.pack(
        image_id=c.image_id, width=c.width, height=c.height, usable=c.usable,
        path_end=path_end, box_end=c.box_end, path_bytes=path_bytes, box=c.box,
        ann_id=c.ann_id, category=c.category, area=c.area, crowd=c.crowd,
        degenerate=c.degenerate)
    check_images(ann, records, np.arange(len(ids)), level)
    counts = {"clipped": c.clipped, "degenerate": int(c.degenerate.sum()),
              "crowd": int(c.crowd.sum())}
    return CachedSplit(records, c.categories, counts, sizes, mtimes,
                       np.full(len(ids), LEVELS.index(level), np.int8))


def _refresh(ann: Path, split: CachedSplit, level: str, written_ns: int) -> bool | None:
    """Bring a cached split's image checks up to date: re-check the images whose file changed
    (size or time), was checked less deeply than ``level``, or changed too close to when the
    cache was written to tell. None when an image file is gone (load afresh: that names it);
    else whether anything was re-checked."""
    r = split.records
    n = len(r)
    sizes, mtimes = np.empty(n, np.int64), np.empty(n, np.int64)
    for row in range(n):
        try:
            st = os.stat(r.path(row))
        except OSError:
            return None
        sizes[row], mtimes[row] = st.st_size, st.st_mtime_ns
    want = LEVELS.index(level)
    stale = ((sizes != split.file_size) | (mtimes != split.file_mtime)
             | (mtimes >= written_ns - _RACY_NS))
    redo = np.flatnonzero((split.checked < want) | (stale & (want > 0)))
    split.checked[stale] = 0
    check_images(ann, r, redo, level)
    split.checked[redo] = want
    split.file_size, split.file_mtime = sizes, mtimes
    return bool(len(redo)) or bool(stale.any())


def load_index(ann: Path, dirs: tuple[Path, ...], level: str) -> CachedSplit:
    """The split's records, from the cache when it is still valid, else from the files."""
    key = split_cache.split_key(ann, dirs)
    cached = split_cache.load(key)
    if cached is not None and key is not None:
        written = int(cached.counts.get("written_ns", 0))
        if key["mtime_ns"] < written - _RACY_NS:
            changed = _refresh(ann, cached, level, written)
            if changed is not None:
                if changed:
                    _save(key, cached)
                log.debug("%s: loaded from the split cache", ann)
                return cached
    split = _fresh(ann, dirs, level)
    _save(key, split)
    return split


def _save(key: dict | None, split: CachedSplit) -> None:
    split.counts["written_ns"] = time.time_ns()
    split_cache.save(key, split)
