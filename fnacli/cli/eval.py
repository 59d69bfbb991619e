"""`fnacli eval FINAL --data DIR [--split val] [--json]`: COCO bbox metrics of a detector."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from fnacli.cli.app import app
from fnacli.cli.common import err_console, fail, print_result, setup_logging


@app.command("eval")
def eval_(
    final: Path = typer.Argument(..., metavar="FINAL",
                                 help="Detector checkpoint (from 'fnacli finetune')."),
    data: Path | None = typer.Option(None, "--data", metavar="DIR",
                                     help="COCO-layout dataset folder."),
    split: str = typer.Option("val", "--split", help="Which split of --data (val, train, …)."),
    ann: Path | None = typer.Option(None, "--ann", help="Annotation file (instead of --data)."),
    images: Path | None = typer.Option(None, "--images", help="Image folder for --ann."),
    as_json: bool = typer.Option(False, "--json",
                                 help="Print the 12 COCO numbers (named) as JSON on stdout."),
    per_class: bool = typer.Option(False, "--per-class", help="Also AP per category."),
    detections: Path | None = typer.Option(None, "--detections", metavar="OUT.json",
                                           help="Write the detections (COCO results JSON); "
                                                "'-' for stdout."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    workers: int = typer.Option(2, "--workers", min=0, help="Data-loading processes."),
    threads: int = typer.Option(0, "--threads", min=0,
                                help="CPU threads for torch ops (0: torch's default)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    force: bool = typer.Option(False, "--force", help="Overwrite --detections."),
) -> None:
    """Evaluate a detector with COCOeval (bbox): AP, AP50, AP75, APs/m/l, AR1/10/100, ARs/m/l.

    The table goes to stderr; --json puts the numbers on stdout. -1 means the split has no
    ground truth in that size range (COCOeval's convention).
    """
    if device not in ("auto", "cpu", "cuda"):
        fail(f"--device: expected auto, cpu or cuda, got {device!r}")
    if data is None and ann is None:
        fail("no data to evaluate on: give --data DIR (COCO layout) or --ann FILE [--images DIR]")
    if detections is not None and str(detections) == "-" and as_json:
        fail("--detections - and --json both want stdout; write the detections to a file")
    from fnacli.io import check_writable

    if detections is not None and str(detections) != "-":
        check_writable(detections, force)

    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    from fnacli.detection.checkpoint import load_detector
    from fnacli.detection.data import check_same_categories, find_split, load_split
    from fnacli.detection.evaluate import STAT_LABELS, STAT_NAMES, evaluate
    from fnacli.detection.models import label_offset
    from fnacli.detection.transforms import eval_transform
    from fnacli.io import write_output

    setup_logging()
    if threads:
        torch.set_num_threads(threads)
    model, info = load_detector(final)
    files = find_split(data, split, ann, images)
    dataset = load_split(files, train=False, label_offset=label_offset(info.task),
                         transform=eval_transform())
    check_same_categories(info.categories, dataset.categories(), str(final), str(files.ann))
    if device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda: no CUDA device is available")
    dev = torch.device("cuda" if device == "cuda" or (device == "auto"
                                                     and torch.cuda.is_available()) else "cpu")
    model.to(dev)
    with Progress(TextColumn(f"eval {split}"), BarColumn(), MofNCompleteColumn(),
                  console=err_console, transient=True,
                  disable=not err_console.is_terminal) as bar:  # no bar in a log file
        task = bar.add_task("", total=len(dataset))
        result = evaluate(model, dataset, batch_size=batch_size, workers=workers, device=dev,
                          per_class=per_class, progress=lambda n: bar.update(task, advance=n))

    table = Table(title=f"{final.name} on {files.ann.name} ({len(dataset)} images, "
                        f"{len(result.detections)} detections)")
    table.add_column("metric")
    table.add_column("name")
    table.add_column("value", justify="right")
    for name, label in zip(STAT_NAMES, STAT_LABELS, strict=True):
        table.add_row(label, name, f"{result.stats[name]:.4f}")
    err_console.print(table)
    if result.per_class is not None:
        pc = Table(title="AP per category")
        pc.add_column("category")
        pc.add_column("AP", justify="right")
        for cname, ap in result.per_class.items():
            pc.add_row(cname, f"{ap:.4f}")
        err_console.print(pc)
    if detections is not None:
        write_output(str(detections), json.dumps(result.detections), force)
        if str(detections) != "-":
            err_console.print(f"detections -> {detections}")
    if as_json:
        print_result(json.dumps(result.to_dict()))
