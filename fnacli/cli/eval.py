"""`fnacli eval FINAL --data DIR [--split val] [--json]`: COCO bbox metrics of a detector
(``fnacli.pipeline.evaluate``)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from fnacli.cli import common as c
from fnacli.cli.app import app
from fnacli.pipeline.evaluate import EvaluateConfig

o = c.options_of(EvaluateConfig)


@app.command("eval", cls=c.PanelCommand)
def eval_(
    final: Path = c.argument(EvaluateConfig, "model"),
    data: Path | None = o("data"),
    split: str = o("split"),
    ann: Path | None = o("ann"),
    images: Path | None = o("images"),
    ann_alias: Path | None = c.hidden_opt("--ann"),
    images_alias: Path | None = c.hidden_opt("--images"),
    as_json: bool = c.opt("--json", "Print the 12 COCO numbers (named) as JSON on stdout."),
    per_class: bool = o("per_class"),
    detections: Path | None = typer.Option(None, "--detections", metavar="OUT.json",
                                           help="Write the detections (COCO results JSON); '-' for "
                                                "stdout."),
    batch_size: int = o("batch_size"),
    workers: int = o("workers"),
    threads: int = o("threads"),
    device: c.Device = o("device"),
    force: bool = c.opt("--force", "Overwrite --detections."),
) -> None:
    """Evaluate a model with its task's metric: detectors with COCOeval (bbox): AP, AP50,
    AP75, APs/m/l, AR1/10/100, ARs/m/l; segmenters with mIoU, pixel accuracy (aAcc) and mean
    class accuracy (mAcc) from a confusion matrix over the split.

    The table goes to stderr; --json puts the numbers on stdout. -1 means the split has no
    ground truth in that size range (COCOeval's convention); a class absent from a
    segmentation split has no IoU (null).
    """
    if detections is not None and str(detections) == "-" and as_json:
        c.fail("--detections - and --json both want stdout; write the detections to a file")
    from fnacli.io import check_writable, write_output

    if detections is not None and str(detections) != "-":
        check_writable(detections, force)
    from fnacli.pipeline.evaluate import evaluate

    c.setup_logging()
    with c.progress_bar(f"eval {split}") as update:
        r = evaluate(EvaluateConfig(
            final, data, split, ann or ann_alias, images or images_alias, per_class, batch_size,
            workers, threads, device.value, detections is not None,
            on_progress=lambda n: update(advance=n), on_start=lambda n: update(total=n)))

    c.show(r.report())
    if detections is not None:
        write_output(str(detections), json.dumps(r.detections.to_list()), force)
        if str(detections) != "-":
            c.err_console.print(f"detections -> {detections}", markup=False)
    if as_json:
        c.print_json(r.to_dict())
