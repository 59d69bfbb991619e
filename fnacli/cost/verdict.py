"""The verdict of a latency table's check: predictions against whole networks timed end to
end, summarised robustly and held to the documented goal (docs/latency.md).

- The error of one architecture is (predicted − measured) / measured. The check reports the
  **median** and the **90th percentile** of the absolute errors (a mean is dominated by one
  network preempted by another process), and the mean beside them.
- **Outliers** (an error further than ``OUTLIER_PCT`` points, or 3 median absolute
  deviations, from the median error) are timed again; another process can only slow a
  network down, so the faster of the two timings is kept, and the check says which were
  retimed.
- The **goal** is a median absolute error under ``GOAL_ERROR_PCT`` and a Spearman rank
  correlation of at least ``GOAL_SPEARMAN``. With fewer than ``MIN_ARCHS`` architectures the
  check reports its figures with a warning and gives no verdict (a rank correlation over 2
  networks is ±1 by construction).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

GOAL_ERROR_PCT = 10.0
GOAL_SPEARMAN = 0.9
MIN_ARCHS = 10
OUTLIER_PCT = 10.0  # |error − median error| in points beyond which a network is retimed
PASS, FAIL, NO_VERDICT = "pass", "fail", "no verdict"


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); nan when either is constant."""

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


def percentile(xs: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between order statistics."""
    s = sorted(xs)
    pos = (len(s) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def errors_pct(predicted: Sequence[float], measured: Sequence[float]) -> list[float]:
    """Signed errors in % of the measured value."""
    return [100 * (p - m) / m for p, m in zip(predicted, measured, strict=True)]


def outliers(predicted: Sequence[float], measured: Sequence[float]) -> list[int]:
    """Indices whose error is far from the others' (see the module docstring)."""
    errs = errors_pct(predicted, measured)
    med = percentile(errs, 50)
    mad = percentile([abs(e - med) for e in errs], 50)
    limit = max(OUTLIER_PCT, 3 * mad)
    return [i for i, e in enumerate(errs) if abs(e - med) > limit]


def retime_outliers(predicted: Sequence[float], measured: Sequence[float],
                    retime: Callable[[list[int]], Sequence[float]]) -> tuple[list[float],
                                                                            list[int]]:
    """``measured`` with its outliers timed again by ``retime(indices)`` (the faster of the
    two kept), and the indices retimed."""
    idx = outliers(predicted, measured)
    out = list(measured)
    if idx:
        for i, again in zip(idx, retime(idx), strict=True):
            out[i] = min(out[i], again)
    return out, idx


@dataclass
class Verdict:
    n: int
    median_abs_error_pct: float
    p90_abs_error_pct: float
    mean_abs_error_pct: float
    spearman: float
    verdict: str  # PASS, FAIL or NO_VERDICT
    reasons: list[str] = field(default_factory=list)  # why it failed, or why no verdict
    retimed: list[int] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.verdict == PASS

    def to_dict(self) -> dict:
        return {"n": self.n, "median_abs_error_pct": round(self.median_abs_error_pct, 2),
                "p90_abs_error_pct": round(self.p90_abs_error_pct, 2),
                "mean_abs_error_pct": round(self.mean_abs_error_pct, 2),
                "spearman": round(self.spearman, 4) if math.isfinite(self.spearman) else None,
                "verdict": self.verdict, "reasons": self.reasons, "retimed": self.retimed,
                "goal": {"median_abs_error_pct_below": GOAL_ERROR_PCT,
                         "spearman_at_least": GOAL_SPEARMAN, "min_archs": MIN_ARCHS}}

    def line(self) -> str:
        """The verdict in one line, with the figures it rests on."""
        rho = f"{self.spearman:.3f}" if math.isfinite(self.spearman) else "undefined"
        head = (f"over {self.n} architectures: median abs error "
                f"{self.median_abs_error_pct:.1f}%, 90th percentile "
                f"{self.p90_abs_error_pct:.1f}% (mean {self.mean_abs_error_pct:.1f}%), "
                f"Spearman {rho}")
        if self.retimed:
            head += f"; {len(self.retimed)} outlier(s) timed again"
        goal = f"goal: median error < {GOAL_ERROR_PCT:g}% and Spearman >= {GOAL_SPEARMAN:g}"
        if self.verdict == PASS:
            return f"PASS {head} ({goal})"
        return f"{self.verdict.upper()} {head}: {'; '.join(self.reasons)} ({goal})"


def judge(predicted: Sequence[float], measured: Sequence[float],
          retimed: Sequence[int] = ()) -> Verdict:
    """The check's verdict on predictions against measurements (module docstring)."""
    if len(predicted) != len(measured) or not measured:
        raise ValueError("judge: predictions and measurements must pair up, at least one")
    abs_err = [abs(e) for e in errors_pct(predicted, measured)]
    rho = spearman(predicted, measured) if len(measured) > 1 else float("nan")
    v = Verdict(len(measured), percentile(abs_err, 50), percentile(abs_err, 90),
                sum(abs_err) / len(abs_err), rho, PASS, retimed=list(retimed))
    if v.n < MIN_ARCHS:
        v.verdict = NO_VERDICT
        v.reasons.append(f"too few architectures for a verdict (at least {MIN_ARCHS}; "
                         "a rank correlation over a handful is chance)")
        return v
    if not v.median_abs_error_pct < GOAL_ERROR_PCT:
        v.reasons.append(f"median error {v.median_abs_error_pct:.1f}% >= {GOAL_ERROR_PCT:g}%")
    if not (math.isfinite(rho) and rho >= GOAL_SPEARMAN):
        v.reasons.append(f"Spearman {rho:.3f} < {GOAL_SPEARMAN:g}")
    if v.reasons:
        v.verdict = FAIL
    return v


__all__ = ["GOAL_ERROR_PCT", "GOAL_SPEARMAN", "MIN_ARCHS", "Verdict", "judge", "outliers",
           "percentile", "retime_outliers", "spearman"]
