"""COCO bbox evaluation: run a detector over a split, score it with pycocotools' COCOeval.

The 12 numbers keep COCOeval's meaning, including -1 for an area range that has no ground
truth box at all. A model that detects nothing scores 0 (pycocotools' ``loadRes`` cannot take
an empty result list, so that case gets an empty result set built directly).
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


@dataclass
class EvalResult:
    stats: dict[str, float]  # the 12 COCOeval numbers by name
    per_class: dict[str, float] | None = None  # category name -> AP@[.5:.95] (-1: no gt)
    detections: list[dict] = field(default_factory=list)  # COCO results format

    def to_dict(self) -> dict:
        d: dict = dict(self.stats)
        if self.per_class is not None:
            d["per_class_AP"] = dict(self.per_class)
        return d


def _empty_results(gt: COCO) -> COCO:
    dt = COCO()
    dt.dataset = {"images": list(gt.dataset["images"]),
                  "categories": list(gt.dataset["categories"]), "annotations": []}
    with contextlib.redirect_stdout(io.StringIO()):
        dt.createIndex()
    return dt


def coco_bbox_eval(gt: COCO, detections: list[dict], image_ids: list[int] | None = None,
                   per_class: bool = False) -> EvalResult:
    """Score COCO-format detections ([{image_id, category_id, bbox [x,y,w,h], score}])."""
    # pycocotools prints progress on stdout, which is reserved for results.
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes([dict(d) for d in detections]) if detections else _empty_results(gt)
        ev = COCOeval(gt, dt, iouType="bbox")
        if image_ids is not None:
            ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = {n: float(v) for n, v in zip(STAT_NAMES, ev.stats, strict=True)}
    result = EvalResult(stats, detections=list(detections))
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


def to_coco_results(outputs: list[dict], image_ids: list[int],
                    category_of: Callable[[int], int]) -> list[dict]:
    """torchvision detector outputs (xyxy boxes, labels, scores) -> COCO results (xywh)."""
    results = []
    for out, iid in zip(outputs, image_ids, strict=True):
        boxes = out["boxes"].detach().cpu().to(torch.float64)
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        for box, label, score in zip(xywh, out["labels"].tolist(), out["scores"].tolist(),
                                     strict=True):
            results.append({"image_id": iid, "category_id": category_of(int(label)),
                            "bbox": [round(v, 2) for v in box], "score": round(float(score), 5)})
    return results


@torch.no_grad()
def predict(model: nn.Module, dataset: CocoDetection, batch_size: int = 8, workers: int = 0,
            device: torch.device | str = "cpu",
            progress: Callable[[int], None] | None = None) -> list[dict]:
    """Run ``model`` (eval mode) over ``dataset`` and return COCO-format detections."""
    was_training = model.training
    if was_training:  # a walk over every module (thousands in a supernet): only if needed
        model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=collate)
    results: list[dict] = []
    try:
        for images, targets in loader:
            images = [im.to(device, non_blocking=True) for im in images]
            outputs = model(images)
            results += to_coco_results(outputs, [t["image_id"] for t in targets],
                                       dataset.category_of)
            if progress:
                progress(len(images))
    finally:
        if was_training:
            model.train()
    return results


def evaluate(model: nn.Module, dataset: CocoDetection, batch_size: int = 8, workers: int = 0,
             device: torch.device | str = "cpu", per_class: bool = False,
             progress: Callable[[int], None] | None = None) -> EvalResult:
    """Detections of ``model`` on every image of ``dataset``, scored against its ground truth."""
    detections = predict(model, dataset, batch_size, workers, device, progress)
    return coco_bbox_eval(dataset.coco, detections, dataset.ids, per_class)
