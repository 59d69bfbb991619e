"""A small synthetic COCO-format detection dataset: coloured shapes on textured backgrounds.

Variant ``shapes`` (the default): each class is one shape drawn in its own colour, so a tiny
detector can learn the task on a CPU in minutes. Variant ``context``: every object is a dark
shape of any kind, and its class is only given by the colour of a thin ring drawn around it,
outside its box (at 1.5-1.8x its radius): a detector has to look past the object itself, so
the receptive field of the backbone matters (the task the search-quality benchmark uses).

Everything is a function of the seed: every image draws from its own ``numpy`` generator
seeded with (seed, split, index), and the annotation JSON is written with sorted keys, so
the same seed gives byte-identical annotation files.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fnacli import locks
from fnacli.errors import UserError
from fnacli.io import (
    check_folder_writable,
    check_name_encodable,
    open_exclusive,
    refuse_links,
    remove_stale_temps,
    write_text_atomic,
)

# (name, RGB) per class; colours far apart so colour alone almost separates the classes.
SHAPES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("circle", (230, 40, 40)),
    ("square", (40, 200, 60)),
    ("triangle", (50, 90, 240)),
    ("diamond", (245, 220, 40)),
    ("star", (220, 50, 220)),
    ("cross", (40, 220, 230)),
    ("hexagon", (250, 140, 20)),
    ("ring", (250, 250, 250)),
)
MAX_CLASSES = len(SHAPES)
COLOUR_NAMES = ("red", "green", "blue", "yellow", "magenta", "cyan", "orange", "white")
SPLITS = {"train": 0, "val": 1}
VARIANTS = ("shapes", "context")
# context variant: object shapes (any class), their colour, and the ring around them
_CONTEXT_SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross", "hexagon")
_CONTEXT_DARK = 30
_RING_RADIUS = (1.5, 1.8)  # ring centre line, in object radii
_RING_WIDTH = 0.18  # ring thickness, in object radii (at least 2 px)
_MIN_SIZE = 32
_MAX_SIZE = 4096
_MAX_IMAGES = 1_000_000
# present while a run writes the folder; a rerun may replace what a killed run left
PARTIAL = ".fnacli-synth.partial"


@dataclass(frozen=True)
class SynthConfig:
    train: int = 512
    val: int = 64
    size: int = 320
    classes: int = 3
    seed: int = 0
    fmt: str = "jpg"
    min_objects: int = 1
    max_objects: int = 4
    min_scale: float = 0.15  # object side as a fraction of the image side
    max_scale: float = 0.45
    variant: str = "shapes"


def check_config(cfg: SynthConfig) -> None:
    if not 1 <= cfg.classes <= MAX_CLASSES:
        raise UserError(f"--classes: expected 1..{MAX_CLASSES}, got {cfg.classes}")
    if not _MIN_SIZE <= cfg.size <= _MAX_SIZE:
        raise UserError(f"--size: expected {_MIN_SIZE} to {_MAX_SIZE} pixels, got {cfg.size}")
    if cfg.train < 1 or cfg.val < 1:
        raise UserError(f"--train/--val: need at least one image each, got {cfg.train}/{cfg.val}")
    if cfg.variant not in VARIANTS:
        raise UserError(f"--variant: expected one of {', '.join(VARIANTS)}, got {cfg.variant!r}")
    if cfg.train + cfg.val > _MAX_IMAGES:
        raise UserError(f"--train/--val: at most {_MAX_IMAGES:,} images in all, got "
                        f"{cfg.train + cfg.val:,}")
    if cfg.fmt not in ("jpg", "png"):
        raise UserError(f"--format: expected jpg or png, got {cfg.fmt!r}")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Muted low-frequency colour blobs + stripes + pixel noise (uint8 HxWx3)."""
    grid = rng.uniform(70, 180, (6, 6, 3))
    grid = grid * 0.5 + grid.mean(axis=2, keepdims=True) * 0.5  # desaturate
    low = np.asarray(Image.fromarray(grid.astype(np.uint8)).resize((size, size),
                                                                   Image.Resampling.BICUBIC),
                     dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle, period = rng.uniform(0, math.pi), rng.uniform(8, 40)
    stripes = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)
    img = low + stripes[..., None] * rng.uniform(0, 18) + rng.normal(0, 10, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _polygon(name: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    def ring(n: int, radius: float, offset: float = 0.0) -> list[tuple[float, float]]:
        return [(cx + radius * math.cos(rot + offset + 2 * math.pi * k / n),
                 cy + radius * math.sin(rot + offset + 2 * math.pi * k / n)) for k in range(n)]

    if name == "square":
        return ring(4, r, math.pi / 4)
    if name == "triangle":
        return ring(3, r)
    if name == "diamond":  # a rhombus: narrower than it is tall
        return [(cx, cy - r), (cx + 0.6 * r, cy), (cx, cy + r), (cx - 0.6 * r, cy)]
    if name == "hexagon":
        return ring(6, r)
    if name == "star":
        outer, inner = ring(5, r), ring(5, 0.45 * r, math.pi / 5)
        return [p for pair in zip(outer, inner, strict=True) for p in pair]
    if name == "cross":
        a = 0.35 * r
        pts = [(-a, -r), (a, -r), (a, -a), (r, -a), (r, a), (a, a), (a, r), (-a, r), (-a, a),
               (-r, a), (-r, -a), (-a, -a)]
        return [(cx + x, cy + y) for x, y in pts]
    raise AssertionError(name)


def _draw(mask: ImageDraw.ImageDraw, name: str, cx: float, cy: float, r: float,
          rot: float) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    if name == "circle":
        mask.ellipse(box, fill=255)
    elif name == "ring":
        mask.ellipse(box, fill=255)
        inner = 0.55 * r
        mask.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=0)
    else:
        mask.polygon(_polygon(name, cx, cy, r, rot), fill=255)


def _overlaps(box: tuple[int, int, int, int], others: list[tuple[int, int, int, int]],
              gap: int) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 < b[2] + gap and b[0] < x1 + gap and y0 < b[3] + gap and b[1] < y1 + gap
               for b in others)


