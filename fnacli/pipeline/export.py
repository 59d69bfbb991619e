"""A fine-tuned model exported as ONNX or TorchScript at one input size, checked against
PyTorch (raw outputs and detections) and timed beside PyTorch eager (``fnacli.export``)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fnacli.errors import UserError
from fnacli.pipeline.common import Size, as_size, step
from fnacli.settings import MAX_SAMPLES, MAX_THREADS, setting

if TYPE_CHECKING:
    from fnacli.export import ExportResult

FORMATS = ("onnx", "torchscript")


@dataclass
class ExportConfig:
    final: str | Path = setting(help="Fine-tuned detector checkpoint (from 'fnacli finetune').",
                                metavar="FINAL")
    output: str | Path = setting(help="The exported file (model.onnx, model.pt).", metavar="OUT")
    fmt: str = setting("onnx", "ONNX (opset --opset, checked in onnxruntime) or a traced "
                       "TorchScript module.", flags=("--format",), metavar="onnx|torchscript")
    size: Size | None = setting(None, "Input size of the exported graph [the size trained at].")
    raw: bool = setting(False, "Export the raw head outputs (bbox_regression, cls_logits, "
                        "anchors) instead of boxes/scores/labels after NMS.")
    score_thresh: float | None = setting(None, "Score threshold baked into the post-processing "
                                         "[the detector's: ssdlite 0.001, retinanet 0.05].",
                                         min=0.0, max=1.0, metavar="P")
    opset: int = setting(17, "ONNX opset.", min=7, metavar="N")
    precision: str = setting("fp32", "fp32, or int8: onnxruntime's static quantisation (QDQ, "
                             "calibrated on the check's images), checked against PyTorch "
                             "float32 within quantisation's tolerance (docs/export.md).",
                             metavar="fp32|int8")
    check: bool = setting(True, api="Check parity against PyTorch.")
    data: str | Path | None = setting(None, "Check on the first images of this dataset's val "
                                      "split [synthetic scenes].")
    samples: int = setting(4, "Images for the parity check.", min=1, max=MAX_SAMPLES,
                           metavar="N")
    threads: int = setting(1, "CPU threads for the check and the latency figures (the same for "
                           "PyTorch and the exported model).", min=1, max=MAX_THREADS,
                           metavar="K")
    measure: bool = setting(True, api="Time the exported model beside PyTorch eager.")
    force: bool = setting(False, "Overwrite OUT.")
    progress: bool = setting(False, api="A spinner on stderr while exporting.")


@step(ExportConfig)
def export(cfg: ExportConfig) -> ExportResult:
    """Export ``final``'s model to ``output``; ``result.parity.ok`` says whether the check
    passed (the file is kept either way), ``result.task`` is the checkpoint's task."""
    from fnacli.io import check_writable

    if cfg.fmt not in FORMATS:
        raise UserError(f"--format: expected onnx or torchscript, got {cfg.fmt!r}")
    if cfg.precision not in ("fp32", "int8"):
        raise UserError(f"--precision: expected fp32 or int8, got {cfg.precision!r}")
    if cfg.precision == "int8" and cfg.fmt != "onnx":
        raise UserError("--precision int8: only with --format onnx (onnxruntime quantises it)")
    if str(cfg.output) == "-":
        raise UserError("-o: an exported model is binary and cannot go to stdout; give a "
                        "file name")
    check_writable(cfg.output, cfg.force)
    wh = as_size(cfg.size)
    if cfg.data is not None and not Path(cfg.data).is_dir():
        raise UserError(f"--data {cfg.data}: no such folder")
    if cfg.fmt == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError:
            raise UserError("--format onnx needs the 'export' extra: pip install "
                            "'fnacli[export]'") from None

    from contextlib import nullcontext

    from fnacli.export import export_model, load_model, sample_images

    model, info = load_model(cfg.final)
    wh = wh or info["size"]
    # int8 calibrates its ranges on these images, checked or not
    images = (sample_images(wh, cfg.samples, cfg.data, task=info["task"])
              if cfg.check or cfg.precision == "int8" else None)
    status: Any = nullcontext()
    if cfg.progress:
        from rich.console import Console

        status = Console(stderr=True).status(f"exporting {cfg.final} to {cfg.fmt}")
    with status, warnings.catch_warnings():
        # torch's notice that TorchScript is deprecated (at loading the file back for the
        # check): the export is what was asked for, and the notice is not about this model
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated",
                                FutureWarning)
        common = dict(size=wh, postprocess=not cfg.raw, opset=cfg.opset, check=cfg.check,
                      images=images, threads=cfg.threads, measure=cfg.measure,
                      score_thresh=cfg.score_thresh)
        if cfg.precision == "int8":  # the same export, quantised by onnxruntime
            from fnacli.export_int8 import export_model_int8

            result = export_model_int8(model, cfg.output, **common)
        else:
            result = export_model(model, cfg.output, fmt=cfg.fmt, **common)
    result.task = info["task"]
    result.images_from = "synthetic" if cfg.data is None else "dataset"
    return result
