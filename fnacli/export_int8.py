"""``fnacli export --precision int8``: the exported ONNX graph quantised by onnxruntime's own
static quantisation (QDQ format, activations uint8 per tensor, weights int8 per channel,
min/max ranges calibrated on the check's images), the graph the latency table's int8 entries
are timed as (``fnacli.cost.ort``).

Quantisation changes the outputs by design, so the float32 parity (1e-4) does not apply. The
int8 check compares PyTorch float32 with the quantised graph on the same images:

- raw outputs (the head's box regression and class logits, or a segmenter's logits): the
  largest and the mean |Δ| relative to each output's range (max − min over the image);
- detections: PyTorch's *confident* detections (score ≥ ``CONFIDENT``) must each find a
  quantised detection of the same label with IoU ≥ ``IOU_MIN`` and a score within
  ``SCORE_TOL``; the share found is the figure held to ``MATCH_MIN``. Low-score detections
  (the long tail that a 0.001 threshold keeps) swap places under any perturbation and are
  not compared one to one.

The tolerances come from measurements (docs/export.md): on MobileNetV2-0.5 SSDLite and
RetinaNet at 128x128 (randomised BatchNorm, class scores spread out), per-channel int8 moved
raw outputs by at most 5.8% (SSDLite) and 3.9% (RetinaNet) of their range, 0.8% and 0.5% on
average, and 95% of SSDLite's confident detections were found (IoU >= 0.93, score within
0.006). The tolerances leave about twice that room: 10% of the range at most, 2% on average,
90% of the confident detections.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fnacli.export import (
    DetectorPost,
    DetectorRaw,
    ExportResult,
    export_onnx,
    exportable,
    onnx_runner,
    time_runners,
)
from fnacli.parity import Runner, torch_runner
from fnacli.report import Report

RAW_RANGE_TOL = 0.10  # max |Δ| / range of a raw output
RAW_RANGE_MEAN_TOL = 0.02  # mean |Δ| / range
CONFIDENT = 0.3  # PyTorch's detections at or above this score are compared one to one
IOU_MIN = 0.5
SCORE_TOL = 0.1
MATCH_MIN = 0.9  # share of the confident detections the quantised graph must reproduce


def quantize_graph(model: bytes, images: Sequence[torch.Tensor]) -> bytes:
    """A float32 ONNX graph with one input, quantised, calibrated on ``images``."""
    import onnx

    from fnacli.cost.ort import quantize_int8

    name = onnx.load_from_string(model).graph.input[0].name
    return quantize_int8(model, [{name: x.float().numpy()} for x in images])


@dataclass
class Int8Parity:
    images: int = 0
    raw_max_range: float = 0.0  # worst max |Δ| / range of a raw output
    raw_mean_range: float = 0.0  # worst mean |Δ| / range
    confident: int = 0  # PyTorch's detections with score >= CONFIDENT
    matched: int = 0  # of them, found in the quantised outputs
    detections: list[int] = field(default_factory=list)  # per image, PyTorch's count
    iou_min: float = 1.0  # the worst IoU of a matched pair
    score_max_abs: float = 0.0  # the worst score |Δ| of a matched pair
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def match_share(self) -> float:
        return self.matched / self.confident if self.confident else 1.0

    def to_dict(self) -> dict:
        return {"images": self.images, "raw_max_range": self.raw_max_range,
                "raw_mean_range": self.raw_mean_range, "confident": self.confident,
                "matched": self.matched, "detections": self.detections,
                "iou_min": self.iou_min, "score_max_abs": self.score_max_abs,
                "tolerance": {"raw_max_range": RAW_RANGE_TOL,
                              "raw_mean_range": RAW_RANGE_MEAN_TOL, "confident": CONFIDENT,
                              "iou_min": IOU_MIN, "score": SCORE_TOL, "match_min": MATCH_MIN},
                "ok": self.ok, "problems": self.problems}


def compare_raw_int8(ref: Runner, got: Runner, images: Sequence[torch.Tensor],
                     parity: Int8Parity) -> None:
    """Raw outputs: |Δ| relative to each output's range on each image."""
    for x in images:
        for a, b in zip(ref(x), got(x), strict=True):
            if a.shape != b.shape:
                parity.problems.append(f"raw output shape {b.shape} vs PyTorch's {a.shape}")
                continue
            if a.dtype.kind != "f" or not a.size:  # anchors, labels: not quantised values
                continue
            span = float(a.max() - a.min()) or 1.0
            d = np.abs(a.astype(np.float64) - b)
            parity.raw_max_range = max(parity.raw_max_range, float(d.max()) / span)
            parity.raw_mean_range = max(parity.raw_mean_range, float(d.mean()) / span)
    parity.images = len(images)
    if parity.raw_max_range > RAW_RANGE_TOL or parity.raw_mean_range > RAW_RANGE_MEAN_TOL:
        parity.problems.append(
            f"raw outputs differ by up to {100 * parity.raw_max_range:.1f}% of their range "
            f"(mean {100 * parity.raw_mean_range:.2f}%; tolerance {100 * RAW_RANGE_TOL:.0f}%, "
            f"mean {100 * RAW_RANGE_MEAN_TOL:.0f}%)")


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box (4,) with each of ``b`` (K, 4), x1 y1 x2 y2."""
    lo, hi = np.maximum(a[:2], b[:, :2]), np.minimum(a[2:], b[:, 2:])
    inter = np.clip(hi - lo, 0, None).prod(axis=1)
    area = lambda t: np.clip(t[..., 2] - t[..., 0], 0, None) * np.clip(  # noqa: E731
        t[..., 3] - t[..., 1], 0, None)
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_confident(ref: Sequence[np.ndarray], got: Sequence[np.ndarray]
                    ) -> tuple[int, int, float, float]:
    """(confident, matched, worst IoU, worst score |Δ|): each of ``ref``'s detections with
    score ≥ CONFIDENT, best first, takes the free detection of ``got`` with the same label,
    a score within SCORE_TOL and the highest IoU, if that IoU is at least IOU_MIN."""
    (b1, s1, l1), (b2, s2, l2) = ref, got
    free = np.ones(len(s2), dtype=bool)
    confident = matched = 0
    iou_worst, score_worst = 1.0, 0.0
    for i in np.argsort(-s1, kind="stable"):
        if s1[i] < CONFIDENT:
            break
        confident += 1
        ok = free & (l2 == l1[i]) & (np.abs(s2 - s1[i]) <= SCORE_TOL)
        if not ok.any():
            continue
        iou = np.where(ok, box_iou(b1[i], b2) if len(b2) else np.zeros(0), -1.0)
        j = int(np.argmax(iou))
        if iou[j] < IOU_MIN:
            continue
        free[j] = False
        matched += 1
        iou_worst = min(iou_worst, float(iou[j]))
        score_worst = max(score_worst, float(abs(s2[j] - s1[i])))
    return confident, matched, iou_worst, score_worst


def compare_detections_int8(ref: Runner, got: Runner, images: Sequence[torch.Tensor],
                            parity: Int8Parity) -> None:
    for i, x in enumerate(images):
        r = ref(x)
        try:
            g = got(x)
        except Exception as e:  # noqa: BLE001 - onnxruntime's errors are one class per status
            parity.problems.append(f"image {i}: onnxruntime failed on the int8 graph: "
                                   f"{str(e).strip().splitlines()[0][:200]}")
            continue
        parity.detections.append(len(r[1]))
        confident, matched, iou, score = match_confident(r, g)
        parity.confident += confident
        parity.matched += matched
        if matched:
            parity.iou_min = min(parity.iou_min, iou)
            parity.score_max_abs = max(parity.score_max_abs, score)
    parity.images = len(images)
    if parity.match_share < MATCH_MIN:
        parity.problems.append(
            f"{parity.matched} of PyTorch's {parity.confident} detections with score >= "
            f"{CONFIDENT} found in the int8 outputs (same label, IoU >= {IOU_MIN}, score "
            f"within {SCORE_TOL}; at least {100 * MATCH_MIN:.0f}% wanted)")


@dataclass
class Int8ExportResult(ExportResult):
    """An int8 export: what ``ExportResult`` says, with the quantised parity."""

    int8_parity: Int8Parity | None = None

    def to_dict(self) -> dict:
        d = super().to_dict()
        d.update(precision="int8", parity=self.int8_parity.to_dict() if self.int8_parity
                 else None)
        return d

    def report(self) -> Report:
        what = "detections after NMS" if self.postprocess else "raw outputs"
        report: Report = [f"{self.path}: {self.task} at {self.size[0]}x{self.size[1]}, {what} "
                          f"({', '.join(self.outputs)}), ONNX opset {self.opset}, int8 (static "
                          "QDQ, per-channel weights)"]
        p = self.int8_parity
        if p is not None:
            line = (f"int8 parity on {p.images} {self.images_from} image(s) against PyTorch "
                    f"float32: raw outputs max |Δ| {100 * p.raw_max_range:.2f}% of their range "
                    f"(mean {100 * p.raw_mean_range:.3f}%)")
            if self.postprocess:
                line += (f"; {p.matched}/{p.confident} detections with score >= {CONFIDENT} "
                         f"found (worst IoU {p.iou_min:.3f}, score |Δ| {p.score_max_abs:.3f})")
            report.append(line)
        if self.latency_ms:
            report.append(f"latency at {self.threads} thread(s), batch 1: " + ", ".join(
                f"{k} {v:.2f} ms" for k, v in self.latency_ms.items()))
        return report

    @property
    def failure(self) -> str | None:
        p = self.int8_parity
        if p is None or p.ok:
            return None
        return (f"int8 parity check failed: {'; '.join(p.problems)} ({self.path} is kept; "
                "--no-check skips the check)")


def export_model_int8(model: nn.Module, output: str | Path, *, size: tuple[int, int],
                      postprocess: bool = True, opset: int = 17, check: bool = True,
                      images: list[torch.Tensor] | None = None, threads: int = 1,
                      measure: bool = True, score_thresh: float | None = None
                      ) -> Int8ExportResult:
    """``fnacli.export.export_model`` in int8: the same exported module (``exportable``) and
    example, quantised; see ``export_int8``."""
    from fnacli.errors import UserError

    if score_thresh is not None:
        if not hasattr(model, "score_thresh"):
            raise UserError("--score-thresh: only detectors have a score threshold")
        model.score_thresh = score_thresh
    example = torch.rand(1, 3, size[1], size[0], generator=torch.Generator().manual_seed(0))
    module = exportable(model, postprocess, example)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return export_int8(module, example, output, size=size, opset=opset, check=check,
                           images=images, threads=threads, measure=measure)
    finally:
        torch.set_num_threads(before)


def export_int8(module: nn.Module, example: torch.Tensor, output: str | Path, *, size: tuple,
                opset: int, check: bool, images: list[torch.Tensor] | None, threads: int,
                measure: bool) -> Int8ExportResult:
    """``module`` (``fnacli.export.exportable``'s) exported, quantised (calibrated on
    ``images``, else on ``example``), checked and timed beside PyTorch and the float32 graph,
    then written to ``output``."""
    from fnacli.io import write_bytes_atomic

    calib = images or [example]
    postprocess = isinstance(module, DetectorPost)
    fp32 = export_onnx(module, example, opset)
    int8 = quantize_graph(fp32, calib)
    int8_run = onnx_runner(int8, threads)
    parity = None
    if check:
        parity = Int8Parity()
        if postprocess:
            raw = DetectorRaw(module.det).eval()
            raw_int8 = onnx_runner(quantize_graph(export_onnx(raw, example, opset), calib),
                                   threads)
            compare_raw_int8(torch_runner(raw), raw_int8, calib, parity)
            compare_detections_int8(torch_runner(module), int8_run, calib, parity)
        else:
            compare_raw_int8(torch_runner(module), int8_run, calib, parity)
    latency = None
    if measure:
        latency = time_runners({"pytorch": torch_runner(module),
                                "onnxruntime fp32": onnx_runner(fp32, threads),
                                "onnxruntime int8": int8_run}, example, threads)
    write_bytes_atomic(output, int8)  # the file appears only once it is checked
    return Int8ExportResult(str(output), "onnx", opset, size, postprocess,
                            tuple(module.output_names), None, latency, threads,
                            int8_parity=parity)
