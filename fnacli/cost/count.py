"""Params and MAdds of backbones, classifiers and detectors, counted with fvcore.

Convention (the papers'): MAdds = multiply-accumulates of convolutions and linear layers only.
fvcore's ``FlopCountAnalysis`` already counts one multiply-accumulate per "flop" for those; we
switch off its handles for everything else (BatchNorm, norms, upsampling, pooling, ...), so
BN, activations, residual adds, pooling and interpolation cost nothing. Params are every
parameter of the module, BN affine weights included.

Detectors are counted on their inner modules (backbone -> neck -> head) on one tensor of the
requested size, never through torchvision's transform (which would resize the input) or the
anchor/post-processing code.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from fnacli.errors import UserError
from fnacli.spec import ArchSpec
from fnacli.tasks import get_task, is_task, task_names

PARTS = ("backbone", "neck", "head")
COUNT_TASKS = ("none", "classifier", *task_names())
CLASSIFIER_CLASSES = 1000

# The traced ops that are conv / linear layers; every other op (BN, norms, upsampling,
# pooling, bmm, einsum, elementwise) gets no handle, so it counts zero.
_MADDS_OPS = ("aten::_convolution", "aten::linear", "aten::addmm", "aten::mm", "aten::matmul")


def madds_analysis(model: nn.Module, inputs: tuple) -> object:
    """A fvcore ``FlopCountAnalysis`` that counts conv and linear multiply-accumulates only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(model, inputs)
    # set_op_handle(name, None) only adds to fvcore's ignore list and keeps a default handle
    # counting, so start from no handles at all.
    analysis.clear_op_handles()
    analysis.set_op_handle(**_madds_handles())
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return analysis


def by_module(model: nn.Module, inputs: tuple) -> dict[str, int]:
    """MAdds of every submodule (``''`` is the whole model), traced once in eval mode."""
    was_training = model.training
    model.eval()  # BN in train mode refuses 1x1 maps of batch 1; counts do not depend on it
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about python values in forward
            counts = madds_analysis(model, inputs).by_module()
    finally:
        model.train(was_training)
    return {k: int(v) for k, v in counts.items()}


