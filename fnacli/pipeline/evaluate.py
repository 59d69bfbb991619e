"""Evaluate a fine-tuned model on a split with its task's metric (detection: COCOeval bbox,
12 numbers, -1 meaning the split has no ground truth in that size range; segmentation: mIoU,
aAcc, mAcc from a confusion matrix over the split, whole images or a sliding window as the
checkpoint records)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fnacli.errors import UserError
from fnacli.pipeline.common import (
    THREADS_HELP,
    check_device,
    choose_threads,
    step,
    torch_threads,
)
from fnacli.report import Report, Table
from fnacli.settings import DATA, DEVICE, MAX_THREADS, setting


@dataclass
class EvaluateConfig:
    model: str | Path = setting(help="Detector checkpoint (from 'fnacli finetune').",
                                metavar="FINAL")
    data: str | Path | None = setting(None, api="COCO-layout dataset folder.")
    split: str = setting("val", "Which split of --data (val, train, …).", group=DATA)
    ann: str | Path | None = setting(None, "Annotation file of the split (instead of --data).",
                                     flags=("--val-ann",))
    images: str | Path | None = setting(None, "Image folder for --val-ann.",
                                        flags=("--val-images",))
    per_class: bool = setting(False, "Also AP per category.")
    batch_size: int = setting(8, min=1, api="Images per forward pass.")
    workers: int = setting(2, min=0, api="Data-loading processes.")
    threads: int = setting(0, min=0, max=MAX_THREADS, api=THREADS_HELP)
    device: str = setting("auto", api=DEVICE)
    detections: bool = setting(False, api="Return the detections (COCO results) in "
                               "result.detections.")
    # called with the number of images done after each batch, once ``total`` is known
    on_progress: Callable[[int], None] | None = setting(None, api="Called with the images "
                                                        "just scored.")
    on_start: Callable[[int], None] | None = setting(None, api="Called once with the number "
                                                     "of images.")


@dataclass
class EvaluateResult:
    model: str
    task: str
    ann: str  # the annotation file evaluated on
    images: int
    stats: dict[str, float]  # the task's metric_names
    per_class: dict[str, float] | None = None
    # detection: ``fnacli.detection.evaluate.Detections`` (columns; ``to_list()`` gives the COCO
    # results format); empty for segmentation
    detections: Any = field(default_factory=list, repr=False)
    per_class_metric: str = "AP"  # what per_class holds (segmentation: IoU, None = absent)

    def to_dict(self) -> dict:
        d: dict = dict(self.stats)
        if self.per_class is not None:
            d[f"per_class_{self.per_class_metric}"] = {
                k: (None if v != v else v) for k, v in self.per_class.items()}  # NaN -> null
        return d

    def report(self) -> Report:
        """The metric's numbers (with the task's labels) and, when asked for, the per-class
        table (NaN: the class is absent from the split)."""
        from fnacli.tasks import get_task

        extra = f", {len(self.detections)} detections" if len(self.detections) else ""
        labels = get_task(self.task).metric_labels
        report: Report = [Table(
            f"{Path(self.model).name} on {Path(self.ann).name} ({self.images} images{extra})",
            ("metric", "name", "value"),
            [(labels.get(name, name), name, f"{v:.4f}") for name, v in self.stats.items()],
            right=("value",), centred=True)]
        if self.per_class is not None:
            metric = self.per_class_metric
            report.append(Table(f"{metric} per category", ("category", metric),
                                [(k, "–" if v != v else f"{v:.4f}")
                                 for k, v in self.per_class.items()],
                                right=(metric,), centred=True))
        return report


@step(EvaluateConfig)
def evaluate(cfg: EvaluateConfig) -> EvaluateResult:
    """Score the fine-tuned ``model`` on a split with its task's metric: COCOeval's 12 box
    numbers (detection) or mIoU, aAcc and mAcc (segmentation); ``result.stats``."""
    check_device(cfg.device)
    if cfg.data is None and cfg.ann is None:
        raise UserError("no data to evaluate on: give --data DIR (COCO layout) or --val-ann "
                        "FILE [--val-images DIR]")
    import torch

    from fnacli.model_checkpoint import load_detector
    from fnacli.tasks import get_task

    model, info = load_detector(cfg.model)
    task = get_task(info.task)
    if cfg.detections and task.kind != "detection":
        raise UserError(f"--detections: {cfg.model} is a {task.name} model; it predicts masks, "
                        "not boxes (drop --detections)")
    files = task.find_split(cfg.data, cfg.split, cfg.ann, cfg.images)
    dataset = task.load_split(files, train=False, transform=task.eval_transform())
    task.check_categories(info.categories, dataset.categories(), str(cfg.model), str(files.ann))
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    dev = torch.device("cuda" if cfg.device == "cuda" or (
        cfg.device == "auto" and torch.cuda.is_available()) else "cpu")
    model.to(dev)
    if cfg.on_start:
        cfg.on_start(len(dataset))
    with torch_threads(choose_threads(cfg.threads, cfg.workers)):
        res = task.evaluate(model, dataset, batch_size=cfg.batch_size, workers=cfg.workers,
                            device=dev, per_class=cfg.per_class, progress=cfg.on_progress,
                            **task.inference_options(info.extra))
    return EvaluateResult(str(cfg.model), task.name, str(files.ann), len(dataset), res.stats,
                          res.per_class, getattr(res, "detections", []),
                          task.per_class_metric)
