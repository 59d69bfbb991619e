"""A COCO instances file, validated: the fast reader that validates a whole file into numpy
columns, and the slow checker that names the first bad entry.

``load_columns`` is what a load runs: msgspec decodes the file into typed structs (in C,
without building the segmentation polygons that are most of a COCO file), and whole-column
numpy checks do the rest. When anything is refused, the file is parsed again with ``json``
and ``check_doc`` names the entry (file, index, id, field) in one line, as it always has.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import msgspec
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
    cats = {c["id"] for c in _categories(doc, path)}  # checked there
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


def _build(categories: list[dict], ids: np.ndarray, names: list[str], widths: np.ndarray,
           heights: np.ndarray, ann_id: np.ndarray, image_id: np.ndarray,
           category_id: np.ndarray, box: np.ndarray, area: np.ndarray,
           crowd: np.ndarray) -> Columns:
    """The checks on whole columns, clipping, and the grouping of boxes by image."""
    if (ids.size and (widths.min() < 1 or heights.min() < 1)) or (names and not all(names)):
        raise _Refused
    order = np.argsort(ids, kind="stable")
    ids, widths, heights = ids[order], widths[order], heights[order]
    if ids.size and (np.diff(ids) == 0).any():
        raise _Refused
    if ann_id.size and len(np.unique(ann_id)) != ann_id.size:
        raise _Refused
    rows = _rows_of(image_id, ids)
    cat_ids = np.array([c["id"] for c in categories], dtype=np.int64)
    category = _rows_of(category_id, cat_ids).astype(np.int32)
    box = box.reshape(-1, 4)
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
    area = np.where(np.isnan(area), box[:, 2] * box[:, 3], area)  # NaN: no area given
    degenerate = (box[:, 2] <= 1) | (box[:, 3] <= 1)
    usable = np.bincount(rows[~crowd & ~degenerate], minlength=len(ids)) > 0
    by_image = np.argsort(rows, kind="stable")  # boxes grouped by image, in file order
    box_end = np.cumsum(np.bincount(rows, minlength=len(ids))).astype(np.int64)
    return Columns(categories, ids, widths.astype(np.int32), heights.astype(np.int32),
                   [names[i] for i in order.tolist()], box_end, box[by_image],
                   ann_id[by_image], category[by_image], area[by_image], crowd[by_image],
                   degenerate[by_image], usable, int(clip.sum()))


def _dict_columns(doc: dict, categories: list[dict]) -> Columns:
    """Columns of a document that ``json`` parsed."""
    images, anns = doc["images"], doc["annotations"]
    if not _same_type(images, dict) or not _same_type(anns, dict):
        raise _Refused
    names = [im.get("file_name") for im in images]
    if not _same_type(names, str):
        raise _Refused
    boxes = [a.get("bbox") for a in anns]
    if not _same_type(boxes, list) or (boxes and set(map(len, boxes)) != {4}):
        raise _Refused
    flat = list(itertools.chain.from_iterable(boxes))
    areas = [a.get("area") for a in anns]
    if not _same_type(flat, int, float) or not _same_type(areas, int, float, type(None)):
        raise _Refused
    return _build(categories, _ints([im.get("id") for im in images]), names,
                  _ints([im.get("width") for im in images]),
                  _ints([im.get("height") for im in images]), _ints([a.get("id") for a in anns]),
                  _ints([a.get("image_id") for a in anns]),
                  _ints([a.get("category_id") for a in anns]),
                  np.array(flat, dtype=np.float64), np.array(areas, dtype=np.float64),
                  np.fromiter((bool(a.get("iscrowd", 0)) for a in anns), bool, len(anns)))


# The fast reader: msgspec decodes straight into these (typed, in C), skipping every field
# fnacli does not read (segmentation polygons are most of a COCO file).
class _Image(msgspec.Struct):
    id: int
    file_name: str
    width: int
    height: int


class _Ann(msgspec.Struct):
    id: int
    image_id: int
    category_id: int
    bbox: tuple[float, float, float, float]
    iscrowd: int = 0
    area: float | None = None


class _Category(msgspec.Struct):
    id: int
    name: str


class _Doc(msgspec.Struct):
    images: list[_Image]
    annotations: list[_Ann]
    categories: list[_Category]


_DECODER = msgspec.json.Decoder(_Doc)


def _struct_columns(doc: _Doc) -> Columns:
    cats = {c.id: c.name for c in doc.categories}
    if not cats or len(cats) != len(doc.categories):
        raise _Refused
    images, anns = doc.images, doc.annotations
    try:
        return _build([{"id": c, "name": cats[c]} for c in sorted(cats)],
                      np.array([im.id for im in images], np.int64),
                      [im.file_name for im in images],
                      np.array([im.width for im in images], np.int64),
                      np.array([im.height for im in images], np.int64),
                      np.array([a.id for a in anns], np.int64),
                      np.array([a.image_id for a in anns], np.int64),
                      np.array([a.category_id for a in anns], np.int64),
                      np.array([a.bbox for a in anns], np.float64),
                      np.array([a.area for a in anns], np.float64),
                      np.array([a.iscrowd for a in anns], bool))
    except OverflowError:
        raise _Refused from None


def columns(doc: dict, path: Path) -> Columns:
    """``doc`` (a loaded instances file) validated, as arrays; a ``UserError`` naming the
    first bad entry otherwise (the same checks and messages as ``check_doc``)."""
    categories = _categories(doc, path)
    try:
        return _dict_columns(doc, categories)
    except (_Refused, OverflowError):
        pass
    check_doc(doc, path)  # names the bad entry
    raise UserError(f"{path}: ids must fit in 64-bit integers and 'area' must be a number")


def load_columns(path: Path) -> Columns:
    """The instances file at ``path``, validated, as arrays. A valid file is decoded by
    msgspec into typed structs (only the fields used); anything it refuses is read again
    with ``json`` and checked entry by entry, for a message naming the entry."""
    try:
        raw = path.read_bytes()
        return _struct_columns(_DECODER.decode(raw))
    except (OSError, msgspec.DecodeError, _Refused):
        pass
    return columns(load_annotation_doc(path), path)
