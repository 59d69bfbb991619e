"""`fnacli data synth OUT_DIR [--task detection|segmentation]`: the built-in synthetic
datasets (COCO-format detection, Cityscapes-layout segmentation)."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import typer

from fnacli.cli import common as c
from fnacli.cli.app import app

data_app = typer.Typer(help="Datasets: generate the built-in synthetic data (COCO-format "
                            "detection, Cityscapes-layout segmentation).",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")


SynthTask = StrEnum("SynthTask", {n: n for n in ("detection", "segmentation")})
Variant = StrEnum("Variant", {n: n for n in ("shapes", "context")})
ImageFormat = StrEnum("ImageFormat", {n: n for n in ("jpg", "png")})


@data_app.command("synth")
def synth(
    out_dir: Path = typer.Argument(..., metavar="OUT_DIR", help="Folder to write (detection: COCO "
                                   "layout, annotations/, train/, val/; segmentation: Cityscapes "
                                   "layout, leftImg8bit/ and gtFine/)."),
    kind: SynthTask = typer.Option(SynthTask.detection, "--task", help="Which kind of dataset."),
    train: int = typer.Option(512, "--train", help="Training images."),
    val: int = typer.Option(64, "--val", help="Validation images."),
    size: int = typer.Option(320, "--size", help="Detection: image side in pixels (square images); "
                             "segmentation: image width (height = width / 2)."),
    classes: int = typer.Option(3, "--classes", help="Detection: number of classes, 1..8 (circle, "
                                "square, triangle, diamond, star, cross, hexagon, ring)."),
    seed: int = c.opt("--seed", "Random seed: same seed, same dataset."),
    variant: Variant = typer.Option(
        Variant.shapes, "--variant",
        help="shapes: the class is the shape and its colour; context: every object is a dark shape "
             "of any kind and only the colour of a ring around it, outside its box, gives the "
             "class (a task where the receptive field matters)."),
    fmt: ImageFormat = typer.Option(ImageFormat.jpg, "--format", help="Detection image file format "
                                    "(segmentation writes PNG, as Cityscapes)."),
    as_json: bool = c.opt("--json"),
    force: bool = c.opt("--force", "Write into a non-empty OUT_DIR, replacing the dataset there."),
) -> None:
    """Write a small synthetic dataset.

    Detection: coloured shapes on textured backgrounds, one shape (and colour) per class, 1-4
    non-overlapping objects per image, 15-45% of the image side. Segmentation: street-like
    scenes (sky, road, buildings, vegetation, cars, people, and ignored pixels) with
    Cityscapes label ids, in the Cityscapes layout. Deterministic: the same --seed gives the
    same files; --variant context hides a detection class in a coloured
    ring around each object.
    """
    from fnacli.pipeline.data import SynthDataConfig, check, synth

    cfg = SynthDataConfig(out_dir, kind.value, train, val, size, classes, seed, variant.value,
                          fmt.value, force)
    check(cfg)  # before the progress bar takes stderr
    with c.progress_bar("data synth", train + val) as update:
        cfg.on_progress = lambda n: update(advance=n)
        r = synth(cfg)
    c.show(r.report())
    if as_json:
        c.print_result(json.dumps(r.to_dict()))
