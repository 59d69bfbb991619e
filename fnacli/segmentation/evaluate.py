"""mIoU, per-class IoU and pixel accuracy from one confusion matrix over a whole split.

Every image is predicted at full resolution, either whole (one forward pass) or by a sliding
window (crops of the training size, overlapping by a third, logits averaged where windows
overlap), and every non-ignored pixel adds one count to ``confusion[truth, prediction]``.
Then, per class c: IoU_c = TP / (TP + FP + FN) and acc_c = TP / (TP + FN); mIoU and mAcc
average over the classes that occur in the ground truth or the predictions of the split (a
class absent from both has no IoU; the official Cityscapes script averages all 19 because
all occur in its val split). aAcc is the fraction of labelled pixels predicted right.
Numbers are fractions in [0, 1], like the COCO numbers of the detectors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from fnacli.segmentation.data import IGNORE, collate

STAT_NAMES = ("mIoU", "aAcc", "mAcc")
MODES = ("whole", "slide")


@dataclass
class SegEvalResult:
    stats: dict[str, float]
    per_class: dict[str, float] | None = None  # class name -> IoU (nan: class absent)
    confusion: torch.Tensor | None = None

    def to_dict(self) -> dict:
        d: dict = dict(self.stats)
        if self.per_class is not None:
            d["per_class_IoU"] = {k: (None if math.isnan(v) else v)
                                  for k, v in self.per_class.items()}
        return d


def confusion_update(conf: torch.Tensor, truth: torch.Tensor, pred: torch.Tensor) -> None:
    """Add the pixels of one (or a batch of) mask(s) to ``conf`` [K, K] (ignore = 255)."""
    k = conf.shape[0]
    keep = truth != IGNORE
    t, p = truth[keep].long(), pred[keep].long()
    if t.numel() and int(t.max()) >= k:
        raise ValueError(f"ground-truth class {int(t.max())} outside 0..{k - 1}")
    conf += torch.bincount(t * k + p, minlength=k * k).reshape(k, k).to(conf)


def scores(conf: torch.Tensor) -> tuple[dict[str, float], list[float]]:
    """(mIoU / aAcc / mAcc, per-class IoU with nan for absent classes) of a confusion matrix."""
    conf = conf.double()
    tp = conf.diag()
    gt, pred = conf.sum(1), conf.sum(0)
    union = gt + pred - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.nan)
    acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.nan)
    total = conf.sum()
    stats = {"mIoU": float(iou.nanmean()) if (union > 0).any() else 0.0,
             "aAcc": float(tp.sum() / total) if total > 0 else 0.0,
             "mAcc": float(acc.nanmean()) if (gt > 0).any() else 0.0}
    return stats, iou.tolist()


def _windows(size: int, window: int, stride: int) -> list[int]:
    if size <= window:
        return [0]
    starts = list(range(0, size - window, stride))
    return starts + [size - window]


@torch.no_grad()
def predict_logits(model: nn.Module, image: torch.Tensor, mode: str = "whole",
                   window: tuple[int, int] | None = None) -> torch.Tensor:
    """Logits [K, H, W] of one normalised image [3, H, W] (model in eval mode)."""
    if mode == "whole" or window is None:
        return model(image[None])["out"][0]
    if mode != "slide":
        raise ValueError(f"unknown inference mode {mode!r} (expected one of {MODES})")
    _, h, w = image.shape
    ww, wh = window
    sx, sy = max(1, ww * 2 // 3), max(1, wh * 2 // 3)
    out: torch.Tensor | None = None
    hits = torch.zeros(1, h, w, device=image.device)
    for y in _windows(h, wh, sy):
        for x in _windows(w, ww, sx):
            crop = image[:, y:y + wh, x:x + ww]
            logits = model(crop[None])["out"][0]
            if out is None:
                out = image.new_zeros(logits.shape[0], h, w)
            out[:, y:y + crop.shape[1], x:x + crop.shape[2]] += logits
            hits[:, y:y + crop.shape[1], x:x + crop.shape[2]] += 1
    assert out is not None
    return out / hits


def evaluate(model: nn.Module, dataset: object, *, batch_size: int = 1, workers: int = 0,
             device: torch.device | str = "cpu", per_class: bool = False,
             progress: Callable[[int], None] | None = None, mode: str = "whole",
             window: tuple[int, int] | None = None, num_classes: int | None = None
             ) -> SegEvalResult:
    """Score ``model`` (a DeepLabV3) on every image of ``dataset`` (eval transform)."""
    was_training = model.training
    model.eval()
    k = num_classes or dataset.num_classes  # type: ignore[attr-defined]
    conf = torch.zeros(k, k, dtype=torch.int64, device=device)
    loader: Iterable = DataLoader(dataset, batch_size=batch_size,  # type: ignore[arg-type]
                                  collate_fn=collate, num_workers=workers)
    try:
        for images, masks in loader:
            items = zip(images, masks, strict=True)
            for image, mask in items:
                logits = predict_logits(model, image.to(device), mode, window)
                if logits.shape[-2:] != mask.shape[-2:]:  # a model that does not upsample
                    logits = F.interpolate(logits[None], size=mask.shape[-2:],
                                           mode="bilinear", align_corners=False)[0]
                confusion_update(conf, mask.to(device), logits.argmax(0))
            if progress:
                progress(len(masks))
    finally:
        model.train(was_training)
    stats, ious = scores(conf.cpu())
    names = [c["name"] for c in dataset.categories()]  # type: ignore[attr-defined]
    return SegEvalResult(stats, dict(zip(names, ious, strict=True)) if per_class else None,
                         conf.cpu())
