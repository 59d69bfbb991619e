"""DetNAS's data protocol for one-shot search: the fitness images are held out of the training
split, the supernet trains on the rest, and the reporting split (``val``) is never scored.

DetNAS splits COCO trainval35k into 5k images for fitness and the rest for supernet training
and reports on minival. Here:

- by default the fitness set is a seeded choice of ``--fitness-images`` images (a count, or a
  fraction of the split when below 1; default ``min(5000, 20%)``) of the training annotation
  file, chosen among all its image ids, so that the supernet training (which reads the same
  file) can leave exactly those out; the choice is recorded in the trained supernet, so a
  later ``--skip-training`` search scores on the same images;
- an explicit fitness annotation file (``--fitness-ann``/``--fitness-img-dir``) is used as
  given, and the training images that are also in it are left out of supernet training;
- a fitness set sharing an image with the reporting split is refused unless forced. Images
  are compared by their resolved files (the same test as by id on COCO, whose image ids are
  unique across splits; fnacli's synthetic splits both number their images from 1).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from fnacli.detection.data import CocoDetection, SplitFiles, find_split
from fnacli.errors import UserError

DEFAULT_COUNT = 5000  # DetNAS: 5k images of trainval35k
DEFAULT_FRACTION = 0.2  # ... but never more than a fifth of a small training split


def fitness_files(ann: str | Path, images: str | Path | None) -> SplitFiles:
    """An explicit fitness split: its images in ``images``, else found as for the split its
    file names (``instances_val2017.json`` -> ``val2017/``, ``val/``, ``images/`` beside
    ``annotations/``)."""
    name = Path(ann).stem.removeprefix("instances_")
    for suffix in ("2014", "2017"):
        name = name.removesuffix(suffix)
    return find_split(None, name or "fitness", ann, images)


def parse_amount(text: str | float | int | None) -> float | int | None:
    """``--fitness-images``: a count (``5000``) or a fraction of the split (``0.05``)."""
    if text is None:
        return None
    try:
        v = float(text)
    except ValueError:
        raise UserError(f"--fitness-images: expected an image count or a fraction in (0, 1), "
                        f"got {text!r}") from None
    if not math.isfinite(v) or v <= 0 or (v >= 1 and v != int(v)):
        raise UserError(f"--fitness-images: expected an image count or a fraction in (0, 1), "
                        f"got {text!r}")
    return v if v < 1 else int(v)


def holdout_count(n: int, amount: float | int | None) -> int:
    """How many of ``n`` images the fitness set takes."""
    if amount is None:
        k = min(DEFAULT_COUNT, max(1, round(n * DEFAULT_FRACTION)))
    elif isinstance(amount, float):
        k = max(1, round(n * amount))
    else:
        k = amount
    if k >= n:
        raise UserError(f"--fitness-images {amount}: the training split has {n} images; the "
                        "supernet needs some left to train on")
    return k


def holdout_ids(dataset: CocoDetection, amount: float | int | None, seed: int) -> list[int]:
    """A seeded choice of image ids of ``dataset``'s annotation file (all its images, usable
    for training or not), ascending."""
    ids = sorted(dataset.coco.imgs)
    k = holdout_count(len(ids), amount)
    g = torch.Generator().manual_seed(seed + 7)  # not the calibration subset's draw
    return sorted(ids[i] for i in torch.randperm(len(ids), generator=g)[:k].tolist())


def only_ids(dataset: CocoDetection, ids: list[int] | set[int]) -> CocoDetection:
    """The images of ``dataset`` with these ids (UserError for an id it does not have)."""
    keep = set(ids)
    missing = keep - set(dataset.coco.imgs)
    if missing:
        raise UserError(f"{dataset.files.ann}: the recorded fitness image ids "
                        f"{sorted(missing)[:5]} are not in it (another training split?)")
    return dataset.subset([p for p, i in enumerate(dataset.ids) if i in keep])


def without_ids(dataset: CocoDetection, ids: list[int] | set[int]) -> CocoDetection:
    drop = set(ids)
    rest = dataset.subset([p for p, i in enumerate(dataset.ids) if i not in drop])
    if len(rest) == 0:
        raise UserError(f"{dataset.files.ann}: no training image is left once the fitness "
                        "images are held out")
    return rest


def image_files(dataset: CocoDetection) -> dict[Path, int]:
    """Resolved image file -> image id, for the images of ``dataset``."""
    return {dataset.paths[i].resolve(): i for i in dataset.ids}


def without_files(dataset: CocoDetection, other: CocoDetection) -> CocoDetection:
    """``dataset`` minus the images (files) that ``other`` also has."""
    theirs = set(image_files(other))
    return dataset.subset([p for p, i in enumerate(dataset.ids)
                           if dataset.paths[i].resolve() not in theirs])


def shared_images(a: CocoDetection, b: CocoDetection) -> list[Path]:
    return sorted(set(image_files(a)) & set(image_files(b)))


def check_not_reporting(fitness: CocoDetection, report: CocoDetection | None,
                        force: bool) -> list[Path]:
    """Refuse (UserError) a fitness set that shares images with the reporting split, unless
    ``force``; returns the shared images."""
    if report is None:
        return []
    shared = shared_images(fitness, report)
    if shared and not force:
        raise UserError(f"{fitness.files.ann}: {len(shared)} fitness image(s) are in the "
                        f"reporting split {report.files.ann} (e.g. {shared[0]}): the "
                        "architecture would be selected on the images it is reported on. "
                        "Hold fitness images out of the training split (the default, "
                        "--fitness-images) or pass --force")
    return shared
