"""BatchNorm recalibration of one supernet path (DetNAS).

A supernet trained with uniform single-path sampling has BN running statistics averaged
over all the paths it visited, which fit no single path. Before a candidate is scored, every
BN layer's statistics are reset and recomputed on a fixed subset of training images, in
train mode without gradients, as the plain average over its batches (``momentum=None``,
PyTorch's cumulative moving average). The reset makes the result depend only on the weights,
the path and the images, never on the candidate evaluated before.

This module supplies what is specific to a detector around a supernet: the forward that
reaches every BN layer (backbone, neck and head, without losses, anchors or post-processing),
the fixed image subset, and a recalibration that touches only the BN layers the path runs
(``fnacli.train.recalibrate_bn`` resets and re-modes every module of the model; a supernet has
thousands, most of them candidates the path does not use, and walking them was a large part
of a candidate's scoring time). The others keep whatever statistics they had: no forward of
this path reads them, and the next path that uses one resets it first.

``DecodedDataset`` holds a fixed subset decoded once (every candidate is scored on the same
images, so decoding them per candidate is pure overhead); several calibration draws
(``calibration_draws``, ``search --calib-draws``) share the images they have in common.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torchvision.transforms.v2.functional as TF
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, Dataset

from fnacli.cost.count import is_detector
from fnacli.detection.data import CocoDetection, collate
from fnacli.errors import UserError
from fnacli.nn.supernet import Path, Supernet


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
    return calibration_draws(dataset, images, seed, 1)[0]


def calibration_draws(dataset: CocoDetection, images: int, seed: int = 0, draws: int = 1
                      ) -> list[CocoDetection]:
    """``draws`` seeded choices of ``images`` images of ``dataset`` (each all of it when it has
    fewer): successive permutations of one generator seeded ``seed``, so the first draw is
    :func:`calibration_subset`'s and the others differ from it (and from each other)."""
    if images < 1:
        raise UserError(f"--calib-images: expected at least 1, got {images}")
    if draws < 1:
        raise UserError(f"--calib-draws: expected at least 1, got {draws}")
    n = len(dataset)
    if images >= n:
        return [dataset] * draws
    g = torch.Generator().manual_seed(seed)
    return [dataset.subset(sorted(torch.randperm(n, generator=g)[:images].tolist()))
            for _ in range(draws)]


def calibration_batches(subset: CocoDetection, batch_size: int, workers: int = 0
                        ) -> Iterable[Any]:
    """The subset in a fixed order and fixed batches (the same for every candidate)."""
    return DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      collate_fn=collate)


def outside_batchnorms(model: nn.Module, supernet: Supernet) -> list[_BatchNorm]:
    """The BN layers of ``model`` outside ``supernet`` (a detector's neck and head)."""
    inside = {id(m) for m in supernet.modules()}
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and id(m) not in inside]


def path_batchnorms(model: nn.Module, supernet: Supernet, path: Path,
                    outside: list[_BatchNorm] | None = None) -> list[_BatchNorm]:
    """The BN layers a forward of ``path`` uses: every BN of ``model`` outside the supernet
    (``outside``, when already known), and those of the supernet's stem, the path's
    candidates and its head."""
    if outside is None:
        outside = [] if model is supernet else outside_batchnorms(model, supernet)
    bns = list(outside)
    for mod in supernet.path_modules(path):
        bns += [m for m in mod.modules() if isinstance(m, _BatchNorm)]
    return bns


def recalibrate_path(model: nn.Module, supernet: Supernet, path: Path, batches: Iterable[Any],
                     device: torch.device | str, outside: list[_BatchNorm] | None = None
                     ) -> int:
    """Select ``path`` in ``supernet`` (the backbone of ``model``) and recompute the
    statistics of every BN layer the path uses (``path_batchnorms``) on ``batches``: reset,
    then the plain average over the batches. Only those layers are put in train mode for it
    (no other module of the detector's stats forward depends on the mode). Leaves ``model`` in
    eval mode; returns the number of batches used. ``outside``: ``outside_batchnorms`` of
    ``model``, when the caller keeps it."""
    bns = path_batchnorms(model, supernet, path, outside)
    supernet.set_path(path)
    if model.training:
        model.eval()
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
        m.training = True
    forward, n = stats_forward(device), 0
    try:
        with torch.no_grad():
            for batch in batches:
                forward(model, batch)
                n += 1
    finally:
        for m, mom in zip(bns, momenta, strict=True):
            m.momentum = mom
            m.training = False
    if n == 0:
        raise UserError("BN recalibration got no images (the calibration subset is empty)")
    return n


class DecodedDataset(Dataset):
    """A dataset's items decoded once and kept in memory: the same items, in the same order,
    without reading or decoding an image again (uint8 where the dataset only converts to
    float, so the same float images come back at a quarter of the memory). Every other
    attribute (``coco``, ``ids``, ``category_of``, …) is the dataset's."""

    def __init__(self, dataset: Any, workers: int = 0, shared: dict | None = None) -> None:
        self.dataset = dataset
        self.as_uint8 = getattr(dataset, "transform", "?") is None
        if shared is None:
            self.items = self._decode(dataset, workers)
            return
        # several subsets of one split (BN-calibration draws): an image decoded once, by id
        ids = list(dataset.ids)
        missing = [p for p, i in enumerate(ids) if i not in shared]
        if missing:
            part = dataset if len(missing) == len(ids) else dataset.subset(missing)
            shared.update(zip([ids[p] for p in missing], self._decode(part, workers),
                              strict=True))
        self.items = [shared[i] for i in ids]

    def _decode(self, dataset: Any, workers: int) -> list:
        loader = DataLoader(dataset, batch_size=None, num_workers=workers)
        return [((im * 255).round_().to(torch.uint8) if self.as_uint8 else im, target)
                for im, target in loader]  # exact: the dataset made them as uint8 / 255

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        image, target = self.items[i]
        if self.as_uint8:
            image = TF.to_dtype(image, torch.float32, scale=True)
        return image, target

    def __getattr__(self, name: str) -> Any:
        if name in ("dataset", "items", "as_uint8"):  # not set yet (unpickling)
            raise AttributeError(name)
        return getattr(self.dataset, name)


def decoded_bytes(*datasets: Any) -> float:
    """Bytes of COCO-layout datasets' images decoded to uint8 RGB (from the annotation's
    sizes), each image of several subsets of one split counted once; infinite for a dataset
    that does not say (it is then never held in memory)."""
    total, seen = 0.0, set()
    for dataset in datasets:
        coco = getattr(dataset, "coco", None)
        if coco is None:
            return math.inf
        new = [i for i in dataset.ids if (id(coco), i) not in seen]
        seen.update((id(coco), i) for i in new)
        total += float(sum(3 * coco.imgs[i]["width"] * coco.imgs[i]["height"] for i in new))
    return total
