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

import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fnacli.errors import UserError
from fnacli.report import Report

FORMATS = ("onnx", "torchscript")
DEFAULT_OPSET = 17
RAW_TOL = 1e-4  # max abs difference of raw outputs
BOX_TOL = 1e-3  # pixels
SCORE_TOL = 1e-4


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
def sample_images(size: tuple[int, int], n: int, data: str | Path | None = None,
                  seed: int = 0) -> list[torch.Tensor]:
    """``n`` images (1, 3, H, W) in [0, 1] at ``size`` (width, height): the first of a
    dataset's val split, else synthetic scenes (``fnacli.detection.synthetic``)."""
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    images: list[Image.Image] = []
    if data is not None:
        from fnacli.detection.data import find_split

        files = find_split(data, "val")
        import json

        doc = json.loads(Path(files.ann).read_text())
        for entry in doc.get("images", [])[:n]:
            found = [d / entry["file_name"] for d in files.image_dirs
                     if (d / entry["file_name"]).is_file()]
            if not found:
                raise UserError(f"{files.ann}: image {entry['file_name']} not found")
            images.append(Image.open(found[0]).convert("RGB"))
        if not images:
            raise UserError(f"{files.ann}: no images to check the export on")
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


def export_onnx(module: nn.Module, example: torch.Tensor, path: str | Path, opset: int) -> None:
    """torch.onnx (TorchScript-based); an operator that does not export is a UserError."""
    import io
    import warnings
    from contextlib import redirect_stderr, redirect_stdout

    try:
        with warnings.catch_warnings(), torch.no_grad(), _quiet_fds(), \
                redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), str(path), input_names=["images"],
                              output_names=list(module.output_names), opset_version=opset,
                              dynamo=False, do_constant_folding=True)
    except Exception as e:  # noqa: BLE001 - the exporter's many error types
        raise UserError(f"export: the model does not export to ONNX opset {opset}: "
                        f"{_first_line(e)}") from None


def export_torchscript(module: nn.Module, example: torch.Tensor, path: str | Path) -> None:
    import warnings

    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(module, (example,), check_trace=False)
            traced.save(str(path))
    except Exception as e:  # noqa: BLE001
        raise UserError(f"export: the model does not trace to TorchScript: "
                        f"{_first_line(e)}") from None


Runner = Callable[[torch.Tensor], list[np.ndarray]]


def onnx_runner(path: str | Path, threads: int) -> Runner:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def run(x: torch.Tensor) -> list[np.ndarray]:
        return sess.run(None, {name: x.numpy()})

    return run


def torchscript_runner(path: str | Path) -> Runner:
    mod = torch.jit.load(str(path)).eval()

    def run(x: torch.Tensor) -> list[np.ndarray]:
        with torch.inference_mode():
            return [t.numpy() for t in mod(x)]

    return run


def torch_runner(module: nn.Module) -> Runner:
    def run(x: torch.Tensor) -> list[np.ndarray]:
        with torch.inference_mode():
            return [t.numpy() for t in module(x)]

    return run


# -- parity --------------------------------------------------------------------------------------
@dataclass
class Parity:
    images: int = 0
    raw_max_abs: float = 0.0
    raw_max_rel: float = 0.0
    raw_max_scaled: float = 0.0  # |Δ| / max(1, |output|): what the tolerance applies to
    detections_same: int = 0  # images whose detections match
    detections: list[int] = field(default_factory=list)  # per image, PyTorch's count
    box_max_abs: float = 0.0
    score_max_abs: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"images": self.images, "raw_max_abs": self.raw_max_abs,
                "raw_max_rel": self.raw_max_rel, "detections_same": self.detections_same,
                "detections": self.detections, "box_max_abs": self.box_max_abs,
                "score_max_abs": self.score_max_abs, "ok": self.ok, "problems": self.problems}


def compare_raw(ref: Runner, got: Runner, images: list[torch.Tensor], parity: Parity,
                tol: float = RAW_TOL) -> None:
    for x in images:
        for a, b in zip(ref(x), got(x), strict=True):
            if a.shape != b.shape:
                parity.problems.append(f"raw output shape {b.shape} vs PyTorch's {a.shape}")
                continue
            d = float(np.abs(a.astype(np.float64) - b).max()) if a.size else 0.0
            scale = float(np.abs(a).max()) if a.size else 0.0
            parity.raw_max_abs = max(parity.raw_max_abs, d)
            # outputs larger than 1 (a segmenter's logits) are held to tol relative to their
            # scale: float32 rounding alone grows with the magnitude
            parity.raw_max_scaled = max(parity.raw_max_scaled, d / max(1.0, scale))
            parity.raw_max_rel = max(parity.raw_max_rel, d / scale if scale else 0.0)
    parity.images = len(images)
    if parity.raw_max_scaled > tol:
        parity.problems.append(f"raw outputs differ by up to {parity.raw_max_abs:.3g} "
                               f"(tolerance {tol:g})")


