"""Channel-mask arithmetic against hand-computed values (FBNetV2 overlapping masks, Jung et
al.'s non-overlapping segments, eq. 2)."""

from __future__ import annotations

import pytest
import torch

from fnacli.errors import UserError
from fnacli.nn import masks as M

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
    """Jung et al.'s eq. 2 with disjoint masks: every channel of segment k carries p_k alone;
    FBNetV2's prefix masks: channel i carries the sum of p over the widths that include it."""
    beta = torch.tensor([0.2, 0.5, 0.3])
    non = M.channel_weights(beta, OUTS, "non-overlapping")
    assert torch.allclose(non, torch.tensor([0.2, 0.2, 0.5, 0.5, 0.3]))
    over = M.channel_weights(beta, OUTS, "overlapping")
    assert torch.allclose(over, torch.tensor([1.0, 1.0, 0.8, 0.8, 0.3]))
    assert torch.isclose(over.sum(), M.expected_width(beta, OUTS))  # 0.4 + 2 + 1.5 = 3.9
    assert torch.isclose(non.sum(), torch.tensor(0.2 * 2 + 0.5 * 2 + 0.3 * 1))


def test_non_overlapping_weights_of_a_softmax_beta_on_a_jung_range() -> None:
    """A Table I-like range (16, 28, 2) at a fixed β: the weight vector is exactly the softmax
    value of each channel's own segment (nothing accumulated from wider candidates)."""
    outs = tuple(range(16, 29, 2))
    logits = torch.tensor([0.3, -0.2, 0.1, 0.5, -0.4, 0.0, 0.2])
    p = logits.softmax(0)
    w = M.channel_weights(p, outs, "non-overlapping")
    want = torch.cat([p[0].repeat(16)] + [p[k].repeat(2) for k in range(1, len(outs))])
    assert w.shape == (28,) and torch.allclose(w, want, atol=0, rtol=0)
    # the first c_1 channels carry p_1 only, far below the ~1 of the overlapping masks
    assert abs(float(w[0]) - float(p[0])) == 0.0 and float(w[0]) < 0.2
    assert torch.isclose(M.channel_weights(p, outs, "overlapping")[0], torch.tensor(1.0))


def test_one_hot_overlapping_selects_exactly_the_first_channels() -> None:
    for k, c in enumerate(OUTS):
        w = M.channel_weights(torch.nn.functional.one_hot(torch.tensor(k), 3).float(), OUTS,
                              "overlapping")
        assert w.tolist() == [1.0] * c + [0.0] * (5 - c)


def test_one_hot_non_overlapping_keeps_only_its_segment() -> None:
    """The paper's rule: a one-hot β is not the selected width, only that width's segment."""
    got = [M.channel_weights(torch.nn.functional.one_hot(torch.tensor(k), 3).float(), OUTS,
                             "non-overlapping").tolist() for k in range(3)]
    assert got == [[1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]]


def test_gradients_reach_only_the_segments_beta() -> None:
    beta = torch.tensor([0.2, 0.5, 0.3], requires_grad=True)
    w = M.channel_weights(beta, OUTS, "non-overlapping")
    (g_last,) = torch.autograd.grad(w[4], beta, retain_graph=True)
    assert g_last.tolist() == [0.0, 0.0, 1.0]
    (g_first,) = torch.autograd.grad(w[0], beta)  # first segment: its own β only
    assert g_first.tolist() == [1.0, 0.0, 0.0]
    w = M.channel_weights(beta, OUTS, "overlapping")
    (g_first,) = torch.autograd.grad(w[0], beta)  # overlapping: every width has channel 0
    assert g_first.tolist() == [1.0, 1.0, 1.0]


def test_unknown_kind_is_a_user_error() -> None:
    with pytest.raises(UserError, match="--masks"):
        M.check_kind("partial")
