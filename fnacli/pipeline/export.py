"""A fine-tuned model exported as ONNX or TorchScript at one input size, checked against
PyTorch (raw outputs and detections) and timed beside PyTorch eager (``fnacli.export``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fnacli.errors import UserError
from fnacli.pipeline.common import Size, as_size, make_config

if TYPE_CHECKING:
    from fnacli.export import ExportResult

FORMATS = ("onnx", "torchscript")


@dataclass
class ExportConfig:
    final: str | Path  # fine-tuned checkpoint (from finetune)
    output: str | Path  # model.onnx, model.pt
    fmt: str = "onnx"  # onnx | torchscript
    size: Size | None = None  # the exported graph's input [the size trained at]
    raw: bool = False  # raw head outputs instead of post-processed detections
    score_thresh: float | None = None  # [the detector's]
    opset: int = 17
    check: bool = True  # parity check against PyTorch
    data: str | Path | None = None  # check on this dataset's val images [synthetic scenes]
    samples: int = 4
    threads: int = 1
    measure: bool = True  # time the exported model beside PyTorch
    force: bool = False
    progress: bool = False  # a spinner on stderr while exporting


def export(*args: Any, **kwargs: Any) -> ExportResult:
    """Export ``final``'s model to ``output``; ``result.parity.ok`` says whether the check
    passed (the file is kept either way), ``result.task`` is the checkpoint's task."""
    cfg = make_config(ExportConfig, args, kwargs)
    from fnacli.io import check_writable

    if cfg.fmt not in FORMATS:
        raise UserError(f"--format: expected onnx or torchscript, got {cfg.fmt!r}")
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
    images = sample_images(wh, cfg.samples, cfg.data) if cfg.check else None
    status: Any = nullcontext()
    if cfg.progress:
        from rich.console import Console

        status = Console(stderr=True).status(f"exporting {cfg.final} to {cfg.fmt}")
    with status:
        result = export_model(model, cfg.output, fmt=cfg.fmt, size=wh,
                              postprocess=not cfg.raw, opset=cfg.opset, check=cfg.check,
                              images=images, threads=cfg.threads, measure=cfg.measure,
                              score_thresh=cfg.score_thresh)
    result.task = info["task"]
    result.images_from = "synthetic" if cfg.data is None else "dataset"
    return result
