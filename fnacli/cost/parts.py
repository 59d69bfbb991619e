"""A task's network beyond the backbone (its neck and head) as a function of the backbone maps
it reads: built around stand-in backbones of any channels and sizes, then counted (MAdds,
params) per named piece, or run on prepared maps for timing.

A task hands over what it is (``fnacli.tasks.base.Task``): its model around a given body
(``build_model(..., backbone=body)``), the network without pre- and post-processing
(``core_of``), the maps that network reads (``head_inputs``) and its named pieces
(``head_pieces``: module prefixes, part, the map each reads). Everything about tables
(entries, signatures, which width a piece follows across a space) is this package's.

A fixed-part entry is keyed ``(piece, channels, signature)``: ``channels`` is the width of
the map the piece reads (0 when it reads none), the signature the sizes of every map the
network reads, in ``head_inputs`` order.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from fnacli.cost import units
from fnacli.cost.count import DetectorCore, is_detector
from fnacli.cost.geometry import Geometry, Res, feature_sizes
from fnacli.cost.target import Piece, TaskParts
from fnacli.spec import ArchSpec

FixedKey = tuple[str, int, tuple[int, ...]]  # piece, channels it reads (0: none), signature
_COMBOS = 4  # stub networks per fvcore trace (bounds memory: a RetinaNet head is ~8M params)


# -- which map a piece reads, at which width and size ----------------------------------------
def map_channels(task: TaskParts, spec: ArchSpec) -> dict[str, int]:
    """Channels of every backbone map of ``spec`` under ``task``."""
    from fnacli.nn.backbone import feature_channels

    return feature_channels(spec, with_head=task.uses_head_conv, output_stride=task.output_stride)


def signature(task: TaskParts, spec: ArchSpec, geo: Geometry) -> tuple[int, ...]:
    """The sizes (h, w) of the maps the task's network reads, concatenated in order."""
    sizes = feature_sizes(spec, geo, task.output_stride)
    return tuple(v for m in task.head_inputs(spec) for v in sizes[m])


def piece_needs(task: TaskParts, spec: ArchSpec, geo: Geometry) -> list[FixedKey]:
    """The fixed-part entries ``spec``'s network beyond the backbone is made of."""
    maps, chans, sig = task.head_inputs(spec), map_channels(task, spec), signature(task, spec, geo)
    return [(p.name, chans[maps[p.reads]] if p.reads is not None else 0, sig)
            for p in task.head_pieces]


def reads_of(task: TaskParts) -> dict[str, int | None]:
    return {p.name: p.reads for p in task.head_pieces}


@functools.cache
def _prefixes(pieces: tuple[Piece, ...]) -> list[tuple[str, Piece]]:
    return sorted(((m + ".", p) for p in pieces for m in p.modules), key=lambda x: -len(x[0]))


def piece_of(task: TaskParts, name: str) -> Piece | None:
    """The piece a module or parameter name of the core belongs to: the longest matching
    prefix; None for the backbone's."""
    name = name + "."
    return next((p for prefix, p in _prefixes(task.head_pieces) if name.startswith(prefix)),
                None)


# -- counting ------------------------------------------------------------------------------
class StubBody(nn.Module):
    """Stands in for a backbone: zero maps with the given channels and sizes."""

    def __init__(self, channels: Mapping[str, int], sizes: Mapping[str, Res]) -> None:
        super().__init__()
        self.feature_channels = OrderedDict(channels)
        self.sizes = dict(sizes)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict((n, x.new_zeros(1, c, *self.sizes[n]))
                           for n, c in self.feature_channels.items())


class _NoInit(TorchFunctionMode):
    """Parameter initialisers do nothing (on the meta device they still cost a Python
    decomposition each, most of a stub network's build time; counting needs shapes only)."""

    _INITS = frozenset({"normal_", "uniform_", "zero_", "fill_", "constant_", "ones_", "zeros_",
                        "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
                        "xavier_normal_", "trunc_normal_"})

    def __torch_function__(self, func: Callable, types: object, args: tuple = (),
                           kwargs: dict | None = None) -> object:
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in self._INITS:
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


def count_pieces(task: TaskParts, spec: ArchSpec, num_classes: int, names: Sequence[str],
                 combos: list[tuple[int, ...]], sig: tuple[int, ...]
                 ) -> dict[FixedKey, tuple[str, int, int]]:
    """(part, MAdds, params) of every piece at each channel combination (one width per map in
    ``names``, the maps' sizes from ``sig``), from the task's network around a stub body."""
    sizes = {n: tuple(sig[2 * i:2 * i + 2]) for i, n in enumerate(names)}

    def build(chans: tuple[int, ...]) -> nn.Module:
        # on the meta device without initialisation: counting needs shapes, and random init
        # of a RetinaNet head per channel combination would dominate
        with torch.device("meta"), _NoInit():
            stub = StubBody(dict(zip(names, chans, strict=True)), sizes)
            model = task.build_model(spec, num_classes, task.default_size, backbone=stub)
            return task.core_of(model)[0]

    positions = _conv_positions(build(combos[0]))
    out: dict[FixedKey, tuple[str, int, int]] = {}
    for first in range(0, len(combos), _COMBOS):
        chunk = combos[first:first + _COMBOS]
        out.update(_count_combos(task, chunk, [build(c) for c in chunk], positions, sig))
    return out


