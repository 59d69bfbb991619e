"""Export a fine-tuned model to ONNX or TorchScript, checked against PyTorch.

The exported graph takes ``images``: a float RGB batch in [0, 1] of the export size
(N, 3, H, W), already resized (the graph normalises it with the model's mean/std but does
not resize or pad). Outputs:

- detectors with post-processing (default): ``boxes`` (K, 4, x1 y1 x2 y2 in input pixels),
  ``scores`` (K,), ``labels`` (K,) of one image, after the detector's own score threshold,
  top-k and NMS (torchvision's ``postprocess_detections``);
- detectors raw (``postprocess=False``): the head's ``bbox_regression`` (N, A, 4) and
  ``cls_logits`` (N, A, classes) and the (A, 4) ``anchors`` they are relative to;
- any other model (a segmentation model, say): what ``model(images)`` returns, a tensor or
  a dict of tensors (named by its keys), raw.

ONNX goes through torch's TorchScript-based exporter (``dynamo=False``), which covers
torchvision's NMS; the opset is ``DEFAULT_OPSET`` unless given.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fnacli.errors import UserError
from fnacli.io import write_bytes_atomic
from fnacli.parity import (  # noqa: F401 - match_detections: part of this module's API
    Cuts,
    Parity,
    Runner,
    compare_detections,
    compare_raw,
    float64_runner,
    match_detections,
    torch_runner,
)
from fnacli.report import Report

FORMATS = ("onnx", "torchscript")
DEFAULT_OPSET = 17
RECHECK_THRESH = 0.001  # a check that compared zero boxes is repeated at this threshold


# -- what is exported ----------------------------------------------------------------------------
class _Normalise(nn.Module):
    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std)).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _anchors(det: nn.Module, x: torch.Tensor, feats: list[torch.Tensor]) -> torch.Tensor:
    from torchvision.models.detection.image_list import ImageList

    images = ImageList(x, [(x.shape[-2], x.shape[-1])] * x.shape[0])
    return det.anchor_generator(images, feats)


class _DetectorGraph(nn.Module):
    """What both exported detector graphs share: normalise, backbone, head."""

    def __init__(self, det: nn.Module) -> None:
        super().__init__()
        self.det = det
        self.norm = _Normalise(det.transform.image_mean, det.transform.image_std)

    def head_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, list, dict]:
        """(normalised images, feature maps, head outputs)."""
        x = self.norm(x)
        feats = list(self.det.backbone(x).values())
        return x, feats, self.det.head(feats)


class DetectorRaw(_DetectorGraph):
    """images -> (bbox_regression, cls_logits, anchors)."""

    output_names = ("bbox_regression", "cls_logits", "anchors")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x, feats, out = self.head_outputs(x)
        return out["bbox_regression"], out["cls_logits"], _anchors(self.det, x, feats)[0]


class DetectorPost(_DetectorGraph):
    """One image -> (boxes, scores, labels) after the detector's own post-processing."""

    output_names = ("boxes", "scores", "labels")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from torchvision.models.detection.retinanet import RetinaNet

        x, feats, out = self.head_outputs(x)
        anchors = _anchors(self.det, x, feats)
        sizes = [(x.shape[-2], x.shape[-1])] * x.shape[0]
        if isinstance(self.det, RetinaNet):  # it post-processes per pyramid level
            per_level = [f.shape[-2] * f.shape[-1] for f in feats]
            a = out["cls_logits"].shape[1] // sum(per_level)
            per_level = [n * a for n in per_level]
            out = {k: list(v.split(per_level, dim=1)) for k, v in out.items()}
            anchors = [list(t.split(per_level)) for t in anchors]
        d = self.det.postprocess_detections(out, anchors, sizes)[0]
        return d["boxes"], d["scores"], d["labels"]


