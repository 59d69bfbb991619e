"""The supernet of a search space: mixed ops (one MBConv per candidate) and mixed blocks (one
shared max-width computation per stage, output width chosen by channel masks).

Same forward contract as ``Backbone``: an ordered dict with ``stage{i}`` per stage, ``ssd_tap``
and ``head``, every map at its largest width (narrower choices are zero-padded), so
``fnacli.tasks.build_detector(space.max_arch(), task, backbone=supernet)`` wraps it.

Two ways to run it, chosen before each forward call:

- ``set_path(path)``: one architecture (an op per layer, a width per stage). Only the chosen
  candidates run, on weight slices of the chosen widths, so a weight step costs about what
  the sampled network costs (used for weight steps and one-shot evaluation). Under
  SyncBatchNorm slices cannot be normalised in sync, so the same path runs at full width with
  hard 0/1 masks instead (same result, more compute).
- ``set_weighted(alpha_probs, beta_probs)``: the relaxation for α/β steps: every layer is the
  α-weighted sum of its candidates and every searchable stage width is the β-weighted sum of
  channel masks (``fnacli.nn.masks``) multiplying each block's output (Jung et al.'s
  eq. 2; ``mask_scope="block"`` also multiplies its hidden channels). One-hot α gives exactly
  the selected ops; one-hot β gives exactly the selected widths only under ``overlapping``
  masks with the ``block`` scope: under Jung et al.'s ``non-overlapping`` masks a one-hot β
  keeps just the chosen width's own channel segment, and under the ``output`` scope the hidden
  channels keep their full width, so the relaxed network is the paper's, not the selected
  one. ``set_path``
  (and ``derive``) are exact for both. With ``support`` (the sampled α/β step,
  ``fnacli.search.gates``) a layer runs only the listed candidates; ``checkpoint_activations``
  recomputes each mixed layer in the backward pass instead of keeping its candidates'
  activations.

State-dict keys: ``stem.*``, ``stages.S.L.ops.OP.{expand,dw,project}.{conv,bn}.*`` (``OP`` is the
candidate's ``kK_eE``; fixed layers have their one op), ``head.*``.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from fnacli.nn import masks as M
from fnacli.nn.backbone import (
    SSD_TAP,
    atrous_stages,
    feature_channels,
    feature_strides,
    ssd_tap_layer,
)
from fnacli.nn.blocks import ConvBN, MBConv
from fnacli.spec import SKIP, ArchSpec, Op, SpaceSpec, Stage


@dataclass
class Path:
    """One architecture of a space: candidate index per layer, width index per stage.

    Missing entries mean the first candidate of a fixed layer / the only width of a stage.
    """

    ops: dict[tuple[int, int], int] = field(default_factory=dict)
    widths: dict[int, int] = field(default_factory=dict)


def op_choices(space: SpaceSpec) -> list[tuple[int, int, tuple[str, ...]]]:
    """The layers that carry α: (stage, layer, candidates) for every layer of a searchable stage."""
    return [(s, i, st.layer_candidates(i)) for s, st in enumerate(space.stages) if st.searchable
            for i in range(st.layers)]


def width_choices(space: SpaceSpec) -> list[tuple[int, tuple[int, ...]]]:
    """The stages that carry β: (stage, channel candidates) where there is more than one."""
    return [(s, st.outs) for s, st in enumerate(space.stages) if len(st.outs) > 1]


def path_to_arch(space: SpaceSpec, path: Path) -> ArchSpec:
    """The architecture a path selects (skips dropped)."""
    stages = []
    for s, st in enumerate(space.stages):
        out = st.outs[path.widths.get(s, len(st.outs) - 1)]
        if not st.searchable:
            stages.append(Stage(out, st.stride, st.fixed_ops))
            continue
        ops = [st.layer_candidates(i)[path.ops.get((s, i), 0)] for i in range(st.layers)]
        stages.append(Stage(out, st.stride, tuple(Op.parse(o) for o in ops if o != SKIP)))
    return ArchSpec(space.stem_out, space.stem_stride, tuple(stages), space.head_out)


def max_path(space: SpaceSpec) -> Path:
    """space.max_arch() as a path: first non-skip candidate everywhere, largest widths."""
    ops = {}
    for s, i, cands in op_choices(space):
        ops[(s, i)] = next(j for j, c in enumerate(cands) if c != SKIP)
    return Path(ops, {s: len(outs) - 1 for s, outs in width_choices(space)})


class MixedLayer(nn.Module):
    """One layer position: an MBConv per candidate op at the largest in/out widths."""

    def __init__(self, cin: int, cout: int, stride: int, candidates: tuple[str, ...],
                 dilation: int = 1) -> None:
        super().__init__()
        self.candidates = candidates
        self.stride = stride
        self.ops = nn.ModuleDict()
        for c in candidates:
            if c != SKIP:
                op = Op.parse(c)
                self.ops[c] = MBConv(cin, cout, op.kernel, op.expand, stride, dilation)


Selection = int | torch.Tensor | None  # index, probabilities, or None (nothing to choose)


class Supernet(nn.Module):
    """The supernet of ``space`` (see the module docstring)."""

    def __init__(self, space: SpaceSpec, masks: str = M.DEFAULT_KIND,
                 with_head: bool = True, output_stride: int | None = None,
                 mask_scope: str = M.DEFAULT_SCOPE) -> None:
        super().__init__()
        self.space = space
        self.masks = M.check_kind(masks)
        self.mask_scope = M.check_scope(mask_scope)
        self.output_stride = output_stride
        self.stem = ConvBN(3, space.stem_out, 3, space.stem_stride)
        stages, cin = [], space.stem_out
        rows = atrous_stages(space.stem_stride, [st.stride for st in space.stages], output_stride)
        for st, (stride, first_dil, dil) in zip(space.stages, rows, strict=True):
            cout = max(st.outs)
            layers = [MixedLayer(cin if i == 0 else cout, cout, stride if i == 0 else 1,
                                 st.layer_candidates(i), first_dil if i == 0 else dil)
                      for i in range(st.layers)]
            stages.append(nn.ModuleList(layers))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.head = ConvBN(cin, space.head_out) if space.head_out and with_head else None
        ref = space.max_arch()
        self.tap = ssd_tap_layer(ref, output_stride)
        self.feature_channels = feature_channels(ref, with_head, output_stride)
        if self.tap is not None:
            # candidates expand differently: the tap is zero-padded to the widest expansion
            s, _ = self.tap
            self.feature_channels[SSD_TAP] = max(
                (op.expand.conv.out_channels if op.expand is not None else op.dw.conv.in_channels)
                for op in self.stages[s][0].ops.values())
        self.feature_strides = feature_strides(ref, with_head, output_stride)
        self._path: Path = max_path(space)
        self._alpha: Mapping[tuple[int, int], torch.Tensor] | None = None
        self._beta: Mapping[int, torch.Tensor] = {}
        self._support: Mapping[tuple[int, int], tuple[int, ...]] | None = None
        # recompute mixed layers in the backward pass (relaxed forward only): memory for time
        self.checkpoint_activations = False
        self._mask_cache: dict[tuple, torch.Tensor] = {}

    # -- choosing what the next forward computes ---------------------------------------------
    def set_path(self, path: Path) -> None:
        """Run one architecture (only its candidates, on weight slices of its widths)."""
        self._path, self._alpha, self._beta, self._support = path, None, {}, None

    def set_weighted(self, alpha_probs: Mapping[tuple[int, int], torch.Tensor],
                     beta_probs: Mapping[int, torch.Tensor],
                     support: Mapping[tuple[int, int], tuple[int, ...]] | None = None) -> None:
        """Run the relaxation: α-weighted candidates, β-weighted channel masks. ``support``:
        per layer, the only candidates to run (the others' weights must be exactly zero);
        every one but the first must weigh exactly zero too (gates of
        ``fnacli.search.gates``): those run without an autograd graph."""
        self._alpha, self._beta, self._support = alpha_probs, beta_probs, support

    @property
    def weighted(self) -> bool:
        return self._alpha is not None

    def path_modules(self, path: Path) -> list[nn.Module]:
        """The modules a forward of ``path`` runs: the stem, the chosen candidate of every
        layer (none for a skip) and the head."""
        mods: list[nn.Module] = [self.stem]
        for s, layers in enumerate(self.stages):
            for i, layer in enumerate(layers):
                cand = layer.candidates[path.ops.get((s, i), 0)]
                if cand != SKIP:
                    mods.append(layer.ops[cand])
        if self.head is not None:
            mods.append(self.head)
        return mods

    # -- forward -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        if self._alpha is None and type(self.stem.bn) is nn.BatchNorm2d:
            return self._forward_sliced(x, self._path)
        return self._forward_masked(x)

    def _forward_sliced(self, x: torch.Tensor, path: Path) -> OrderedDict[str, torch.Tensor]:
        feats: OrderedDict[str, torch.Tensor] = OrderedDict()
        x = self.stem(x)
        cin = self.space.stem_out
        for s, (st, layers) in enumerate(zip(self.space.stages, self.stages, strict=True)):
            cout = st.outs[path.widths.get(s, len(st.outs) - 1)]
            for i, layer in enumerate(layers):
                cand = layer.candidates[path.ops.get((s, i), 0)]
                if cand != SKIP:
                    x, h = _run_sliced(layer.ops[cand], x, cin, cout)
                    if (s, i) == self.tap:
                        feats[SSD_TAP] = _fit(h, self.feature_channels[SSD_TAP])
                cin = cout
            feats[f"stage{s}"] = _fit(x, max(st.outs))
        if self.head is not None:
            feats["head"] = _conv_bn(self.head, x, cin, self.head.conv.out_channels)
        return feats

    def _forward_masked(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats: OrderedDict[str, torch.Tensor] = OrderedDict()
        x = self.stem(x)
        prev: tuple[tuple[int, ...], Selection] = ((self.space.stem_out,), None)
        for s, (st, layers) in enumerate(zip(self.space.stages, self.stages, strict=True)):
            cur = (st.outs, self._width_sel(s))
            for i, layer in enumerate(layers):
                args = (layer, x, prev if i == 0 else cur, cur, i == 0, self._op_sel(s, i),
                        (s, i) == self.tap, self._op_support(s, i))
                if self.checkpoint_activations and self._alpha is not None \
                        and torch.is_grad_enabled():
                    x, tap = checkpoint(self._mixed, *args, use_reentrant=False)
                else:
                    x, tap = self._mixed(*args)
                if tap is not None:
                    feats[SSD_TAP] = tap
            feats[f"stage{s}"] = x
            prev = cur
        if self.head is not None:
            feats["head"] = self.head(x)
        return feats

    def _op_sel(self, s: int, i: int) -> Selection:
        if self._alpha is not None and (s, i) in self._alpha:
            return self._alpha[(s, i)]
        return self._path.ops.get((s, i), 0)

    def _op_support(self, s: int, i: int) -> tuple[int, ...] | None:
        if self._alpha is None or self._support is None:
            return None
        return self._support.get((s, i))

    def _width_sel(self, s: int) -> Selection:
        outs = self.space.stages[s].outs
        if len(outs) == 1:
            return None
        if self._alpha is not None and s in self._beta:
            return self._beta[s]
        return self._path.widths.get(s, len(outs) - 1)

    def _channel_weights(self, outs: tuple[int, ...], sel: Selection, scale: int,
                         ref: torch.Tensor) -> torch.Tensor | None:
        """Per-channel weights (shape [1, C, 1, 1]) for a width choice; None = all channels."""
        if sel is None:
            return None
        if isinstance(sel, int):
            if sel == len(outs) - 1:
                return None
            key = ("hard", outs, sel, scale, ref.device, ref.dtype)
            if key not in self._mask_cache:
                w = M.channel_masks(outs, "overlapping", scale, ref.device)[sel].to(ref.dtype)
                self._mask_cache[key] = w.view(1, -1, 1, 1)
            return self._mask_cache[key]
        key = (self.masks, outs, scale, ref.device, ref.dtype)
        if key not in self._mask_cache:
            masks = M.channel_masks(outs, self.masks, scale, ref.device)
            self._mask_cache[key] = masks.to(ref.dtype)
        return M.combine(sel.to(ref.dtype), self._mask_cache[key]).view(1, -1, 1, 1)

    def _hidden_weights(self, cin: tuple[tuple[int, ...], Selection], expand: int,
                        ref: torch.Tensor) -> torch.Tensor | None:
        """The hidden channels' weights: a hard width (one path) always cuts them to the
        selected network's; a relaxed one only under the ``block`` scope (eq. 2 masks the
        output alone)."""
        if self.mask_scope == "output" and isinstance(cin[1], torch.Tensor):
            return None
        return self._channel_weights(cin[0], cin[1], expand, ref)

    def _mixed(self, layer: MixedLayer, x: torch.Tensor,
               cin: tuple[tuple[int, ...], Selection], cout: tuple[tuple[int, ...], Selection],
               first: bool, sel: Selection, want_tap: bool,
               support: tuple[int, ...] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        out_w = self._channel_weights(cout[0], cout[1], 1, x)
        # The shortcut exists when stride is 1 and in == out width. Inside a stage in and out
        # are the same choice; for a stage's first layer it is P(in width == out width).
        res: float | torch.Tensor = 0.0
        if layer.stride == 1:
            res = 1.0 if not first else _p_equal(cin, cout)
        items = ([(layer.candidates[sel], None)] if isinstance(sel, int) else
                 list(zip(layer.candidates, sel.unbind(0), strict=True)))
        if support is not None and not isinstance(sel, int):
            items = [items[j] for j in support]
        y: torch.Tensor | None = None
        tap: torch.Tensor | None = None
        for k, (cand, p) in enumerate(items):
            # with a support, candidates after the first weigh 0 in value: their outputs feed
            # only their weight's gradient, and any gradient through them is 0 · J = 0, so
            # they run without a graph (no backward, no stored activations)
            graphless = support is not None and k > 0
            with torch.no_grad() if graphless else contextlib.nullcontext():
                xin = x.detach() if graphless else x
                if cand == SKIP:
                    out, h = xin, None
                else:
                    block = layer.ops[cand]
                    e = Op.parse(cand).expand
                    hid_w = self._hidden_weights(cin, e, x)
                    out, h = _run_masked(block, xin, hid_w, out_w, res)
            if p is not None:
                p = p.to(out.dtype)  # under autocast: keep half-precision maps half
            if want_tap and h is not None:
                h = _fit(h, self.feature_channels[SSD_TAP])
                tap = h if p is None else (p * h if tap is None else tap + p * h)
            y = out if p is None else (p * out if y is None else y + p * out)
        assert y is not None
        return y, tap


def _p_equal(cin: tuple[tuple[int, ...], Selection], cout: tuple[tuple[int, ...], Selection]
             ) -> float | torch.Tensor:
    """Probability that the input and output widths of a stage's first layer are equal."""
    def dist(outs: tuple[int, ...], sel: Selection) -> dict[int, float | torch.Tensor]:
        if sel is None:
            return {outs[0]: 1.0}
        if isinstance(sel, int):
            return {outs[sel]: 1.0}
        return dict(zip(outs, sel.unbind(0), strict=True))

    a, b = dist(*cin), dist(*cout)
    total: float | torch.Tensor = 0.0
    for c, p in a.items():
        if c in b:
            total = total + p * b[c]
    return total