def match_detections(ref: Sequence[np.ndarray], got: Sequence[np.ndarray]
                     ) -> tuple[int, float, float]:
    """(unmatched, worst box |Δ| px, worst score |Δ|) of a one-to-one matching of two sets
    of (boxes, scores, labels): each reference detection, best score first, takes the
    unmatched detection of the same label with the closest box among those whose score is
    within SCORE_TOL (order alone is not enough: equal scores come out of NMS in any
    order)."""
    (b1, s1, l1), (b2, s2, l2) = ref, got
    free = np.ones(len(s2), dtype=bool)
    unmatched, box_worst, score_worst = 0, 0.0, 0.0
    for i in np.argsort(-s1, kind="stable"):
        ok = free & (l2 == l1[i]) & (np.abs(s2 - s1[i]) <= SCORE_TOL)
        if not ok.any():
            unmatched += 1
            continue
        d = np.abs(b2 - b1[i]).max(axis=1)
        d[~ok] = np.inf
        j = int(np.argmin(d))
        if d[j] > BOX_TOL:
            unmatched += 1
            continue
        free[j] = False
        box_worst = max(box_worst, float(d[j]))
        score_worst = max(score_worst, float(abs(s2[j] - s1[i])))
    return unmatched + int(free.sum()), box_worst, score_worst


def compare_detections(ref: Runner, got: Runner, images: list[torch.Tensor], parity: Parity
                       ) -> None:
    """Same detections: as many, matched one to one with the same label, the box within
    BOX_TOL pixels and the score within SCORE_TOL (``match_detections``)."""
    for i, x in enumerate(images):
        r, g = ref(x), got(x)
        parity.detections.append(len(r[1]))
        unmatched, box, score = match_detections(r, g)
        parity.box_max_abs = max(parity.box_max_abs, box)
        parity.score_max_abs = max(parity.score_max_abs, score)
        if unmatched == 0:
            parity.detections_same += 1
        else:
            tied = len(r[1]) - len(np.unique(r[1]))
            why = (f"; {tied} of PyTorch's scores repeat another, and NMS among equal "
                   "scores depends on the order" if tied else "")
            parity.problems.append(f"image {i}: {unmatched} detections without a match "
                                   f"({len(g[1])} exported vs PyTorch's {len(r[1])}{why})")
    parity.images = len(images)


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
            line = (f"parity on {p.images} {self.images_from} image(s): raw outputs max |Δ| "
                    f"{p.raw_max_abs:.2e} (relative {p.raw_max_rel:.2e})")
            if self.postprocess:
                line += (f"; detections the same on {p.detections_same}/{p.images} images "
                         f"({sum(p.detections)} boxes, boxes max |Δ| {p.box_max_abs:.2e} px, "
                         f"scores {p.score_max_abs:.2e})")
            report.append(line)
        if self.latency_ms:
            report.append(f"latency at {self.threads} thread(s), batch 1: " + ", ".join(
                f"{k} {v:.2f} ms" for k, v in self.latency_ms.items()))
        return report

    @property
    def failure(self) -> str | None:
        """Why the parity check failed (the exported file is kept), or None."""
        if self.parity is None or self.parity.ok:
            return None
        return (f"parity check failed: {'; '.join(self.parity.problems)} ({self.path} is kept; "
                "--no-check skips the check)")


def load_model(path: str | Path) -> tuple[nn.Module, dict]:
    """The model of a checkpoint and what it was trained at (``size``, ``task``)."""
    from fnacli.checkpoint import read_checkpoint
    from fnacli.detection.checkpoint import MODEL_KINDS, load_detector

    ckpt = read_checkpoint(path)
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
        _write(module, example, output, fmt, opset)
        runner = (onnx_runner(output, threads) if fmt == "onnx"
                  else torchscript_runner(output))
        parity = None
        if check:
            images = images or [example]
            parity = Parity()
            if postprocess and isinstance(module, DetectorPost):
                raw = DetectorRaw(module.det).eval()
                with tempfile.TemporaryDirectory() as tmp:
                    raw_path = Path(tmp) / f"raw.{'onnx' if fmt == 'onnx' else 'pt'}"
                    _write(raw, example, raw_path, fmt, opset)
                    raw_runner = (onnx_runner(raw_path, threads) if fmt == "onnx"
                                  else torchscript_runner(raw_path))
                    compare_raw(torch_runner(raw), raw_runner, images, parity)
                compare_detections(torch_runner(module), runner, images, parity)
            else:
                compare_raw(torch_runner(module), runner, images, parity)
        latency = None
        if measure:
            name = "onnxruntime" if fmt == "onnx" else "torchscript"
            latency = time_runners({"pytorch": torch_runner(module), name: runner}, example,
                                   threads)
    finally:
        torch.set_num_threads(before)
    return ExportResult(str(output), fmt, opset if fmt == "onnx" else None, size, postprocess,
                        tuple(module.output_names), parity, latency, threads)


def _write(module: nn.Module, example: torch.Tensor, path: str | Path, fmt: str,
           opset: int) -> None:
    from fnacli.io import atomic_path

    with atomic_path(path) as tmp:
        if fmt == "onnx":
            export_onnx(module, example, tmp, opset)
        else:
            export_torchscript(module, example, tmp)
