"""The task registry: a task name resolves to its :class:`~fnacli.tasks.base.Task` object.

Every module of this package is imported once, on first use; the ones that define a task
register it with :func:`register`. Adding a task is adding one module here (see
``fnacli.tasks.base`` for the interface). Importing this package does not import torch.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from fnacli.errors import UserError
from fnacli.tasks.base import Recipe, SearchDefaults, Task

if TYPE_CHECKING:
    from torch import nn

    from fnacli.spec import ArchSpec

_REGISTRY: dict[str, Task] = {}
_LOADED = False
T = TypeVar("T", bound=type[Task])


def register(cls: T) -> T:
    """Class decorator: make ``cls()`` the task called ``cls.name``."""
    if cls.name in _REGISTRY and type(_REGISTRY[cls.name]) is not cls:
        raise ValueError(f"task {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls()
    return cls


def _load() -> None:
    global _LOADED
    if not _LOADED:
        for mod in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{mod.name}")
        _LOADED = True


def tasks() -> list[Task]:
    """Every registered task, in listing order."""
    _load()
    return sorted(_REGISTRY.values(), key=lambda t: (t.order, t.name))


def task_names(kind: str | None = None) -> tuple[str, ...]:
    return tuple(t.name for t in tasks() if kind is None or t.kind == kind)


def get_task(name: str | Task, what: str = "--task") -> Task:
    """The task called ``name`` (a task object passes through); UserError naming ``what``
    for an unknown one."""
    if isinstance(name, Task):
        return name
    _load()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UserError(f"{what}: expected one of {', '.join(task_names())}, got {name!r}") \
            from None


def lookup(name: str, also: tuple[str, ...] = ()) -> Task | str:
    """The task called ``name``, or ``name`` itself when it is one of ``also`` (names a caller
    accepts besides the tasks, e.g. the cost package's ``none`` and ``classifier``)."""
    return name if name in also else get_task(name)


def is_task(name: object) -> bool:
    _load()
    return isinstance(name, str) and name in _REGISTRY


def metavar(extra: tuple[str, ...] = ()) -> str:
    """``ssdlite|retinanet`` (plus ``extra``) for option help."""
    return "|".join((*task_names(), *extra))


def per_task(what: str | Callable[[Task], object]) -> str:
    """``ssdlite X, retinanet Y`` for an attribute path like ``recipe.epochs`` or a function
    of the task (help texts); tasks of the same value share it (``deeplabv3/deeplabv3plus Z``),
    so a help text does not grow by a copy of the value with every task that reuses it."""
    def get(t: Task) -> object:
        if callable(what):
            return what(t)
        v: object = t
        for part in what.split("."):
            v = getattr(v, part)
        return v

    names: dict[str, list[str]] = {}
    for t in tasks():
        names.setdefault(str(get(t)), []).append(t.name)
    return ", ".join(f"{'/'.join(same)} {value}" for value, same in names.items())


def size_text(size: tuple[int, int]) -> str:
    """(320, 320) -> '320'; (1333, 800) -> '1333x800'."""
    return str(size[0]) if size[0] == size[1] else f"{size[0]}x{size[1]}"


__all__ = ["Recipe", "SearchDefaults", "Task", "get_task", "is_task", "lookup", "metavar",
           "per_task", "register", "size_text", "task_names", "tasks"]


def build_detector(spec: ArchSpec, task: str, num_classes: int = 80,
                   size: tuple[int, int] = (320, 320), backbone: nn.Module | None = None,
                   **kwargs: Any) -> nn.Module:
    """A detection task's network around ``Backbone(spec)`` (or ``backbone``): torchvision's
    SSD (SSDLite) or RetinaNet, built by the task (``Task.build_model``).

    ``num_classes`` counts object classes without background; ``size`` is (width, height):
    SSD resizes to exactly that size, RetinaNet resizes to fit it keeping the aspect ratio.
    ``kwargs`` go to the torchvision class (score_thresh, nms_thresh, ...).
    """
    names = task_names("detection")
    if task not in names:
        raise UserError(f"unknown detection task {task!r} (expected one of {', '.join(names)})")
    if num_classes < 1:
        raise UserError(f"num_classes must be at least 1, got {num_classes}")
    return get_task(task).build_model(spec, num_classes, size, backbone=backbone, **kwargs)
