"""`fnacli export FINAL -o model.onnx`: the fine-tuned model as ONNX or TorchScript, checked
against PyTorch (raw outputs and detections) and timed beside PyTorch eager."""

from __future__ import annotations

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
    precision: str = o("precision"),
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
    c.show(result.report())
    if as_json:
        c.print_json(result.to_dict())
    if result.failure:
        c.err_console.print(f"fnacli: error: {result.failure}", markup=False)
        raise typer.Exit(1)
