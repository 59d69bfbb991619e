"""A stand-in for ImageNet pre-training: train torchvision's MobileNetV2 on a synthetic
shape-classification task for a couple of minutes, so the quickstart has a seed whose
features mean something (FNA's point is that remapped seed features beat random ones).

The result is a real torchvision ``mobilenet_v2`` state dict, saved like a user's seed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

# class = (shape, colour): shapes 0 circle, 1 square, 2 triangle, 3 ring; 3 colours each
SHAPES = ("circle", "square", "triangle", "ring")
COLOURS = ((0.9, 0.2, 0.2), (0.2, 0.8, 0.3), (0.25, 0.35, 0.95))
NUM_CLASSES = len(SHAPES) * len(COLOURS)


def _texture(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    """Low-frequency coloured noise: upsampled random grids at two scales."""
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    fine = torch.rand(n, 3, 16, 16, generator=g)
    up = nn.functional.interpolate
    tex = 0.6 * up(coarse, size=size, mode="bilinear", align_corners=False)
    tex = tex + 0.4 * up(fine, size=size, mode="bilinear", align_corners=False)
    return 0.35 + 0.3 * tex


def make_batch(n: int, size: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images (N,3,size,size) in [0,1] with one shape each, and their labels."""
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    shape, colour = labels // len(COLOURS), labels % len(COLOURS)
    img = _texture(n, size, g)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    ys, xs = ys.float()[None], xs.float()[None]
    r = (0.18 + 0.17 * torch.rand(n, generator=g)) * size
    cx = size / 2 + (torch.rand(n, generator=g) - 0.5) * (size - 2 * r)
    cy = size / 2 + (torch.rand(n, generator=g) - 0.5) * (size - 2 * r)
    dx, dy = xs - cx[:, None, None], ys - cy[:, None, None]
    rr = r[:, None, None]
    masks = torch.stack([
        dx ** 2 + dy ** 2 <= rr ** 2,
        (dx.abs() <= rr * 0.85) & (dy.abs() <= rr * 0.85),
        (dy <= rr * 0.8) & (dy >= -rr) & (dx.abs() <= (dy + rr) * 0.6),
        (dx ** 2 + dy ** 2 <= rr ** 2) & (dx ** 2 + dy ** 2 >= (0.55 * rr) ** 2),
    ], 1)  # (n, shapes, H, W)
    mask = masks[torch.arange(n), shape].unsqueeze(1).float()
    rgb = torch.tensor(COLOURS)[colour][:, :, None, None]
    rgb = (rgb + 0.1 * (torch.rand(n, 3, 1, 1, generator=g) - 0.5)).clamp(0, 1)
    return img * (1 - mask) + rgb * mask, labels


# ImageNet statistics: the seed is normalised like a torchvision checkpoint, so downstream
# detectors (torchvision's transforms) feed it what it was trained on.
MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


@dataclass
class PretrainResult:
    steps: int
    seconds: float
    train_loss: float
    val_accuracy: float


def check_settings(width: float, size: int, seconds: float) -> None:
    """Refuse what would fail in torchvision, or train nothing, before any work."""
    from fnacli.errors import UserError

    if not 0.1 <= width <= 2.0:
        raise UserError(f"--width: expected a multiplier between 0.1 and 2.0, got {width}")
    if size < 32:
        raise UserError(f"--size: expected at least 32 pixels, got {size}")
    if not seconds > 0:  # a seed of 0 steps is no seed: refuse rather than write one
        raise UserError(f"--seconds: expected a training budget > 0, got {seconds:g}")


def pretrain(width: float = 0.5, size: int = 64, seconds: float = 120.0, max_steps: int = 10_000,
             batch_size: int = 32, lr: float = 0.05, seed: int = 0,
             on_step: Callable[[int, float, float], None] | None = None,
             ) -> tuple[nn.Module, PretrainResult]:
    """Train ``torchvision.models.mobilenet_v2(width_mult=width)`` for ``seconds`` (or
    ``max_steps``) with SGD + cosine decay; returns the model and its held-out accuracy."""
    from torchvision.models import mobilenet_v2

    check_settings(width, size, seconds)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = mobilenet_v2(width_mult=width, num_classes=NUM_CLASSES)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=4e-5, nesterov=True)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    start, step, loss_val = time.monotonic(), 0, math.nan
    model.train()
    while step < max_steps:
        elapsed = time.monotonic() - start
        if elapsed >= seconds:
            break
        # cosine over whichever budget (time or steps) runs out first
        progress = min(1.0, max(elapsed / seconds, step / max_steps))
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * progress))
        x, y = make_batch(batch_size, size, g)
        loss = loss_fn(model((x - MEAN) / STD), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        loss_val = loss.item()
        if on_step:
            on_step(step, loss_val, elapsed)
    acc = accuracy(model, size, seed + 1)
    return model, PretrainResult(step, time.monotonic() - start, loss_val, acc)


@torch.no_grad()
def accuracy(model: nn.Module, size: int, seed: int, n: int = 512) -> float:
    model.eval()
    x, y = make_batch(n, size, torch.Generator().manual_seed(10_000 + seed))
    return (model((x - MEAN) / STD).argmax(1) == y).float().mean().item()
