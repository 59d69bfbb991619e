"""A COCO instances file, validated: the slow checker that names the first bad entry, and the
column builder that validates a whole file with a few passes of C-speed list and numpy work.

``columns`` is what a load runs; when it meets anything it does not accept, ``check_doc``
runs to name the entry (file, index, id, field) in one line, as it always has.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from fnacli.errors import UserError
from fnacli.io import load_json_file


# -- annotation file validation ------------------------------------------------------------
def _int_field(entry: dict, key: str, where: str, minimum: int | None = None) -> int:
    v = entry.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or (minimum is not None and v < minimum):
        need = f"an integer ≥ {minimum}" if minimum is not None else "an integer"
        raise UserError(f"{where}: '{key}' must be {need}, got {v!r}")
    return v


def load_annotation_doc(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: no such annotation file")
    doc = load_json_file(path, "COCO annotation JSON")
    if not isinstance(doc, dict):
        raise UserError(f"{path}: expected a JSON object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise UserError(f"{path}: missing '{key}' list (not a COCO instances file)")
    if not doc["categories"]:
        raise UserError(f"{path}: 'categories' is empty")
    return doc


@dataclass
class _Checked:
    doc: dict  # cleaned copy: areas/iscrowd filled in, boxes clipped
    clipped: int
    degenerate: set[int]  # annotation ids too small to train on


def check_doc(doc: dict, path: Path) -> _Checked:
    cats: set[int] = set()
    for i, c in enumerate(doc["categories"]):
        where = f"{path}: categories[{i}]"
        if not isinstance(c, dict):
            raise UserError(f"{where}: expected an object with id and name")
        cid = _int_field(c, "id", where)
        if cid in cats:
            raise UserError(f"{where}: duplicate category id {cid}")
        if not isinstance(c.get("name"), str):
            raise UserError(f"{where}: 'name' must be a string, got {c.get('name')!r}")
        cats.add(cid)
    sizes: dict[int, tuple[int, int]] = {}
    for i, im in enumerate(doc["images"]):
        where = f"{path}: images[{i}]"
        if not isinstance(im, dict):
            raise UserError(f"{where}: expected an object with id, file_name, width, height")
        iid = _int_field(im, "id", where)
        if iid in sizes:
            raise UserError(f"{where}: duplicate image id {iid}")
        if not isinstance(im.get("file_name"), str) or not im["file_name"]:
            raise UserError(f"{where} (id {iid}): 'file_name' must be a non-empty string")
        sizes[iid] = (_int_field(im, "width", f"{where} (id {iid})", 1),
                      _int_field(im, "height", f"{where} (id {iid})", 1))
    clipped, degenerate, seen = 0, set(), set()
    anns = []
    for i, a in enumerate(doc["annotations"]):
        where = f"{path}: annotations[{i}]"
        if not isinstance(a, dict):
            raise UserError(f"{where}: expected an object")
        aid = _int_field(a, "id", where)
        where = f"{where} (id {aid})"
        if aid in seen:
            raise UserError(f"{where}: duplicate annotation id {aid}")
        seen.add(aid)
        iid = _int_field(a, "image_id", where)
        if iid not in sizes:
            raise UserError(f"{where}: image_id {iid} is not in 'images'")
        cid = _int_field(a, "category_id", where)
        if cid not in cats:
            raise UserError(f"{where}: unknown category_id {cid} (categories: "
                            f"{', '.join(map(str, sorted(cats)))})")
        box = a.get("bbox")
        if (not isinstance(box, list) or len(box) != 4
                or not all(isinstance(v, int | float) and not isinstance(v, bool)
                           and math.isfinite(v) for v in box)):
            raise UserError(f"{where}: 'bbox' must be 4 finite numbers [x, y, w, h], got {box!r}")
        x, y, w, h = (float(v) for v in box)
        if w < 0 or h < 0:
            raise UserError(f"{where}: bbox {box} has a negative width or height")
        W, H = sizes[iid]
        x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, W), min(y + h, H)
        if x > W or y > H or x + w < 0 or y + h < 0:
            raise UserError(f"{where}: bbox {box} lies outside its {W}x{H} image "
                            f"(image id {iid})")
        a = dict(a)
        if (x0, y0, x1, y1) != (x, y, x + w, y + h):
            clipped += 1
            a["bbox"] = [x0, y0, max(x1 - x0, 0.0), max(y1 - y0, 0.0)]
        if a["bbox"][2] <= 1 or a["bbox"][3] <= 1:
            degenerate.add(aid)
        a.setdefault("iscrowd", 0)
        a.setdefault("area", float(a["bbox"][2] * a["bbox"][3]))
        anns.append(a)
    clean = {k: v for k, v in doc.items() if k != "annotations"}
    clean["annotations"] = anns
    return _Checked(clean, clipped, degenerate)


def quiet_coco(doc: dict) -> COCO:
    """A pycocotools COCO from an in-memory document (its progress prints kept off stdout)."""
    coco = COCO()
    coco.dataset = doc
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


# -- the fast path -------------------------------------------------------------------------
class _Refused(Exception):
    """The fast path met something it does not accept: ``check_doc`` names it."""


@dataclass
class Columns:
    """A validated file as arrays. Images in ascending id order; boxes grouped by image in
    file order (``box_end``); boxes are clipped xywh; ``category`` is the label index."""

    categories: list[dict]  # [{id, name}] in ascending id order
    image_id: np.ndarray  # int64
    width: np.ndarray  # int32
    height: np.ndarray  # int32
    file_name: list[str]
    box_end: np.ndarray  # int64 per image
    box: np.ndarray  # float64 (M, 4)
    ann_id: np.ndarray  # int64
    category: np.ndarray  # int32
    area: np.ndarray  # float64
    crowd: np.ndarray  # bool
    degenerate: np.ndarray  # bool: width or height <= 1 px after clipping
    usable: np.ndarray  # bool per image: has a box to train on (not crowd, not degenerate)
    clipped: int



def _same_type(values: list, *types: type) -> bool:
    return not values or set(map(type, values)) <= set(types)


def _ints(values: list, minimum: int | None = None) -> np.ndarray:
    if not _same_type(values, int):
        raise _Refused
    try:
        arr = np.array(values, dtype=np.int64)
    except OverflowError:
        raise _Refused from None
    if minimum is not None and arr.size and arr.min() < minimum:
        raise _Refused
    return arr


def _categories(doc: dict, path: Path) -> list[dict]:
    cats = {}
    for i, c in enumerate(doc["categories"]):
        where = f"{path}: categories[{i}]"
        if not isinstance(c, dict):
            raise UserError(f"{where}: expected an object with id and name")
        cid = _int_field(c, "id", where)
        if cid in cats:
            raise UserError(f"{where}: duplicate category id {cid}")
        if not isinstance(c.get("name"), str):
            raise UserError(f"{where}: 'name' must be a string, got {c.get('name')!r}")
        cats[cid] = c["name"]
    return [{"id": c, "name": cats[c]} for c in sorted(cats)]


def _rows_of(keys: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    """Positions of ``keys`` in ``sorted_ids``; _Refused when one is absent."""
    rows = np.searchsorted(sorted_ids, keys)
    if keys.size and (rows.max() >= len(sorted_ids) or (sorted_ids[rows] != keys).any()):
        raise _Refused
    return rows


def _fast_columns(doc: dict, categories: list[dict]) -> Columns:
    images, anns = doc["images"], doc["annotations"]
    if not _same_type(images, dict) or not _same_type(anns, dict):
        raise _Refused
    ids = _ints([im.get("id") for im in images])
    names = [im.get("file_name") for im in images]
    if not _same_type(names, str) or not all(names):
        raise _Refused
    widths = _ints([im.get("width") for im in images], 1)
    heights = _ints([im.get("height") for im in images], 1)
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    if ids.size and (np.diff(ids) == 0).any():
        raise _Refused
    widths, heights = widths[order], heights[order]

    ann_id = _ints([a.get("id") for a in anns])
    if ann_id.size and len(np.unique(ann_id)) != ann_id.size:
        raise _Refused
    rows = _rows_of(_ints([a.get("image_id") for a in anns]), ids)
    cat_ids = np.array([c["id"] for c in categories], dtype=np.int64)
    category = _rows_of(_ints([a.get("category_id") for a in anns]), cat_ids).astype(np.int32)
    boxes = [a.get("bbox") for a in anns]
    if not _same_type(boxes, list) or (boxes and set(map(len, boxes)) != {4}):
        raise _Refused
    flat = list(itertools.chain.from_iterable(boxes))
    if not _same_type(flat, int, float):
        raise _Refused
    box = np.array(flat, dtype=np.float64).reshape(-1, 4)
    if not np.isfinite(box).all() or (box[:, 2:] < 0).any():
        raise _Refused
    W, H = widths[rows].astype(np.float64), heights[rows].astype(np.float64)
    x, y, w, h = box.T
    if ((x > W) | (y > H) | (x + w < 0) | (y + h < 0)).any():
        raise _Refused
    x0, y0 = np.maximum(x, 0.0), np.maximum(y, 0.0)
    x1, y1 = np.minimum(x + w, W), np.minimum(y + h, H)
    clip = (x0 != x) | (y0 != y) | (x1 != x + w) | (y1 != y + h)
    clipped = np.stack([x0, y0, np.maximum(x1 - x0, 0.0), np.maximum(y1 - y0, 0.0)], 1)
    box = np.where(clip[:, None], clipped, box)
    areas = [a.get("area") for a in anns]
    if not _same_type(areas, int, float, type(None)):
        raise _Refused
    area = np.array(areas, dtype=np.float64)  # None (no area given): NaN
    area = np.where(np.isnan(area), box[:, 2] * box[:, 3], area)
    crowd = np.fromiter((bool(a.get("iscrowd", 0)) for a in anns), bool, len(anns))
    degenerate = (box[:, 2] <= 1) | (box[:, 3] <= 1)
    usable = np.bincount(rows[~crowd & ~degenerate], minlength=len(ids)) > 0

    by_image = np.argsort(rows, kind="stable")  # boxes grouped by image, in file order
    box_end = np.cumsum(np.bincount(rows, minlength=len(ids))).astype(np.int64)
    return Columns(categories, ids, widths.astype(np.int32), heights.astype(np.int32),
                   [names[i] for i in order.tolist()], box_end, box[by_image],
                   ann_id[by_image], category[by_image], area[by_image], crowd[by_image],
                   degenerate[by_image], usable, int(clip.sum()))


def columns(doc: dict, path: Path) -> Columns:
    """``doc`` (a loaded instances file) validated, as arrays; a ``UserError`` naming the
    first bad entry otherwise (the same checks and messages as ``check_doc``)."""
    categories = _categories(doc, path)
    try:
        return _fast_columns(doc, categories)
    except _Refused:
        pass
    check_doc(doc, path)  # names the bad entry
    raise UserError(f"{path}: ids must fit in 64-bit integers and 'area' must be a number")
