"""BatchNorm recalibration of one supernet path (DetNAS).

A supernet trained with uniform single-path sampling has BN running statistics averaged
over all the paths it visited, which fit no single path. Before a candidate is scored, every
BN layer's statistics are reset and recomputed on a fixed subset of training images, in
train mode without gradients, as the plain average over its batches (``momentum=None``,
PyTorch's cumulative moving average). The reset makes the result depend only on the weights,
the path and the images, never on the candidate evaluated before.

The recalibration itself is ``fnacli.train.recalibrate_bn``; this module supplies what is
specific to a detector around a supernet: the forward that reaches every BN layer (backbone,
neck and head, without losses, anchors or post-processing) and the fixed image subset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from fnacli.cost import is_detector
from fnacli.detection.data import CocoDetection, collate
from fnacli.errors import UserError
from fnacli.nn.supernet import Path, Supernet
from fnacli.train import recalibrate_bn


def stats_forward(device: torch.device | str) -> Callable[[nn.Module, Any], None]:
    """A forward for ``recalibrate_bn`` over (images, targets) batches.

    For a torchvision detector it runs transform -> backbone (+ neck) -> head: every BN layer
    sees the batch, and nothing needs targets. The transform stays in eval mode, so images
    are resized exactly as at evaluation (in train mode it would draw a random size).
    """

    def forward(model: nn.Module, batch: Any) -> None:
        images = [im.to(device, non_blocking=True) for im in batch[0]]
        if is_detector(model):
            model.transform.eval()
            batched, _ = model.transform(images)
            feats = model.backbone(batched.tensors)
            model.head(list(feats.values()))
        else:
            model(torch.stack(images))

    return forward


def calibration_subset(dataset: CocoDetection, images: int, seed: int = 0) -> CocoDetection:
    """A fixed, seeded choice of ``images`` images of ``dataset`` (all when it has fewer)."""
    if images < 1:
        raise UserError(f"--calib-images: expected at least 1, got {images}")
    n = len(dataset)
    if images >= n:
        return dataset
    g = torch.Generator().manual_seed(seed)
    return dataset.subset(sorted(torch.randperm(n, generator=g)[:images].tolist()))


def calibration_batches(subset: CocoDetection, batch_size: int, workers: int = 0
                        ) -> Iterable[Any]:
    """The subset in a fixed order and fixed batches (the same for every candidate)."""
    return DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      collate_fn=collate)


def recalibrate_path(model: nn.Module, supernet: Supernet, path: Path, batches: Iterable[Any],
                     device: torch.device | str) -> int:
    """Select ``path`` in ``supernet`` (the backbone of ``model``) and recompute every BN
    layer's statistics of ``model`` on ``batches``. Leaves ``model`` in eval mode; returns the
    number of batches used."""
    supernet.set_path(path)
    n = recalibrate_bn(model, batches, stats_forward(device))
    if n == 0:
        raise UserError("BN recalibration got no images (the calibration subset is empty)")
    return n
