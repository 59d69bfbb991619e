"""`fnacli data synth OUT_DIR [--task detection|segmentation]`: the built-in synthetic
datasets (COCO-format detection, Cityscapes-layout segmentation)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from fnacli.cli import common as c
from fnacli.cli.app import app
from fnacli.pipeline.data import SynthDataConfig

data_app = typer.Typer(help="Datasets: generate the built-in synthetic data (COCO-format "
                            "detection, Cityscapes-layout segmentation).",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")


SynthTask = StrEnum("SynthTask", {n: n for n in ("detection", "segmentation")})
Variant = StrEnum("Variant", {n: n for n in ("shapes", "context")})
ImageFormat = StrEnum("ImageFormat", {n: n for n in ("jpg", "png")})
o = c.options_of(SynthDataConfig)


@data_app.command("synth")
def synth(
    out_dir: Path = c.argument(SynthDataConfig, "output"),
    kind: SynthTask = o("task", metavar=None),  # not a task name: its choices
    train: int = o("train"),
    val: int = o("val"),
    size: int = o("size", metavar=None),  # one number
    classes: int = o("classes"),
    seed: int = o("seed"),
    variant: Variant = o("variant"),
    fmt: ImageFormat = o("fmt"),
    height: int | None = o("height"),
    min_objects: int = o("min_objects"),
    max_objects: int = o("max_objects"),
    min_scale: float = o("min_scale"),
    max_scale: float = o("max_scale"),
    as_json: bool = c.opt("--json"),
    force: bool = o("force"),
) -> None:
    """Write a small synthetic dataset.

    Detection: coloured shapes on textured backgrounds, one shape (and colour) per class, 1-4
    non-overlapping objects per image, 15-45% of the image side (--min/--max-objects,
    --min/--max-scale; --classes 80 --height 480 --size 640 --max-objects 15 --max-scale
    0.2 is COCO-like). Segmentation: street-like
    scenes (sky, road, buildings, vegetation, cars, people, and ignored pixels) with
    Cityscapes label ids, in the Cityscapes layout. Deterministic: the same --seed gives the
    same files; --variant context hides a detection class in a coloured
    ring around each object.
    """
    from fnacli.pipeline.data import check, synth

    cfg = SynthDataConfig(out_dir, kind.value, train, val, size, classes, seed, variant.value,
                          fmt.value, force, height=height, min_objects=min_objects,
                          max_objects=max_objects, min_scale=min_scale, max_scale=max_scale)
    check(cfg)  # before the progress bar takes stderr
    with c.progress_bar("data synth", train + val) as update:
        cfg.on_progress = lambda n: update(advance=n)
        r = synth(cfg)
    c.show(r.report())
    if as_json:
        c.print_json(r.to_dict())