def make_image(cfg: SynthConfig, split: str, index: int) -> tuple[Image.Image, list[dict]]:
    """One image and its objects ([{category_id, bbox [x, y, w, h], area}])."""
    rng = np.random.default_rng([cfg.seed, SPLITS[split], index])
    size = cfg.size
    canvas = _background(rng, size)
    context = cfg.variant == "context"
    taken: list[tuple[int, int, int, int]] = []  # what each object occupies (ring included)
    objects: list[dict] = []
    for _ in range(int(rng.integers(cfg.min_objects, cfg.max_objects + 1))):
        cls = int(rng.integers(0, cfg.classes))
        name, colour = SHAPES[cls]
        if context:  # any shape, always dark: only the ring says the class
            name = _CONTEXT_SHAPES[int(rng.integers(0, len(_CONTEXT_SHAPES)))]
        for _try in range(30):  # rejection sampling: objects never overlap
            r = rng.uniform(cfg.min_scale, cfg.max_scale) * size / 2
            ring_r = rng.uniform(*_RING_RADIUS) * r if context else 0.0
            ring_w = max(2.0, _RING_WIDTH * r) if context else 0.0
            reach = max(r, ring_r + ring_w / 2)  # the object's extent from its centre
            if 2 * reach >= size:
                continue
            cx, cy = rng.uniform(reach, size - reach, 2)
            rot = rng.uniform(0, 2 * math.pi)
            layer = Image.new("L", (size, size), 0)
            _draw(ImageDraw.Draw(layer), name, cx, cy, r, rot)
            m = np.asarray(layer) > 127
            ys, xs = np.nonzero(m)
            if len(xs) == 0:
                continue
            box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            extent = box if not context else (int(cx - reach), int(cy - reach),
                                             int(cx + reach) + 1, int(cy + reach) + 1)
            if _overlaps(extent, taken, gap=2):
                continue
            jitter = rng.integers(-25, 26, 3)
            if context:
                ring = Image.new("L", (size, size), 0)
                ImageDraw.Draw(ring).ellipse((cx - ring_r, cy - ring_r, cx + ring_r,
                                              cy + ring_r), outline=255,
                                             width=int(round(ring_w)))
                canvas[np.asarray(ring) > 127] = np.clip(np.array(colour) + jitter, 0,
                                                         255).astype(np.uint8)
                dark = _CONTEXT_DARK + rng.integers(-15, 16, 3)
                canvas[m] = np.clip(dark, 0, 255).astype(np.uint8)
            else:
                canvas[m] = np.clip(np.array(colour) + jitter, 0, 255).astype(np.uint8)
            taken.append(extent)
            objects.append({"category_id": cls + 1,
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                            "area": int(m.sum())})
            break
    return Image.fromarray(canvas), objects


