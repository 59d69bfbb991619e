"""What box-detection tasks share: COCO-layout data, torchvision-style detectors (a list of
images and a list of targets in, a loss dict out in train mode), COCOeval's bbox metric and
the ``fnacli.detection.transforms`` augmentation policies."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from fnacli.tasks.base import Task

if TYPE_CHECKING:
    import torch
    from torch import nn

COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
COCO_LABELS = ("AP @[IoU=0.50:0.95]", "AP @[IoU=0.50]", "AP @[IoU=0.75]", "AP small",
               "AP medium", "AP large", "AR maxDets=1", "AR maxDets=10", "AR maxDets=100",
               "AR small", "AR medium", "AR large")


class DetectionTask(Task):
    kind = "detection"
    metric = "AP"
    metric_names = COCO_STATS
    epoch_metrics = ("AP", "AP50", "AP75")
    metric_labels = dict(zip(COCO_STATS, COCO_LABELS, strict=True))
    # What to add to a 0-based category index to get the model's label (SSD reserves 0 for
    # background; a sigmoid classifier has no background column).
    label_offset: ClassVar[int] = 0

    @property
    def augments(self) -> tuple[str, ...]:  # type: ignore[override]
        from fnacli.detection.transforms import AUGMENTS

        return AUGMENTS

    def backbone_of(self, model: nn.Module) -> nn.Module:
        return model.backbone.body

    def find_split(self, data: str | Path | None, split: str, ann: str | Path | None = None,
                   images: str | Path | None = None) -> Any:
        from fnacli.detection.data import find_split

        return find_split(data, split, ann, images)

    def load_split(self, files: Any, *, train: bool, transform: Callable | None = None,
                   seed: int = 0) -> Any:
        from fnacli.detection.data import load_split

        return load_split(files, train=train, label_offset=self.label_offset,
                          transform=transform, seed=seed)

    def train_transform(self, augment: str | None = None,
                        size: tuple[int, int] | None = None) -> Callable:
        from fnacli.detection.transforms import train_transform

        return train_transform(augment or self.default_augment)

    def eval_transform(self) -> Callable:
        from fnacli.detection.transforms import eval_transform

        return eval_transform()

    def collate(self, batch: list) -> Any:
        from fnacli.detection.data import collate

        return collate(batch)

    def batch_to(self, batch: Any, device: torch.device | str) -> tuple:
        from fnacli.detection.data import batch_to

        return batch_to(batch, device)

    def check_categories(self, a: list[dict], b: list[dict], what_a: str, what_b: str) -> None:
        from fnacli.detection.data import check_same_categories

        check_same_categories(a, b, what_a, what_b)

    def evaluate(self, model: nn.Module, dataset: Any, *, batch_size: int = 8, workers: int = 0,
                 device: torch.device | str = "cpu", per_class: bool = False,
                 progress: Callable[[int], None] | None = None) -> Any:
        from fnacli.detection.evaluate import evaluate

        return evaluate(model, dataset, batch_size=batch_size, workers=workers, device=device,
                        per_class=per_class, progress=progress)

    def cost_core(self, model: nn.Module) -> tuple[nn.Module, dict[str, tuple[str, ...]]]:
        from fnacli.cost.count import DetectorCore

        return DetectorCore(model), {"backbone": ("backbone.body",), "neck": ("backbone",),
                                     "head": ("head",)}
