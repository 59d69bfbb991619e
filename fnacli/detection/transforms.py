"""Training/evaluation augmentation built from ``torchvision.transforms.v2``.

Policies are named after torchvision's detection references:
- ``ssd``: photometric distortion, zoom-out (expand up to 4x, filled with the mean pixel),
  SSD's min-IoU random crop, horizontal flip — the SSD/SSDLite recipe FNA trains with;
- ``ssd-noflip``: ``ssd`` without the flip: FNA's SSDLite search ("the other search settings
  are the same as the RetinaNet experiment", whose search has no random flip);
- ``ssdlite``: min-IoU random crop + flip (torchvision's lighter ssdlite320 recipe);
- ``flip``: horizontal flip only (RetinaNet; the detector itself resizes);
- ``none``: no augmentation.
Inputs are PIL images with a target dict (``boxes`` as ``tv_tensors.BoundingBoxes``, ``labels``).
Resizing and normalisation are left to the detector (torchvision's transform inside SSD /
RetinaNet), so every policy hands over float images in [0, 1] at their own size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torchvision.transforms import v2

MEAN_PIXEL = (124, 116, 104)  # ImageNet mean in uint8: SSD's expand fill


@dataclass(frozen=True)
class Policy:
    """Which steps an augmentation policy applies (in this order)."""

    photometric: bool = False
    zoom_out: bool = False
    iou_crop: bool = False
    flip: bool = False


# Kept torch-free: the CLI lists these names in --help.
POLICIES = {"ssd": Policy(photometric=True, zoom_out=True, iou_crop=True, flip=True),
            "ssd-noflip": Policy(photometric=True, zoom_out=True, iou_crop=True),
            "ssdlite": Policy(iou_crop=True, flip=True), "flip": Policy(flip=True),
            "none": Policy()}
AUGMENTS = tuple(POLICIES)


def train_transform(augment: str) -> v2.Compose:
    if augment not in POLICIES:
        raise ValueError(f"unknown augmentation {augment!r} (expected one of {AUGMENTS})")
    import torch
    from torchvision.transforms import v2

    policy = POLICIES[augment]
    parts: list[v2.Transform] = []
    if policy.photometric:
        # On the PIL image: torchvision's tensor hue/saturation kernels are ~30x slower on CPU.
        parts.append(v2.RandomPhotometricDistort(p=0.5))
    parts.append(v2.PILToTensor())
    if policy.zoom_out:
        parts.append(v2.RandomZoomOut(fill=list(MEAN_PIXEL)))
    if policy.iou_crop:
        parts.append(v2.RandomIoUCrop())
    if policy.flip:
        parts.append(v2.RandomHorizontalFlip(0.5))
    # Crops can cut boxes to slivers or drop them: remove those (with their labels).
    parts += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0),
              v2.ToDtype(torch.float32, scale=True)]
    return v2.Compose(parts)


def eval_transform() -> v2.Compose:
    import torch
    from torchvision.transforms import v2

    return v2.Compose([v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True)])
