"""`fnacli eval FINAL --data DIR [--split val] [--json]`: COCO bbox metrics of a detector
(``fnacli.pipeline.evaluate``)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from fnacli.cli import common as c
from fnacli.cli.app import app


@app.command("eval", cls=c.PanelCommand)
def eval_(
    final: Path = typer.Argument(..., metavar="FINAL",
                                 help="Detector checkpoint (from 'fnacli finetune')."),
    data: Path | None = c.data_opt(),
    split: str = typer.Option("val", "--split", help="Which split of --data (val, train, …).",
                              rich_help_panel=c.DATA),
    ann: Path | None = c.ann_opt("val", "Annotation file of the split (instead of --data)."),
    images: Path | None = c.images_opt("val", "Image folder for --val-ann."),
    ann_alias: Path | None = c.hidden_opt("--ann"),
    images_alias: Path | None = c.hidden_opt("--images"),
    as_json: bool = c.json_opt("Print the 12 COCO numbers (named) as JSON on stdout."),
    per_class: bool = typer.Option(False, "--per-class", help="Also AP per category."),
    detections: Path | None = typer.Option(None, "--detections", metavar="OUT.json",
                                           help="Write the detections (COCO results JSON); "
                                                "'-' for stdout."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    workers: int = c.workers_opt(),
    threads: int = c.threads_opt(),
    device: c.Device = c.device_opt(),
    force: bool = c.force_opt("Overwrite --detections."),
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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    from fnacli.pipeline.evaluate import EvaluateConfig, evaluate
    from fnacli.tasks import get_task

    c.setup_logging()
    with Progress(TextColumn(f"eval {split}"), BarColumn(), MofNCompleteColumn(),
                  console=c.err_console, transient=True,
                  disable=not c.err_console.is_terminal) as bar:  # no bar in a log file
        job = bar.add_task("", total=None)
        r = evaluate(EvaluateConfig(
            final, data, split, ann or ann_alias, images or images_alias, per_class, batch_size,
            workers, threads, device.value, detections is not None,
            on_progress=lambda n: bar.update(job, advance=n),
            on_start=lambda total: bar.update(job, total=total)))

    extra = f", {len(r.detections)} detections" if r.detections else ""
    table = Table(title=f"{final.name} on {Path(r.ann).name} ({r.images} images{extra})")
    for col, just in (("metric", "left"), ("name", "left"), ("value", "right")):
        table.add_column(col, justify=just)
    labels = get_task(r.task).metric_labels
    for name, v in r.stats.items():
        table.add_row(labels.get(name, name), name, f"{v:.4f}")
    c.err_console.print(table)
    if r.per_class is not None:
        what = r.per_class_metric
        pc = Table(title=f"{what} per category")
        pc.add_column("category")
        pc.add_column(what, justify="right")
        for cname, v in r.per_class.items():
            pc.add_row(cname, "–" if v != v else f"{v:.4f}")  # NaN: absent from the split
        c.err_console.print(pc)
    if detections is not None:
        write_output(str(detections), json.dumps(r.detections), force)
        if str(detections) != "-":
            c.err_console.print(f"detections -> {detections}")
    if as_json:
        c.print_result(json.dumps(r.to_dict()))
