"""The search's convergence numbers (against hand-computed cases) and --arch-lr auto's rule."""

from __future__ import annotations

import math

import pytest
import torch

from fnacli.search import convergence as C


def test_uniform_alpha_is_near_uniform_and_warned() -> None:
    a = {(1, 0): torch.full((4,), 0.25), (1, 1): torch.full((2,), 0.5)}
    rec = C.epoch_record(a, {})
    assert rec["entropy_median"] == pytest.approx(1.0) and rec["top2_gap_median"] == 0.0
    assert rec["argmax_log10_probability"] == pytest.approx(math.log10(0.125))
    assert rec["uniform_log10_probability"] == pytest.approx(math.log10(0.125))
    assert rec["argmax_changed"] is None
    text = C.near_uniform_warning(rec, 96, 0.05)
    assert "close to a random draw" in text and "--arch-lr auto" in text and "96" in text


def test_decided_alpha_is_not_warned_and_changes_are_counted() -> None:
    a = {(1, 0): torch.tensor([0.97, 0.01, 0.01, 0.01]), (1, 1): torch.tensor([0.02, 0.98])}
    b = {2: torch.tensor([0.9, 0.1])}
    rec = C.epoch_record(a, b)
    ent = -(0.97 * math.log(0.97) + 3 * 0.01 * math.log(0.01)) / math.log(4)
    assert rec["entropy"]["1.0"] == pytest.approx(ent, abs=1e-4)
    assert rec["argmax_log10_probability"] == pytest.approx(math.log10(0.97 * 0.98 * 0.9))
    assert C.near_uniform_warning(rec, 96, 0.05) is None
    later = C.epoch_record({(1, 0): torch.tensor([0.1, 0.7, 0.1, 0.1]), (1, 1): a[(1, 1)]}, b,
                           rec["argmax"])
    assert later["argmax_changed"] == 1 and later["argmax_changed_layers"] == ["1.0"]
    # a single-candidate layer (a banned skip leaves one) is not a choice
    assert C.epoch_record({(1, 0): torch.tensor([1.0, 0.0])}, {}) == {"layers": 0}


def test_auto_arch_lr_opens_a_decisive_gap_in_the_steps_given() -> None:
    gap = C.decisive_gap(7)
    assert torch.softmax(torch.tensor([gap] + [0.0] * 6), 0)[0] == pytest.approx(0.9)
    lr = C.auto_arch_lr(96, 7)
    assert lr * 96 * C.DRIFT_RATE == pytest.approx(gap)
    assert C.auto_arch_lr(96_000_000, 7, floor=3e-4) == 3e-4  # never below the recipe's
    assert C.auto_arch_lr(192, 7) == pytest.approx(lr / 2)
