"""`fnacli data synth OUT_DIR [--task detection|segmentation]`: the built-in synthetic
datasets (COCO-format detection, Cityscapes-layout segmentation)."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import typer

from fnacli.cli.app import app
from fnacli.cli.common import err_console, print_result

data_app = typer.Typer(help="Datasets: generate the built-in synthetic data (COCO-format "
                            "detection, Cityscapes-layout segmentation).",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")


class SynthTask(StrEnum):
    detection = "detection"
    segmentation = "segmentation"


class Variant(StrEnum):
    shapes = "shapes"
    context = "context"


class ImageFormat(StrEnum):
    jpg = "jpg"
    png = "png"


@data_app.command("synth")
def synth(
    out_dir: Path = typer.Argument(..., metavar="OUT_DIR",
                                   help="Folder to write (detection: COCO layout, annotations/, "
                                        "train/, val/; segmentation: Cityscapes layout, "
                                        "leftImg8bit/ and gtFine/)."),
    kind: SynthTask = typer.Option(SynthTask.detection, "--task",
                                   help="Which kind of dataset."),
    train: int = typer.Option(512, "--train", help="Training images."),
    val: int = typer.Option(64, "--val", help="Validation images."),
    size: int = typer.Option(320, "--size",
                             help="Detection: image side in pixels (square images); "
                                  "segmentation: image width (height = width / 2)."),
    classes: int = typer.Option(3, "--classes",
                                help="Detection: number of classes, 1..8 (circle, square, "
                                     "triangle, diamond, star, cross, hexagon, ring)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: same seed, same dataset."),
    variant: Variant = typer.Option(
        Variant.shapes, "--variant",
        help="shapes: the class is the shape and its colour; context: every object is a dark "
             "shape of any kind and only the colour of a ring around it, outside its box, "
             "gives the class (a task where the receptive field matters)."),
    fmt: ImageFormat = typer.Option(ImageFormat.jpg, "--format",
                                    help="Detection image file format (segmentation writes "
                                         "PNG, as Cityscapes)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty OUT_DIR, "
                                                      "replacing the dataset there."),
) -> None:
    """Write a small synthetic dataset.

    Detection: coloured shapes on textured backgrounds, one shape (and colour) per class, 1-4
    non-overlapping objects per image, 15-45% of the image side. Segmentation: street-like
    scenes (sky, road, buildings, vegetation, cars, people, and ignored pixels) with
    Cityscapes label ids, in the Cityscapes layout. Deterministic: the same --seed gives the
    same files; --variant context hides a detection class in a coloured
    ring around each object.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    if kind is SynthTask.segmentation:
        _synth_segmentation(out_dir, train, val, size, seed, as_json, force)
        return

    from fnacli.detection.synthetic import SynthConfig, check_config, check_output_dir, generate

    cfg = SynthConfig(train=train, val=val, size=size, classes=classes, seed=seed,
                      fmt=fmt.value, variant=variant.value)
    check_config(cfg)
    check_output_dir(out_dir, force)  # before the progress bar takes stderr
    with Progress(TextColumn("data synth"), BarColumn(), MofNCompleteColumn(),
                  console=err_console, transient=True,
                  disable=not err_console.is_terminal) as bar:  # no bar in a log file
        task = bar.add_task("", total=train + val)
        counts = generate(out_dir, cfg, force=force,
                          progress=lambda n: bar.update(task, advance=n))
    err_console.print(f"synthetic data: {train} train images ({counts['train']} objects), "
                      f"{val} val images ({counts['val']} objects), {classes} classes, "
                      f"{size}x{size}, variant {variant.value} -> {out_dir}")
    if as_json:
        print_result(json.dumps({"output": str(out_dir), "train_images": train,
                                 "val_images": val, "train_objects": counts["train"],
                                 "val_objects": counts["val"], "classes": classes,
                                 "size": size, "seed": seed,
                                 "variant": variant.value}))


def _synth_segmentation(out_dir: Path, train: int, val: int, width: int, seed: int,
                        as_json: bool, force: bool) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from fnacli.segmentation.synthetic import SegSynthConfig, check_config, generate

    cfg = SegSynthConfig(train=train, val=val, width=width, seed=seed)
    check_config(cfg)
    with Progress(TextColumn("data synth"), BarColumn(), MofNCompleteColumn(),
                  console=err_console, transient=True,
                  disable=not err_console.is_terminal) as bar:  # no bar in a log file
        task = bar.add_task("", total=train + val)
        counts = generate(out_dir, cfg, force=force,
                          progress=lambda n: bar.update(task, advance=n))
    err_console.print(f"synthetic segmentation data: {train} train images, {val} val images, "
                      f"{cfg.width}x{cfg.height}, Cityscapes layout -> {out_dir}")
    if as_json:
        print_result(json.dumps({"output": str(out_dir), "task": "segmentation",
                                 "train_images": train, "val_images": val,
                                 "train_labelled_pixels": counts["train"],
                                 "val_labelled_pixels": counts["val"], "width": cfg.width,
                                 "height": cfg.height, "seed": seed}))
