"""A small synthetic segmentation dataset in the Cityscapes layout.

Street-like scenes at a 2:1 aspect: sky above a horizon, road below, buildings on the
horizon, vegetation blobs, cars and people on the road. Each class has its own colour (jittered
per image) and texture, so a tiny network learns it on a CPU, yet boundaries and texture make
it more than a colour lookup. Label maps hold real Cityscapes label ids (so the reader maps them
to train ids as it does for Cityscapes), including ignored ones: small "unlabeled" (id 0)
patches everywhere and an "ego vehicle" (id 1) band at the bottom of some images.

Everything is a function of the seed: each image draws from its own generator seeded with
(seed, split, index), and PNGs are written without timestamps, so the same seed gives
byte-identical files.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fnacli.errors import UserError

# (Cityscapes label id, RGB) of the classes drawn; train ids follow from the label ids.
SKY, BUILDING, ROAD, VEGETATION, CAR, PERSON = 23, 11, 7, 21, 26, 24
UNLABELED, EGO = 0, 1
COLOURS = {SKY: (110, 160, 230), BUILDING: (140, 110, 90), ROAD: (90, 90, 95),
           VEGETATION: (60, 150, 50), CAR: (200, 40, 40), PERSON: (235, 200, 60),
           UNLABELED: (20, 20, 20), EGO: (40, 40, 60)}
SPLITS = {"train": 0, "val": 1}
CITY = "synth"
_MIN_WIDTH = 64


@dataclass(frozen=True)
class SegSynthConfig:
    train: int = 64
    val: int = 16
    width: int = 256  # height is width / 2, like Cityscapes' 2048x1024
    seed: int = 0

    @property
    def height(self) -> int:
        return self.width // 2


def check_config(cfg: SegSynthConfig) -> None:
    if cfg.width < _MIN_WIDTH or cfg.width % 2:
        raise UserError(f"--size: expected an even image width of at least {_MIN_WIDTH} pixels, "
                        f"got {cfg.width}")
    if cfg.train < 1 or cfg.val < 1:
        raise UserError(f"--train/--val: need at least one image each, got {cfg.train}/{cfg.val}")


def _scene(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A label-id map (uint8 HxW)."""
    label = Image.new("L", (w, h), ROAD)
    draw = ImageDraw.Draw(label)
    horizon = int(h * rng.uniform(0.35, 0.55))
    draw.rectangle([0, 0, w, horizon], fill=SKY)
    for _ in range(rng.integers(2, 6)):
        x0 = rng.uniform(-0.1, 0.9) * w
        bw = rng.uniform(0.1, 0.3) * w
        top = rng.uniform(0.05, 0.8) * horizon
        draw.rectangle([x0, top, x0 + bw, horizon + rng.uniform(0, 0.08) * h], fill=BUILDING)
    for _ in range(rng.integers(1, 4)):
        cx, r = rng.uniform(0, w), rng.uniform(0.04, 0.1) * w
        cy = horizon + rng.uniform(-0.05, 0.05) * h
        draw.ellipse([cx - r, cy - r * 0.8, cx + r, cy + r * 0.8], fill=VEGETATION)
    for _ in range(rng.integers(1, 4)):
        cy = rng.uniform(horizon + 0.1 * h, 0.9 * h)
        scale = 0.5 + (cy - horizon) / h  # nearer is bigger
        cw, ch = rng.uniform(0.12, 0.22) * w * scale, rng.uniform(0.08, 0.14) * h * scale
        cx = rng.uniform(0, w)
        draw.rounded_rectangle([cx - cw / 2, cy - ch / 2, cx + cw / 2, cy + ch / 2],
                               radius=max(1.0, ch / 4), fill=CAR)
    for _ in range(rng.integers(0, 3)):
        cy = rng.uniform(horizon + 0.05 * h, 0.85 * h)
        ph, pw = rng.uniform(0.15, 0.25) * h, rng.uniform(0.015, 0.03) * w
        cx = rng.uniform(0, w)
        draw.ellipse([cx - pw, cy - ph, cx + pw, cy], fill=PERSON)
    for _ in range(rng.integers(1, 4)):  # ignored pixels: annotators' "unlabeled" leftovers
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        s = rng.uniform(0.02, 0.05) * w
        draw.rectangle([x, y, x + s, y + s * 0.6], fill=UNLABELED)
    if rng.random() < 0.5:
        draw.rectangle([0, h - rng.uniform(0.05, 0.1) * h, w, h], fill=EGO)
    return np.asarray(label, dtype=np.uint8)


def _render(rng: np.random.Generator, label: np.ndarray) -> np.ndarray:
    """RGB image of a label map: jittered class colours, texture, shading, noise."""
    h, w = label.shape
    palette = np.zeros((256, 3), dtype=np.float32)
    for lid, rgb in COLOURS.items():
        palette[lid] = np.clip(np.array(rgb) + rng.normal(0, 10, 3), 0, 255)
    img = palette[label]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    stripes = np.sin((xx * rng.uniform(0.2, 0.6) + yy) * rng.uniform(0.3, 0.8))
    textured = np.isin(label, [BUILDING, VEGETATION, ROAD])
    img += (stripes * rng.uniform(6, 16) * textured)[..., None]
    img *= (0.8 + 0.4 * yy / h)[..., None] * rng.uniform(0.8, 1.15)  # light varies by image
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def generate(out_dir: Path, cfg: SegSynthConfig, force: bool = False,
             progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Write the dataset under ``out_dir`` (leftImg8bit/ and gtFine/); returns the number of
    labelled (non-ignored) pixels per split."""
    check_config(cfg)
    out_dir = Path(out_dir)
    from fnacli.io import check_name_encodable, refuse_links

    check_name_encodable(out_dir)
    # a linked folder would be emptied (or written into) through the link: refused first
    refuse_links([out_dir / top / split for top in ("leftImg8bit", "gtFine")
                  for split in ("", *SPLITS)], "dataset folder")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not force:
            raise UserError(f"{out_dir}: not empty (use --force to replace its leftImg8bit/ "
                            "and gtFine/)")
        for sub in ("leftImg8bit", "gtFine"):
            shutil.rmtree(out_dir / sub, ignore_errors=True)
    counts: dict[str, int] = {}
    for split, code in SPLITS.items():
        n = cfg.train if split == "train" else cfg.val
        img_dir = out_dir / "leftImg8bit" / split / CITY
        lab_dir = out_dir / "gtFine" / split / CITY
        img_dir.mkdir(parents=True, exist_ok=True)
        lab_dir.mkdir(parents=True, exist_ok=True)
        labelled = 0
        for i in range(n):
            rng = np.random.default_rng([cfg.seed, code, i])
            label = _scene(rng, cfg.width, cfg.height)
            stem = f"{CITY}_{i:06d}_000019"
            Image.fromarray(_render(rng, label)).save(img_dir / f"{stem}_leftImg8bit.png")
            Image.fromarray(label, mode="L").save(lab_dir / f"{stem}_gtFine_labelIds.png")
            labelled += int(np.isin(label, [UNLABELED, EGO], invert=True).sum())
            if progress:
                progress(1)
        counts[split] = labelled
    return counts
