"""COCO-format detection data: finding the files, validating them, and a Dataset.

Everything that could make training fail is checked when a split is loaded, before the
first step: the annotation file (JSON, structure, ids, categories, boxes) and every image
(present on disk, readable header, the size the annotation says; ``check_images="decode"``
decodes every image as well). Problems are raised as ``UserError`` naming the file and the
entry. A loaded split is cached (``split_cache``): the next load of an unchanged annotation
file only stats the images, and re-checks those whose size or time changed. Boxes that
stick out of their image are clipped; boxes that end up degenerate (w or h <= 1) and crowd
boxes are left out of training targets (as torchvision's references do), with a logged
count.

The split lives in one numpy buffer (``records.Records``), not in Python objects, so that
data-loader workers share it with the process that loaded it instead of copying it page by
page; pycocotools' index (``coco``) is built only when asked for (evaluation), in the
process that asks.

Labels: COCO category ids (any integers) map to contiguous indices 0..K-1 in ascending id
order; the detector's label is index + ``label_offset`` (1 for SSD, whose label 0 is
background; 0 for RetinaNet) and maps back the same way for evaluation.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from fnacli.detection.annotations import check_doc as _check_doc  # noqa: F401 - segmentation
from fnacli.detection.annotations import load_annotation_doc as _load_annotation_doc  # noqa: F401
from fnacli.detection.annotations import quiet_coco as _quiet_coco
from fnacli.detection.records import Records
from fnacli.detection.split_index import check_level, find_images, load_index
from fnacli.errors import UserError

log = logging.getLogger(__name__)

SPLIT_FOLDERS = ("{split}", "{split}2017", "images")


@dataclass(frozen=True)
class SplitFiles:
    """Where one split lives: the annotation file and the folders to look for images in."""

    ann: Path
    image_dirs: tuple[Path, ...]


def find_split(data: str | Path | None, split: str, ann: str | Path | None = None,
               images: str | Path | None = None) -> SplitFiles:
    """Locate a split in the COCO layout (DATA/annotations/instances_{split}*.json + an image
    folder), or take explicit paths. ``ann``/``images`` override what ``data`` would give."""
    if ann is None:
        if data is None:
            raise UserError(f"no data for the {split} split: give --data DIR "
                            f"(or --{split}-ann and --{split}-images)")
        root = Path(data)
        if not root.is_dir():
            raise UserError(f"{root}: no such folder (expected a COCO-layout dataset folder)")
        folder = root / "annotations"
        exact = [folder / f"instances_{split}.json", folder / f"instances_{split}2017.json"]
        found = [p for p in exact if p.is_file()]
        if not found:
            found = sorted(folder.glob(f"instances_{split}*.json"))
        if not found:
            raise UserError(f"{root}: no annotations/instances_{split}*.json (expected the COCO "
                            f"layout, e.g. annotations/instances_{split}2017.json)")
        if len(found) > 1 and found[0] not in exact:
            names = ", ".join(p.name for p in found)
            raise UserError(f"{folder}: several {split} annotation files ({names}); pick one "
                            f"with --{split}-ann")
        ann_path = found[0]
    else:
        ann_path = Path(ann)
        root = Path(data) if data is not None else None
    if images is not None:
        if not Path(images).is_dir():
            raise UserError(f"{images}: no such image folder")
        dirs: list[Path] = [Path(images)]
    else:
        dirs = []
        for base in ([root] if root is not None else []) + [ann_path.parent.parent]:
            dirs += [base / f.format(split=split) for f in SPLIT_FOLDERS]
        dirs.append(ann_path.parent)
        dirs = list(dict.fromkeys(d for d in dirs if d.is_dir()))  # keep order, unique
    return SplitFiles(ann_path, tuple(dirs))


# -- the dataset ---------------------------------------------------------------------------
_SAME: object = object()  # view(): keep the transform


class CocoDetection(Dataset):
    """A validated COCO split. Items are (float image CxHxW in [0, 1], target) where target
    has ``boxes`` (xyxy, pixels), ``labels`` (int64, detector labels) and ``image_id``.

    ``train=True`` keeps only images with at least one usable box and drops crowd and
    degenerate boxes from targets. Keys may be ``idx`` or ``(epoch, idx)``: the latter seeds
    the augmentation from (seed, epoch, idx), so a sample's augmentation never depends on
    worker processes, batch composition or where a resumed run restarted.

    ``check_images``: ``"header"`` (or True) reads each image's header, ``"decode"`` decodes
    every image, ``"none"`` (or False) only finds the files; None (the default) takes the
    ``FNACLI_IMAGE_CHECK`` environment variable, else ``"header"`` (so that a command
    decodes every image with ``FNACLI_IMAGE_CHECK=decode``).
    ``view`` and ``subset`` give other selections of the same loaded split (no second load).
    """

    def __init__(self, files: SplitFiles, *, train: bool, label_offset: int = 1,
                 transform: Callable | None = None, seed: int = 0,
                 check_images: bool | str | None = None) -> None:
        self.files = files
        self.train = train
        self.label_offset = label_offset
        self.transform = transform
        self.seed = seed
        split = load_index(files.ann, files.image_dirs, check_level(check_images))
        self.records: Records = split.records
        self.cat_ids: list[int] = [c["id"] for c in split.categories]
        self.category_names: list[str] = [c["name"] for c in split.categories]
        self._index_of_cat = {c: i for i, c in enumerate(self.cat_ids)}
        self._coco: COCO | None = None  # pycocotools' index, once built (never pickled)
        r = self.records
        if not train and not len(r.ann_id):
            # COCOeval would report -1 for every metric: meaningless numbers, not an answer
            raise UserError(f"{files.ann}: no annotations: evaluation needs ground-truth boxes "
                            "(COCO metrics of an unannotated split are all -1)")
        n = split.counts
        if n["clipped"]:
            log.info("%s: %d boxes reached outside their image and were clipped",
                     files.ann, n["clipped"])
        self._rows = np.arange(len(r), dtype=np.int64)
        if train:
            if n["degenerate"]:
                log.info("%s: %d degenerate boxes (width or height <= 1 px) left out of "
                         "training", files.ann, n["degenerate"])
            if n["crowd"]:
                log.info("%s: %d crowd boxes left out of training targets", files.ann,
                         n["crowd"])
            self._rows = np.flatnonzero(r.usable)
            if len(self._rows) < len(r):
                log.info("%s: %d of %d images have no usable box and are not trained on",
                         files.ann, len(r) - len(self._rows), len(r))
            if not len(self._rows):
                raise UserError(f"{files.ann}: no image has a usable (non-crowd, non-degenerate)"
                                " box to train on")

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_coco"] = None  # a worker gets the records, never pycocotools' index
        return state

    # label mapping ------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.cat_ids)

    def categories(self) -> list[dict]:
        """Ordered [{id, name}] (label index order): what detector checkpoints record."""
        return [{"id": c, "name": n} for c, n in zip(self.cat_ids, self.category_names,
                                                      strict=True)]

    def label_of(self, category_id: int) -> int:
        return self._index_of_cat[category_id] + self.label_offset

    def category_of(self, label: int) -> int:
        return self.cat_ids[label - self.label_offset]

    # selections of the split ----------------------------------------------------------------
    @property
    def ids(self) -> list[int]:
        """The image ids of this dataset's items, in item order."""
        return self.records.image_id[self._rows].tolist()

    @property
    def all_image_ids(self) -> list[int]:
        """Every image id of the split (usable for training or not), ascending."""
        return self.records.image_id.tolist()

    @property
    def paths(self) -> dict[int, Path]:
        """Image id -> file, for every image of the split (built on each call)."""
        r = self.records
        return {int(r.image_id[k]): Path(r.path(k)) for k in range(len(r))}

    def path_of(self, image_id: int) -> Path:
        return Path(self.records.path(self._row_of([image_id])[0]))

    def _row_of(self, image_ids: Iterable[int]) -> np.ndarray:
        ids = np.fromiter(image_ids, np.int64)
        known = self.records.image_id
        rows = np.searchsorted(known, ids)
        bad = (rows >= len(known)) | (known[np.minimum(rows, len(known) - 1)] != ids)
        if bad.any():
            missing = sorted(set(ids[bad].tolist()))
            raise UserError(f"{self.files.ann}: no image id {', '.join(map(str, missing[:5]))}"
                            f"{' …' if len(missing) > 5 else ''} in it")
        return rows

    def view(self, image_ids: Iterable[int] | None = None, *, train: bool | None = None,
             transform: Callable | None | object = _SAME) -> CocoDetection:
        """This split (same records, nothing re-read) restricted to ``image_ids`` (all its
        images when None, in ascending id order), optionally for training or evaluation
        (``train``; a training view keeps only the images with a usable box, as a training
        load does) and with another ``transform``. ``UserError`` for an unknown id."""
        view = copy.copy(self)
        if train is not None:
            view.train = train
        if transform is not _SAME:
            view.transform = transform
        rows = (np.arange(len(self.records), dtype=np.int64) if image_ids is None
                else np.unique(self._row_of(image_ids)))
        view._rows = rows[self.records.usable[rows]] if view.train else rows
        view._coco = None
        return view

    def subset(self, positions: Sequence[int]) -> CocoDetection:
        """A view on some of this dataset's items (by position in ``ids``)."""
        view = copy.copy(self)
        view._rows = self._rows[np.asarray(positions, dtype=np.int64)]
        view._coco = None
        return view

    # pycocotools ------------------------------------------------------------------------------
    @property
    def coco(self) -> COCO:
        """pycocotools' index of this dataset's images (as COCOeval takes it), built from the
        records on first use in this process: images (id, width, height), categories and
        their boxes (clipped), with area and crowd flag."""
        if self._coco is None:
            r = self.records
            rows = np.unique(self._rows)
            images = [{"id": i, "width": w, "height": h} for i, w, h in
                      zip(r.image_id[rows].tolist(), r.width[rows].tolist(),
                          r.height[rows].tolist(), strict=True)]
            counts = np.diff(r.box_end, prepend=0)[rows]
            starts = r.box_end[rows] - counts
            boxes = (np.repeat(starts - np.cumsum(counts) + counts, counts)
                     + np.arange(counts.sum()))  # the box rows of these images, in order
            cats = np.asarray(self.cat_ids, dtype=np.int64)[r.category[boxes]].tolist()
            anns = [{"id": a, "image_id": i, "category_id": c, "bbox": b, "area": s,
                     "iscrowd": int(k)} for a, i, c, b, s, k in
                    zip(r.ann_id[boxes].tolist(), np.repeat(r.image_id[rows], counts).tolist(),
                        cats, r.box[boxes].tolist(), r.area[boxes].tolist(),
                        r.crowd[boxes].tolist(), strict=True)]
            self._coco = _quiet_coco({"images": images, "annotations": anns,
                                      "categories": self.categories()})
        return self._coco

    # items ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._rows)

    def image_path(self, idx: int) -> str:
        return self.records.path(int(self._rows[idx]))

    def target(self, idx: int, canvas: tuple[int, int]) -> dict:
        """Un-augmented target of item ``idx`` on an image of ``canvas`` (height, width)."""
        r = self.records
        row = int(self._rows[idx])
        span = r.boxes(row)
        xywh, labels = r.box[span], r.category[span]
        if self.train:
            keep = ~(r.crowd[span] | r.degenerate[span])
            xywh, labels = xywh[keep], labels[keep]
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        boxes = torch.from_numpy(xyxy.astype(np.float32))
        return {"boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=canvas),
                "labels": torch.from_numpy(labels.astype(np.int64) + self.label_offset),
                "image_id": int(r.image_id[row])}

    def load(self, idx: int) -> tuple[Image.Image, dict]:
        """RGB PIL image and un-augmented target of item ``idx``."""
        with Image.open(self.image_path(idx)) as im:
            image = im.convert("RGB")
        w, h = image.size
        return image, self.target(idx, (h, w))

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, dict]:
        if isinstance(key, tuple):
            epoch, idx = key
        else:
            epoch, idx = 0, key
        image, target = self.load(idx)
        if self.transform is None:
            image = F.to_dtype(F.pil_to_tensor(image), torch.float32, scale=True)
        elif isinstance(key, tuple):
            # v2 transforms draw from torch's global RNG: give each sample its own seed.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed(self.seed, epoch, target["image_id"]))
                image, target = self.transform(image, target)
        else:
            image, target = self.transform(image, target)
        return image.as_subclass(torch.Tensor), {
            "boxes": target["boxes"].as_subclass(torch.Tensor),
            "labels": target["labels"], "image_id": target["image_id"]}


