"""Task model checkpoints: kind ``detector`` (detection tasks) or ``segmenter``
(segmentation tasks) safetensors on top of ``fnacli.checkpoint``.

Tensors are the detector's state dict; metadata carries what rebuilds it exactly:
``spec``, ``task``, ``num_classes``, ``size`` ([width, height]) and ``categories`` (the
training data's [{id, name}] in label order, so evaluation maps labels back to the same
COCO category ids). Loading rebuilds with the task's ``build_model`` and loads strictly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from fnacli.checkpoint import Checkpoint, read_checkpoint, save_checkpoint
from fnacli.errors import UserError
from fnacli.settings import MAX_SIDE
from fnacli.spec import ArchSpec

BODY_PREFIX = "backbone.body."
MODEL_KINDS = ("detector", "segmenter")


def model_kind(task: str) -> str:
    """The checkpoint kind of a task's fine-tuned model."""
    from fnacli.tasks import get_task

    return "segmenter" if get_task(task, "task").kind == "segmentation" else "detector"


@dataclass
class DetectorInfo:
    spec: ArchSpec
    task: str
    num_classes: int
    size: tuple[int, int]  # (width, height)
    categories: list[dict]  # [{id, name}] in label order
    extra: dict = field(default_factory=dict)  # e.g. how it was trained

    def meta(self) -> dict:
        return {"spec": self.spec.to_dict(), "task": self.task, "num_classes": self.num_classes,
                "size": list(self.size), "categories": self.categories, **self.extra}


def build(info: DetectorInfo) -> nn.Module:
    """The task's model (``fnacli.tasks``) that the metadata describes, freshly initialised."""
    from fnacli.tasks import get_task

    if info.num_classes < 1:
        raise UserError(f"num_classes must be at least 1, got {info.num_classes}")
    return get_task(info.task, "task").build_model(info.spec, info.num_classes, info.size)


def save_detector(path: str | Path, model: nn.Module, info: DetectorInfo,
                  force: bool = False) -> None:
    save_checkpoint(path, dict(model.state_dict()), model_kind(info.task), info.meta(),
                    force=force)


def detector_info(ckpt: Checkpoint, path: str | Path) -> DetectorInfo:
    meta = ckpt.meta
    missing = [k for k in ("task", "num_classes", "size", "categories") if k not in meta]
    if ckpt.spec is None or missing:
        raise UserError(f"{path}: detector checkpoint without {missing[0] if missing else 'spec'}"
                        " in its metadata")
    size = meta["size"]
    cats = meta["categories"]
    if (not isinstance(size, list) or len(size) != 2
            or not all(isinstance(v, int) and v > 0 for v in size)):
        raise UserError(f"{path}: metadata size must be [width, height], got {size!r}")
    if max(size) > MAX_SIDE:
        raise UserError(f"{path}: metadata size {size[0]}x{size[1]} is more than fnacli builds "
                        f"(sides of at most {MAX_SIDE} pixels); a damaged or edited checkpoint")
    if not isinstance(cats, list) or len(cats) != meta["num_classes"]:
        raise UserError(f"{path}: metadata categories do not match num_classes "
                        f"{meta['num_classes']}")
    extra = {k: v for k, v in meta.items()
             if k not in ("spec", "task", "num_classes", "size", "categories")}
    return DetectorInfo(ckpt.spec, meta["task"], int(meta["num_classes"]), (size[0], size[1]),
                        cats, extra)


def model_of(ckpt: Checkpoint, path: str | Path) -> nn.Module | None:
    """The model a detector or segmenter checkpoint describes (None for other kinds)."""
    return build(detector_info(ckpt, path)) if ckpt.kind in MODEL_KINDS else None


def read_model_checkpoint(path: str | Path) -> Checkpoint:
    """``read_checkpoint``, with a detector's or segmenter's tensor names and shapes checked
    from the file's header before any tensor is read (a backbone's always are)."""
    return read_checkpoint(path, model_of)


def load_detector(path: str | Path) -> tuple[nn.Module, DetectorInfo]:
    """Rebuild and load a detector checkpoint (strictly); UserError for anything else."""
    ckpt = read_model_checkpoint(path)
    if ckpt.kind not in MODEL_KINDS:
        raise UserError(f"{path}: a {ckpt.kind} checkpoint; expected a detector or segmenter "
                        "(from 'fnacli finetune')")
    info = detector_info(ckpt, path)
    model = build(info)
    load_state_strict(model, ckpt.tensors, path)
    return model, info


def load_backbone_into(model: nn.Module, tensors: dict, path: str | Path,
                       body: nn.Module | None = None) -> int:
    """Load a backbone checkpoint's tensors strictly into ``body``, the backbone inside
    ``model`` (default ``model.backbone.body``; ``Task.backbone_of`` gives it).

    RetinaNet's body has no 1x1 head conv; the backbone's ``head.*`` tensors are left out
    there. Returns how many tensors were dropped that way.
    """
    body = model.backbone.body if body is None else body
    has_head = getattr(body, "head", None) is not None
    state = {k: v for k, v in tensors.items() if has_head or not k.startswith("head.")}
    load_state_strict(body, state, path)
    return len(tensors) - len(state)


def load_state_strict(module: nn.Module, state: dict, path: str | Path) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if "\n" in str(e) else str(e)
        raise UserError(f"{path}: tensors do not fit the network its metadata describes "
                        f"({first[:200]})") from None
