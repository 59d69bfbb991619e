"""`fnacli export FINAL -o model.onnx`: the fine-tuned model as ONNX or TorchScript, checked
against PyTorch (raw outputs and detections) and timed beside PyTorch eager."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from fnacli.cli import common as c
from fnacli.cli.app import app


@app.command("export")
def export(
    final: Path = typer.Argument(..., metavar="FINAL",
                                 help="Fine-tuned detector checkpoint (from 'fnacli finetune')."),
    output: Path = c.opt("--output", "The exported file (model.onnx, model.pt).", metavar="OUT"),
    fmt: str = typer.Option("onnx", "--format", metavar="onnx|torchscript",
                            help="ONNX (opset --opset, checked in onnxruntime) or a traced "
                                 "TorchScript module."),
    size: str = c.opt("--size", "Input size of the exported graph [the size trained at]."),
    raw: bool = typer.Option(False, "--raw", help="Export the raw head outputs (bbox_regression, "
                             "cls_logits, anchors) instead of boxes/scores/labels after NMS."),
    score_thresh: float = typer.Option(None, "--score-thresh", min=0.0, max=1.0, metavar="P",
                                       help="Score threshold baked into the post-processing [the "
                                            "detector's: ssdlite 0.001, retinanet 0.05]."),
    opset: int = typer.Option(17, "--opset", min=7, metavar="N", help="ONNX opset."),
    no_check: bool = typer.Option(False, "--no-check",
                                  help="Skip the parity check against PyTorch."),
    data: Path = c.opt("--data", "Check on the first images of this dataset's val split [synthetic "
                                 "scenes].", rich_help_panel=None),
    samples: int = typer.Option(4, "--samples", min=1, metavar="N",
                                help="Images for the parity check."),
    threads: int = typer.Option(1, "--threads", min=1, metavar="K",
                                help="CPU threads for the check and the latency figures (the same "
                                     "for PyTorch and the exported model)."),
    no_latency: bool = typer.Option(False, "--no-latency",
                                    help="Skip timing the exported model against PyTorch."),
    force: bool = c.opt("--force", "Overwrite OUT."),
    as_json: bool = c.opt("--json", "A JSON summary on stdout."),
) -> None:
    """Export the whole detector at one input size (images in [0, 1], RGB, already resized),
    with its post-processing or raw; by default check it against PyTorch and time it."""
    options = dict(locals())
    from fnacli.pipeline.export import ExportConfig
    from fnacli.pipeline.export import export as run

    result = run(c.config(ExportConfig, options, ("as_json", "no_check", "no_latency"),
                          check=not no_check, measure=not no_latency, progress=True))
    c.show(result.report())
    if as_json:
        c.print_result(json.dumps(result.to_dict()))
    if result.failure:
        c.err_console.print(f"fnacli: error: {result.failure}", markup=False)
        raise typer.Exit(1)
    if not as_json:
        c.print_result(str(output))
