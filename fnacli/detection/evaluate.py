"""COCO bbox evaluation: run a detector over a split, score it with pycocotools' COCOeval.

The 12 numbers keep COCOeval's meaning, including -1 for an area range that has no ground
truth box at all. A model that detects nothing scores 0.

Detections pass once from the model to COCOeval: each batch's tensors become columns
(``Detections``: image ids, category ids, xywh boxes, scores, in numpy), and the one list of
per-detection dicts COCOeval needs is built from them when it is needed, with the fields
pycocotools' ``loadRes`` would add for boxes (area, id, iscrowd) but without the polygon it
also adds (COCOeval's bbox mode never reads it). Nothing else holds a per-detection Python
object, so a 5k-image split's 1.5 M detections exist once.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn
from torch.utils.data import DataLoader

from fnacli.detection import COCO_STATS as STAT_NAMES
from fnacli.detection.data import CocoDetection, collate


@dataclass(eq=False)
class Detections:
    """COCO bbox results as columns. Boxes are [x, y, w, h] in pixels of the original image,
    rounded to 0.01 px, and scores to 1e-5, as the results JSON is written."""

    image_id: np.ndarray  # int64 (N,)
    category_id: np.ndarray  # int64 (N,)
    bbox: np.ndarray  # float64 (N, 4)
    score: np.ndarray  # float64 (N,)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, 4)),
                   np.empty(0))

    @classmethod
    def concat(cls, parts: list[Detections]) -> Detections:
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))

    @classmethod
    def from_list(cls, results: list[dict]) -> Detections:
        """From COCO results ([{image_id, category_id, bbox, score}]), as given."""
        if not results:
            return cls.empty()
        return cls(np.array([d["image_id"] for d in results], np.int64),
                   np.array([d["category_id"] for d in results], np.int64),
                   np.array([d["bbox"] for d in results], np.float64).reshape(-1, 4),
                   np.array([d["score"] for d in results], np.float64))

    def __len__(self) -> int:
        return len(self.score)

    def to_list(self) -> list[dict]:
        """The COCO results format ([{image_id, category_id, bbox, score}]), e.g. for JSON."""
        return [{"image_id": i, "category_id": c, "bbox": b, "score": s} for i, c, b, s in
                zip(self.image_id.tolist(), self.category_id.tolist(), self.bbox.tolist(),
                    self.score.tolist(), strict=True)]


_FIELDS = ("image_id", "category_id", "bbox", "score")


@dataclass
class EvalResult:
    stats: dict[str, float]  # the 12 COCOeval numbers by name
    per_class: dict[str, float] | None = None  # category name -> AP@[.5:.95] (-1: no gt)
    detections: Detections = field(default_factory=Detections.empty)

    def to_dict(self) -> dict:
        d: dict = dict(self.stats)
        if self.per_class is not None:
            d["per_class_AP"] = dict(self.per_class)
        return d


def _results_coco(gt: COCO, det: Detections) -> COCO:
    """The detections as the result index COCOeval takes (``gt.loadRes`` for boxes, built
    from the columns: one dict per detection, no polygon)."""
    known = np.fromiter(gt.imgs, np.int64, len(gt.imgs))
    if len(det) and not np.isin(det.image_id, known).all():
        raise ValueError("detections of images that are not in the ground truth")
    area = (det.bbox[:, 2] * det.bbox[:, 3]).tolist()
    anns = [{"image_id": i, "category_id": c, "bbox": b, "score": s, "area": a, "id": k,
             "iscrowd": 0} for k, (i, c, b, s, a) in
            enumerate(zip(det.image_id.tolist(), det.category_id.tolist(), det.bbox.tolist(),
                          det.score.tolist(), area, strict=True), start=1)]
    dt = COCO()
    dt.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"],
                  "annotations": anns}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress on stdout
        dt.createIndex()
    return dt


def coco_bbox_eval(gt: COCO, detections: Detections | list[dict],
                   image_ids: list[int] | None = None, per_class: bool = False) -> EvalResult:
    """Score detections (``Detections``, or COCO results [{image_id, category_id, bbox
    [x,y,w,h], score}]) against ``gt``."""
    det = detections if isinstance(detections, Detections) else Detections.from_list(detections)
    dt = _results_coco(gt, det)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, dt, iouType="bbox")
        if image_ids is not None:
            ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = {n: float(v) for n, v in zip(STAT_NAMES, ev.stats, strict=True)}
    result = EvalResult(stats, detections=det)
    if per_class:
        # precision: [IoU thresholds, recall points, categories, area ranges, max dets];
        # area "all" (0) and 100 detections (2), as COCOeval's own AP.
        precision = ev.eval["precision"]
        result.per_class = {}
        for k, cat_id in enumerate(ev.params.catIds):
            p = precision[:, :, k, 0, 2]
            p = p[p > -1]
            result.per_class[gt.cats[cat_id]["name"]] = float(np.mean(p)) if p.size else -1.0
    return result


def to_detections(outputs: list[dict], image_ids: list[int], cat_ids: np.ndarray,
                  label_offset: int) -> Detections:
    """torchvision detector outputs (xyxy boxes, labels, scores) of a batch -> columns
    (xywh, category ids: ``cat_ids[label - label_offset]``)."""
    counts = [len(o["scores"]) for o in outputs]
    if not sum(counts):
        return Detections.empty()
    boxes = torch.cat([o["boxes"].detach() for o in outputs]).cpu().to(torch.float64).numpy()
    labels = torch.cat([o["labels"].detach() for o in outputs]).cpu().numpy()
    scores = torch.cat([o["scores"].detach() for o in outputs]).cpu().to(torch.float64).numpy()
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    return Detections(np.repeat(np.asarray(image_ids, np.int64), counts),
                      cat_ids[labels.astype(np.int64) - label_offset], np.round(xywh, 2),
                      np.round(scores, 5))


@torch.no_grad()
def predict(model: nn.Module, dataset: CocoDetection, batch_size: int = 8, workers: int = 0,
            device: torch.device | str = "cpu",
            progress: Callable[[int], None] | None = None) -> Detections:
    """Run ``model`` (eval mode) over ``dataset`` and return its detections."""
    was_training = model.training
    if was_training:  # a walk over every module (thousands in a supernet): only if needed
        model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=collate)
    cat_ids = np.asarray(dataset.cat_ids, dtype=np.int64)
    parts: list[Detections] = []
    try:
        for images, targets in loader:
            images = [im.to(device, non_blocking=True) for im in images]
            outputs = model(images)
            parts.append(to_detections(outputs, [t["image_id"] for t in targets], cat_ids,
                                       dataset.label_offset))
            if progress:
                progress(len(images))
    finally:
        if was_training:
            model.train()
    return Detections.concat(parts)


def evaluate(model: nn.Module, dataset: CocoDetection, batch_size: int = 8, workers: int = 0,
             device: torch.device | str = "cpu", per_class: bool = False,
             progress: Callable[[int], None] | None = None) -> EvalResult:
    """Detections of ``model`` on every image of ``dataset``, scored against its ground truth."""
    detections = predict(model, dataset, batch_size, workers, device, progress)
    return coco_bbox_eval(dataset.coco, detections, dataset.ids, per_class)
