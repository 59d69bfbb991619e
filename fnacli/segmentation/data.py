"""Semantic-segmentation data: Cityscapes layout or COCO-format masks, validated up front.

Two layouts are read:

- **Cityscapes** (``DATA/leftImg8bit/{split}/CITY/*_leftImg8bit.png`` with
  ``DATA/gtFine/{split}/CITY/*_gtFine_labelIds.png``), listed through
  ``torchvision.datasets.Cityscapes``; label ids map to the 19 train ids with torchvision's
  class table, every other id (unlabeled, ego vehicle, parking, ...) to 255 (ignored).
- **COCO format** (an annotation JSON whose annotations carry polygon or RLE
  ``segmentation``; ``DATA/annotations/instances_{split}*.json`` or ``--{split}-ann``):
  pycocotools rasterises each annotation, larger ones first so smaller objects stay on top;
  a pixel takes the contiguous index of its category (ascending category id), crowd regions
  and pixels no annotation covers are 255.

Every file is checked when a split is loaded, before any training: a missing label file, an
unreadable image or mask, a mask whose size differs from its image and a label id that is not
a Cityscapes id (or a category the COCO file does not declare) raise ``UserError`` naming the
file. Items are ``(image, mask)``: the transform's float image and an int64 HxW mask.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from fnacli.errors import UserError

IGNORE = 255
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"


@dataclass(frozen=True)
class SegSplitFiles:
    """Where one split lives: a Cityscapes root (``layout='cityscapes'``; ``ann`` is then the
    split's label folder ``gtFine/SPLIT``) or a COCO annotation file and its image folders
    (``layout='coco'``). ``ann`` is what messages name for the split as a whole."""

    layout: str
    split: str
    ann: Path
    root: Path | None = None
    image_dirs: tuple[Path, ...] = ()


def find_split(data: str | Path | None, split: str, ann: str | Path | None = None,
               images: str | Path | None = None) -> SegSplitFiles:
    """A Cityscapes-layout folder (it has ``leftImg8bit/``), or COCO-format files (an explicit
    ``ann``, or ``DATA/annotations/instances_{split}*.json``)."""
    if ann is None and data is not None:
        root = Path(data)
        if not root.is_dir():
            raise UserError(f"{root}: no such folder (expected a Cityscapes-layout or "
                            "COCO-layout dataset folder)")
        if (root / "leftImg8bit").is_dir():
            for sub in (root / "leftImg8bit" / split, root / "gtFine" / split):
                if not sub.is_dir():
                    raise UserError(f"{root}: no {sub.relative_to(root)}/ folder (Cityscapes "
                                    f"layout: leftImg8bit/{split}/CITY/*{IMAGE_SUFFIX} and "
                                    f"gtFine/{split}/CITY/*{LABEL_SUFFIX})")
            return SegSplitFiles("cityscapes", split, root / "gtFine" / split, root=root)
        if not (root / "annotations").is_dir():
            raise UserError(f"{root}: neither leftImg8bit/ (Cityscapes layout) nor "
                            "annotations/ (COCO layout)")
    from fnacli.detection.data import find_split as find_coco

    coco = find_coco(data, split, ann, images)
    return SegSplitFiles("coco", split, coco.ann, image_dirs=coco.image_dirs)


# -- Cityscapes ------------------------------------------------------------------------------
def cityscapes_classes() -> list[dict]:
    """The 19 train classes as [{id: train id, name}] (torchvision's table)."""
    from torchvision.datasets import Cityscapes

    named = sorted((c.train_id, c.name) for c in Cityscapes.classes if 0 <= c.train_id < IGNORE)
    return [{"id": t, "name": n} for t, n in named]


def cityscapes_lut() -> tuple[np.ndarray, np.ndarray]:
    """(label id -> train id, 256 entries; which label ids exist)."""
    from torchvision.datasets import Cityscapes

    lut = np.full(256, IGNORE, dtype=np.uint8)
    valid = np.zeros(256, dtype=bool)
    for c in Cityscapes.classes:
        if c.id >= 0:
            valid[c.id] = True
            lut[c.id] = c.train_id if 0 <= c.train_id < IGNORE else IGNORE
    return lut, valid


def _cityscapes_pairs(files: SegSplitFiles) -> list[tuple[Path, Path]]:
    from torchvision.datasets import Cityscapes

    assert files.root is not None
    try:
        ds = Cityscapes(str(files.root), split=files.split, mode="fine", target_type="semantic")
    except (RuntimeError, ValueError, OSError) as e:
        raise UserError(f"{files.root}: not a readable Cityscapes layout ({e})") from None
    pairs = [(Path(i), Path(t[0] if isinstance(t, list) else t))
             for i, t in zip(ds.images, ds.targets, strict=True)
             if i.endswith(IMAGE_SUFFIX)]
    if not pairs:
        raise UserError(f"{files.root}: no leftImg8bit/{files.split}/CITY/*{IMAGE_SUFFIX} "
                        "images")
    return sorted(pairs)


def _read_mask(path: Path) -> np.ndarray | str:
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16"):
                return f"is a {im.mode} image; a label map has one channel"
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError) as e:
        return f"cannot be read as an image ({e.__class__.__name__})"
    if arr.min(initial=0) < 0 or arr.max(initial=0) > 255:
        return f"has label id {int(arr.max())} (Cityscapes label ids are 0-33)"
    return arr.astype(np.uint8)


def _image_size(path: Path) -> tuple[int, int] | str:
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as e:
        return f"cannot be read as an image ({e.__class__.__name__})"


def _check_cityscapes_pair(pair: tuple[Path, Path], valid: np.ndarray) -> str | None:
    image, label = pair
    if not label.is_file():
        return f"{image}: missing label file (expected {label})"
    size = _image_size(image)
    if isinstance(size, str):
        return f"{image}: {size}"
    mask = _read_mask(label)
    if isinstance(mask, str):
        return f"{label}: {mask}"
    if (mask.shape[1], mask.shape[0]) != size:
        return (f"{label}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {image.name} "
                f"is {size[0]}x{size[1]}")
    present = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
    bad = [int(v) for v in present if not valid[v]]
    if bad:
        return f"{label}: label id {bad[0]} is not a Cityscapes label id (0-33)"
    return None


# -- COCO-format masks ---------------------------------------------------------------------
def _coco_index(files: SegSplitFiles) -> tuple[object, dict[int, Path]]:
    """A validated pycocotools COCO (categories, images, annotation ids; files present and of
    the declared sizes) and the image path of every image id."""
    from fnacli.detection.data import (
        SplitFiles,
        _check_doc,
        _load_annotation_doc,
        _quiet_coco,
        resolve_images,
    )

    doc = _load_annotation_doc(files.ann)
    for i, a in enumerate(doc["annotations"]):
        if isinstance(a, dict) and "bbox" not in a and "segmentation" in a:
            a = doc["annotations"][i] = dict(a)
            a["bbox"] = _bbox_of(a["segmentation"], f"{files.ann}: annotations[{i}]")
    coco = _quiet_coco(_check_doc(doc, files.ann).doc)
    return coco, resolve_images(SplitFiles(files.ann, files.image_dirs), coco)


def _bbox_of(seg: object, where: str) -> list[float]:
    if isinstance(seg, list) and seg and all(isinstance(p, list) for p in seg):
        xs = [v for p in seg for v in p[0::2]]
        ys = [v for p in seg for v in p[1::2]]
        if xs and ys:
            return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    if isinstance(seg, dict) and isinstance(seg.get("size"), list):
        h, w = seg["size"]
        return [0.0, 0.0, float(w), float(h)]
    raise UserError(f"{where}: 'segmentation' must be polygons [[x, y, ...], ...] or RLE "
                    "{size, counts}")


def coco_mask(coco: object, image_id: int, index_of: dict[int, int], where: str) -> np.ndarray:
    """The semantic mask (category indices, 255 elsewhere and on crowd regions) of one image."""
    im = coco.imgs[image_id]  # type: ignore[attr-defined]
    h, w = im["height"], im["width"]
    mask = np.full((h, w), IGNORE, dtype=np.uint8)
    anns = sorted(coco.imgToAnns.get(image_id, []),  # type: ignore[attr-defined]
                  key=lambda a: -float(a.get("area", 0.0)))
    for a in anns:
        seg = a.get("segmentation")
        if isinstance(seg, dict) and list(seg.get("size", [])) != [h, w]:
            raise UserError(f"{where} (annotation id {a['id']}): RLE size {seg.get('size')} "
                            f"differs from its image's {h}x{w} (height x width)")
        try:
            m = coco.annToMask(a)  # type: ignore[attr-defined]
        except Exception as e:  # pycocotools raises assorted errors on malformed polygons
            raise UserError(f"{where} (annotation id {a['id']}): 'segmentation' cannot be "
                            f"rasterised ({e.__class__.__name__}: {e})") from None
        if m.shape != (h, w):
            raise UserError(f"{where} (annotation id {a['id']}): mask is {m.shape[1]}x"
                            f"{m.shape[0]} but its image is {w}x{h}")
        mask[m.astype(bool)] = IGNORE if a.get("iscrowd") else index_of[a["category_id"]]
    return mask


# -- the dataset -------------------------------------------------------------------------
class SegmentationData(Dataset):
    """A validated split. ``key`` may be ``idx`` or ``(epoch, idx)``; the latter seeds the
    augmentation from (seed, epoch, idx) like the detection data, so augmentation does not
    depend on workers, batch composition or where a resumed run restarted."""

    def __init__(self, files: SegSplitFiles, *, transform: Callable | None = None,
                 seed: int = 0, check: bool = True) -> None:
        self.files = files
        self.transform = transform
        self.seed = seed
        if files.layout == "cityscapes":
            self.lut, valid = cityscapes_lut()
            self.pairs = _cityscapes_pairs(files)
            self._categories = cityscapes_classes()
            if check:
                with ThreadPoolExecutor(8) as pool:
                    for problem in pool.map(lambda p: _check_cityscapes_pair(p, valid),
                                            self.pairs):
                        if problem:
                            raise UserError(problem)
            self.ids = list(range(len(self.pairs)))
            self.paths = {i: image for i, (image, _) in enumerate(self.pairs)}
        else:
            self.coco, self.paths = _coco_index(files)
            cat_ids = sorted(self.coco.cats)  # type: ignore[attr-defined]
            self._categories = [{"id": c, "name": self.coco.cats[c]["name"]}  # type: ignore
                                for c in cat_ids]
            if len(cat_ids) >= IGNORE:
                raise UserError(f"{files.ann}: {len(cat_ids)} categories; at most 254 fit a "
                                "uint8 mask beside the ignore value 255")
            self.index_of = {c: i for i, c in enumerate(cat_ids)}
            self.ids = sorted(self.paths)
            if check:  # rasterise everything once: malformed polygons fail now, not mid-run
                for iid in self.ids:
                    coco_mask(self.coco, iid, self.index_of, str(files.ann))
        if not self.ids:
            raise UserError(f"{files.ann}: the {files.split} split has no images")

    @property
    def num_classes(self) -> int:
        return len(self._categories)

    def categories(self) -> list[dict]:
        """[{id, name}] in class-index order (what segmentation checkpoints record)."""
        return [dict(c) for c in self._categories]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, positions: Sequence[int]) -> SegmentationData:
        view = copy.copy(self)
        view.ids = [self.ids[p] for p in positions]
        return view

    def image_path(self, idx: int) -> Path:
        i = self.ids[idx]
        return self.pairs[i][0] if self.files.layout == "cityscapes" else self.paths[i]

    def load(self, idx: int) -> tuple[Image.Image, np.ndarray]:
        """RGB PIL image and its class-index mask (uint8, 255 ignored) of item ``idx``."""
        i = self.ids[idx]
        with Image.open(self.image_path(idx)) as im:
            image = im.convert("RGB")
        if self.files.layout == "cityscapes":
            raw = _read_mask(self.pairs[i][1])
            if isinstance(raw, str):  # changed on disk since validation
                raise UserError(f"{self.pairs[i][1]}: {raw}")
            mask = self.lut[raw]
        else:
            mask = coco_mask(self.coco, i, self.index_of, str(self.files.ann))
        return image, mask

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision import tv_tensors

        epoch, idx = key if isinstance(key, tuple) else (0, key)
        image, mask_np = self.load(idx)
        mask = tv_tensors.Mask(torch.from_numpy(mask_np.astype(np.int64)))
        if self.transform is None:
            from torchvision.transforms.v2 import functional as F

            out = F.to_dtype(F.pil_to_tensor(image), torch.float32, scale=True), mask
        elif isinstance(key, tuple):
            from fnacli.detection.data import sample_seed

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed(self.seed, epoch, self.ids[idx]))
                out = self.transform(image, mask)
        else:
            out = self.transform(image, mask)
        return out[0].as_subclass(torch.Tensor), out[1].as_subclass(torch.Tensor).long()


