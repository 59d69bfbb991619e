"""E[cost] under independent α (per layer) and β (per stage) distributions: one routine for
the MAdds and the latency table (both hold per-candidate costs under the same keys).

A layer's cost is Σ_in Σ_out p(in) p(out) Σ_op α_op cost(op, in, out): its input width
follows the previous stage's β, its output width its own stage's β (the layers after a
stage's first keep the width, so in = out there); ``skip`` costs 0. A fixed part that
follows a width (head conv, FPN laterals, SSDLite's tap predictor) is weighted the same way,
by the distribution of every choice its width depends on. One-hot α/β give the exact cost of
the selected architecture.

Scopes (``fnacli.cost.space.COST_SCOPES``): ``blocks`` counts the layers of the searched
stages only (Jung et al.'s eq. 5: the cost of the mixed blocks), ``backbone`` adds the stem,
the other layers and the head conv, ``detector`` the task's neck and head too. Only the
``detector`` scope adds a table's constant (a latency table's overhead).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from fnacli.cost.space import Choice, check_scope, layer_ops, searched_stages
from fnacli.spec import SpaceSpec

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass
class CostTensors:
    """A table's costs indexed by candidate positions, on one device (float64).

    ``layers[(s, layer)]``: [op, in, out] for a stage's first layer, [op, width] after it;
    ``last``: head conv and fc per last-stage width, ``last_backbone`` the head conv alone;
    ``pieces``: per piece of the task's network, the choices its width depends on and its
    cost at every combination of them; ``constant``: added in the detector scope.
    """

    stem: torch.Tensor
    layers: dict[tuple[int, int], torch.Tensor]
    last: torch.Tensor
    last_backbone: torch.Tensor
    pieces: list[tuple[tuple[Choice, ...], torch.Tensor]]
    constant: float = 0.0


class _Probs:
    """The α and β distributions as the expectation reads them (float64, one device)."""

    def __init__(self, space: SpaceSpec, alpha_probs: Mapping, beta_probs: Mapping,
                 device: torch.device) -> None:
        self.space, self.alpha_probs, self.beta_probs = space, alpha_probs, beta_probs
        self.device = device

    def _one(self) -> torch.Tensor:
        return torch.ones(1, dtype=torch.float64, device=self.device)

    def width(self, s: int) -> torch.Tensor:
        n = len(self.space.stages[s].outs) if s >= 0 else 1
        if n == 1:
            return self._one()
        return _probs(self.beta_probs, s, n, "beta", self.device)

    def alpha(self, s: int, layer: int) -> torch.Tensor:
        n = len(layer_ops(self.space, s, layer))
        if not self.space.stages[s].searchable or (n == 1 and (s, layer)
                                                   not in self.alpha_probs):
            return self._one()
        return _probs(self.alpha_probs, (s, layer), n, "alpha", self.device)

    def of(self, choice: Choice) -> torch.Tensor:
        kind, s = choice
        return self.width(s) if kind == "out" else self.alpha(s, 0)


def expected_cost(space: SpaceSpec, t: CostTensors, alpha_probs: Mapping, beta_probs: Mapping,
                  scope: str) -> torch.Tensor:
    """E[cost] within ``scope``; differentiable, float64 internally, returned in the
    probabilities' dtype."""
    check_scope(scope)
    first = next(iter(alpha_probs.values()), next(iter(beta_probs.values()), None))
    dtype = first.dtype if first is not None else torch.float64
    p = _Probs(space, alpha_probs, beta_probs, t.stem.device)
    total = torch.zeros((), dtype=torch.float64, device=p.device)
    if scope == "blocks":
        return _layers(space, t, p, set(searched_stages(space)), total).to(dtype)
    total = _layers(space, t, p, set(range(len(space.stages))), total + t.stem)
    last = p.width(len(space.stages) - 1)
    if scope == "backbone":
        return (total + last @ t.last_backbone).to(dtype)
    total = total + last @ t.last
    for choices, cost in t.pieces:
        total = total + _weighted(cost, [p.of(c) for c in choices])
    return (total + t.constant).to(dtype)


def _layers(space: SpaceSpec, t: CostTensors, p: _Probs, keep: set[int],
            total: torch.Tensor) -> torch.Tensor:
    for s, st in enumerate(space.stages):
        if s not in keep:
            continue
        p_in, p_out = p.width(s - 1), p.width(s)
        for layer in range(st.layers):
            a, cost = p.alpha(s, layer), t.layers[(s, layer)]
            if layer == 0:
                total = total + torch.einsum("o,i,j,oij->", a, p_in, p_out, cost)
            else:
                total = total + torch.einsum("o,j,oj->", a, p_out, cost)
    return total


def _weighted(cost: torch.Tensor, probs: list[torch.Tensor]) -> torch.Tensor:
    """Σ over every combination of the choices of Π p(choice) x cost[combination]."""
    if not probs:
        return cost
    idx = _LETTERS[:len(probs)]
    return torch.einsum(f"{','.join(idx)},{idx}->", *probs, cost)


def _probs(d: Mapping, key: object, n: int, what: str, device: torch.device) -> torch.Tensor:
    if key not in d:
        raise KeyError(f"{what} probabilities for {key} are missing")
    p = d[key]
    if p.shape != (n,):
        raise ValueError(f"{what} probabilities for {key}: expected shape ({n},), got "
                         f"{tuple(p.shape)}")
    return p.to(device=device, dtype=torch.float64)
