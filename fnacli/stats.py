"""Paired comparisons of two architectures over the same fine-tuning seeds: the mean paired
difference, a paired t-test and a sign test. Plain Python (no scipy, no torch): Student's t
distribution comes from the regularised incomplete beta function, computed by its continued
fraction."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    m = statistics.fmean(values)
    return m, (statistics.stdev(values) if len(values) > 1 else None)


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (modified Lentz evaluation)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
                 + b * math.log1p(-x))
    # the fraction converges fast on the side of the mean a / (a + b); the other side by symmetry
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact binomial p of ``wins`` against ``losses`` (ties left out) at 1/2."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2 ** n
    return min(1.0, 2.0 * tail)


@dataclass
class Paired:
    """``a`` against ``b`` over the same seeds: differences a - b."""

    n: int
    mean: float
    std: float | None
    t: float | None
    p_t: float | None
    wins: int
    losses: int
    p_sign: float
    verdict: str  # "better", "worse", "no significant difference", "too few seeds"

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["t"] is not None and math.isinf(d["t"]):
            d["t"] = math.copysign(1e308, d["t"])  # JSON has no infinity
        return d


def paired(a: Sequence[float], b: Sequence[float], alpha: float = 0.05) -> Paired:
    """Paired t-test and sign test of ``a`` against ``b`` (equal lengths, same seeds in the
    same order). The verdict is the t-test's at level ``alpha`` (two-sided); with 5 seeds a
    sign test cannot reach p < 0.0625, so it is reported beside it, not decisive."""
    if len(a) != len(b):
        raise ValueError(f"paired: {len(a)} values against {len(b)}")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    n = len(diffs)
    if n == 0:
        raise ValueError("paired: no values")
    m, sd = mean_std(diffs)
    wins, losses = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    p_sign = sign_test_p(wins, losses)
    if n < 2:
        return Paired(n, m, sd, None, None, wins, losses, p_sign, "too few seeds")
    if sd == 0.0:
        t = 0.0 if m == 0.0 else math.copysign(math.inf, m)
    else:
        t = m / (sd / math.sqrt(n))
    p = t_two_sided_p(t, n - 1)
    verdict = ("no significant difference" if p >= alpha
               else "better" if m > 0 else "worse")
    return Paired(n, m, sd, t, p, wins, losses, p_sign, verdict)
