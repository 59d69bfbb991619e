"""The built-in synthetic datasets as a step: COCO-format detection scenes
(``fnacli.detection.synthetic``) or Cityscapes-layout street scenes
(``fnacli.segmentation.synthetic``), deterministic for a seed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fnacli.errors import UserError
from fnacli.pipeline.common import step
from fnacli.report import Report
from fnacli.settings import setting

KINDS = ("detection", "segmentation")


@dataclass
class SynthDataConfig:
    output: str | Path = setting(help="Folder to write (detection: COCO layout, annotations/, "
                                 "train/, val/; segmentation: Cityscapes layout, leftImg8bit/ "
                                 "and gtFine/).", metavar="OUT_DIR")
    task: str = setting("detection", "Which kind of dataset.")  # detection | segmentation
    train: int = setting(512, "Training images.")
    val: int = setting(64, "Validation images.")
    size: int = setting(320, "Detection: image width in pixels (and height, unless --height); "
                        "segmentation: image width (height = width / 2).")
    classes: int = setting(3, "Detection: number of classes, 1..80: circle, square, triangle, "
                           "diamond, star, cross, hexagon, ring, then the same shapes in other "
                           "colours (context variant: 1..8).")
    seed: int = setting(0, "Random seed: same seed, same dataset.")
    variant: str = setting("shapes", "shapes: the class is the shape and its colour; context: "
                           "every object is a dark shape of any kind and only the colour of a "
                           "ring around it, outside its box, gives the class (a task where the "
                           "receptive field matters).")
    fmt: str = setting("jpg", "Detection image file format (segmentation writes PNG, as "
                       "Cityscapes).", flags=("--format",))
    force: bool = setting(False, "Write into a non-empty OUT_DIR, replacing the dataset there.")
    height: int | None = setting(None, "Detection: image height in pixels (default: --size, "
                                 "square images).", metavar="PX")
    min_objects: int = setting(1, "Detection: fewest objects per image.", min=1)
    max_objects: int = setting(4, "Detection: most objects per image (fewer when they do not "
                               "fit without overlapping).", min=1)
    min_scale: float = setting(0.15, "Detection: smallest object, as a fraction of the "
                               "image's shorter side.", min=0.01, max=0.9)
    max_scale: float = setting(0.45, "Detection: largest object, as a fraction of the "
                               "image's shorter side.", min=0.01, max=0.9)
    on_progress: Callable[[int], None] | None = setting(None, api="Called with the images "
                                                        "just written.")


@dataclass
class SynthResult:
    output: str
    task: str  # detection | segmentation
    settings: Any = field(repr=False)  # the generator's SynthConfig / SegSynthConfig
    counts: dict[str, int] = field(default_factory=dict)  # per split: objects | labelled pixels

    def to_dict(self) -> dict:
        s, n = self.settings, self.counts
        d: dict[str, Any] = {"output": self.output}
        if self.task == "segmentation":
            d.update(task="segmentation", train_images=s.train, val_images=s.val,
                     train_labelled_pixels=n["train"], val_labelled_pixels=n["val"],
                     width=s.width, height=s.height, seed=s.seed)
        else:
            d.update(train_images=s.train, val_images=s.val, train_objects=n["train"],
                     val_objects=n["val"], classes=s.classes, size=s.size,
                     height=s.shape[1], seed=s.seed, variant=s.variant)
        return d

    def report(self) -> Report:
        s, n = self.settings, self.counts
        if self.task == "segmentation":
            return [f"synthetic segmentation data: {s.train} train images, {s.val} val images, "
                    f"{s.width}x{s.height}, Cityscapes layout -> {self.output}"]
        w, h = s.shape
        return [f"synthetic data: {s.train} train images ({n['train']} objects), {s.val} val "
                f"images ({n['val']} objects), {s.classes} classes, {w}x{h}, variant "
                f"{s.variant} -> {self.output}"]


def check(cfg: SynthDataConfig) -> Any:
    """The generator's settings, checked (and, for detection, the output folder) before any
    work; a caller drawing a progress bar calls this first."""
    if cfg.task == "segmentation":
        from fnacli.segmentation.synthetic import SegSynthConfig, check_config

        settings: Any = SegSynthConfig(train=cfg.train, val=cfg.val, width=cfg.size,
                                       seed=cfg.seed)
        check_config(settings)
        return settings
    if cfg.task != "detection":
        raise UserError(f"--task: expected {' or '.join(KINDS)}, got {cfg.task!r}")
    from fnacli.detection.synthetic import SynthConfig, check_config, check_output_dir

    settings = SynthConfig(train=cfg.train, val=cfg.val, size=cfg.size, classes=cfg.classes,
                           seed=cfg.seed, fmt=cfg.fmt, variant=cfg.variant,
                           height=cfg.height, min_objects=cfg.min_objects,
                           max_objects=cfg.max_objects, min_scale=cfg.min_scale,
                           max_scale=cfg.max_scale)
    check_config(settings)
    check_output_dir(cfg.output, cfg.force)
    return settings


@step(SynthDataConfig)
def synth(cfg: SynthDataConfig) -> SynthResult:
    """Write a synthetic dataset to ``output`` (see the module docstring)."""
    settings = check(cfg)
    if cfg.task == "segmentation":
        from fnacli.segmentation.synthetic import generate
    else:
        from fnacli.detection.synthetic import generate
    counts = generate(Path(cfg.output), settings, force=cfg.force, progress=cfg.on_progress)
    return SynthResult(str(cfg.output), cfg.task, settings, counts)
