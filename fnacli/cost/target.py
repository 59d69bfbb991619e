"""What a cost is counted for: a downstream task (an object, handed over by the caller), the
backbone alone (``"none"``) or MobileNetV2's ImageNet classifier (``"classifier"``).

The cost package never looks a task up by name: callers above it (steps, the search) resolve
``--task`` with ``fnacli.tasks.get_task`` and hand the object over; a table read from a file
is checked against the object it is read for.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from fnacli.errors import UserError

PLAIN = ("none", "classifier")  # counted without a task
CLASSIFIER_CLASSES = 1000


class Piece(Protocol):
    """A named piece of a task's network beyond the backbone (``fnacli.tasks.base.HeadPiece``)."""

    name: str
    part: str
    modules: tuple[str, ...]
    reads: int | None


class TaskParts(Protocol):
    """What the cost package reads of a task (``fnacli.tasks.base.Task`` has it all)."""

    name: str
    uses_head_conv: ClassVar[bool]
    output_stride: ClassVar[int | None]
    default_classes: ClassVar[int]
    default_size: ClassVar[tuple[int, int]]
    head_pieces: ClassVar[tuple[Piece, ...]]

    def head_inputs(self, spec: Any) -> tuple[str, ...]: ...

    def core_of(self, model: Any) -> tuple[Any, dict[str, tuple[str, ...]]]: ...

    def build_model(self, spec: Any, num_classes: int, size: tuple[int, int],
                    backbone: Any = None, **kwargs: Any) -> Any: ...


Target = str | TaskParts  # a task object, or one of PLAIN


def task_of(target: Target) -> TaskParts | None:
    """The task object of ``target``; None for the backbone alone and the classifier."""
    if isinstance(target, str):
        if target in PLAIN:
            return None
        raise UserError(f"unknown cost target {target!r}: expected a task (fnacli.tasks."
                        f"get_task) or one of {', '.join(PLAIN)}")
    return target


def target_name(target: Target) -> str:
    return target if isinstance(target, str) else target.name


def default_classes(target: Target) -> int:
    task = task_of(target)
    if task is not None:
        return task.default_classes
    return CLASSIFIER_CLASSES if target == "classifier" else 80