def load_split(files: SegSplitFiles, *, transform: Callable | None = None,
               seed: int = 0) -> SegmentationData:
    return SegmentationData(files, transform=transform, seed=seed)


def collate(batch: list) -> tuple[torch.Tensor | list, torch.Tensor | list]:
    """Stacked (images, masks) when every item has the same size (training crops), else
    lists (whole images of different sizes at evaluation)."""
    images, masks = zip(*batch, strict=True)
    if len({im.shape for im in images}) == 1:
        return torch.stack(images), torch.stack(masks)
    return list(images), list(masks)


def batch_to(batch: tuple, device: torch.device | str) -> tuple:
    images, masks = batch
    if isinstance(images, torch.Tensor):
        return images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
    return ([i.to(device) for i in images], [m.to(device) for m in masks])


def check_same_categories(a: list[dict], b: list[dict], what_a: str, what_b: str) -> None:
    """Class indices are fixed by the training data: other classes would mislabel everything."""
    if [c["id"] for c in a] != [c["id"] for c in b]:
        names_a = [c["name"] for c in a][:6]
        names_b = [c["name"] for c in b][:6]
        raise UserError(f"{what_b}: classes {names_b}{'…' if len(b) > 6 else ''} differ from "
                        f"{what_a}'s {names_a}{'…' if len(a) > 6 else ''}")

