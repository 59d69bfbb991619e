"""Channel-mask arithmetic for searching a block's output width with ONE shared block.

A stage whose output width has candidates ``outs = (c_1 < c_2 < … < c_K)`` is computed once at
the largest width ``c_K``; the choice of width becomes a per-channel weight vector ``w`` that
multiplies the block's output (and, scaled by the expansion ratio, its hidden channels).

Two mask families, each applied the way its paper combines it with the softmax β:

- ``overlapping`` (FBNetV2, Wan et al. 2020): mask ``m_k`` has ones on the first ``c_k``
  channels; ``w = Σ_k β_k m_k``.
- ``non-overlapping`` (Jung et al.): the masks partition the channels into disjoint segments,
  ``m_k`` has ones on ``[c_{k-1}, c_k)`` (``c_0 = 0``). A segment is present in every width
  from ``c_k`` up, so it is weighted by the probability that the chosen width includes it,
  ``P(width ≥ c_k) = Σ_{j≥k} β_j``; ``w = Σ_k P(width ≥ c_k) m_k``.

Both give ``w = m(c_k)`` (the first ``c_k`` channels) for a one-hot β, so a one-hot supernet is
exactly the selected network. For a soft β the two vectors are equal in exact arithmetic
(channel ``i`` in segment ``j`` gets ``Σ_{k≥j} β_k`` either way): the families differ in how
the masks are built and summed (K overlapping vs K disjoint masks), not in the relaxed
network. docs/search.md discusses this.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fnacli.errors import UserError

KINDS = ("non-overlapping", "overlapping")
DEFAULT_KIND = "non-overlapping"


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise UserError(f"--masks: expected one of {', '.join(KINDS)}, got {kind!r}")
    return kind


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


def mask_weights(probs: torch.Tensor, kind: str) -> torch.Tensor:
    """Weight of each mask row given the width probabilities β (softmax, length K)."""
    check_kind(kind)
    if kind == "overlapping":
        return probs
    # P(width >= c_k): reverse cumulative sum
    return probs.flip(-1).cumsum(-1).flip(-1)


def combine(probs: torch.Tensor, masks: torch.Tensor, kind: str) -> torch.Tensor:
    """The per-channel weight vector ``Σ_k weight_k · m_k`` (differentiable in ``probs``)."""
    return mask_weights(probs, kind) @ masks


def expected_width(probs: torch.Tensor, outs: Sequence[int]) -> torch.Tensor:
    """E[width] under β; equals the sum of the combined channel weights for both families."""
    return probs @ torch.tensor([float(c) for c in outs], device=probs.device, dtype=probs.dtype)
