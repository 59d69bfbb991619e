"""Checking a latency table: its predictions against whole networks timed end to end."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from fnacli.cost.latency import LatencyTable
from fnacli.spec import ArchSpec


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""

    def ranks(xs: Sequence[float]) -> list[float]:
        order = sorted(range(len(xs)), key=lambda i: xs[i])
        r = [0.0] * len(xs)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va = math.sqrt(sum((x - ma) ** 2 for x in ra))
    vb = math.sqrt(sum((y - mb) ** 2 for y in rb))
    return cov / (va * vb) if va and vb else float("nan")


@dataclass
class CheckResult:
    archs: list[ArchSpec]
    measured_ms: list[float]
    table_ms: list[float]  # the table's sum, without the overhead
    overhead_ms: float
    drift: float | None = None  # the build's calibration networks now / at build time

    @property
    def predicted_ms(self) -> list[float]:
        return [t + self.overhead_ms for t in self.table_ms]

    @staticmethod
    def _mape(pred: Sequence[float], meas: Sequence[float]) -> float:
        return 100 * sum(abs(p - m) / m for p, m in zip(pred, meas, strict=True)) / len(meas)

    def summary(self) -> dict:
        best_offset = sorted(m - t for m, t in zip(self.measured_ms, self.table_ms,
                                                   strict=True))[len(self.archs) // 2]
        out = {"n": len(self.archs),
                "mean_abs_error_pct": round(self._mape(self.predicted_ms, self.measured_ms), 2),
                "mean_abs_error_pct_no_overhead": round(
                    self._mape(self.table_ms, self.measured_ms), 2),
                "mean_abs_error_pct_in_sample_offset": round(
                    self._mape([t + best_offset for t in self.table_ms], self.measured_ms), 2),
                "spearman": round(spearman(self.predicted_ms, self.measured_ms), 4),
                "overhead_ms": round(self.overhead_ms, 4),
                "measured_ms": [round(v, 4) for v in self.measured_ms],
                "predicted_ms": [round(v, 4) for v in self.predicted_ms]}
        if self.drift is not None:
            out["load_drift"] = round(self.drift, 4)
            out["mean_abs_error_pct_drift_corrected"] = round(self._mape(
                [p * self.drift for p in self.predicted_ms], self.measured_ms), 2)
        return out


def check_table(table: LatencyTable, n: int, seed: int = 0) -> CheckResult:
    """The table's predictions against end-to-end measurements of ``n`` random architectures
    of its space (drawn with ``seed``)."""
    from fnacli.search.evolution import Encoding

    enc = Encoding(table.space)
    rng = random.Random(seed)
    archs = [enc.arch(enc.random(rng)) for _ in range(n)]
    table_ms = [table.arch_madds(a) / 1e6 for a in archs]  # raises before measuring
    then = table.stats.get("calibration_ms") or []
    probes = table.calibration_archs(len(then)) if len(then) >= 1 else []
    measured = table.measure_networks(archs + probes)  # interleaved: under the same load
    drift = None
    if probes:
        ratios = sorted(t.median_s * 1e3 / m for t, m in zip(measured[len(archs):], then,
                                                              strict=True))
        drift = ratios[len(ratios) // 2]
    result = CheckResult(archs, [t.median_s * 1e3 for t in measured[:len(archs)]], table_ms,
                         table.overhead_ns / 1e6, drift)
    table.check_result = {k: v for k, v in result.summary().items()
                          if k not in ("measured_ms", "predicted_ms")}
    return result