def categories(n: int, variant: str = "shapes") -> list[dict]:
    if variant == "context":  # the class is the ring's colour, whatever the shape
        return [{"id": i + 1, "name": f"{COLOUR_NAMES[i]} ring", "supercategory": "context"}
                for i in range(n)]
    return [{"id": i + 1, "name": SHAPES[i][0], "supercategory": "shape"} for i in range(n)]


def _write_split(cfg: SynthConfig, out: Path, split: str, count: int,
                 progress: Callable[[int], None] | None, ann: Path) -> str:
    """Write the images of one split into a fresh folder; return the annotation JSON text."""
    tmp = out / f".{split}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    images, anns = [], []
    for i in range(count):
        img, objects = make_image(cfg, split, i)
        file_name = f"{i:06d}.{cfg.fmt}"
        if cfg.fmt == "jpg":
            img.save(tmp / file_name, quality=92)
        else:
            img.save(tmp / file_name)
        images.append({"id": i + 1, "file_name": file_name, "width": cfg.size,
                       "height": cfg.size})
        for obj in objects:
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "iscrowd": 0, **obj})
        if progress:
            progress(1)
    final = out / split
    # --force: an earlier run's annotations must not outlive the images they describe
    ann.unlink(missing_ok=True)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    doc = {"info": {"description": "fnacli synthetic shapes", "seed": cfg.seed,
                    "size": cfg.size, "classes": cfg.classes,
                    **({"variant": cfg.variant} if cfg.variant != "shapes" else {})},
           "licenses": [], "images": images, "annotations": anns,
           "categories": categories(cfg.classes, cfg.variant)}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n"


def generate(out_dir: str | Path, cfg: SynthConfig, force: bool = False,
             progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Write OUT/annotations/instances_{train,val}.json and OUT/{train,val}/ images.

    Returns the number of objects per split. An annotation file is written (atomically)
    only after its image folder is complete, so an interrupted run never leaves
    annotations pointing at missing images.
    """
    check_config(cfg)
    out = check_output_dir(out_dir, force)
    marker = out / PARTIAL
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    if not marker.is_file():  # a killed run's marker (checked to be no link) stays as it is
        fd = open_exclusive(marker, "marker of an unfinished run", 0o644)
        with os.fdopen(fd, "w") as f:
            f.write("an interrupted 'fnacli data synth' run; rerun it to finish\n")
    counts = {}
    for split, count in (("train", cfg.train), ("val", cfg.val)):
        ann = out / "annotations" / f"instances_{split}.json"
        remove_stale_temps(ann)
        text = _write_split(cfg, out, split, count, progress, ann)
        write_text_atomic(ann, text)
        counts[split] = len(json.loads(text)["annotations"])
    marker.unlink()
    return counts


def check_output_dir(out_dir: str | Path, force: bool) -> Path:
    """Before any work: the folder can be written and holds nothing we would clobber (or only
    what a killed run of ours left, ``PARTIAL``); claims it against a second writer."""
    out = Path(out_dir)
    check_name_encodable(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    # missing parent folders are created, as `mkdir -p` would (a file in the way is not)
    existing = next(p for p in out.parents if p.exists())
    if not existing.is_dir():
        raise UserError(f"{existing}: exists and is not a folder")
    check_folder_writable(out if out.is_dir() else existing)
    out.parent.mkdir(parents=True, exist_ok=True)
    locks.claim(out)  # one writer per folder
    marker = out / PARTIAL
    # a run that was killed left its marker: its files are ours to replace, no --force needed
    if out.exists() and any(out.iterdir()) and not force and not marker.is_file():
        raise UserError(f"{out}: folder exists and is not empty (use --force to overwrite)")
    # what a run replaces must be ours to replace: a link there (a split folder linked to
    # elsewhere, a planted marker) is refused before anything is deleted
    refuse_links([out / "annotations", out / PARTIAL,
                  *(out / f".{s}.tmp" for s in ("train", "val")),
                  *(out / s for s in ("train", "val")),
                  *(out / "annotations" / f"instances_{s}.json" for s in ("train", "val"))],
                 "dataset folder")
    return out
