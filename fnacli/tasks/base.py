"""The task interface: everything fnacli needs to know about one downstream task.

A task is one module in ``fnacli/tasks/`` defining a subclass of :class:`Task` decorated
with :func:`fnacli.tasks.register`. The rest of fnacli asks the task object (from
``fnacli.tasks.get_task(name)``) and never compares task names, so a new task is ONE new
module and nothing else. Task modules must not import torch at module level (the CLI lists
the registered tasks for ``--help``): import heavy modules inside the methods.

What a task declares (class attributes):

- ``name``, ``kind`` ("detection" or "segmentation"), ``help`` (one line), ``order`` (its
  place in listings and ``--task`` metavars).
- ``metric`` (the primary number, e.g. "AP" or "mIoU") and ``metric_names`` (every number
  :meth:`evaluate` returns; the one-shot search's ``--metric`` must be one of them),
  ``epoch_metrics`` (those fine-tuning logs per evaluation).
- ``uses_head_conv``: whether the model reads the backbone's 1x1 head conv (1280 channels in
  MobileNetV2). SSDLite does, RetinaNet and DeepLabv3 do not; supernets and backbones are
  built with or without it accordingly, and the cost table counts it only then.
- ``default_size`` (training/search input, (width, height)) and ``profile_size`` (the input
  ``madds`` counts at by default: the published MAdds figures' size).
- ``augments`` (names :meth:`train_transform` accepts) and ``default_augment``.
- ``recipe`` (:class:`Recipe`, fine-tuning), ``search_defaults`` (:class:`SearchDefaults`,
  the differentiable search) and ``oneshot_epochs`` (one-shot supernet training).

What a task does (methods; detection tasks inherit most from
``fnacli.tasks.detection.DetectionTask``):

- model: :meth:`build_model` around ``Backbone(spec)`` or a given body (a ``Supernet`` during
  search). The body must expose ``feature_channels`` and return named maps; whatever the
  model adds on top is the task's. :meth:`backbone_of` returns that body inside the model
  (``load_backbone_into`` and the cost split use it).
- data: :meth:`find_split`, :meth:`load_split` (a ``torch`` Dataset with ``num_classes``,
  ``categories()``, ``subset()``, ``files``), :meth:`train_transform`,
  :meth:`eval_transform`, :meth:`collate`, :meth:`batch_to`.
- loss and metric: :meth:`loss` (the model in train mode on one batch -> dict of loss
  tensors) and :meth:`evaluate` (-> an object with ``stats``, a dict of ``metric_names``,
  and ``to_dict()``).
- cost: the cost table (``fnacli.lut``) counts stem, MBConv layers and the head conv itself;
  the task counts its own fixed parts through :meth:`cost_needs`, :meth:`cost_space_needs`,
  :meth:`cost_group`, :meth:`cost_stub_maps`, :meth:`cost_tables`, :meth:`cost_expected`
  and :meth:`cost_core` (see each docstring; ``fnacli.tasks.ssdlite`` is a worked example).

A segmentation task (e.g. DeepLabv3: output stride 16 via dilation, ASPP on the last map,
mIoU from a confusion matrix, Cityscapes-layout data, no anchors or boxes) sets
``kind = "segmentation"``, ``metric = "mIoU"``, builds its own model and data reader and
implements the cost and latency hooks for the ASPP head; nothing outside its module
changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch
    from torch import nn

    from fnacli.cost.lut import Lut
    from fnacli.cost.table import CostTable
    from fnacli.spec import ArchSpec


@dataclass(frozen=True)
class Recipe:
    """A fine-tuning recipe; ``lr`` is for ``base_batch`` images per step and is scaled
    linearly with the batch size actually used."""

    optimizer: str
    lr: float
    base_batch: int
    batch_size: int
    momentum: float
    weight_decay: float
    schedule: str
    milestones: tuple[float, ...]
    warmup_iters: int
    epochs: int
    clip_grad: float | None
    size: tuple[int, int]

    def lr_for(self, batch: int) -> float:
        return self.lr * batch / self.base_batch


# FNA's α/β optimiser for the detection searches (Adam, lr 3e-4, weight decay 1e-3)
ARCH_LR, ARCH_WD = 3e-4, 1e-3


@dataclass(frozen=True)
class SearchDefaults:
    """The differentiable search's recipe: total and weight-only epochs (α/β steps from epoch
    ``warmup_epochs``, counted from 0), weight steps per α/β step, λ, τ and γ of the cost, lr
    milestones (fractions of the run), and the weight steps' optimiser where it is not the
    fine-tuning recipe's (``None``: the recipe's): lr reached after ``warmup_iters`` for
    ``base_batch`` images per step, scaled linearly with the batch. ``augment``: the training
    augmentation during search; ``cost_size``: the input the cost table counts at (None:
    the search's input size)."""

    epochs: int
    warmup_epochs: int
    arch_every: int
    lam: float
    tau: float
    milestones: tuple[float, ...]
    gamma: float = 1.0
    optimizer: str | None = None
    lr: float | None = None
    base_batch: int | None = None
    batch_size: int | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    warmup_iters: int | None = None
    clip_grad: float | None = None
    augment: str | None = None
    cost_size: tuple[int, int] | None = None

    # Optional parts of a task's search recipe (None / the defaults: what detection uses).
    schedule: str = "step"  # the weights' lr schedule
    size: tuple[int, int] | None = None  # the search's input (None: the fine-tuning size)
    arch_lr: float = ARCH_LR  # α/β Adam lr
    arch_weight_decay: float = ARCH_WD  # α/β Adam weight decay
    arch_fraction: float = 0.5  # share of the training images kept for α/β steps
    warmup_ratio: float | None = None  # lr warm-up start as a fraction of the lr (None: 1/3)

    def weight_recipe(self, recipe: Recipe) -> Recipe:
        """The fine-tuning ``recipe`` with the search's own weight-step settings."""
        from dataclasses import replace

        given = {k: getattr(self, k) for k in ("optimizer", "lr", "base_batch", "batch_size",
                                               "momentum", "weight_decay", "warmup_iters")
                 if getattr(self, k) is not None}
        return replace(recipe, **given, clip_grad=self.clip_grad, schedule=self.schedule,
                       milestones=self.milestones, epochs=self.epochs)

    def warmup_for(self, epochs: int) -> int:
        """The recipe's share of weight-only epochs of ``epochs``, rounded down (a shorter
        search still gets α/β epochs)."""
        return self.warmup_epochs * epochs // self.epochs


class Task:
    """One downstream task; see the module docstring for the contract."""

    name: ClassVar[str]
    kind: ClassVar[str]
    help: ClassVar[str] = ""
    order: ClassVar[int] = 100
    metric: ClassVar[str]
    metric_names: ClassVar[tuple[str, ...]]
    epoch_metrics: ClassVar[tuple[str, ...]]  # what fine-tuning logs after an evaluation
    metric_labels: ClassVar[dict[str, str]] = {}  # long names for tables (eval)
    uses_head_conv: ClassVar[bool]
    # DeepLab-style atrous backbones: strides past this are traded for dilation
    # (``fnacli.nn.backbone.atrous_stages``); None keeps every stride.
    output_stride: ClassVar[int | None] = None
    default_size: ClassVar[tuple[int, int]]
    profile_size: ClassVar[tuple[int, int]]
    augments: ClassVar[tuple[str, ...]]
    default_augment: ClassVar[str]
    recipe: ClassVar[Recipe]
    search_defaults: ClassVar[SearchDefaults]
    oneshot_epochs: ClassVar[int]
    default_classes: ClassVar[int] = 80
    per_class_metric: ClassVar[str] = "AP"  # what ``evaluate(per_class=True)`` reports
    # images per process a training step needs (BatchNorm on 1x1 maps needs 2), unless BN
    # is frozen; refused up front (fnacli.validation.check_bn_batch)
    min_train_batch: ClassVar[int] = 1

    def __repr__(self) -> str:
        return f"<task {self.name}>"

    # -- model ---------------------------------------------------------------------------
    def build_model(self, spec: ArchSpec, num_classes: int, size: tuple[int, int],
                    backbone: nn.Module | None = None, **kwargs: Any) -> nn.Module:
        """The task's network around ``Backbone(spec, with_head=self.uses_head_conv)`` or
        around ``backbone``; ``num_classes`` counts object classes without background."""
        raise NotImplementedError

    def backbone_of(self, model: nn.Module) -> nn.Module:
        """The backbone (or supernet) inside a model from :meth:`build_model`."""
        raise NotImplementedError

    # -- data ----------------------------------------------------------------------------
    def find_split(self, data: str | Path | None, split: str, ann: str | Path | None = None,
                   images: str | Path | None = None) -> Any:
        raise NotImplementedError

    def load_split(self, files: Any, *, train: bool, transform: Callable | None = None,
                   seed: int = 0) -> Any:
        raise NotImplementedError

    def train_transform(self, augment: str | None = None,
                        size: tuple[int, int] | None = None) -> Callable:
        """The training augmentation ``augment``; ``size`` (width, height) is the training
        input for tasks whose transform crops (detectors resize inside the model)."""
        raise NotImplementedError

    def eval_transform(self) -> Callable:
        raise NotImplementedError

    def collate(self, batch: list) -> Any:
        raise NotImplementedError

    def batch_to(self, batch: Any, device: torch.device | str) -> tuple:
        """A collated batch on ``device`` as the model's positional arguments."""
        raise NotImplementedError

    def check_categories(self, a: list[dict], b: list[dict], what_a: str, what_b: str) -> None:
        """Refuse (UserError) when two label sets differ."""
        raise NotImplementedError

    # -- loss and metric -----------------------------------------------------------------
    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> dict:
        """The training losses of ``model`` (train mode) on one collated batch."""
        return model(*self.batch_to(batch, device))

    def inference_meta(self, size: tuple[int, int]) -> dict:
        """How evaluation runs the model, recorded in its checkpoint by fine-tuning (e.g.
        whole images or a sliding window of ``size``); {} when there is no choice."""
        return {}

    def inference_options(self, extra: dict) -> dict:
        """Keyword arguments of :meth:`evaluate` from a checkpoint's metadata (what
        :meth:`inference_meta` recorded)."""
        return {}

    def stats_forward(self, model: nn.Module, batch: Any, device: torch.device | str) -> None:
        """One forward pass for BN-statistics recalibration (train mode, no backward)."""
        model(*self.batch_to(batch, device))

    def evaluate(self, model: nn.Module, dataset: Any, *, batch_size: int = 8, workers: int = 0,
                 device: torch.device | str = "cpu", per_class: bool = False,
                 progress: Callable[[int], None] | None = None) -> Any:
        raise NotImplementedError

    # -- latency table hooks (fnacli.latency) ---------------------------------------------
    def latency_maps(self, spec: ArchSpec, sig: tuple[int, ...]
                     ) -> tuple[dict[str, str], dict[str, tuple[int, int]]]:
        """For measuring the neck and head on prepared maps: which backbone map each
        width-dependent fixed-part group varies with (group -> feature name), and the
        (height, width) of the maps the neck/head reads for the cost signature ``sig``."""
        from fnacli.errors import UserError

        raise UserError(f"latency tables do not cover the {self.name} task's fixed parts")

    def latency_entry(self, group: str, c: int, names: Mapping[str, str],
                      delta: Callable[[str, int], int], base: int) -> tuple[str, int, int]:
        """The (part, ns, params) entry of fixed-part ``group`` at ``c`` channels, such that an
        architecture's entries (one per group it needs) add up to T(ref) + the sum of the
        single-map deltas: ``base`` is T(ref), ``delta(map, c)`` the change of setting map
        ``map`` (a value of ``names`` from :meth:`latency_maps`) to ``c`` channels."""
        raise NotImplementedError

    # -- cost table hooks (fnacli.lut) ---------------------------------------------------
    def cost_needs(self, table: CostTable, spec: ArchSpec, map_c: int) -> list[tuple]:
        """The fixed-part entries ``(group, channels, signature)`` ``spec`` needs beyond stem
        and head conv; ``map_c`` is the channels of the backbone's last map."""
        return []

    def cost_space_needs(self, lut: Lut, ref: ArchSpec) -> list[tuple]:
        """Fixed-part entries for every channel count a search space can feed the task's
        inputs other than the last stage (which the table varies itself)."""
        return []

    def cost_last_groups(self) -> tuple[str, ...]:
        """Groups whose cost varies with the last stage's width only."""
        return ()

    def cost_group(self, name: str) -> tuple[str, str, int] | None:
        """(group, part, index into :meth:`cost_stub_maps` names, -1: none) of a module or
        parameter name of :meth:`cost_core`; None when it is not a fixed part of the task."""
        return None

    def cost_stub_maps(self, table: CostTable, spec: ArchSpec, needs: list[tuple]
                       ) -> tuple[list[str], dict[int, set[int]], Callable[[tuple], dict]]:
        """The backbone maps the task reads (names), the channel values each must take for
        ``needs``, and the map sizes (h, w) of each name for a signature."""
        raise NotImplementedError

    def cost_core(self, model: nn.Module) -> tuple[nn.Module, dict[str, tuple[str, ...]]]:
        """The part of ``model`` to trace (image tensor -> outputs, no pre/post-processing)
        and, per part (backbone/neck/head), the module names that belong to it."""
        raise NotImplementedError

    def cost_tables(self, lut: Lut, ref: ArchSpec) -> dict:
        """Extra entries of the expected-cost tables (plain lists become tensors)."""
        return {}

    def cost_expected(self, total: torch.Tensor, t: dict,
                      alpha: Callable[[int, int], torch.Tensor],
                      width: Callable[[int], torch.Tensor]) -> torch.Tensor:
        """``total`` (E[MAdds] of the backbone) plus the task's share from its
        :meth:`cost_tables`, given the α probabilities of a layer and the β probabilities of
        a stage's width."""
        return total