class DetectorCore(nn.Module):
    """A torchvision SSD/RetinaNet without its transform and post-processing:
    image tensor -> backbone (and neck) -> head outputs."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.backbone = detector.backbone
        self.head = detector.head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.backbone(x)
        return tuple(self.head(list(feats.values())).values())


def is_detector(model: nn.Module) -> bool:
    return hasattr(model, "backbone") and hasattr(model, "head") and hasattr(model, "transform")


def _part_prefixes(model: nn.Module, task: str | None = None
                   ) -> tuple[nn.Module, dict[str, tuple[str, ...]]]:
    """The module to trace and, per part, the module names that belong to it (the task's
    own split when ``task`` names one)."""
    from fnacli.nn.backbone import Classifier

    if is_task(task):
        return get_task(task).cost_core(model)
    if is_detector(model):
        return DetectorCore(model), {"backbone": ("backbone.body",), "neck": ("backbone",),
                                     "head": ("head",)}
    if isinstance(model, Classifier):
        return model, {"backbone": ("backbone",), "head": ("fc",)}
    return model, {"backbone": ("",)}  # a Backbone, or any other module: all of it


def _split(values: dict[str, int], parts: dict[str, tuple[str, ...]]) -> dict[str, int]:
    # A part's prefix may contain an earlier part (the detector's neck lives in `backbone`
    # next to `backbone.body`), so earlier parts are subtracted from later ones.
    out: dict[str, int] = {}
    for name, prefixes in parts.items():
        total = sum(values.get(p, 0) for p in prefixes)
        for earlier, inner in parts.items():
            if earlier == name:
                break
            if any(e.startswith(p + ".") for e in inner for p in prefixes):
                total -= out[earlier]
        out[name] = total
    return {p: out.get(p, 0) for p in PARTS}


def params_by_part(model: nn.Module, task: str | None = None) -> dict[str, int]:
    """Parameter count per part (same split as :func:`count`)."""
    traced, parts = _part_prefixes(model, task)
    per_module: dict[str, int] = {}
    for name, mod in traced.named_modules():
        per_module[name] = sum(p.numel() for p in mod.parameters())
    return _split(per_module, parts)


def input_tensor(size: tuple[int, int] | torch.Tensor) -> torch.Tensor:
    """An image batch of one for ``size`` = (width, height), or the tensor itself."""
    if isinstance(size, torch.Tensor):
        return size
    width, height = size
    return torch.zeros(1, 3, height, width)


def count(model: nn.Module, input: tuple[int, int] | torch.Tensor,
          task: str | None = None) -> tuple[int, dict[str, int]]:
    """(params, MAdds by part) of ``model`` on ``input`` (a tensor or (width, height)).

    Parts: a task's model -> the task's split (detectors: backbone / neck / head);
    ``Classifier`` -> backbone / head (the fc); anything else -> backbone.
    """
    traced, parts = _part_prefixes(model, task)
    madds = _split(by_module(traced, (input_tensor(input),)), parts)
    return sum(p.numel() for p in model.parameters()), madds


# -- profiles of specs ---------------------------------------------------------------------
@dataclass
class Profile:
    """Params and MAdds of one spec under one task, split by part."""

    name: str
    task: str
    size: tuple[int, int]
    num_classes: int
    params_parts: dict[str, int]
    madds_parts: dict[str, int]
    method: str = "lut"
    extra: dict = field(default_factory=dict)

    @property
    def params(self) -> int:
        return sum(self.params_parts.values())

    @property
    def madds(self) -> int:
        return sum(self.madds_parts.values())

    def to_dict(self) -> dict:
        return {"name": self.name, "task": self.task, "input": list(self.size),
                "num_classes": self.num_classes, "params": self.params, "madds": self.madds,
                "params_parts": dict(self.params_parts), "madds_parts": dict(self.madds_parts),
                "method": self.method, **self.extra}


def default_classes(task: str) -> int:
    if is_task(task):
        return get_task(task).default_classes
    return CLASSIFIER_CLASSES if task == "classifier" else 80


def build_model(spec: ArchSpec, task: str, size: tuple[int, int], num_classes: int) -> nn.Module:
    """The module a task counts: the backbone (with its head conv), the ImageNet classifier,
    or a detector."""
    from fnacli.nn.backbone import Backbone, Classifier

    if task == "none":
        return Backbone(spec)
    if task == "classifier":
        return Classifier(spec, num_classes)
    if is_task(task):
        return get_task(task).build_model(spec, num_classes, size)
    raise UserError(f"unknown task {task!r} (expected one of {', '.join(COUNT_TASKS)})")


def profile_exact(spec: ArchSpec, task: str, size: tuple[int, int], num_classes: int,
                  name: str = "spec") -> Profile:
    """Build the real module and trace it with fvcore (the reference the LUT is checked by)."""
    model = build_model(spec, task, size, num_classes)
    _, madds = count(model, size, task)
    return Profile(name, task, size, num_classes, params_by_part(model, task), madds, "exact")


# -- per-position cost of single layers ----------------------------------------------------
def _madds_handles() -> dict[str, object]:
    """fvcore's counting handles of the ops in ``_MADDS_OPS`` (op name -> handle)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn.jit_handles import (
            addmm_flop_jit,
            conv_flop_jit,
            linear_flop_jit,
            matmul_flop_jit,
        )
    handles = (conv_flop_jit, linear_flop_jit, addmm_flop_jit, matmul_flop_jit, matmul_flop_jit)
    return dict(zip(_MADDS_OPS, handles, strict=True))


UnitKey = tuple[int, int, int, int]  # (cin, cout, kernel, groups); kernel 0: a linear layer


def unit_madds(keys: list[UnitKey]) -> list[int]:
    """fvcore's MAdds for ONE output position of each conv (cin, cout, kernel, groups) or
    linear layer (kernel 0).

    fvcore counts a convolution as batch x output positions x weight elements, so the count
    at a 1x1 output times the number of output positions is exactly its count at any size;
    this keeps lookup tables independent of the input size and fast to build.

    All units run in ONE traced function (no module per unit: module scopes cost the tracer
    more than the convs themselves), each on the smallest input with a 1x1 output and
    uninitialised weights, and every traced conv/linear node is counted by fvcore's own
    handle for it.
    """
    if not keys:
        return []
    handles = _madds_handles()
    args = [torch.zeros(1, cin) if k == 0 else torch.zeros(1, cin, k, k)
            for cin, _, k, _ in keys]
    args += [torch.empty(cout, cin) if k == 0 else torch.empty(cout, cin // g, k, k)
             for cin, cout, k, g in keys]
    n = len(keys)

    def run(*a: torch.Tensor) -> tuple[torch.Tensor, ...]:  # inputs, then weights
        return tuple(F.linear(x, w) if key[2] == 0 else F.conv2d(x, w, None, 1, 0, 1, key[3])
                     for x, w, key in zip(a[:n], a[n:], keys, strict=True))

    with single_thread(), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings
        graph, _ = torch.jit._get_trace_graph(run, tuple(args))
    counts = []
    for node in graph.nodes():
        handle = handles.get(node.kind())
        if handle is not None:
            c = handle(list(node.inputs()), list(node.outputs()))
            counts.append(int(sum(c.values()) if hasattr(c, "values") else c))
    if len(counts) != n:  # one counted node per unit, or the trace changed
        raise AssertionError(f"traced {len(counts)} counted ops for {n} units")
    return counts


@contextmanager
def single_thread() -> Iterator[None]:
    """Tiny convs run much faster on one thread than fighting over a busy machine's cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
