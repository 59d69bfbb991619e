"""COCO-format detection data: finding the files, validating them, and a Dataset.

Everything that could make training fail is checked when a split is loaded, before the
first step: the annotation file (JSON, structure, ids, categories, boxes) and every image
(present on disk, readable header, the size the annotation says). Problems are raised as
``UserError`` naming the file and the entry. Boxes that stick out of their image are clipped;
boxes that end up degenerate (w or h <= 1) and crowd boxes are left out of training targets
(as torchvision's references do), with a logged count.

Labels: COCO category ids (any integers) map to contiguous indices 0..K-1 in ascending id
order; the detector's label is index + ``label_offset`` (1 for SSD, whose label 0 is
background; 0 for RetinaNet) and maps back the same way for evaluation.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from fnacli.errors import UserError
from fnacli.io import load_json_file

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


# -- annotation file validation ------------------------------------------------------------
def _int_field(entry: dict, key: str, where: str, minimum: int | None = None) -> int:
    v = entry.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or (minimum is not None and v < minimum):
        need = f"an integer ≥ {minimum}" if minimum is not None else "an integer"
        raise UserError(f"{where}: '{key}' must be {need}, got {v!r}")
    return v


def _load_annotation_doc(path: Path) -> dict:
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


def _check_doc(doc: dict, path: Path) -> _Checked:
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


def _quiet_coco(doc: dict) -> COCO:
    """A pycocotools COCO from an in-memory document (its progress prints kept off stdout)."""
    coco = COCO()
    coco.dataset = doc
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _image_size(path: Path) -> tuple[int, int] | str:
    """The image's size after checking that all of it decodes: a truncated or damaged file
    must fail here, not in the middle of training. JPEGs decode at 1/8 scale (``draft``),
    which still reads every byte of the entropy-coded data, at a fraction of the cost."""
    try:
        with Image.open(path) as im:
            size = im.size
            if im.format == "JPEG":
                im.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
            im.load()
            return size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        reason = " ".join(str(e).split())[:80]
        return f"cannot be read as an image ({e.__class__.__name__}: {reason})"
    except Image.DecompressionBombError:
        return "is too large to decode (PIL's decompression-bomb limit)"


# -- the dataset ---------------------------------------------------------------------------
class CocoDetection(Dataset):
    """A validated COCO split. Items are (float image CxHxW in [0, 1], target) where target
    has ``boxes`` (xyxy, pixels), ``labels`` (int64, detector labels) and ``image_id``.

    ``train=True`` keeps only images with at least one usable box and drops crowd and
    degenerate boxes from targets. Keys may be ``idx`` or ``(epoch, idx)``: the latter seeds
    the augmentation from (seed, epoch, idx), so a sample's augmentation never depends on
    worker processes, batch composition or where a resumed run restarted.
    """

    def __init__(self, files: SplitFiles, *, train: bool, label_offset: int = 1,
                 transform: Callable | None = None, seed: int = 0,
                 check_images: bool = True) -> None:
        self.files = files
        self.train = train
        self.label_offset = label_offset
        self.transform = transform
        self.seed = seed
        checked = _check_doc(_load_annotation_doc(files.ann), files.ann)
        self.coco = _quiet_coco(checked.doc)
        self.cat_ids: list[int] = sorted(self.coco.cats)
        self.category_names = [self.coco.cats[c]["name"] for c in self.cat_ids]
        self._index_of_cat = {c: i for i, c in enumerate(self.cat_ids)}
        self._skip = checked.degenerate
        self.paths = self._resolve_images(check_images)
        self.ids: list[int] = sorted(self.coco.imgs)
        dropped_crowd = sum(1 for a in self.coco.anns.values() if a["iscrowd"])
        if not train and not self.coco.anns:
            # COCOeval would report -1 for every metric: meaningless numbers, not an answer
            raise UserError(f"{files.ann}: no annotations: evaluation needs ground-truth boxes "
                            "(COCO metrics of an unannotated split are all -1)")
        if checked.clipped:
            log.info("%s: %d boxes reached outside their image and were clipped",
                     files.ann, checked.clipped)
        if train:
            if checked.degenerate:
                log.info("%s: %d degenerate boxes (width or height <= 1 px) left out of "
                         "training", files.ann, len(checked.degenerate))
            if dropped_crowd:
                log.info("%s: %d crowd boxes left out of training targets", files.ann,
                         dropped_crowd)
            usable = [i for i in self.ids if self._usable(i)]
            if len(usable) < len(self.ids):
                log.info("%s: %d of %d images have no usable box and are not trained on",
                         files.ann, len(self.ids) - len(usable), len(self.ids))
            self.ids = usable
            if not self.ids:
                raise UserError(f"{files.ann}: no image has a usable (non-crowd, non-degenerate)"
                                " box to train on")

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

    # images ----------------------------------------------------------------------------------
    def _resolve_images(self, check: bool) -> dict[int, Path]:
        dirs = self.files.image_dirs
        paths: dict[int, Path] = {}
        owner: dict[Path, int] = {}
        for iid, im in self.coco.imgs.items():
            rel = im["file_name"]
            hit = next((d / rel for d in dirs if (d / rel).is_file()), None)
            if hit is None:
                where = ", ".join(str(d) for d in dirs) or "(no image folder found)"
                raise UserError(f"{self.files.ann}: image id {iid} {rel!r} not found in {where}")
            real = hit.resolve()
            if real in owner:
                raise UserError(f"{self.files.ann}: image ids {owner[real]} and {iid} are the "
                                f"same file {hit} (each image may appear once: its boxes would "
                                "count twice)")
            owner[real] = iid
            paths[iid] = hit
        if check:
            # Header reads only; threads because this is I/O bound on big datasets.
            order = sorted(paths)
            with ThreadPoolExecutor(8) as pool:
                sizes = list(pool.map(lambda i: _image_size(paths[i]), order))
            for iid, got in zip(order, sizes, strict=True):
                im = self.coco.imgs[iid]
                if isinstance(got, str):
                    raise UserError(f"{paths[iid]}: {got} (image id {iid} of {self.files.ann})")
                if got != (im["width"], im["height"]):
                    raise UserError(f"{paths[iid]}: is {got[0]}x{got[1]} on disk but "
                                    f"{self.files.ann} says {im['width']}x{im['height']} "
                                    f"(image id {iid})")
        return paths

    def _usable(self, iid: int) -> bool:
        return any(not a["iscrowd"] and a["id"] not in self._skip
                   for a in self.coco.imgToAnns.get(iid, []))

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, positions: Sequence[int]) -> CocoDetection:
        """A view on some of this split's images (by position in ``ids``)."""
        view = copy.copy(self)
        view.ids = [self.ids[p] for p in positions]
        return view

    def load(self, idx: int) -> tuple[Image.Image, dict]:
        """RGB PIL image and un-augmented target of item ``idx``."""
        iid = self.ids[idx]
        with Image.open(self.paths[iid]) as im:
            image = im.convert("RGB")
        w, h = image.size
        anns = [a for a in self.coco.imgToAnns.get(iid, [])
                if not (self.train and (a["iscrowd"] or a["id"] in self._skip))]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                               a["bbox"][1] + a["bbox"][3]] for a in anns],
                             dtype=torch.float32).reshape(-1, 4)
        target = {"boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
                  "labels": torch.tensor([self.label_of(a["category_id"]) for a in anns],
                                         dtype=torch.int64),
                  "image_id": iid}
        return image, target

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
                torch.manual_seed(sample_seed(self.seed, epoch, self.ids[idx]))
                image, target = self.transform(image, target)
        else:
            image, target = self.transform(image, target)
        return image.as_subclass(torch.Tensor), {
            "boxes": target["boxes"].as_subclass(torch.Tensor),
            "labels": target["labels"], "image_id": target["image_id"]}


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
               transform: Callable | None = None, seed: int = 0) -> CocoDetection:
    return CocoDetection(files, train=train, label_offset=label_offset, transform=transform,
                         seed=seed)


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