def _fit(t: torch.Tensor, channels: int) -> torch.Tensor:
    """Zero-pad (or cut) the channel dimension to ``channels``."""
    c = t.shape[1]
    if c == channels:
        return t
    if c > channels:
        return t[:, :channels]
    return F.pad(t, (0, 0, 0, 0, 0, channels - c))


def _bn(bn: nn.BatchNorm2d, x: torch.Tensor, c: int) -> torch.Tensor:
    """BatchNorm over the first ``c`` channels; running stats of those channels update in place
    (a leading slice of a buffer is a view)."""
    if c == bn.num_features:
        return bn(x)
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # cumulative moving average, as nn.BatchNorm2d does
            momentum = 1.0 / float(bn.num_batches_tracked)
    rm = bn.running_mean[:c] if bn.running_mean is not None else None
    rv = bn.running_var[:c] if bn.running_var is not None else None
    w = bn.weight[:c] if bn.weight is not None else None
    b = bn.bias[:c] if bn.bias is not None else None
    return F.batch_norm(x, rm, rv, w, b, bn.training or rm is None, momentum, bn.eps)


def _conv_bn(unit: ConvBN, x: torch.Tensor, cin: int, cout: int) -> torch.Tensor:
    """A ConvBN on the first ``cin`` inputs producing the first ``cout`` outputs."""
    conv = unit.conv
    if cout == conv.out_channels and (conv.groups > 1 or cin == conv.in_channels):
        return unit(x)
    if conv.groups == 1:
        w = conv.weight[:cout, :cin]
        y = F.conv2d(x, w, None, conv.stride, conv.padding, conv.dilation)
    else:  # depthwise: cin == cout channels, one filter each
        y = F.conv2d(x, conv.weight[:cout], None, conv.stride, conv.padding, conv.dilation, cout)
    return unit.act(_bn(unit.bn, y, cout))


