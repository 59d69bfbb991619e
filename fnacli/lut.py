"""The cost lookup table (LUT): MAdds of every candidate layer of a space, and the fast path.

A network's MAdds are a sum over its layers, and a layer's MAdds depend only on
(op, in channels, out channels, stride, input resolution); the detector's neck and head
depend only on the channels of the maps they receive. ``CostTable`` caches exactly those
entries (per-position counts of fvcore's handles, see ``fnacli.cost.unit_madds``) and
adds them up, so profiling an architecture needs no trace of the whole network.

``Lut`` is a ``CostTable`` filled for every entry a search space can produce, plus the
differentiable expected cost C(α, β) of Jung et al. (eqs. 5-8), extended so a layer's cost
uses the distribution of its input width (the previous stage's β), not just its maximum.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from fnacli import __version__
from fnacli.cost import PARTS, Profile, UnitKey, build_model, default_classes, unit_madds
from fnacli.errors import UserError
from fnacli.spec import SKIP, ArchSpec, Op, SpaceSpec
from fnacli.tasks import Task, get_task, is_task, task_names

LUT_SCHEMA = "fnacli/lut@1"
# What a cost counts: the searched mixed blocks (Jung et al.'s eq. 5, FNA's searched
# backbone), the whole backbone (DetNAS's FLOPs constraint), or the whole detector.
COST_SCOPES = ("blocks", "backbone", "detector")
LUT_TASKS = ("none", "classifier", *task_names())
_COMBOS = 4  # stub detectors per fvcore trace (bounds memory: a RetinaNet head is ~8M params)
_CHUNK = 200  # layers per fvcore trace: amortises the trace, bounds memory, paces progress

Res = tuple[int, int]  # (height, width)
LayerKey = tuple[str, int, int, int, int, int]  # op, cin, cout, stride, input h, input w
FixedKey = tuple[str, int, tuple[int, ...]]  # group, channels it varies with (0: none), sig


def out_res(res: Res, stride: int) -> Res:
    """Output size of an odd-kernel conv padded by k//2 (every conv in these networks)."""
    return ((res[0] - 1) // stride + 1, (res[1] - 1) // stride + 1)


@dataclass(frozen=True)
class Geometry:
    """Resolutions through a backbone of a given stride pattern at an input size."""

    stem: Res
    stage_in: tuple[Res, ...]
    stage_out: tuple[Res, ...]

    @classmethod
    def of(cls, stem_stride: int, strides: Iterable[int], size: tuple[int, int]) -> Geometry:
        res = out_res((size[1], size[0]), stem_stride)
        stem, ins, outs = res, [], []
        for s in strides:
            ins.append(res)
            res = out_res(res, s)
            outs.append(res)
        return cls(stem, tuple(ins), tuple(outs))


def _positions(res: Res) -> int:
    return res[0] * res[1]


@functools.cache
def _op(text: str) -> Op:
    """``Op.parse``, once per op text (tables parse the same few ops tens of thousands of
    times)."""
    return Op.parse(text)


def mbconv_units(op: Op, cin: int, cout: int) -> list[tuple[int, int, int, int]]:
    """The convs of an MBConv as (cin, cout, kernel, groups): expand (if any), dw, project."""
    hidden = cin * op.expand
    units = [(cin, hidden, 1, 1)] if op.expand != 1 else []
    return units + [(hidden, hidden, op.kernel, hidden), (hidden, cout, 1, 1)]


def mbconv_params(op: Op, cin: int, cout: int) -> int:
    """Exact parameter count of ``MBConv(cin, cout, k, e)``: conv weights (no bias) + BN γ/β."""
    return sum(a // g * b * k * k + 2 * b for a, b, k, g in mbconv_units(op, cin, cout))


# -- per-position costs of single convs / linears, shared by every table -----------------
# (cin, cout, kernel, groups) -> MAdds per output position; kernel 0 = linear. Kept on disk
# (``unit_cache_path``) so a later process, e.g. the next `fnacli madds SPEC`, traces only
# the shapes no earlier run met.
_PP: dict[UnitKey, int] = {}
_PP_DISK: dict[str, bool] = {}  # cache file path -> read into _PP already
_PARALLEL_MIN = 1000  # missing units worth a second process


def unit_cache_path() -> Path:
    return cache_dir() / f"units-{__version__}.json"


def _read_unit_cache() -> None:
    path = unit_cache_path()
    if _PP_DISK.get(str(path)):
        return
    _PP_DISK[str(path)] = True
    try:
        rows = json.loads(path.read_text())
        for cin, cout, k, g, madds in rows:
            _PP.setdefault((int(cin), int(cout), int(k), int(g)), int(madds))
    except (OSError, ValueError, TypeError):
        pass  # no cache yet, or a damaged one: counted again


def _write_unit_cache() -> None:
    from fnacli.io import write_text_atomic

    path = unit_cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps([[*k, v] for k, v in sorted(_PP.items())]))
    except OSError:
        pass  # an unwritable cache only costs a recount next time


def _count_chunks(chunks: list[list[UnitKey]]) -> Iterator[list[int]]:
    """Per-position counts of each chunk, in order; on two cores when there is enough work
    and a second core is idle (on a busy machine a second process only adds contention)."""
    if sum(map(len, chunks)) >= _PARALLEL_MIN and len(chunks) > 1 and _idle_cores() >= 1.5:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # fork: the workers inherit the imported torch/fvcore instead of importing them again
        with ProcessPoolExecutor(2, mp_context=mp.get_context("fork")) as pool:
            yield from pool.map(unit_madds, chunks)
        return
    for chunk in chunks:
        yield unit_madds(chunk)


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _idle_cores() -> float:
    """Usable cores minus the 1-minute load average (this process included)."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return _usable_cores() - load


def _fill_units(keys: Iterable[UnitKey], progress: _Progress | None) -> None:
    _read_unit_cache()
    missing = sorted({k for k in keys if k not in _PP})
    if not missing:
        return
    if progress:
        progress.add(len(missing))
    chunks = [missing[i:i + _CHUNK] for i in range(0, len(missing), _CHUNK)]
    for chunk, counts in zip(chunks, _count_chunks(chunks), strict=True):
        _PP.update(zip(chunk, counts, strict=True))
        if progress:
            progress.advance(len(chunk))
    _write_unit_cache()


class _Progress:
    """A rich progress bar on stderr (transient), or nothing."""

    def __init__(self, bar: object, task: object) -> None:
        self.bar, self.task = bar, task

    def add(self, n: int) -> None:
        self.bar.update(self.task, total=(self.bar.tasks[0].total or 0) + n)

    def advance(self, n: int) -> None:
        self.bar.advance(self.task, n)


@contextmanager
def _progress(enabled: bool, what: str) -> Iterator[_Progress | None]:
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeRemainingColumn(),
                  console=console, transient=True,
                  disable=not console.is_terminal) as bar:  # no bar in a log file
        yield _Progress(bar, bar.add_task(what, total=0))


# -- detector necks and heads as functions of the channels they receive --------------------
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


def _detector_fixed(task: Task, spec: ArchSpec, num_classes: int, names: list[str],
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
    _fill_units([u for per_core in convs for _, u in per_core], None)
    out: dict[FixedKey, tuple[str, int, int]] = {}
    for chans, core, per_core in zip(combos, cores, convs, strict=True):
        acc: dict[tuple[str, str, int], list[int]] = {}
        for n, unit in per_core:
            g = task.cost_group(n + ".")
            if g is not None:
                acc.setdefault(g, [0, 0])[0] += _PP[unit] * positions[n][0]
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


# -- the table -----------------------------------------------------------------------------
class CostTable:
    """MAdds/params entries for one (task, input size, num_classes), filled on demand."""

    def __init__(self, task: str, size: tuple[int, int], num_classes: int | None = None) -> None:
        if task not in LUT_TASKS:
            raise UserError(f"unknown task {task!r} (expected one of {', '.join(LUT_TASKS)})")
        self.task = task
        # the downstream task's object; None for the backbone alone and the classifier
        self.task_obj: Task | None = get_task(task) if is_task(task) else None
        self.size = (int(size[0]), int(size[1]))
        self.num_classes = default_classes(task) if num_classes is None else num_classes
        self.layers: dict[LayerKey, tuple[int, int]] = {}
        self.fixed: dict[FixedKey, tuple[str, int, int]] = {}

    # entries one architecture needs ------------------------------------------------------
    def geometry(self, spec: ArchSpec) -> Geometry:
        return Geometry.of(spec.stem_stride, (s.stride for s in spec.stages), self.size)

    def layer_keys(self, spec: ArchSpec) -> list[LayerKey]:
        geo = self.geometry(spec)
        keys = []
        for s, layer, cin, cout, op, stride in spec.layers():
            res = geo.stage_in[s] if layer == 0 else geo.stage_out[s]
            keys.append((str(op), cin, cout, stride, *res))
        return keys

    def fixed_needs(self, spec: ArchSpec) -> list[tuple[str, int, tuple[int, ...]]]:
        """(group, channels, sig) of every non-layer piece of ``spec`` under this task."""
        geo = self.geometry(spec)
        last = spec.stages[-1].out
        needs = [("stem", spec.stem_out, (spec.stem_stride, *geo.stem))]
        task = self.task_obj
        has_head = bool(spec.head_out) and (task is None or task.uses_head_conv)
        if has_head:
            needs.append(("head_conv", last, (spec.head_out, *geo.stage_out[-1])))
        map_c = spec.head_out if has_head else last
        if task is not None:
            needs += task.cost_needs(self, spec, map_c)
        elif self.task == "classifier":
            needs.append(("fc", map_c, (self.num_classes,)))
        return needs

    # filling -----------------------------------------------------------------------------
    def fill(self, layer_keys: Iterable[LayerKey], fixed: Iterable[tuple[str, int, tuple]],
             spec: ArchSpec, progress: bool = False) -> None:
        """Compute every missing entry. ``spec`` gives the stride pattern of the fixed parts
        (any member of the family: only its strides matter)."""
        layer_keys = [k for k in dict.fromkeys(layer_keys) if k not in self.layers]
        fixed = [f for f in dict.fromkeys(fixed) if f not in self.fixed]
        with _progress(progress and bool(layer_keys or fixed), "cost table") as bar:
            units = []
            for op, cin, cout, *_ in layer_keys:
                units += mbconv_units(_op(op), cin, cout)
            units += [u for f in fixed for u in self._simple_units(f)]
            _fill_units(units, bar)
            for key in layer_keys:
                self.layers[key] = self._layer_entry(key)
            simple = [f for f in fixed if f[0] in ("stem", "head_conv", "fc")]
            for f in simple:
                self.fixed[f] = self._simple_entry(f)
            self._fill_detector([f for f in fixed if f not in self.fixed], spec, bar)

    @staticmethod
    def _layer_entry(key: LayerKey) -> tuple[int, int]:
        op_s, cin, cout, stride, h, w = key
        op = _op(op_s)
        units = mbconv_units(op, cin, cout)
        pos_in, pos_out = h * w, _positions(out_res((h, w), stride))
        madds = sum(_PP[u] * pos_out for u in units)
        if op.expand != 1:  # the 1x1 expansion runs at the input resolution
            madds += _PP[units[0]] * (pos_in - pos_out)
        return madds, mbconv_params(op, cin, cout)

    @staticmethod
    def _simple_units(f: tuple[str, int, tuple]) -> list[tuple[int, int, int, int]]:
        group, c, sig = f
        if group == "stem":
            return [(3, c, 3, 1)]
        if group == "head_conv":
            return [(c, sig[0], 1, 1)]
        if group == "fc":
            return [(c, sig[0], 0, 1)]
        return []

    def _simple_entry(self, f: tuple[str, int, tuple]) -> tuple[str, int, int]:
        group, c, sig = f
        (unit,) = self._simple_units(f)
        if group == "fc":
            return "head", _PP[unit], c * sig[0] + sig[0]
        pos = sig[-2] * sig[-1]
        return "backbone", _PP[unit] * pos, unit[0] * unit[1] * unit[2] ** 2 + 2 * unit[1]

    def _fill_detector(self, needs: list[tuple[str, int, tuple]], spec: ArchSpec,
                       bar: _Progress | None) -> None:
        if not needs or self.task_obj is None:
            return
        names, per_var, sizes_of = self.task_obj.cost_stub_maps(self, spec, needs)
        for sig in sorted({s for *_, s in needs}):
            values = [sorted(per_var[i]) or [1] for i in range(len(names))]
            n = max(len(v) for v in values)
            # zip the channel values of the maps: one stub detector per row, padded
            combos = [tuple(v[min(j, len(v) - 1)] for v in values) for j in range(n)]
            sizes = sizes_of(sig)
            if bar:
                bar.add(n)
            self.fixed.update(_detector_fixed(self.task_obj, spec, self.num_classes, names, combos,
                                              sizes, sig))
            if bar:
                bar.advance(n)

    # profiles ----------------------------------------------------------------------------
    def profile_many(self, specs: list[ArchSpec], names: list[str] | None = None,
                     progress: bool = False) -> list[Profile]:
        """Profiles of many specs from the table (missing entries computed in one batch)."""
        keys = [self.layer_keys(s) for s in specs]
        needs = [self.fixed_needs(s) for s in specs]
        by_pattern: dict[tuple, tuple[ArchSpec, list, list]] = {}
        for spec, k, f in zip(specs, keys, needs, strict=True):
            pattern = (spec.stem_stride, tuple(st.stride for st in spec.stages))
            _, ks, fs = by_pattern.setdefault(pattern, (spec, [], []))
            ks += k
            fs += f
        for spec, ks, fs in by_pattern.values():
            self.fill(ks, fs, spec, progress)
        names = names or [f"spec{i}" for i in range(len(specs))]
        return [self._sum(n, k, f) for n, k, f in zip(names, keys, needs, strict=True)]

    def profile(self, spec: ArchSpec, name: str = "spec") -> Profile:
        return self.profile_many([spec], [name])[0]

    def _sum(self, name: str, keys: list[LayerKey], needs: list) -> Profile:
        madds = dict.fromkeys(PARTS, 0)
        params = dict.fromkeys(PARTS, 0)
        for k in keys:
            m, p = self.layers[k]
            madds["backbone"] += m
            params["backbone"] += p
        for f in needs:
            part, m, p = self.fixed[f]
            madds[part] += m
            params[part] += p
        return Profile(name, self.task, self.size, self.num_classes, params, madds, "lut")

    def arch_madds(self, spec: ArchSpec) -> float:
        """Total MAdds of an architecture, summed from the table."""
        return float(self.profile(spec).madds)

    def arch_cost(self, spec: ArchSpec, scope: str = "detector",
                  stages: Iterable[int] | None = None) -> float:
        """MAdds of ``spec`` within ``scope`` (``COST_SCOPES``); ``blocks`` counts the layers
        of the stages in ``stages`` (for a space: the searched ones, ``searched_stages``)."""
        check_scope(scope)
        if scope == "detector":
            return self.arch_madds(spec)
        if scope == "backbone":
            return float(self.profile(spec).madds_parts["backbone"])
        if stages is None:
            raise ValueError("the blocks scope needs the searched stages")
        keep = set(stages)
        keys = [k for (s, *_), k in zip(spec.layers(), self.layer_keys(spec), strict=True)
                if s in keep]
        self.fill(keys, [], spec)
        return float(sum(self.layers[k][0] for k in keys))

    # persistence -------------------------------------------------------------------------
    def entries_json(self) -> dict:
        return {"layers": [[*k, m, p] for k, (m, p) in sorted(self.layers.items())],
                "fixed": [[g, c, list(sig), part, m, p]
                          for (g, c, sig), (part, m, p) in sorted(self.fixed.items())]}

    def load_entries(self, d: Mapping, source: str) -> None:
        try:
            for op, cin, cout, stride, h, w, m, p in d["layers"]:
                self.layers[(str(op), int(cin), int(cout), int(stride), int(h), int(w))] = \
                    (int(m), int(p))
            for g, c, sig, part, m, p in d["fixed"]:
                self.fixed[(str(g), int(c), tuple(int(v) for v in sig))] = (str(part), int(m),
                                                                            int(p))
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{source}: malformed lookup table entries") from None


def profile_specs(specs: list[ArchSpec], task: str, size: tuple[int, int],
                  num_classes: int | None = None, names: list[str] | None = None,
                  progress: bool = False) -> list[Profile]:
    """The fast path: params and MAdds of many specs from one cost table."""
    return CostTable(task, size, num_classes).profile_many(specs, names, progress)


# -- the lookup table of a search space ------------------------------------------------------
def space_hash(space: SpaceSpec) -> str:
    text = json.dumps(space.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def stage_in_outs(space: SpaceSpec, s: int) -> tuple[int, ...]:
    return space.stages[s - 1].outs if s else (space.stem_out,)


def layer_ops(space: SpaceSpec, s: int, layer: int) -> tuple[str, ...]:
    return space.stages[s].layer_candidates(layer)


class Lut(CostTable):
    """Every entry a space can produce, and its differentiable expected cost.

    Architecture parameters (as the search holds them): α probabilities per searchable
    (stage, layer), over ``space.stages[s].layer_candidates(layer)`` in order, and β
    probabilities per stage with more than one channel candidate, over ``outs`` (ascending).
    """

    def __init__(self, space: SpaceSpec, task: str, size: tuple[int, int],
                 num_classes: int | None = None) -> None:
        super().__init__(task, size, num_classes)
        self.space = space
        self.built_by = __version__  # the fnacli version that counted the entries
        self._tensors: dict[torch.device, dict] = {}

    def build(self, progress: bool = False) -> Lut:
        ref = self.space.max_arch()  # any member: only its stride pattern is used
        geo = self.geometry(ref)
        keys: list[LayerKey] = []
        for s, st in enumerate(self.space.stages):
            for layer in range(st.layers):
                stride = st.stride if layer == 0 else 1
                res = geo.stage_in[s] if layer == 0 else geo.stage_out[s]
                for op in layer_ops(self.space, s, layer):
                    if op == SKIP:
                        continue
                    pairs = ([(a, b) for a in stage_in_outs(self.space, s) for b in st.outs]
                             if layer == 0 else [(c, c) for c in st.outs])
                    keys += [(op, a, b, stride, *res) for a, b in pairs]
        self.fill(keys, self._space_fixed(ref), ref, progress)
        return self

    def _space_fixed(self, ref: ArchSpec) -> list[tuple[str, int, tuple]]:
        """Fixed-part entries for every channel count the space can feed them."""
        needs = []
        space, last = self.space, self.space.stages[-1].outs
        for c in last:
            needs += self.fixed_needs(with_out(ref, len(space.stages) - 1, c))
        if self.task_obj is not None:
            needs += self.task_obj.cost_space_needs(self, ref)
        return needs

    # expected cost -----------------------------------------------------------------------
    def _prepared(self, device: torch.device) -> dict:
        if device not in self._tensors:
            self._tensors[device] = {k: (torch.tensor(v, dtype=torch.float64, device=device)
                                         if isinstance(v, list) else v)
                                     for k, v in self._tables().items()}
        return self._tensors[device]

    def _tables(self) -> dict:
        """Plain nested lists of costs, indexed by candidate positions (see expected_madds)."""
        space, ref = self.space, self.space.max_arch()
        geo = self.geometry(ref)
        t: dict = {}
        for s, st in enumerate(space.stages):
            ins = stage_in_outs(space, s)
            for layer in range(st.layers):
                stride = st.stride if layer == 0 else 1
                res = geo.stage_in[s] if layer == 0 else geo.stage_out[s]

                def cost(op: str, a: int, b: int, stride: int = stride, res: Res = res) -> int:
                    return 0 if op == SKIP else self.layers[(op, a, b, stride, *res)][0]

                ops = layer_ops(space, s, layer)
                if layer == 0:
                    t[("layer", s, layer)] = [[[cost(o, a, b) for b in st.outs] for a in ins]
                                              for o in ops]
                else:
                    t[("layer", s, layer)] = [[cost(o, c, c) for c in st.outs] for o in ops]
        n = len(space.stages) - 1
        variants = [with_out(ref, n, c) for c in space.stages[-1].outs]
        t["stem"] = self.fixed[self.fixed_needs(ref)[0]][1]
        # everything that varies with the last stage's width: head conv, fc, SSD extras...
        groups = ("head_conv", "fc", *(self.task_obj.cost_last_groups() if self.task_obj else ()))
        t["last"] = [sum(self.fixed[f][1] for f in self.fixed_needs(v) if f[0] in groups)
                     for v in variants]
        t["last_backbone"] = [sum(self.fixed[f][1] for f in self.fixed_needs(v)
                                  if f[0] == "head_conv") for v in variants]
        if self.task_obj is not None:
            t.update(self.task_obj.cost_tables(self, ref))
        return t

    def searched_stages(self) -> tuple[int, ...]:
        return searched_stages(self.space)

    def arch_cost(self, spec: ArchSpec, scope: str = "detector",
                  stages: Iterable[int] | None = None) -> float:
        return super().arch_cost(spec, scope, self.searched_stages() if stages is None
                                 else stages)

    def expected_madds(self, alpha_probs: Mapping[tuple[int, int], torch.Tensor],
                       beta_probs: Mapping[int, torch.Tensor],
                       scope: str = "detector") -> torch.Tensor:
        """E[MAdds] under independent α (per layer) and β (per stage) distributions, of the
        whole detector (``scope="detector"``), the backbone (``backbone``: stem, every layer
        and the head conv where the task has it) or the searched blocks only (``blocks``: the
        layers of the stages that carry α or β, Jung et al.'s eq. 5).

        A layer's cost is Σ_in Σ_out p(in) p(out) Σ_op α_op cost(op, in, out): its input width
        follows the previous stage's β, its output width its own stage's β (the layers after
        a stage's first keep the width, so in = out there); ``skip`` costs 0. Fixed parts that
        depend on a width (head conv, FPN laterals, SSDLite heads) are weighted the same way.
        One-hot α/β give the exact MAdds of the selected architecture. Differentiable; float64
        internally, returned in the probabilities' dtype.
        """
        ref = next(iter(alpha_probs.values()), next(iter(beta_probs.values()), None))
        device = ref.device if ref is not None else torch.device("cpu")
        dtype = ref.dtype if ref is not None else torch.float64
        t = self._prepared(device)
        space = self.space

        def width(s: int) -> torch.Tensor:
            n = len(space.stages[s].outs) if s >= 0 else 1
            if n == 1:
                return torch.ones(1, dtype=torch.float64, device=device)
            return _probs(beta_probs, s, n, "beta", device)

        def alpha(s: int, layer: int) -> torch.Tensor:
            n = len(layer_ops(space, s, layer))
            if not space.stages[s].searchable or (n == 1 and (s, layer) not in alpha_probs):
                return torch.ones(1, dtype=torch.float64, device=device)
            return _probs(alpha_probs, (s, layer), n, "alpha", device)

        check_scope(scope)
        searched = set(searched_stages(space))
        total = torch.zeros((), dtype=torch.float64, device=device)
        if scope != "blocks":
            total = total + t["stem"]
        for s, st in enumerate(space.stages):
            if scope == "blocks" and s not in searched:
                continue
            p_in, p_out = width(s - 1), width(s)
            for layer in range(st.layers):
                a, cost = alpha(s, layer), t[("layer", s, layer)]
                if layer == 0:
                    total = total + torch.einsum("o,i,j,oij->", a, p_in, p_out, cost)
                else:
                    total = total + torch.einsum("o,j,oj->", a, p_out, cost)
        last = width(len(space.stages) - 1)
        if scope == "blocks":
            return total.to(dtype)
        if scope == "backbone":
            return (total + last @ t["last_backbone"]).to(dtype)
        total = total + last @ t["last"]
        if self.task_obj is not None:
            total = self.task_obj.cost_expected(total, t, alpha, width)
        return total.to(dtype)

    # persistence -------------------------------------------------------------------------
    def to_json(self) -> str:
        d = {"schema": LUT_SCHEMA, "fnacli_version": __version__, "task": self.task,
             "input": list(self.size), "num_classes": self.num_classes,
             "space_hash": space_hash(self.space), "space": self.space.to_dict(),
             **self.entries_json()}
        return json.dumps(d, separators=(",", ":")) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "lookup table") -> Lut:
        from fnacli.io import load_json_text

        d = load_json_text(text, source)
        if not isinstance(d, dict) or d.get("schema") != LUT_SCHEMA:
            raise UserError(f"{source}: not an fnacli lookup table (schema {LUT_SCHEMA!r})")
        try:
            space = SpaceSpec.from_dict(d["space"], f"{source}: space")
            lut = cls(space, str(d["task"]), tuple(d["input"]), int(d["num_classes"]))
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{source}: missing or malformed task/input/num_classes/space") \
                from None
        lut.load_entries(d, source)
        lut.built_by = str(d.get("fnacli_version", ""))
        return lut


def check_scope(scope: str) -> str:
    if scope not in COST_SCOPES:
        raise UserError(f"--cost-scope: expected one of {', '.join(COST_SCOPES)}, got {scope!r}")
    return scope


def searched_stages(space: SpaceSpec) -> tuple[int, ...]:
    """The stages whose layers are mixed blocks: searchable ops or several widths."""
    return tuple(s for s, st in enumerate(space.stages) if st.searchable or len(st.outs) > 1)


def _probs(d: Mapping, key: object, n: int, what: str, device: torch.device) -> torch.Tensor:
    if key not in d:
        raise KeyError(f"{what} probabilities for {key} are missing")
    p = d[key]
    if p.shape != (n,):
        raise ValueError(f"{what} probabilities for {key}: expected shape ({n},), got "
                         f"{tuple(p.shape)}")
    return p.to(device=device, dtype=torch.float64)


def with_out(arch: ArchSpec, s: int, c: int) -> ArchSpec:
    from dataclasses import replace

    stages = list(arch.stages)
    stages[s] = replace(stages[s], out=c)
    return replace(arch, stages=tuple(stages))


def with_op0(arch: ArchSpec, s: int, op: str) -> ArchSpec:
    from dataclasses import replace

    stages = list(arch.stages)
    stages[s] = replace(stages[s], ops=(Op.parse(op), *stages[s].ops[1:]))
    return replace(arch, stages=tuple(stages))


# -- on-disk cache ---------------------------------------------------------------------------
def cache_dir() -> Path:
    return Path(os.environ.get("FNACLI_CACHE_DIR") or Path.home() / ".cache" / "fnacli")


def cache_path(space: SpaceSpec, task: str, size: tuple[int, int], num_classes: int) -> Path:
    name = f"lut-{task}-{size[0]}x{size[1]}-c{num_classes}-{space_hash(space)[:16]}.json"
    return cache_dir() / "lut" / name


def build_lut(space: SpaceSpec, task: str, size: tuple[int, int], num_classes: int | None = None,
              progress: bool = False) -> Lut:
    """A freshly built table (no cache)."""
    return Lut(space, task, size, num_classes).build(progress)


def load_or_build_lut(space: SpaceSpec, task: str, size: tuple[int, int],
                      num_classes: int | None = None, progress: bool = False) -> Lut:
    """The cached table for (space, task, size, num_classes), built and cached on first use."""
    num_classes = default_classes(task) if num_classes is None else num_classes
    path = cache_path(space, task, tuple(size), num_classes)
    if path.is_file():
        try:
            lut = Lut.from_json(path.read_text(), str(path))
            # another version may count differently: its cached numbers are not reused
            if space_hash(lut.space) == space_hash(space) and lut.built_by == __version__:
                lut.space = space
                return lut
        except (UserError, OSError):
            pass  # a stale or damaged cache file is rebuilt below
    lut = build_lut(space, task, size, num_classes, progress)
    try:
        from fnacli.io import remove_stale_temps, write_text_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)  # what a build killed while writing left
        write_text_atomic(path, lut.to_json())
    except (OSError, UserError):
        pass  # an unwritable cache only costs a rebuild next time
    return lut


__all__ = ["CostTable", "Lut", "build_lut", "build_model", "load_or_build_lut", "profile_specs"]
