"""A task's neck and head as functions of the backbone maps they receive: counted on stub
backbones that return maps of the given channels and sizes."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from fnacli.cost import units
from fnacli.cost.geometry import Res
from fnacli.spec import ArchSpec
from fnacli.tasks import Task

FixedKey = tuple[str, int, tuple[int, ...]]  # group, channels it varies with (0: none), sig
_COMBOS = 4  # stub detectors per fvcore trace (bounds memory: a RetinaNet head is ~8M params)


class _StubBody(nn.Module):
    """Stands in for a backbone: zero maps with the given channels and sizes."""

    def __init__(self, channels: dict[str, int], sizes: dict[str, Res]) -> None:
        super().__init__()
        self.feature_channels = OrderedDict(channels)
        self.sizes = sizes

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict((n, x.new_zeros(1, c, *self.sizes[n]))
                           for n, c in self.feature_channels.items())


class _NoInit(TorchFunctionMode):
    """Parameter initialisers do nothing (on the meta device they still cost a Python
    decomposition each, most of a stub detector's build time; counting needs shapes only)."""

    _INITS = frozenset({"normal_", "uniform_", "zero_", "fill_", "constant_", "ones_", "zeros_",
                        "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
                        "xavier_normal_", "trunc_normal_"})

    def __torch_function__(self, func: Callable, types: object, args: tuple = (),
                           kwargs: dict | None = None) -> object:
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in self._INITS:
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


def detector_fixed(task: Task, spec: ArchSpec, num_classes: int, names: list[str],
                    combos: list[tuple[int, ...]], sizes: dict[str, Res],
                    sig: tuple[int, ...]) -> dict[FixedKey, tuple[str, int, int]]:
    """The task's fixed-part entries for each channel combination (one value per name in
    ``names``), from its model around a stub backbone."""

    def build(chans: tuple[int, ...], device: str) -> nn.Module:
        # built on the meta device, then given uninitialised memory: counting needs shapes,
        # and random init of a RetinaNet head per channel combination would dominate
        with torch.device("meta"), _NoInit():
            stub = _StubBody(dict(zip(names, chans, strict=True)), sizes)
            model = task.build_model(spec, num_classes, task.default_size, backbone=stub)
            core = task.cost_core(model)[0]
        return core if device == "meta" else core.to_empty(device=device)

    # Output positions of every conv at the real sizes, from a forward pass on the meta
    # device (no compute); they do not depend on the channel numbers. RetinaNet's head runs
    # the same convs on every level, so positions add up over calls.
    meta = build(combos[0], "meta").eval()
    positions: dict[str, list[int]] = {}

    def record(name: str, out: torch.Tensor) -> None:
        acc = positions.setdefault(name, [0, 0])
        acc[0] += out.shape[0] * out[0, 0].numel()
        acc[1] += 1

    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: record(n, out))
             for n, m in meta.named_modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        meta(torch.zeros(1, 3, 1, 1, device="meta"))
    for h in hooks:
        h.remove()

    out: dict[FixedKey, tuple[str, int, int]] = {}
    for first in range(0, len(combos), _COMBOS):
        out.update(_combos_fixed(task, names, combos[first:first + _COMBOS], build, positions,
                                 sig))
    return out


def _combos_fixed(task: Task, names: list[str], combos: list[tuple[int, ...]], build: Callable,
                  positions: dict[str, list[int]], sig: tuple[int, ...]
                  ) -> dict[FixedKey, tuple[str, int, int]]:
    # Every conv of the stub detectors (built on the meta device: shapes only) is a unit of
    # the shared per-position table, so a conv shape that recurs across combinations, heads
    # and levels is traced once; its count at the real sizes is per position x positions.
    cores = [build(chans, "meta") for chans in combos]
    convs = [[(n, _conv_unit(m)) for n, m in core.named_modules() if isinstance(m, nn.Conv2d)]
             for core in cores]
    units.fill_units([u for per_core in convs for _, u in per_core], None)
    out: dict[FixedKey, tuple[str, int, int]] = {}
    for chans, core, per_core in zip(combos, cores, convs, strict=True):
        acc: dict[tuple[str, str, int], list[int]] = {}
        for n, unit in per_core:
            g = task.cost_group(n + ".")
            if g is not None:
                acc.setdefault(g, [0, 0])[0] += units.PP[unit] * positions[n][0]
        for n, p in core.named_parameters():
            g = task.cost_group(n)
            if g is not None:
                acc.setdefault(g, [0, 0])[1] += p.numel()
        for (group, part, idx), (madds, params) in acc.items():
            out[(group, chans[idx] if idx >= 0 else 0, sig)] = (part, madds, params)
    return out


def _conv_unit(m: nn.Conv2d) -> tuple[int, int, int, int]:
    kh, kw = m.kernel_size
    if kh != kw:
        raise AssertionError(f"non-square kernel {m.kernel_size} in a cost table")
    return (m.in_channels, m.out_channels, kh, m.groups)
