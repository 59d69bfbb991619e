"""Segmentation augmentation from ``torchvision.transforms.v2`` (image + ``tv_tensors.Mask``).

Policies (FNA §4.1):
- ``search``: images rescaled by 0.5 (Cityscapes' 1024x2048 -> 512x1024), random crops of the
  input size (321x321 in the paper);
- ``finetune``: images rescaled by a random factor of 0.75-2.0 in steps of 0.25, random crops
  of the input size (769x769), random horizontal flip;
- ``none``: random crops only.
Crops larger than the image are padded: the image with the mean pixel, the mask with 255
(ignored). Masks are resized with nearest neighbours (v2 does this for ``Mask``). Images come
out normalised with the ImageNet mean/std the MobileNetV2 seeds were trained with; DeepLabv3
has no normalisation inside it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from fnacli.segmentation.data import IGNORE

AUGMENTS = ("search", "finetune", "none")
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
MEAN_PIXEL = (124, 116, 104)
SEARCH_SCALES = (0.5,)
FINETUNE_SCALES = (0.75, 1.0, 1.25, 1.5, 1.75, 2.0)


class RandomRescale(v2.Transform):
    """Rescale image and mask by one factor drawn uniformly from ``scales``."""

    def __init__(self, scales: Sequence[float]) -> None:
        super().__init__()
        self.scales = tuple(scales)

    def make_params(self, flat_inputs: list) -> dict:
        i = int(torch.randint(len(self.scales), ()))
        h, w = F.get_size(next(x for x in flat_inputs if isinstance(x, tv_tensors.Image)))
        s = self.scales[i]
        return {"size": [max(1, round(h * s)), max(1, round(w * s))]}

    def transform(self, inpt: object, params: dict) -> object:
        if self.scales == (1.0,):
            return inpt
        return self._call_kernel(F.resize, inpt, size=params["size"], antialias=True)


def _normalise() -> list[v2.Transform]:
    return [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
            v2.Normalize(IMAGE_MEAN, IMAGE_STD)]


def train_transform(augment: str, crop: tuple[int, int]) -> v2.Compose:
    """The policy ``augment`` with random crops of ``crop`` = (width, height)."""
    if augment not in AUGMENTS:
        raise ValueError(f"unknown augmentation {augment!r} (expected one of {AUGMENTS})")
    parts: list[v2.Transform] = [v2.ToImage()]
    if augment == "search":
        parts.append(RandomRescale(SEARCH_SCALES))
    elif augment == "finetune":
        parts.append(RandomRescale(FINETUNE_SCALES))
    parts.append(v2.RandomCrop((crop[1], crop[0]), pad_if_needed=True,
                               fill={tv_tensors.Image: MEAN_PIXEL, tv_tensors.Mask: IGNORE}))
    if augment == "finetune":
        parts.append(v2.RandomHorizontalFlip(0.5))
    return v2.Compose(parts + _normalise())


def eval_transform() -> v2.Compose:
    """Whole images at full resolution, normalised."""
    return v2.Compose([v2.ToImage(), *_normalise()])