class PlainOutputs(nn.Module):
    """Any other model: its outputs as a tuple (a dict's values in key order)."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.model, self.output_names = model, tuple(names)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = self.model(x)
        return tuple(y.values()) if isinstance(y, dict) else (y,)


def exportable(model: nn.Module, postprocess: bool, example: torch.Tensor) -> nn.Module:
    """The module to export for ``model``: see the module docstring."""
    from fnacli.cost.count import is_detector

    model.eval()
    if is_detector(model):
        return (DetectorPost if postprocess else DetectorRaw)(model).eval()
    # a segmenter (or any other model) has no post-processing to bake in: its outputs (the
    # per-class logits of a segmenter) are exported as they are, with or without --raw
    with torch.no_grad():
        y = model(example)
    names = list(y) if isinstance(y, dict) else ["output"]
    return PlainOutputs(model, names).eval()


# -- samples -----------------------------------------------------------------------------------
def dataset_images(data: str | Path, n: int, task: str = "ssdlite") -> list[Path]:
    """The first ``n`` images of ``data``'s val split, read in ``task``'s own layout (COCO
    for a detector; fnacli's synthetic set or Cityscapes for a segmenter)."""
    from fnacli.tasks import get_task

    t = get_task(task, "task")
    split = t.load_split(t.find_split(data, "val"), train=False)
    if hasattr(split, "image_path"):
        paths = [split.image_path(i) for i in range(min(n, len(split)))]
    else:
        paths = [split.paths[i] for i in split.ids[:n]]
    if not paths:
        raise UserError(f"--data {data}: no val images to check the export on")
    return paths


def sample_images(size: tuple[int, int], n: int, data: str | Path | None = None,
                  seed: int = 0, task: str = "ssdlite") -> list[torch.Tensor]:
    """``n`` images (1, 3, H, W) in [0, 1] at ``size`` (width, height): the first of a
    dataset's val split in ``task``'s layout, else synthetic scenes
    (``fnacli.detection.synthetic``)."""
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    images: list[Image.Image] = []
    if data is not None:
        images = [Image.open(p).convert("RGB") for p in dataset_images(data, n, task)]
    else:
        from fnacli.detection.synthetic import SynthConfig, make_image

        cfg = SynthConfig(train=0, val=n, size=max(size), classes=3, seed=seed)
        images = [make_image(cfg, "val", i)[0] for i in range(n)]
    out = []
    for im in images:
        im = im.resize(size, Image.BILINEAR)
        out.append((pil_to_tensor(im).float() / 255.0).unsqueeze(0))
    return out


# -- exporting -----------------------------------------------------------------------------------
@contextmanager
def _quiet_fds() -> Iterator[None]:
    """Silence stdout/stderr at the file-descriptor level: the exporter's C++ side prints
    the whole graph when an operator fails."""
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    first = first.split(" [Caused by")[0].strip()
    return first if len(first) <= 200 else first[:197] + "..."


def export_onnx(module: nn.Module, example: torch.Tensor, opset: int) -> bytes:
    """The ONNX model as bytes (torch.onnx, TorchScript-based), serialised in memory: the
    file is written atomically afterwards. An operator that does not export is a
    UserError."""
    import warnings
    from contextlib import redirect_stderr, redirect_stdout

    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad(), _quiet_fds(), \
                redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), buf, input_names=["images"],
                              output_names=list(module.output_names), opset_version=opset,
                              dynamo=False, do_constant_folding=True)
    except Exception as e:  # noqa: BLE001 - the exporter's many error types
        raise UserError(f"export: the model does not export to ONNX opset {opset}: "
                        f"{_first_line(e)}") from None
    return buf.getvalue()


def export_torchscript(module: nn.Module, example: torch.Tensor) -> bytes:
    """The traced module as bytes (serialised in memory, written atomically afterwards)."""
    import warnings

    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(module, (example,), check_trace=False)
            torch.jit.save(traced, buf)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"export: the model does not trace to TorchScript: "
                        f"{_first_line(e)}") from None
    return buf.getvalue()


def serialise(module: nn.Module, example: torch.Tensor, fmt: str, opset: int) -> bytes:
    return (export_onnx(module, example, opset) if fmt == "onnx"
            else export_torchscript(module, example))


def onnx_runner(model: bytes | str | Path, threads: int) -> Runner:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    sess = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def run(x: torch.Tensor) -> list[np.ndarray]:
        return sess.run(None, {name: x.numpy()})

    return run