def resolve_images(files: SplitFiles, coco: COCO,
                   check: bool | str | None = None) -> dict[int, Path]:
    """Image id -> file of every image of a pycocotools index (the segmentation reader's
    loader), each found, distinct and checked as a detection split's images are."""
    from fnacli.detection.records import pack_paths
    from fnacli.detection.split_index import check_images

    ids = sorted(coco.imgs)
    paths, _, _ = find_images(files.ann, files.image_dirs, ids,
                              [coco.imgs[i]["file_name"] for i in ids])
    path_bytes, path_end = pack_paths(paths)
    records = Records.pack(image_id=np.asarray(ids, dtype=np.int64),
                           width=np.asarray([coco.imgs[i]["width"] for i in ids], np.int64),
                           height=np.asarray([coco.imgs[i]["height"] for i in ids], np.int64),
                           path_end=path_end, path_bytes=path_bytes)
    check_images(files.ann, records, np.arange(len(ids)), check_level(check))
    return {i: Path(p) for i, p in zip(ids, paths, strict=True)}


def sample_seed(seed: int, epoch: int, image_id: int) -> int:
    return (((seed * 1_000_003) ^ (epoch * 7_919)) * 2_654_435_761 + image_id) % (2 ** 63)


def collate(batch: list) -> tuple[list, list]:
    """Detection batches stay lists (images differ in size; the detector resizes)."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


def batch_to(batch: tuple[list, list], device: torch.device | str) -> tuple[list, list]:
    """A collated batch on ``device``, as torchvision detectors take it (images, targets)."""
    images, targets = batch
    return ([im.to(device, non_blocking=True) for im in images],
            [{"boxes": t["boxes"].to(device, non_blocking=True),
              "labels": t["labels"].to(device, non_blocking=True)} for t in targets])


def load_split(files: SplitFiles, *, train: bool, label_offset: int,
               transform: Callable | None = None, seed: int = 0,
               check_images: bool | str | None = None) -> CocoDetection:
    return CocoDetection(files, train=train, label_offset=label_offset, transform=transform,
                         seed=seed, check_images=check_images)


def split_half(dataset: CocoDetection, seed: int = 0,
               fraction: float = 0.5) -> tuple[CocoDetection, CocoDetection]:
    """Seeded random split (the search's train_a for weights, train_b for α/β)."""
    if len(dataset) < 2:
        raise UserError(f"{dataset.files.ann}: needs at least 2 usable images to split in two")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=g).tolist()
    cut = min(max(1, round(len(order) * fraction)), len(order) - 1)
    return dataset.subset(sorted(order[:cut])), dataset.subset(sorted(order[cut:]))


def check_same_categories(a: list[dict], b: list[dict], what_a: str, what_b: str) -> None:
    """Detector label order is fixed by its training data: evaluating or continuing on data
    with other categories would silently mislabel everything."""
    ids_a, ids_b = [c["id"] for c in a], [c["id"] for c in b]
    if ids_a != ids_b:
        raise UserError(f"{what_b}: categories {ids_b[:10]}{'…' if len(ids_b) > 10 else ''} "
                        f"differ from {what_a}'s {ids_a[:10]}{'…' if len(ids_a) > 10 else ''}")
