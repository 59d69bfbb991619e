"""DetNAS's data protocol for one-shot search: the fitness images are held out of the training
split, the supernet trains on the rest, and the reporting split (``val``) is never scored.

DetNAS splits COCO trainval35k into 5k images for fitness and the rest for supernet training
and reports on minival. Here:

- by default the fitness set is a seeded choice of ``--fitness-images`` images (a count, or a
  fraction of the split when below 1; default :func:`default_count`) of the training annotation
  file, chosen among all its image ids, so that the supernet training (which reads the same
  file) can leave exactly those out; the choice is recorded in the trained supernet, so a
  later ``--skip-training`` search scores on the same images;
- an explicit fitness annotation file (``--fitness-ann``/``--fitness-img-dir``) is used as
  given, and the training images that are also in it are left out of supernet training;
- a fitness set sharing an image with the reporting split is refused unless forced. Images
  are compared by their resolved files (the same test as by id on COCO, whose image ids are
  unique across splits; fnacli's synthetic splits both number their images from 1);
- the trained supernet records which training-split images it did not train on
  (``excluded``) and the fitness set's ids fingerprint; a later search reuses that fitness
  set by default and refuses one that shares images with the supernet's training images
  unless forced (:func:`check_not_trained_on`).

Every set here is a view of a split loaded once (:func:`view`): nothing is read twice.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from fnacli.detection.data import CocoDetection, SplitFiles, find_split
from fnacli.errors import UserError

DEFAULT_COUNT = 5000  # DetNAS: 5k images of trainval35k
DEFAULT_FRACTION = 0.2  # ... a fifth of a split too small for that
# ... but at least 128 images, where that leaves the supernet 70% of the split: the AP of a
# few dozen images is too noisy to rank candidates by (docs/evolution.md)
DEFAULT_FLOOR = 128
DEFAULT_FLOOR_SHARE = 0.3


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


def default_count(n: int) -> int:
    """The default fitness set of a training split of ``n`` images:
    ``min(5000, max(20%, min(128, 30%)))`` of them, at least one. DetNAS's 5000 on a large
    split; 20% of a mid-sized one (640 to 25,000 images); 128 images, or 30% of a split too
    small for 128 (below 427 images), on a small one."""
    floor = min(DEFAULT_FLOOR, round(n * DEFAULT_FLOOR_SHARE))
    return min(DEFAULT_COUNT, max(1, round(n * DEFAULT_FRACTION), floor))


def holdout_count(n: int, amount: float | int | None) -> int:
    """How many of ``n`` images the fitness set takes."""
    if amount is None:
        k = default_count(n)
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
    ids = sorted(dataset.paths)  # every image id of the split (segmentation data too)
    k = holdout_count(len(ids), amount)
    g = torch.Generator().manual_seed(seed + 7)  # not the calibration subset's draw
    return sorted(ids[i] for i in torch.randperm(len(ids), generator=g)[:k].tolist())


_SAME: Any = object()  # view(): keep the dataset's transform


def view(dataset: Any, ids: Iterable[int] | None = None, *, train: bool | None = None,
         transform: Callable | None | object = _SAME) -> Any:
    """``dataset``'s split (nothing re-read) restricted to the images ``ids`` (all the split's
    images when None; unusable ones too unless a training view), for training or evaluation
    (``train``) and with another ``transform``. The dataset's own ``view`` when it has one."""
    own = getattr(dataset, "view", None)
    if own is not None:
        kwargs: dict = {} if transform is _SAME else {"transform": transform}
        return own(None if ids is None else list(ids), train=train, **kwargs)
    out = copy.copy(dataset)
    if train is not None and hasattr(out, "train"):
        out.train = train
    if transform is not _SAME:
        out.transform = transform
    every = sorted(dataset.paths)
    keep = every if ids is None else sorted(set(ids))
    if ids is not None:
        missing = set(keep) - set(every)
        if missing:
            raise UserError(f"{dataset.files.ann}: no image id "
                            f"{', '.join(map(str, sorted(missing)[:5]))} in it")
    usable = getattr(dataset, "_usable", None)
    if getattr(out, "train", False) and usable is not None:
        keep = [i for i in keep if usable(i)]
    out.ids = keep
    return out


def fingerprint(ids: Iterable[int]) -> str:
    """A short digest of a set of image ids (what a trained supernet records about its
    fitness set)."""
    text = ",".join(map(str, sorted({int(i) for i in ids})))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def only_ids(dataset: CocoDetection, ids: list[int] | set[int],
             transform: Callable | None | object = _SAME) -> CocoDetection:
    """The images of ``dataset``'s split with these ids, for evaluation (UserError for an id
    the split does not have)."""
    keep = set(ids)
    missing = keep - set(dataset.paths)
    if missing:
        raise UserError(f"{dataset.files.ann}: the recorded fitness image ids "
                        f"{sorted(missing)[:5]} are not in it (another training split?)")
    return view(dataset, keep, train=False, transform=transform)


def without_ids(dataset: CocoDetection, ids: list[int] | set[int]) -> CocoDetection:
    drop = set(ids)
    rest = dataset.subset([p for p, i in enumerate(dataset.ids) if i not in drop])
    if len(rest) == 0:
        raise UserError(f"{dataset.files.ann}: no training image is left once the fitness "
                        "images are held out")
    return rest


def image_files(dataset: CocoDetection) -> dict[Path, int]:
    """Resolved image file -> image id, for the images of ``dataset``."""
    paths = dataset.paths  # (a property that may build the dict on every access)
    return {paths[i].resolve(): i for i in dataset.ids}


def ids_in(dataset: CocoDetection, other: CocoDetection) -> list[int]:
    """The ids of ``dataset``'s images whose files ``other`` also has, ascending."""
    theirs = set(image_files(other))
    return sorted(i for f, i in image_files(dataset).items() if f in theirs)


def without_files(dataset: CocoDetection, other: CocoDetection) -> CocoDetection:
    """``dataset`` minus the images (files) that ``other`` also has."""
    drop = set(ids_in(dataset, other))
    return dataset.subset([p for p, i in enumerate(dataset.ids) if i not in drop])


def trained_on(train: CocoDetection, recorded: dict) -> CocoDetection:
    """The images a one-shot supernet trained on: the training split's usable images minus
    those its fitness record says were held out (all of them when it recorded nothing)."""
    if recorded.get("source") == "train":
        excluded = set(recorded.get("ids", []))
    else:
        excluded = set(recorded.get("excluded", []))
    return train.subset([p for p, i in enumerate(train.ids) if i not in excluded])


def check_not_trained_on(fitness: CocoDetection, trained: CocoDetection, recorded: bool,
                         force: bool) -> list[Path]:
    """Refuse (UserError) a fitness set sharing images with the supernet's training images
    (``trained``, :func:`trained_on`) unless ``force``; returns the shared images.
    ``recorded``: whether the supernet recorded a fitness set (the way out it names)."""
    shared = shared_images(fitness, trained)
    if shared and not force:
        way = ("leave --fitness-images/--fitness-ann out to reuse the fitness set recorded in "
               "it" if recorded else "it records no fitness set: pass --fitness-ann with "
               "images it did not train on")
        raise UserError(f"{len(shared)} of the {len(fitness)} fitness images were training "
                        f"images of the one-shot supernet (e.g. {shared[0]}): it would be "
                        f"scored on images it trained on; {way}, or pass --force")
    return shared


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
