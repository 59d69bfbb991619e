"""benchmarks/bench_perf.py: interleaved timing, ratios against targets, memory growth."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_perf.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_perf", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


bench = _load()


def test_sides_are_interleaved_in_rotating_order_after_a_warm_up() -> None:
    calls: list[str] = []
    rounds: list[int] = []
    times = bench.interleaved({k: (lambda k=k: calls.append(k)) for k in "ABC"}, 3,
                              each_round=rounds.append)
    assert calls == list("ABC" "ABC" "BCA" "CAB")  # warm-up, then rotated rounds
    assert rounds == [-1, 0, 1, 2]
    assert all(len(v) == 3 for v in times.values())


def test_ratios_are_paired_per_round_and_checked_against_the_target() -> None:
    t = {"a": [2.0, 3.0, 10.0], "b": [1.0, 2.0, 4.0]}
    row = bench.ratio_row("x", "A", "B", t, "a", "b", 2.0)
    assert row.ratios == [2.0, 1.5, 2.5] and row.ok and row.target == "≤ 2×"
    assert not bench.ratio_row("x", "A", "B", t, "a", "b", 1.8).ok
    speedup = bench.ratio_row("x", "A", "B", t, "a", "b", 2.0, at_least=True)
    assert speedup.ratios == row.ratios and speedup.ok and speedup.target == "≥ 2×"
    assert not bench.ratio_row("x", "A", "B", t, "a", "b", 2.1, at_least=True).ok


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="Linux only")
def test_peak_growth_sees_an_allocation() -> None:
    import torch

    small = bench.peak_growth(lambda: None)
    big = bench.peak_growth(lambda: torch.ones(64 * 2 ** 20 // 4).sum())  # 64 MiB touched
    assert big - small > 48 * 2 ** 20
