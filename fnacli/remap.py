"""Parameter remapping (FNA): carry a seed backbone's parameters onto another architecture.

Three independent rules, applied per stage and per tensor:

- depth: new layer i of a stage takes seed layer min(i, l-1) of the same stage (extra
  layers copy the stage's last layer);
- width: a *channel group* is a set of channels every tensor touching it must index the
  same way: the stem's output, each stage's output (shared by all the stage's layers
  because of the residual additions) and each layer's hidden (expanded) width. Narrower
  keeps the seed channels chosen by the strategy, in ascending order; wider copies all of
  them and adds channels by the widening rule (``WIDEN_RULES``):

  - ``noise`` (default; Jung et al.): new conv weights 0 plus N(0, (r·rms)²) noise, ``r`` =
    ``noise`` (default 0.01) and ``rms`` the root mean square of the seed tensor's values, so
    that the new channels receive gradients; BN of new channels γ=1, β=0, mean=0, var=1;
  - ``zeros``: the same without noise: new channels output exactly 0 (function preserving)
    but, with all their weights 0, get no gradient where nothing else feeds them;
  - ``split`` (Net2Net-style): new channel ``n_seed + j`` copies seed channel ``j mod n_seed``
    (producing conv rows and BN), and every consuming conv divides the columns of a copied
    channel by its number of copies: the function is unchanged and the copies get the same,
    non-zero gradients as their originals;
- kernel: larger puts the seed kernel in the centre (``center``) or on a dilated grid
  (``dilate``) with zeros elsewhere; smaller crops the centre (or takes the dilated taps).

BatchNorm parameters and statistics follow their channels.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from fnacli.errors import UserError
from fnacli.spec import ArchSpec, Op, SpaceSpec, Stage

WIDTH_STRATEGIES = ("first", "bn", "std", "l1")
WIDEN_RULES = ("noise", "zeros", "split")
DEFAULT_WIDEN = "noise"
# Jung et al. add "small" noise to the mapped parameters; 1% of a tensor's typical magnitude
# is small next to the copied weights (the seed's function moves by ~1%) and large enough that
# gradients of the new channels are not lost in float32 rounding.
DEFAULT_NOISE = 0.01
KERNEL_STRATEGIES = ("center", "dilate")
# fill values that make a new BN channel the identity on 0 (var 1 with BN's eps ≈ identity)
_BN_FILL = {"weight": 1.0, "bias": 0.0, "running_mean": 0.0, "running_var": 1.0}


@dataclass(frozen=True)
class ChannelMap:
    """New positions 0..len(idx)-1 of ``n_target`` take seed channels ``idx``; positions after
    them are filled. ``idx`` is ascending, except under ``split`` widening where it repeats
    seed channels (a consuming conv then divides a channel's columns by its copy count)."""

    n_seed: int
    n_target: int
    idx: torch.Tensor

    @classmethod
    def first(cls, n_seed: int, n_target: int) -> ChannelMap:
        return cls(n_seed, n_target, torch.arange(min(n_seed, n_target)))

    def copies(self) -> torch.Tensor:
        """How many new positions each kept entry's seed channel occupies (1 unless split)."""
        return torch.bincount(self.idx, minlength=self.n_seed)[self.idx]


def select_channels(scores: torch.Tensor | None, n_target: int) -> torch.Tensor:
    """Indices of the kept seed channels, ascending: all when widening, else the first
    ``n_target`` (no scores) or the ``n_target`` highest scores (ties: lower index first)."""
    n_seed = scores.numel() if scores is not None else n_target
    if scores is None or n_target >= n_seed:
        return torch.arange(min(n_seed, n_target))
    order = torch.sort(-scores.double(), stable=True).indices[:n_target]
    return torch.sort(order).values


class _Remapper:
    def __init__(self, state: dict[str, torch.Tensor], seed: ArchSpec, target: ArchSpec,
                 width: str, kernel: str, widen: str, noise: float, gen: torch.Generator
                 ) -> None:
        self.src, self.seed, self.target = state, seed, target
        self.width, self.kernel, self.widen, self.gen = width, kernel, widen, gen
        self.noise = noise if widen == "noise" else 0.0
        self.out: dict[str, torch.Tensor] = {}
        self.seed_layers = {(s, i): (cin, op) for s, i, cin, _, op, _ in seed.layers()}

    # -- channel groups ------------------------------------------------------------------
    def _scores(self, producers: list[str]) -> torch.Tensor | None:
        """Importance of each channel of a group, summed over the convs+BNs producing it."""
        if self.width == "first":
            return None
        total = None
        for p in producers:
            if self.width == "bn":
                s = self.src[f"{p}.bn.weight"].abs()
            else:
                w = self.src[f"{p}.conv.weight"].flatten(1).double()
                s = w.abs().sum(1) if self.width == "l1" else w.std(1, unbiased=False)
            total = s.double() if total is None else total + s
        return total

    def _group(self, producers: list[str], n_target: int) -> ChannelMap:
        n_seed = self.src[f"{producers[0]}.bn.weight"].numel()
        if n_target > n_seed and self.widen == "split":
            extra = torch.arange(n_target - n_seed) % n_seed
            return ChannelMap(n_seed, n_target, torch.cat([torch.arange(n_seed), extra]))
        if n_target >= n_seed:
            return ChannelMap(n_seed, n_target, torch.arange(n_seed))
        return ChannelMap(n_seed, n_target, select_channels(self._scores(producers), n_target))

    # -- tensors -------------------------------------------------------------------------
    def _conv(self, src: torch.Tensor, key: str, shape: tuple[int, ...],
              maps: dict[int, ChannelMap]) -> None:
        """Channels through ``maps`` (dim -> map; dim 1 is a consumer: copied channels divide
        their columns), the kernel through the kernel rule, zeros elsewhere; noise only on the
        entries of new channels (kernel borders learn without it: their inputs are not 0)."""
        t = src
        for dim, cmap in maps.items():
            if t.shape[dim] != cmap.n_seed:  # a bug here, never bad input: specs are checked
                raise AssertionError(f"{key}: dim {dim} is {t.shape[dim]}, map expects "
                                     f"{cmap.n_seed}")
            t = t.index_select(dim, cmap.idx)
            if dim == 1:
                t = t / cmap.copies().to(t.dtype).view(1, -1, *[1] * (t.dim() - 2))
        t, _ = remap_kernel(t, shape[-1], self.kernel)
        out = torch.zeros(shape, dtype=src.dtype)
        new_channels = torch.ones(shape, dtype=torch.bool)
        region = tuple(slice(0, n) for n in t.shape[:2])
        out[region] = t
        new_channels[region] = False
        self._put(key, out, new_channels, _rms(src))

    def _put(self, key: str, out: torch.Tensor, filled: torch.Tensor, scale: float) -> None:
        if self.noise > 0 and filled.any():
            n = int(filled.sum())
            out[filled] += torch.randn(n, generator=self.gen, dtype=torch.float64).to(
                out.dtype) * (self.noise * scale)
        self.out[key] = out

    def _bn(self, src: str | None, key: str, n: int, cmap: ChannelMap | None) -> None:
        for p, fill in _BN_FILL.items():
            t = torch.full((n,), fill)
            if src is not None and cmap is not None:
                s = self.src[f"{src}.{p}"]
                t = t.to(s.dtype)
                t[: cmap.idx.numel()] = s.index_select(0, cmap.idx)
            self.out[f"{key}.{p}"] = t
        counter = self.src.get(f"{src}.num_batches_tracked") if src else None
        self.out[f"{key}.num_batches_tracked"] = (counter.clone() if counter is not None
                                                  else torch.tensor(0, dtype=torch.long))

    # -- the network ---------------------------------------------------------------------
    def run(self) -> list[dict]:
        seed, target = self.seed, self.target
        stem = self._group(["stem"], target.stem_out)
        self._conv(self.src["stem.conv.weight"], "stem.conv.weight",
                   (target.stem_out, 3, 3, 3), {0: stem})
        self._bn("stem.bn", "stem.bn", target.stem_out, stem)

        stage_maps = [self._group([f"stages.{s}.{j}.project" for j in range(st.depth)],
                                  target.stages[s].out) for s, st in enumerate(seed.stages)]
        report = []
        for s, i, cin, cout, op, _ in target.layers():
            j = min(i, seed.stages[s].depth - 1)
            seed_cin, seed_op = self.seed_layers[(s, j)]
            if i == 0:
                in_map = stem if s == 0 else stage_maps[s - 1]
            elif j > 0:
                in_map = stage_maps[s]
            else:  # the copied seed layer 0 reads the previous stage: fit by position only
                in_map = ChannelMap.first(seed_cin, cin)
            self._layer(f"stages.{s}.{j}", f"stages.{s}.{i}", cin, cout, op, seed_cin, seed_op,
                        in_map, stage_maps[s])
            if i == 0:
                report.append(self._stage_report(s))
            report[-1]["sources"].append(j)

        if target.head_out:
            last = target.stages[-1].out
            if seed.head_out:
                head = self._group(["head"], target.head_out)
                self._conv(self.src["head.conv.weight"], "head.conv.weight",
                           (target.head_out, last, 1, 1), {0: head, 1: stage_maps[-1]})
                self._bn("head.bn", "head.bn", target.head_out, head)
            else:  # nothing to copy (e.g. a RetinaNet seed): a fresh He-initialised head
                w = torch.empty(target.head_out, last, 1, 1)
                torch.nn.init.kaiming_normal_(w, mode="fan_out", generator=self.gen)
                self.out["head.conv.weight"] = w
                self._bn(None, "head.bn", target.head_out, None)
        return report

    def _layer(self, src: str, dst: str, cin: int, cout: int, op: Op, seed_cin: int,
               seed_op: Op, in_map: ChannelMap, out_map: ChannelMap) -> None:
        hidden, seed_hidden = cin * op.expand, seed_cin * seed_op.expand
        if seed_op.expand > 1:
            hid = self._group([f"{src}.expand"], hidden)
        else:  # the seed's hidden channels are its inputs: keep them where the inputs went
            hid = ChannelMap(seed_hidden, hidden, in_map.idx[:hidden])
        if op.expand > 1:
            if seed_op.expand > 1:
                self._conv(self.src[f"{src}.expand.conv.weight"], f"{dst}.expand.conv.weight",
                           (hidden, cin, 1, 1), {0: hid, 1: in_map})
                self._bn(f"{src}.expand.bn", f"{dst}.expand.bn", hidden, hid)
            else:  # no seed expansion to copy: pass each input through to its own channel
                w = torch.zeros(hidden, cin, 1, 1)
                filled = torch.ones_like(w, dtype=torch.bool)
                k = torch.arange(in_map.idx.numel())
                w[k, k] = 1.0
                filled[k, k] = False
                self._put(f"{dst}.expand.conv.weight", w, filled, 1.0)
                self._bn(None, f"{dst}.expand.bn", hidden, None)
        self._conv(self.src[f"{src}.dw.conv.weight"], f"{dst}.dw.conv.weight",
                   (hidden, 1, op.kernel, op.kernel), {0: hid})
        self._bn(f"{src}.dw.bn", f"{dst}.dw.bn", hidden, hid)
        self._conv(self.src[f"{src}.project.conv.weight"], f"{dst}.project.conv.weight",
                   (cout, hidden, 1, 1), {0: out_map, 1: hid})
        self._bn(f"{src}.project.bn", f"{dst}.project.bn", cout, out_map)

    def _stage_report(self, s: int) -> dict:
        a, b = self.seed.stages[s], self.target.stages[s]
        return {"stage": s,
                "seed": {"out": a.out, "stride": a.stride, "ops": [str(o) for o in a.ops]},
                "new": {"out": b.out, "stride": b.stride, "ops": [str(o) for o in b.ops]},
                "sources": []}


def _rms(t: torch.Tensor) -> float:
    """Root mean square of a tensor's values (its std for zero-mean weights); 1 when all 0."""
    v = float(t.double().square().mean().sqrt()) if t.numel() else 0.0
    return v if v > 0 else 1.0


def remap_kernel(w: torch.Tensor, k: int, rule: str = "center") -> tuple[torch.Tensor,
                                                                          torch.Tensor]:
    """Resize the last two (square, odd) dims of ``w`` to ``k``; also returns the mask of
    filled (new, zero) taps.

    ``center``: bigger = seed kernel in the centre (function-preserving with 'same'
    padding), smaller = centre crop. ``dilate``: seed taps spread on a grid of step
    (k-1)/(k0-1) (or sampled on it when smaller) where that ratio is whole, else ``center``.
    """
    k0 = w.shape[-1]
    if k0 == k:
        return w, torch.zeros(w.shape, dtype=torch.bool)
    big, small = max(k, k0), min(k, k0)
    if rule == "dilate" and small > 1 and (big - 1) % (small - 1) == 0:
        sl = slice(None, None, (big - 1) // (small - 1))
    else:
        o = (big - small) // 2
        sl = slice(o, o + small)
    if k < k0:
        return w[..., sl, sl].clone(), torch.zeros((*w.shape[:-2], k, k), dtype=torch.bool)
    out = torch.zeros((*w.shape[:-2], k, k), dtype=w.dtype)
    filled = torch.ones(out.shape, dtype=torch.bool)
    out[..., sl, sl] = w
    filled[..., sl, sl] = False
    return out, filled


def check_widen(widen: str, noise: float | None) -> None:
    """A widening rule and its noise as the command line gives them (UserError naming the
    flags)."""
    if widen not in WIDEN_RULES:
        raise UserError(f"--widen: expected one of {', '.join(WIDEN_RULES)}, got {widen!r}")
    if noise is not None and noise < 0:
        raise UserError(f"--noise: expected ≥ 0, got {noise}")
    if noise and widen != "noise":
        raise UserError(f"--noise applies to --widen noise, not --widen {widen}")


def resolve_noise(widen: str, noise: float | None) -> float:
    """The relative noise std a widening rule uses (0 for ``zeros``/``split``)."""
    if widen != "noise":
        return 0.0
    return DEFAULT_NOISE if noise is None else float(noise)


def remap_state(seed_state: dict[str, torch.Tensor], seed_spec: ArchSpec, target_spec: ArchSpec,
                width: str = "first", kernel: str = "center", widen: str = DEFAULT_WIDEN,
                noise: float | None = None, seed: int = 0, seed_name: str = "the seed",
                target_name: str = "the target spec"
                ) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Parameters for ``Backbone(target_spec)`` from a seed ``Backbone(seed_spec)`` state.

    Returns the state (in Backbone's key order; loads with ``strict=True``) and a report,
    one entry per stage: seed and new out/stride/ops, and which seed layer each new layer
    copies (``sources``). ``widen`` is the rule for added channels (module docstring);
    under ``noise`` the entries of new channels get N(0, (noise·rms)²), rms that of the seed
    tensor, ``noise`` defaulting to ``DEFAULT_NOISE``, drawn from a generator seeded with
    ``seed``. ``noise`` with another rule must be None or 0. ``seed_name``/``target_name``
    (their files) go into error messages.
    """
    from fnacli.nn.backbone import Backbone

    if width not in WIDTH_STRATEGIES:
        raise UserError(f"width strategy must be one of {', '.join(WIDTH_STRATEGIES)}, "
                        f"got {width!r}")
    if kernel not in KERNEL_STRATEGIES:
        raise UserError(f"kernel strategy must be one of {', '.join(KERNEL_STRATEGIES)}, "
                        f"got {kernel!r}")
    if widen not in WIDEN_RULES:
        raise UserError(f"widening rule must be one of {', '.join(WIDEN_RULES)}, got {widen!r}")
    if noise is not None and noise < 0:
        raise UserError(f"noise must be ≥ 0, got {noise}")
    if noise and widen != "noise":
        raise UserError(f"noise applies to the 'noise' widening rule, not {widen!r}")
    noise = resolve_noise(widen, noise)
    if len(seed_spec.stages) != len(target_spec.stages):
        raise UserError(f"{seed_name} has {len(seed_spec.stages)} stages but {target_name} has "
                        f"{len(target_spec.stages)}; remapping is per stage, so they must match")
    gen = torch.Generator().manual_seed(seed)
    r = _Remapper(seed_state, seed_spec, target_spec, width, kernel, widen, noise, gen)
    report = r.run()
    with torch.device("meta"):
        ref = Backbone(target_spec).state_dict()
    missing = [k for k in ref if k not in r.out]
    wrong = [k for k in ref if k in r.out and r.out[k].shape != ref[k].shape]
    if missing or wrong or len(ref) != len(r.out):
        raise AssertionError(f"remap produced a state that does not fit the target: missing "
                             f"{missing[:3]}, wrong shapes {wrong[:3]}")
    return {k: r.out[k] for k in ref}, report


# -- a supernet's tensors -------------------------------------------------------------------
_LAYER_KEY = re.compile(r"^stages\.(\d+)\.(\d+)\.(.+)$")  # a backbone layer's tensor


def supernet_state_from_seed(space: SpaceSpec, seed_state: Mapping[str, torch.Tensor],
                             seed_spec: ArchSpec, **remap_kwargs: object
                             ) -> dict[str, torch.Tensor]:
    """Supernet tensors remapped from a seed.

    For each candidate op ``c`` the seed is remapped onto ``space.max_arch()`` with every
    searchable layer set to ``c`` (depth, width including e3 from e6, and kernel rules of
    ``fnacli.remap``) and that network's layer tensors become candidate ``c``'s. Fixed
    layers, the stem and the head come from the first remap.
    """
    from fnacli.nn.supernet import candidate_ops

    base = space.max_arch()
    cands = candidate_ops(space) or [None]
    state: dict[str, torch.Tensor] = {}
    for c in cands:
        stages = []
        for st_space, st in zip(space.stages, base.stages, strict=True):
            if c is not None and st_space.searchable and c in st_space.candidates:
                st = Stage(st.out, st.stride, (Op.parse(c),) * st_space.layers)
            stages.append(st)
        target = ArchSpec(base.stem_out, base.stem_stride, tuple(stages), base.head_out)
        remapped, _ = remap_state(dict(seed_state), seed_spec, target, **remap_kwargs)
        for key, t in remapped.items():
            m = _LAYER_KEY.match(key)
            if m is None:
                state.setdefault(key, t)
                continue
            s, i, rest = int(m.group(1)), int(m.group(2)), m.group(3)
            st_space = space.stages[s]
            if st_space.searchable:
                if c is not None and c in st_space.candidates:
                    state[f"stages.{s}.{i}.ops.{c}.{rest}"] = t
            else:
                state.setdefault(f"stages.{s}.{i}.ops.{st_space.fixed_ops[i]}.{rest}", t)
    return state