def _conv_positions(core: nn.Module) -> dict[str, int]:
    """Output positions of every conv at the real sizes, from a forward pass on the meta
    device (no compute); they do not depend on the channel numbers. RetinaNet's head runs
    the same convs on every level, so positions add up over calls."""
    positions: dict[str, int] = {}

    def record(name: str, out: torch.Tensor) -> None:
        positions[name] = positions.get(name, 0) + out.shape[0] * out[0, 0].numel()

    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: record(n, out))
             for n, m in core.named_modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        core.eval()(torch.zeros(1, 3, 1, 1, device="meta"))
    for h in hooks:
        h.remove()
    return positions


def _count_combos(task: TaskParts, combos: list[tuple[int, ...]], cores: list[nn.Module],
                  positions: dict[str, int], sig: tuple[int, ...]
                  ) -> dict[FixedKey, tuple[str, int, int]]:
    # Every conv of the stub networks is a unit of the shared per-position table, so a conv
    # shape that recurs across combinations, heads and levels is traced once; its count at
    # the real sizes is per position x positions.
    convs = [[(n, _conv_unit(m)) for n, m in core.named_modules() if isinstance(m, nn.Conv2d)]
             for core in cores]
    units.fill_units([u for per_core in convs for _, u in per_core], None)
    out: dict[FixedKey, tuple[str, int, int]] = {}
    for chans, core, per_core in zip(combos, cores, convs, strict=True):
        acc: dict[str, list[int]] = {}
        for n, unit in per_core:
            piece = piece_of(task, n)
            if piece is not None:
                acc.setdefault(piece.name, [0, 0])[0] += units.PP[unit] * positions[n]
        for n, p in core.named_parameters():
            piece = piece_of(task, n)
            if piece is not None:
                acc.setdefault(piece.name, [0, 0])[1] += p.numel()
        for p in task.head_pieces:
            if p.name in acc:
                c = chans[p.reads] if p.reads is not None else 0
                out[(p.name, c, sig)] = (p.part, *acc[p.name])
    return out


def _conv_unit(m: nn.Conv2d) -> tuple[int, int, int, int]:
    kh, kw = m.kernel_size
    if kh != kw:
        raise AssertionError(f"non-square kernel {m.kernel_size} in a cost table")
    return (m.in_channels, m.out_channels, kh, m.groups)


# -- timing ----------------------------------------------------------------------------------
class _FixedMaps(nn.Module):
    """Stands in for a backbone: returns the same prepared feature maps on every call."""

    def __init__(self, channels: Mapping[str, int]) -> None:
        super().__init__()
        self.feature_channels = OrderedDict(channels)
        self.maps: OrderedDict[str, torch.Tensor] = OrderedDict()

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.maps


class _NeckHead(nn.Module):
    """A task's neck and head on prepared maps: its network with a stand-in body."""

    def __init__(self, core: nn.Module, body: _FixedMaps) -> None:
        super().__init__()
        self.core, self.body = core, body

    def to(self, *args, **kwargs) -> _NeckHead:  # noqa: ANN002, ANN003 - nn.Module.to's
        super().to(*args, **kwargs)
        fmt = kwargs.get("memory_format")
        dev = next((a for a in args if isinstance(a, (str, torch.device))), kwargs.get("device"))
        for n, t in self.body.maps.items():
            t = t.to(dev) if dev is not None else t
            self.body.maps[n] = t.contiguous(memory_format=fmt) if fmt is not None else t
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.core(x)


def timed_network(model: nn.Module) -> nn.Module:
    """What a task's network is timed as: a detector without its transform and
    post-processing (raw head outputs); a segmenter whole (logits at the input size)."""
    return DetectorCore(model) if is_detector(model) else model


def neck_head(task: TaskParts, spec: ArchSpec, num_classes: int, size: tuple[int, int],
              chans: Mapping[str, int], sizes: Mapping[str, Res], batch: int
              ) -> tuple[nn.Module, list[torch.Tensor]]:
    """The task's network beyond the backbone on prepared random maps of ``chans`` channels
    and ``sizes``, and its input: an image batch that only gives the size (a segmenter
    upsamples its logits to it; the stand-in body ignores it)."""
    body = _FixedMaps(chans)
    model = task.build_model(spec, num_classes, size, backbone=body)
    for n, c in chans.items():
        h, w = sizes.get(n, (1, 1))
        body.maps[n] = torch.randn(batch, c, h, w)
    return _NeckHead(timed_network(model), body), [torch.zeros(batch, 3, size[1], size[0])]
