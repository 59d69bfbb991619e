"""Channel-mask arithmetic for searching a block's output width with ONE shared block.

A stage whose output width has candidates ``outs = (c_1 < c_2 < … < c_K)`` is computed once at
the largest width ``c_K``; the choice of width becomes a per-channel weight vector
``w = Σ_k p_k · m_k`` (``p = softmax(β)``) that multiplies the block's output (Jung et al.'s
eq. 2; the ``block`` mask scope also multiplies its hidden channels, scaled by the expansion
ratio: see ``SCOPES``). The two families differ only in the masks ``m_k``:

- ``overlapping`` (FBNetV2, Wan et al. 2020): ``m_k`` has ones on the first ``c_k`` channels,
  so channel ``i`` gets ``Σ_{k: c_k > i} p_k`` — the low channels sum to (nearly) 1 whatever
  β is, and one-hot β gives exactly the first ``c_k`` channels (the selected network).
- ``non-overlapping`` (Jung et al., eq. 2 and Fig. 2b; the default): the masks partition the
  channels into disjoint segments, ``m_k`` has ones on ``(c_{k-1}, c_k]`` (channels
  ``c_{k-1} … c_k − 1`` counted from 0, ``c_0 = 0``), so every channel of segment ``k`` is
  weighted by ``p_k`` alone — nothing is summed over larger widths, and even the first
  ``c_1`` channels carry only ``p_1``.

Consequence of the paper's rule: a one-hot β on width ``c_k`` keeps only segment ``k`` (the
first ``c_{k-1}`` channels get weight 0), so the one-hot *relaxed* supernet is not the
selected network under non-overlapping masks. The single-path forward (``Supernet.set_path``)
and ``derive`` do not use these weights and stay exact; docs/search.md discusses this.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fnacli.errors import UserError

KINDS = ("non-overlapping", "overlapping")
DEFAULT_KIND = "non-overlapping"
# Where a relaxed (β-weighted) width choice applies its weights: ``output``, the block's output
# only (Jung et al.'s eq. 2; the default), or ``block``, also the hidden channels after the
# expansion and after the depthwise conv (by the block's input width; fnacli's earlier rule,
# with which a one-hot β under overlapping masks is exactly the selected network). A hard
# choice (a single path) always masks both, so it stays the selected network.
SCOPES = ("output", "block")
DEFAULT_SCOPE = "output"


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise UserError(f"--masks: expected one of {', '.join(KINDS)}, got {kind!r}")
    return kind


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise UserError(f"--mask-scope: expected one of {', '.join(SCOPES)}, got {scope!r}")
    return scope


def channel_masks(outs: Sequence[int], kind: str, scale: int = 1,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """The K masks as rows of a ``[K, scale * max(outs)]`` 0/1 matrix (``outs`` ascending).

    ``scale`` maps output widths to hidden widths (expansion ratio): width ``c`` covers the
    first ``scale * c`` hidden channels.
    """
    check_kind(kind)
    ends = torch.tensor([c * scale for c in outs], device=device)
    idx = torch.arange(int(ends[-1]), device=device)
    upto = idx[None, :] < ends[:, None]  # first c_k channels
    if kind == "overlapping":
        return upto.float()
    starts = torch.cat([ends.new_zeros(1), ends[:-1]])
    return (upto & (idx[None, :] >= starts[:, None])).float()


def combine(probs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The per-channel weight vector ``Σ_k p_k · m_k`` (eq. 2; differentiable in ``probs``)."""
    return probs @ masks


def channel_weights(probs: torch.Tensor, outs: Sequence[int], kind: str,
                    scale: int = 1) -> torch.Tensor:
    """The per-channel weights of a width choice with probabilities ``probs`` (length K)."""
    return combine(probs, channel_masks(outs, kind, scale, probs.device).to(probs.dtype))


def expected_width(probs: torch.Tensor, outs: Sequence[int]) -> torch.Tensor:
    """E[width] under β. The overlapping weights sum to it; the non-overlapping ones sum to
    ``Σ_k p_k (c_k − c_{k−1})`` instead (each segment counted once, by its own probability)."""
    return probs @ torch.tensor([float(c) for c in outs], device=probs.device, dtype=probs.dtype)
