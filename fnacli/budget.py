"""Budgets as users state them: ``300M`` MAdds, ``2.5M`` params, ``12ms`` latency, or
``60%`` of a reference architecture (the seed); several limits at once, every candidate
inside all of them; a combination no architecture of a space can meet refused before any
work, naming the least each limit can be.

Pure Python (no torch): the CLI parses budgets before importing anything heavy.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from fnacli.errors import UserError

METRICS = ("madds", "params", "latency")
LABELS = {"madds": "MAdds", "params": "params", "latency": "latency"}
_COUNT_UNITS = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9}
_TIME_UNITS = {"": 1.0, "MS": 1.0, "S": 1e3, "US": 1e-3, "µS": 1e-3}
_EXAMPLES = {"madds": "300M, 1.2G, 3e8 or 60%", "params": "2.5M, 800K or 60%",
             "latency": "12ms, 0.5s, 800us or 60%"}


def flag(name: str) -> str:
    """A parameter's command-line spelling: ``max_madds`` -> ``--max-madds``."""
    return "--" + name.replace("_", "-")


def error(name: str, detail: str) -> UserError:
    """An error naming the parameter (library) and its flag (CLI)."""
    return UserError(f"{name}: {detail}", f"{flag(name)}: {detail}")


@dataclass(frozen=True)
class Amount:
    """A budget value: absolute (MAdds, params, milliseconds), or a fraction of a reference."""

    value: float
    relative: bool = False

    def of(self, reference: float | None, name: str) -> float:
        if not self.relative:
            return self.value
        if reference is None:
            raise error(name, "a relative budget needs a reference architecture (the seed) to "
                              "be relative to; give an absolute value")
        return self.value * reference


def parse_amount(text: str | float | int, metric: str, name: str) -> Amount:
    """``'60%'`` -> 0.6 of the reference; MAdds and params: ``'300M'``, ``'1.2G'``, ``'3e8'``
    or a number; latency: ``'12ms'``, ``'0.5s'``, ``'800us'`` or a number of milliseconds."""
    if isinstance(text, bool):
        raise error(name, f"expected {_EXAMPLES[metric]}, got {text!r}")
    if isinstance(text, int | float):
        amount = Amount(float(text))
    else:
        t = text.strip().upper().replace(" ", "")
        units = _TIME_UNITS if metric == "latency" else _COUNT_UNITS
        m = re.fullmatch(r"([0-9.eE+-]+)(%|[A-ZµΜ]*)", t)
        try:
            if m is None or (m.group(2) != "%" and m.group(2) not in units):
                raise ValueError
            number = float(m.group(1))
        except ValueError:
            raise error(name, f"expected {_EXAMPLES[metric]}, got {text!r}") from None
        amount = (Amount(number / 100, True) if m.group(2) == "%"
                  else Amount(number * units[m.group(2)]))
    if not (amount.value > 0 and math.isfinite(amount.value)):
        raise error(name, f"expected a positive amount ({_EXAMPLES[metric]}), got {text!r}")
    return amount


def format_value(metric: str, v: float) -> str:
    """300M MAdds, 2.50M params, 12.3 ms."""
    if metric == "latency":
        return f"{v:.3g} ms"
    if v >= 1e9:
        return f"{v / 1e9:.3g}G"
    return f"{v / 1e6:.4g}M" if v >= 1e6 else f"{v / 1e3:.4g}K"


@dataclass(frozen=True)
class Limit:
    metric: str  # madds | params | latency
    kind: str  # min | max
    amount: Amount
    name: str  # the parameter it came from (max_madds)


