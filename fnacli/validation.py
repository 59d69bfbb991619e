"""Checks of option values that the parser accepts but the run could not survive.

Called by the training commands before any data is read or model built, so that a value
that would only fail after minutes (or hours) of work is refused at once, with a reason.
"""

from __future__ import annotations

import math

from fnacli.errors import UserError

# No recipe in the papers goes above 0.2 (SSDLite's RMSProp per 512 images); 100 leaves room
# for any scaling while refusing values whose updates overflow float32 at the first step.
MAX_LR = 100.0


def check_lr(value: float | None, flag: str = "--lr") -> None:
    if value is None:
        return
    if not math.isfinite(value) or value < 0:
        raise UserError(f"{flag}: expected a finite number ≥ 0, got {value}")
    if value > MAX_LR:
        raise UserError(f"{flag}: {value:g} is far beyond any usable learning rate (at most "
                        f"{MAX_LR:g}; the papers' recipes use 0.05-0.2)")


def check_bn_batch(task: object, batch: int, world: int, freeze_bn: bool = False,
                   freeze_flag: bool = True) -> None:
    """A training step of ``task`` (its ``min_train_batch``: SSDLite's extra layers end on
    1×1 maps, where training BatchNorm needs two values per channel) needs that many images
    per process. Frozen BN (running statistics) works with one."""
    need = getattr(task, "min_train_batch", 1)
    name = getattr(task, "name", str(task))
    per_process = batch // max(world, 1)
    if per_process < need and not freeze_bn:
        how = " or --freeze-bn" if freeze_flag else ""
        raise UserError(f"--batch-size {batch}: {name}'s BatchNorm layers on 1x1 maps need at "
                        f"least {need} images per process ({world} process"
                        f"{'es' if world > 1 else ''}); use a larger --batch-size{how}")


def check_finite(value: float | None, flag: str) -> None:
    if value is not None and not math.isfinite(value):
        raise UserError(f"{flag}: expected a finite number, got {value}")
