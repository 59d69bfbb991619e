"""`fnacli export FINAL -o model.onnx`: the fine-tuned model as ONNX or TorchScript, checked
against PyTorch (raw outputs and detections) and timed beside PyTorch eager."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from fnacli.cli import common as c
from fnacli.cli.app import app
from fnacli.pipeline.export import ExportConfig

o = c.options_of(ExportConfig)


@app.command("export")
def export(
    final: Path = c.argument(ExportConfig, "final"),
    output: Path = o("output"),
    fmt: str = o("fmt"),
    size: str = o("size"),
    raw: bool = o("raw"),
    score_thresh: float = o("score_thresh"),
    opset: int = o("opset"),
    no_check: bool = typer.Option(False, "--no-check",
                                  help="Skip the parity check against PyTorch."),
    data: Path = o("data"),
    samples: int = o("samples"),
    threads: int = o("threads"),
    no_latency: bool = typer.Option(False, "--no-latency",
                                    help="Skip timing the exported model against PyTorch."),
    force: bool = o("force"),
    as_json: bool = c.opt("--json", "A JSON summary on stdout."),
) -> None:
    """Export the whole detector at one input size (images in [0, 1], RGB, already resized),
    with its post-processing or raw; by default check it against PyTorch and time it."""
    options = dict(locals())
    from fnacli.pipeline.export import export as run

    result = run(c.config(ExportConfig, options, ("as_json", "no_check", "no_latency"),
                          check=not no_check, measure=not no_latency, progress=True))
    wh = result.size
    what = "detections after NMS" if result.postprocess else "raw outputs"
    c.err_console.print(f"{output}: {result.task} at {wh[0]}x{wh[1]}, {what} "
                      f"({', '.join(result.outputs)})"
                      + (f", ONNX opset {opset}" if fmt == "onnx" else ", TorchScript (traced)"))
    p = result.parity
    if p is not None:
        line = (f"parity on {p.images} {'dataset' if data else 'synthetic'} image(s): raw "
                f"outputs max |Δ| {p.raw_max_abs:.2e} (relative {p.raw_max_rel:.2e})")
        if result.postprocess:
            line += (f"; detections the same on {p.detections_same}/{p.images} images "
                     f"({sum(p.detections)} boxes, boxes max |Δ| {p.box_max_abs:.2e} px, "
                     f"scores {p.score_max_abs:.2e})")
        c.err_console.print(line)
    if result.latency_ms:
        c.err_console.print(f"latency at {threads} thread(s), batch 1: " + ", ".join(
            f"{k} {v:.2f} ms" for k, v in result.latency_ms.items()))
    if as_json:
        c.print_result(json.dumps(result.to_dict()))
    if p is not None and not p.ok:
        c.err_console.print(f"fnacli: error: parity check failed: {'; '.join(p.problems)} "
                          f"({output} is kept; --no-check skips the check)")
        raise typer.Exit(1)
    if not as_json:
        c.print_result(str(output))
