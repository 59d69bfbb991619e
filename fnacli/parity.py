"""An exported model's parity with PyTorch, judged against the model's own float32 noise.

Raw outputs: PyTorch float32 and the export are each compared with a float64 run of the
same model (the truth up to float64 rounding). The export passes when its error is within
``RAW_FACTOR`` times PyTorch float32's own error plus ``RAW_FLOOR`` (errors are relative to
``max(1, |output|)``): a graph no worse than PyTorch itself is right, whatever a fixed
tolerance would say. A NaN or infinite value anywhere fails.

Post-processed detections: the exported graph runs its own threshold, top-k and NMS on raw
outputs that differ from PyTorch's by the measured raw difference ``d``; detections at a
near-tie (a score within the score tolerance of the score threshold or of the top-k cut,
two overlapping boxes of the same class whose scores are within it, an overlap within the
IoU tolerance of the NMS threshold) may come out either way and are excused, and counted.
The score and box tolerances grow with ``d``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

Runner = Callable[[torch.Tensor], list[np.ndarray]]
RAW_FACTOR = 8.0  # the export may be this many times PyTorch float32's error from float64
RAW_FLOOR = 2e-5  # plus this (relative to max(1, |output|)): float32 rounding of tiny errors
BOX_TOL = 1e-3  # pixels, at least
SCORE_TOL = 1e-4  # at least
IOU_TOL = 1e-3  # at least


@dataclass
class Cuts:
    """Where a detector's post-processing cuts: its score threshold, NMS IoU threshold and
    detections kept per image."""

    score_thresh: float = 0.0
    nms_thresh: float = 0.5
    per_image: int = 0

    @classmethod
    def of(cls, det: nn.Module) -> Cuts:
        return cls(float(getattr(det, "score_thresh", 0.0)),
                   float(getattr(det, "nms_thresh", 0.5)),
                   int(getattr(det, "detections_per_img", 0)))


@dataclass
class Parity:
    images: int = 0
    raw_torch_err: float = 0.0  # PyTorch float32 vs float64, max |Δ| / max(1, |output|)
    raw_export_err: float = 0.0  # the export vs float64, the same measure
    raw_allowed: float = 0.0  # RAW_FACTOR * raw_torch_err + RAW_FLOOR
    raw_max_abs: float = 0.0  # the export vs PyTorch float32, max |Δ|
    raw_max_rel: float = 0.0
    detections_same: int = 0  # images whose detections match (near-ties excused)
    detections: list[int] = field(default_factory=list)  # per image, PyTorch's count
    excused: int = 0  # detections without a match that sat at a near-tie
    box_max_abs: float = 0.0
    score_max_abs: float = 0.0
    score_thresh: float | None = None  # the threshold the detections were compared at
    recheck: dict | None = None  # zero boxes compared: the check at a lower threshold
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"images": self.images, "raw_torch_err": self.raw_torch_err,
                "raw_export_err": self.raw_export_err, "raw_allowed": self.raw_allowed,
                "raw_max_abs": self.raw_max_abs, "raw_max_rel": self.raw_max_rel,
                "detections_same": self.detections_same, "detections": self.detections,
                "excused": self.excused, "box_max_abs": self.box_max_abs,
                "score_max_abs": self.score_max_abs, "score_thresh": self.score_thresh,
                "recheck": self.recheck, "ok": self.ok, "problems": self.problems}


def torch_runner(module: nn.Module) -> Runner:
    def run(x: torch.Tensor) -> list[np.ndarray]:
        with torch.inference_mode():
            return [t.numpy() for t in module(x)]

    return run


def float64_runner(module: nn.Module) -> Runner:
    """``module`` run in float64 (a copy): the reference both float32 runs are judged by."""
    wide = copy.deepcopy(module).double().eval()

    def run(x: torch.Tensor) -> list[np.ndarray]:
        with torch.inference_mode():
            return [t.numpy() for t in wide(x.double())]

    return run


def _non_finite(arrays: Sequence[np.ndarray]) -> bool:
    return any(a.dtype.kind == "f" and a.size and not np.isfinite(a).all() for a in arrays)


def compare_raw(ref64: Runner, torch32: Runner, got: Runner, images: list[torch.Tensor],
                parity: Parity, factor: float = RAW_FACTOR, floor: float = RAW_FLOOR) -> None:
    """Raw outputs of PyTorch float32 and of the export, each against float64 (see the
    module docstring); problems are added to ``parity``."""
    for i, x in enumerate(images):
        r64, t32, g = ref64(x), torch32(x), got(x)
        for who, outs in (("PyTorch", t32), ("the exported model", g)):
            if _non_finite(outs):
                parity.problems.append(f"image {i}: {who} gives NaN or infinite outputs")
        for a, t, b in zip(r64, t32, g, strict=True):
            if b.shape != a.shape:
                parity.problems.append(f"raw output shape {b.shape} vs PyTorch's {a.shape}")
                continue
            if not a.size:
                continue
            scale = max(1.0, float(np.abs(a).max()))
            parity.raw_torch_err = max(parity.raw_torch_err,
                                       float(np.abs(t - a).max()) / scale)
            parity.raw_export_err = max(parity.raw_export_err,
                                        float(np.abs(b - a).max()) / scale)
            d = float(np.abs(b.astype(np.float64) - t).max())
            parity.raw_max_abs = max(parity.raw_max_abs, d)
            parity.raw_max_rel = max(parity.raw_max_rel, d / scale)
    parity.images = len(images)
    parity.raw_allowed = factor * parity.raw_torch_err + floor
    # NaN compares false: a NaN error must fail, not pass as "not above the tolerance"
    if not parity.raw_export_err <= parity.raw_allowed:
        parity.problems.append(
            f"raw outputs are {parity.raw_export_err:.3g} from a float64 run, PyTorch float32 "
            f"{parity.raw_torch_err:.3g} (allowed {factor:g}x that + {floor:g})")


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2])
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    return inter / np.maximum(area + areas - inter, 1e-12)


def near_tie(k: int, own: Sequence[np.ndarray], other: Sequence[np.ndarray], cuts: Cuts,
             score_tol: float, iou_tol: float) -> bool:
    """Whether detection ``k`` of ``own`` sits where a difference of ``score_tol`` in scores
    (``iou_tol`` in overlaps) decides if it is kept: at the score threshold, at the top-k
    cut, or against an overlapping detection of its class at NMS."""
    b, s, lab = own[0][k], float(own[1][k]), own[2][k]
    if s - cuts.score_thresh <= score_tol:
        return True
    for side in (own, other):
        if cuts.per_image and len(side[1]) >= cuts.per_image and \
                s - float(side[1].min()) <= score_tol:
            return True
    for side in (own, other):
        same = side[2] == lab
        if side is own:
            same[k] = False
        if not same.any():
            continue
        iou = _iou(b, side[0][same])
        close = np.abs(side[1][same] - s) <= score_tol
        if (np.abs(iou - cuts.nms_thresh) <= iou_tol).any() or \
                ((iou >= cuts.nms_thresh - iou_tol) & close).any():
            return True
    return False


def match_detections(ref: Sequence[np.ndarray], got: Sequence[np.ndarray],
                     score_tol: float = SCORE_TOL, box_tol: float = BOX_TOL,
                     cuts: Cuts | None = None, iou_tol: float = IOU_TOL
                     ) -> tuple[int, float, float] | tuple[int, float, float, int]:
    """(unmatched, worst box |Δ| px, worst score |Δ|) of a one-to-one matching of two sets of
    (boxes, scores, labels): each reference detection, best score first, takes the unmatched
    detection of its label with the closest box among those whose score is within
    ``score_tol``. With ``cuts``, detections without a match at a near-tie (``near_tie``)
    are excused and counted: (unmatched, box, score, excused)."""
    (b1, s1, l1), (b2, s2, l2) = ref[:3], got[:3]
    free = np.ones(len(s2), dtype=bool)
    lost: list[int] = []
    box_worst, score_worst = 0.0, 0.0
    for i in np.argsort(-s1, kind="stable"):
        ok = free & (l2 == l1[i]) & (np.abs(s2 - s1[i]) <= score_tol)
        d = np.abs(b2 - b1[i]).max(axis=1) if len(s2) else np.zeros(0)
        d[~ok] = np.inf
        j = int(np.argmin(d)) if ok.any() else -1
        if j < 0 or d[j] > box_tol:
            lost.append(int(i))
            continue
        free[j] = False
        box_worst = max(box_worst, float(d[j]))
        score_worst = max(score_worst, float(abs(s2[j] - s1[i])))
    extra = [int(j) for j in np.flatnonzero(free)]
    if cuts is None:
        return len(lost) + len(extra), box_worst, score_worst
    r, g = (b1, s1, l1), (b2, s2, l2)
    excused = (sum(near_tie(i, r, g, cuts, score_tol, iou_tol) for i in lost)
               + sum(near_tie(j, g, r, cuts, score_tol, iou_tol) for j in extra))
    return len(lost) + len(extra) - excused, box_worst, score_worst, excused


def tolerances(raw_diff: float, side: int) -> tuple[float, float, float]:
    """(score, box px, IoU) tolerances for raw outputs that differ by ``raw_diff``: a logit
    moved by d moves a score by at most d, a box regression (relative to an anchor at most
    ``side`` pixels) a box by about d * side."""
    score = max(SCORE_TOL, 2 * raw_diff)
    box = max(BOX_TOL, 2 * raw_diff * side)
    return score, box, max(IOU_TOL, box / 2)  # IoU moves ~4Δ/side; boxes of 8 px at least


def compare_detections(ref: Runner, got: Runner, images: list[torch.Tensor], parity: Parity,
                       cuts: Cuts | None = None, raw_diff: float = 0.0) -> None:
    """Same detections, near-ties excused (``match_detections``), tolerances from the raw
    difference ``raw_diff`` (``tolerances``)."""
    cuts = cuts or Cuts()
    parity.score_thresh = cuts.score_thresh
    for i, x in enumerate(images):
        r, g = ref(x), got(x)
        if _non_finite(g[:2]) or _non_finite(r[:2]):
            parity.problems.append(f"image {i}: NaN or infinite boxes or scores")
            continue
        parity.detections.append(len(r[1]))
        st, bt, it = tolerances(raw_diff, max(x.shape[-2:]))
        unmatched, box, score, excused = match_detections(r, g, st, bt, cuts, it)
        parity.box_max_abs = max(parity.box_max_abs, box)
        parity.score_max_abs = max(parity.score_max_abs, score)
        parity.excused += excused
        if unmatched == 0:
            parity.detections_same += 1
        else:
            parity.problems.append(f"image {i}: {unmatched} detections without a match and "
                                   f"not at a near-tie ({len(g[1])} exported vs PyTorch's "
                                   f"{len(r[1])})")
    parity.images = len(images)
