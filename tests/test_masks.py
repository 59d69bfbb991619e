"""Channel-mask arithmetic against hand-computed values (FBNetV2 overlapping masks, Jung et
al.'s non-overlapping segments)."""

from __future__ import annotations

import pytest
import torch

from fnacli.errors import UserError
from fnacli.search import masks as M

OUTS = (2, 4, 5)


def test_overlapping_masks_are_prefixes() -> None:
    m = M.channel_masks(OUTS, "overlapping")
    assert m.tolist() == [[1, 1, 0, 0, 0],
                          [1, 1, 1, 1, 0],
                          [1, 1, 1, 1, 1]]


def test_non_overlapping_masks_partition_the_channels() -> None:
    m = M.channel_masks(OUTS, "non-overlapping")
    assert m.tolist() == [[1, 1, 0, 0, 0],
                          [0, 0, 1, 1, 0],
                          [0, 0, 0, 0, 1]]
    assert m.sum(0).tolist() == [1, 1, 1, 1, 1]  # every channel in exactly one segment


def test_scale_maps_widths_to_hidden_widths() -> None:
    # expansion 2: widths 2/4/5 cover 4/8/10 hidden channels
    m = M.channel_masks(OUTS, "non-overlapping", scale=2)
    assert m.shape == (3, 10)
    assert m[1].nonzero().flatten().tolist() == [4, 5, 6, 7]


def test_weights_by_hand() -> None:
    beta = torch.tensor([0.2, 0.5, 0.3])
    assert torch.allclose(M.mask_weights(beta, "overlapping"), beta)
    # P(width >= c_k): 1.0, 0.8, 0.3
    assert torch.allclose(M.mask_weights(beta, "non-overlapping"), torch.tensor([1.0, 0.8, 0.3]))
    want = torch.tensor([1.0, 1.0, 0.8, 0.8, 0.3])
    for kind in M.KINDS:
        w = M.combine(beta, M.channel_masks(OUTS, kind), kind)
        assert torch.allclose(w, want), kind
        assert torch.isclose(w.sum(), M.expected_width(beta, OUTS))  # 0.4 + 2 + 1.5 = 3.9


@pytest.mark.parametrize("kind", M.KINDS)
def test_one_hot_selects_exactly_the_first_channels(kind: str) -> None:
    for k, c in enumerate(OUTS):
        w = M.combine(torch.nn.functional.one_hot(torch.tensor(k), 3).float(),
                      M.channel_masks(OUTS, kind), kind)
        assert w.tolist() == [1.0] * c + [0.0] * (5 - c)


def test_gradients_reach_the_right_beta() -> None:
    beta = torch.tensor([0.2, 0.5, 0.3], requires_grad=True)
    w = M.combine(beta, M.channel_masks(OUTS, "non-overlapping"), "non-overlapping")
    # last segment: only the widest choice has it
    (g_last,) = torch.autograd.grad(w[4], beta, retain_graph=True)
    assert g_last.tolist() == [0.0, 0.0, 1.0]
    (g_first,) = torch.autograd.grad(w[0], beta)  # first segment: every width has it
    assert g_first.tolist() == [1.0, 1.0, 1.0]


def test_unknown_kind_is_a_user_error() -> None:
    with pytest.raises(UserError, match="--masks"):
        M.check_kind("partial")