def torchscript_runner(model: bytes | str | Path) -> Runner:
    import warnings

    source = io.BytesIO(model) if isinstance(model, bytes) else str(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
        mod = torch.jit.load(source).eval()

    def run(x: torch.Tensor) -> list[np.ndarray]:
        with torch.inference_mode():
            return [t.numpy() for t in mod(x)]

    return run


def runner_of(blob: bytes, fmt: str, threads: int) -> Runner:
    return onnx_runner(blob, threads) if fmt == "onnx" else torchscript_runner(blob)


# -- latency -------------------------------------------------------------------------------------
def time_runners(runners: dict[str, Runner], example: torch.Tensor, threads: int,
                 rounds: int = 7) -> dict[str, float]:
    """Median ms per call of each runner, timed interleaved at ``threads`` threads (the same
    method as the latency table, ``fnacli.latency.Bench``)."""
    from fnacli.cost.measure import Bench, Job, MeasureConfig

    cfg = MeasureConfig(threads=threads, min_rounds=rounds, max_rounds=rounds * 3)
    bench = Bench(cfg, torch.contiguous_format)

    class _Call(nn.Module):
        def __init__(self, fn: Runner) -> None:
            super().__init__()
            self.fn = fn

        def forward(self, x: torch.Tensor) -> list:
            return self.fn(x)

    jobs = [Job(name, _Call(fn), (example,)) for name, fn in runners.items()]
    timed = bench.run(jobs)
    return {name: timed[name].median_s * 1e3 for name in runners}


# -- the whole thing -----------------------------------------------------------------------------
@dataclass
class ExportResult:
    path: str
    format: str
    opset: int | None
    size: tuple[int, int]
    postprocess: bool
    outputs: tuple[str, ...]
    parity: Parity | None
    latency_ms: dict[str, float] | None
    threads: int
    task: str = ""  # the checkpoint's task (set by fnacli.pipeline.export)
    images_from: str = "synthetic"  # what the parity images are: dataset or synthetic

    def to_dict(self) -> dict:
        return {"output": self.path, "format": self.format, "opset": self.opset,
                "input": [1, 3, self.size[1], self.size[0]], "postprocess": self.postprocess,
                "outputs": list(self.outputs),
                "parity": self.parity.to_dict() if self.parity else None,
                "latency_ms": self.latency_ms, "threads": self.threads}

    def report(self) -> Report:
        """What was exported, the parity check against PyTorch, and the latency figures."""
        what = "detections after NMS" if self.postprocess else "raw outputs"
        fmt = f", ONNX opset {self.opset}" if self.format == "onnx" else ", TorchScript (traced)"
        report: Report = [f"{self.path}: {self.task} at {self.size[0]}x{self.size[1]}, {what} "
                          f"({', '.join(self.outputs)}){fmt}"]
        p = self.parity
        if p is not None:
            report.append(f"parity on {p.images} {self.images_from} image(s), judged against a "
                          f"float64 run: raw outputs off by {p.raw_export_err:.2e} (PyTorch "
                          f"float32 itself {p.raw_torch_err:.2e}, allowed {p.raw_allowed:.2e}); "
                          f"vs PyTorch max |Δ| {p.raw_max_abs:.2e}")
            if self.postprocess:
                report.append(self._detections_line(p))
        if self.latency_ms:
            report.append(f"latency at {self.threads} thread(s), batch 1: " + ", ".join(
                f"{k} {v:.2f} ms" for k, v in self.latency_ms.items()))
        return report

    @staticmethod
    def _detections_line(p: Parity) -> str:
        line = (f"detections the same on {p.detections_same}/{p.images} images "
                f"({sum(p.detections)} boxes at score threshold {p.score_thresh:g}, boxes max "
                f"|Δ| {p.box_max_abs:.2e} px, scores {p.score_max_abs:.2e}"
                + (f", {p.excused} near-ties excused" if p.excused else "") + ")")
        if p.recheck is not None:
            r = p.recheck
            line += (f"; zero boxes compared at {p.score_thresh:g}, so re-checked at "
                     f"{r['score_thresh']:g}: the same on {r['same']}/{p.images} images "
                     f"({r['boxes']} boxes)")
        return line

    @property
    def failure(self) -> str | None:
        """Why the parity check failed (the exported file is kept), or None."""
        if self.parity is None or self.parity.ok:
            return None
        return (f"parity check failed: {'; '.join(self.parity.problems)} ({self.path} is "
                "written all the same; --no-check skips the check)")


def load_model(path: str | Path) -> tuple[nn.Module, dict]:
    """The model of a checkpoint and what it was trained at (``size``, ``task``)."""
    from fnacli.model_checkpoint import MODEL_KINDS, load_detector, read_model_checkpoint

    ckpt = read_model_checkpoint(path)
    if ckpt.kind in MODEL_KINDS:
        model, info = load_detector(path)
        return model, {"task": info.task, "size": tuple(info.size)}
    raise UserError(f"{path}: a {ckpt.kind} checkpoint; export takes a fine-tuned model "
                    "(a detector or segmenter from 'fnacli finetune')")


def export_model(model: nn.Module, output: str | Path, *, fmt: str = "onnx",
                 size: tuple[int, int], postprocess: bool = True,
                 opset: int = DEFAULT_OPSET, check: bool = True,
                 images: list[torch.Tensor] | None = None, threads: int = 1,
                 measure: bool = True, score_thresh: float | None = None) -> ExportResult:
    """Export, then (``check``) compare with PyTorch on ``images`` and (``measure``) time
    the exported model beside PyTorch eager. ``score_thresh`` replaces the detector's own
    (the exported graph bakes it in)."""
    if fmt not in FORMATS:
        raise UserError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if score_thresh is not None:
        if not hasattr(model, "score_thresh"):
            raise UserError("--score-thresh: only detectors have a score threshold")
        model.score_thresh = score_thresh
    example = torch.rand(1, 3, size[1], size[0], generator=torch.Generator().manual_seed(0))
    module = exportable(model, postprocess, example)
    postprocess = isinstance(module, DetectorPost)  # only detectors have any
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        blob = serialise(module, example, fmt, opset)
        runner = runner_of(blob, fmt, threads)
        parity = None
        if check:
            parity = check_parity(module, runner, images or [example], example, fmt, opset,
                                  threads)
        latency = None
        if measure:
            name = "onnxruntime" if fmt == "onnx" else "torchscript"
            latency = time_runners({"pytorch": torch_runner(module), name: runner}, example,
                                   threads)
    finally:
        torch.set_num_threads(before)
    # only now, checked, does the new file replace the previous one: an interrupted check
    # leaves the previous output as it was
    write_bytes_atomic(output, blob)
    return ExportResult(str(output), fmt, opset if fmt == "onnx" else None, size, postprocess,
                        tuple(module.output_names), parity, latency, threads)


def check_parity(module: nn.Module, runner: Runner, images: list[torch.Tensor],
                 example: torch.Tensor, fmt: str, opset: int, threads: int) -> Parity:
    """The exported model (``runner``) against PyTorch (``fnacli.parity``): raw outputs
    (a detector's from its raw graph, exported the same way), then detections; a detection
    check that compared zero boxes is repeated at ``RECHECK_THRESH``."""
    parity = Parity()
    if not isinstance(module, DetectorPost):
        compare_raw(float64_runner(module), torch_runner(module), runner, images, parity)
        return parity
    raw = DetectorRaw(module.det).eval()
    raw_runner = runner_of(serialise(raw, example, fmt, opset), fmt, threads)
    compare_raw(float64_runner(raw), torch_runner(raw), raw_runner, images, parity)
    compare_detections(torch_runner(module), runner, images, parity, Cuts.of(module.det),
                       parity.raw_max_abs)
    if sum(parity.detections) == 0 and parity.score_thresh and \
            parity.score_thresh > RECHECK_THRESH:
        det, thresh = module.det, module.det.score_thresh
        det.score_thresh = RECHECK_THRESH
        try:
            low = DetectorPost(det).eval()
            again = Parity()
            compare_detections(torch_runner(low), runner_of(serialise(low, example, fmt, opset),
                                                            fmt, threads),
                               images, again, Cuts.of(det), parity.raw_max_abs)
        finally:
            det.score_thresh = thresh
        parity.recheck = {"score_thresh": RECHECK_THRESH, "boxes": sum(again.detections),
                          "same": again.detections_same, "excused": again.excused}
        parity.problems += [f"at score threshold {RECHECK_THRESH:g}: {x}"
                            for x in again.problems]
    return parity