def _run_sliced(block: MBConv, x: torch.Tensor, cin: int, cout: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """An MBConv candidate at widths cin -> cout (hidden = cin * e). Returns (out, hidden in)."""
    h = x
    if block.expand is not None:
        e = block.expand.conv.out_channels // block.expand.conv.in_channels
        h = _conv_bn(block.expand, x, cin, cin * e)
    hid = h.shape[1]
    tap = h
    h = _conv_bn(block.dw, h, hid, hid)
    y = _conv_bn(block.project, h, hid, cout)
    if block.dw.conv.stride == (1, 1) and cin == cout:
        y = x + y
    return y, tap


def _run_masked(block: MBConv, x: torch.Tensor, hid_w: torch.Tensor | None,
                out_w: torch.Tensor | None, res: float | torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """An MBConv candidate at full width with channel weights on hidden and output channels."""
    h = x
    if block.expand is not None:
        h = block.expand(x)
        if hid_w is not None:
            h = h * hid_w
    tap = h
    h = block.dw(h)
    if hid_w is not None:
        h = h * hid_w
    y = block.project(h)
    if out_w is not None:
        y = y * out_w
    if isinstance(res, torch.Tensor):
        y = y + res.to(y.dtype) * _fit(x, y.shape[1])
    elif res != 0.0:
        y = y + res * _fit(x, y.shape[1])
    return y, tap


# -- initialising from a seed ---------------------------------------------------------------
def candidate_ops(space: SpaceSpec) -> list[str]:
    """Every non-skip candidate of the searchable stages, in first-seen order."""
    seen: list[str] = []
    for st in space.stages:
        for c in st.candidates if st.searchable else ():
            if c != SKIP and c not in seen:
                seen.append(c)
    return seen


def subnet_state(supernet: Supernet, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of ``Backbone(path_to_arch(space, path))`` cut out of the supernet (the first
    channels of every width; skipped layers dropped)."""
    space = supernet.space
    sd = supernet.state_dict()
    out: dict[str, torch.Tensor] = {}

    def take(prefix: str, dst: str, cin: int, cout: int, dw: bool = False) -> None:
        for name in ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                     "bn.num_batches_tracked"):
            t = sd[f"{prefix}.{name}"]
            if name == "conv.weight":
                t = t[:cout] if dw else t[:cout, :cin]
            elif name != "bn.num_batches_tracked":
                t = t[:cout]
            out[f"{dst}.{name}"] = t.clone()

    take("stem", "stem", 3, space.stem_out)
    cin = space.stem_out
    for s, st in enumerate(space.stages):
        cout = st.outs[path.widths.get(s, len(st.outs) - 1)]
        j = 0
        for i in range(st.layers):
            cand = st.layer_candidates(i)[path.ops.get((s, i), 0)]
            if cand == SKIP:
                continue
            op, src, dst = Op.parse(cand), f"stages.{s}.{i}.ops.{cand}", f"stages.{s}.{j}"
            hid = cin * op.expand
            if op.expand != 1:
                take(f"{src}.expand", f"{dst}.expand", cin, hid)
            take(f"{src}.dw", f"{dst}.dw", hid, hid, dw=True)
            take(f"{src}.project", f"{dst}.project", hid, cout)
            cin, j = cout, j + 1
    if supernet.head is not None:
        take("head", "head", cin, supernet.head.conv.out_channels)
    return out