@dataclass(frozen=True)
class Budget:
    """Limits as given (some relative); ``resolve`` makes them absolute."""

    limits: tuple[Limit, ...] = ()

    @classmethod
    def of(cls, **given: str | float | None) -> Budget:
        """``Budget.of(max_madds="60%", max_params="2.5M", max_latency="12ms")``: each keyword
        ``min_``/``max_`` + a metric; None leaves it out. Malformed values are refused now."""
        limits = []
        for name, value in given.items():
            kind, _, metric = name.partition("_")
            if kind not in ("min", "max") or metric not in METRICS:
                raise TypeError(f"unknown budget {name!r}")
            if value is not None:
                limits.append(Limit(metric, kind, parse_amount(value, metric, name), name))
        return cls(tuple(limits))

    def __bool__(self) -> bool:
        return bool(self.limits)

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(lim.metric for lim in self.limits))

    @property
    def relative(self) -> bool:
        return any(lim.amount.relative for lim in self.limits)

    def resolve(self, reference: Mapping[str, float] | None = None) -> Window:
        """The absolute window (relative limits taken of ``reference``'s costs); a minimum
        above a maximum is refused."""
        bounds: dict[str, list[float | None]] = {}
        names: dict[tuple[str, str], str] = {}
        for lim in self.limits:
            ref = None if reference is None else reference.get(lim.metric)
            v = lim.amount.of(ref, lim.name)
            bounds.setdefault(lim.metric, [None, None])[lim.kind == "max"] = v
            names[(lim.metric, lim.kind)] = lim.name
        window = Window({m: (lo, hi) for m, (lo, hi) in bounds.items()}, names)
        for m, (lo, hi) in window.bounds.items():
            if lo is not None and hi is not None and lo > hi:
                lo_name, hi_name = names[(m, "min")], names[(m, "max")]
                lo_text, hi_text = format_value(m, lo), format_value(m, hi)
                raise UserError(f"{lo_name} {lo_text} is above {hi_name} {hi_text}",
                                f"{flag(lo_name)} {lo_text} is above {flag(hi_name)} {hi_text}")
        return window


@dataclass(frozen=True)
class Window:
    """Absolute limits per metric: (min, max), either None."""

    bounds: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    names: dict[tuple[str, str], str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.bounds)

    def admits(self, costs: Mapping[str, float | None]) -> bool:
        """Inside every limit (a metric the costs lack, such as a latency the table does not
        cover, is outside)."""
        for m, (lo, hi) in self.bounds.items():
            c = costs.get(m)
            if c is None or (lo is not None and c < lo) or (hi is not None and c > hi):
                return False
        return True

    def text(self) -> str:
        """'MAdds 150M-300M, params <= 2.5M, latency <= 12 ms'."""
        parts = []
        for m, (lo, hi) in self.bounds.items():
            if lo is not None and hi is not None:
                span = f"{format_value(m, lo)}-{format_value(m, hi)}"
            else:
                span = (f"<= {format_value(m, hi)}" if hi is not None
                        else f">= {format_value(m, lo)}")
            parts.append(f"{LABELS[m]} {span}")
        return ", ".join(parts) or "no limit"

    def to_dict(self) -> dict:
        return {f"{k}_{m}": v for m, (lo, hi) in self.bounds.items()
                for k, v in (("min", lo), ("max", hi)) if v is not None}

    def check_reachable(self, cheapest: Mapping[str, float | None],
                        dearest: Mapping[str, float | None], where: str = "the space") -> None:
        """Refuse limits no architecture of ``where`` meets, before any work. ``cheapest``
        and ``dearest`` are the costs of its least and most costly architectures; every cost
        grows with width, depth, kernel and expansion, so the least costly architecture is
        the cheapest in every metric at once, and a set of maxima it exceeds is unreachable
        together. The message names the least (most) each limit can be."""
        over = [(m, hi) for m, (_, hi) in self.bounds.items()
                if hi is not None and cheapest.get(m) is not None and cheapest[m] > hi]
        if over:
            self._refuse(over, cheapest, "max", "cheapest", where)
        under = [(m, lo) for m, (lo, _) in self.bounds.items()
                 if lo is not None and dearest.get(m) is not None and dearest[m] < lo]
        if under:
            self._refuse(under, dearest, "min", "most costly", where)

    def _refuse(self, failing: list[tuple[str, float]], extreme: Mapping[str, float | None],
                kind: str, adjective: str, where: str) -> None:
        names = [self.names[(m, kind)] for m, _ in failing]
        asked = ", ".join(f"{n} {format_value(m, v)}" for n, (m, v) in zip(names, failing,
                                                                           strict=True))
        has = ", ".join(f"{format_value(m, v)} {LABELS[m]}" for m in self.bounds
                        if (v := extreme.get(m)) is not None)
        least = ", ".join(f"{n} {'>=' if kind == 'max' else '<='} "
                          f"{format_value(m, extreme[m])}"  # type: ignore[arg-type]
                          for n, (m, _) in zip(names, failing, strict=True))
        detail = (f"unreachable: the {adjective} architecture of {where} has {has} "
                  f"(reachable: {least})")
        message = f"{asked}: {detail}"
        cli = message
        for n in names:
            cli = cli.replace(n, flag(n))
        raise UserError(message, cli)
