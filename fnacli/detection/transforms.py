"""Training/evaluation augmentation built from ``torchvision.transforms.v2``.

Policies are named after torchvision's detection references:
- ``ssd``: photometric distortion, zoom-out (expand up to 4x, filled with the mean pixel),
  SSD's min-IoU random crop, horizontal flip — the SSD/SSDLite recipe FNA trains with;
- ``ssdlite``: min-IoU random crop + flip (torchvision's lighter ssdlite320 recipe);
- ``flip``: horizontal flip only (RetinaNet; the detector itself resizes);
- ``none``: no augmentation.
Inputs are PIL images with a target dict (``boxes`` as ``tv_tensors.BoundingBoxes``, ``labels``).
Resizing and normalisation are left to the detector (torchvision's transform inside SSD /
RetinaNet), so every policy hands over float images in [0, 1] at their own size.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

AUGMENTS = ("ssd", "ssdlite", "flip", "none")
DEFAULT_AUGMENT = {"ssdlite": "ssd", "retinanet": "flip"}
MEAN_PIXEL = (124, 116, 104)  # ImageNet mean in uint8: SSD's expand fill


def train_transform(augment: str) -> v2.Compose:
    if augment not in AUGMENTS:
        raise ValueError(f"unknown augmentation {augment!r} (expected one of {AUGMENTS})")
    parts: list[v2.Transform] = []
    if augment == "ssd":
        # On the PIL image: torchvision's tensor hue/saturation kernels are ~30x slower on CPU.
        parts.append(v2.RandomPhotometricDistort(p=0.5))
    parts.append(v2.PILToTensor())
    if augment == "ssd":
        parts.append(v2.RandomZoomOut(fill=list(MEAN_PIXEL)))
    if augment in ("ssd", "ssdlite"):
        parts.append(v2.RandomIoUCrop())
    if augment != "none":
        parts.append(v2.RandomHorizontalFlip(0.5))
    # Crops can cut boxes to slivers or drop them: remove those (with their labels).
    parts += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0),
              v2.ToDtype(torch.float32, scale=True)]
    return v2.Compose(parts)


def eval_transform() -> v2.Compose:
    return v2.Compose([v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True)])
