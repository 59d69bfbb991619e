"""Sampled gates for the cheap α/β step (``--arch-step sampled``).

FNA's α/β step runs every candidate of every layer (the weighted sum); its cost grows with the
number of candidates. The sampled step runs at most two per layer and per searchable width:
for a choice with probabilities ``p`` (softmax α or β) it draws two candidates ``a, b ~ p``
independently and replaces ``p`` in the relaxed forward by the gate vector

    g = e_a + ½ (ℓ_a − ℓ_b) (e_a − e_b),    ℓ_k = log p_k − stop_grad(log p_k).

Its value is the one-hot ``e_a`` (the forward pass is the sampled architecture ``a``; the
layer also computes candidate ``b``, without an autograd graph: its output only feeds the
gradient of its own gate, see ``Supernet.set_weighted``), and the gradient it passes
to α is ``½ (v_a − v_b) (∇ log p_a − ∇ log p_b)`` with ``v_k = ⟨∂L/∂y, o_k⟩`` the loss slope
along candidate ``k``'s output. That is a two-sample score-function estimator of the slope
``Σ_k v_k ∇p_k`` of the weighted sum, with the second sample as a baseline: E over a, b gives
``Σ_k p_k v_k ∇ log p_k = Σ_k v_k ∇ p_k``, so wherever the loss is linear in a layer's mixed
output (a single mixed op with a linear read-out, the test's toy) it is unbiased for FNA's
exact gradient; elsewhere it is the slope at the sampled architecture, not at the weighted
sum (the usual price of a sampled relaxation, cf. ProxylessNAS's binary gates). When
``a == b`` the gate passes no gradient: still unbiased, the baseline cancels the sample.

Channel widths use the same gates: the masks are linear in β (``fnacli.nn.masks``), so a
gate vector over widths gives the hard mask of width ``a`` with the same estimator.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


def two_sample_gate(probs: torch.Tensor, generator: torch.Generator
                    ) -> tuple[torch.Tensor, tuple[int, ...]]:
    """The gate vector for ``probs`` (see the module docstring) and the candidates it uses
    (``(a,)`` or ``(a, b)``, ``a`` first: the one the forward pass computes)."""
    draw = torch.multinomial(probs.detach().float().cpu(), 2, replacement=True,
                             generator=generator).tolist()
    a, b = int(draw[0]), int(draw[1])
    gate = torch.zeros_like(probs)
    gate[a] = 1.0
    if a == b:  # zero gradient, but still a function of α (a graph the backward can reach)
        return gate + 0.0 * (probs - probs.detach()), (a,)
    logp = torch.log(probs[[a, b]])
    centred = logp - logp.detach()  # value 0, gradient ∇ log p
    coef = 0.5 * (centred[0] - centred[1])
    onehot = torch.zeros_like(probs)
    onehot[a], onehot[b] = 1.0, -1.0
    return gate + coef * onehot, (a, b)


def sampled_gates(alpha_probs: Mapping, beta_probs: Mapping, generator: torch.Generator
                  ) -> tuple[dict, dict, dict]:
    """Gates for every α and β choice: (α gates, β gates, candidates used per α layer)."""
    a_g, support = {}, {}
    for k, p in alpha_probs.items():
        a_g[k], support[k] = two_sample_gate(p, generator)
    b_g = {s: two_sample_gate(p, generator)[0] for s, p in beta_probs.items()}
    return a_g, b_g, support


def arch_step_generator(seed: int, arch_step: int) -> torch.Generator:
    """The draws of α/β step ``arch_step``: a function of (seed, step) only, so a resumed
    search samples what an uninterrupted one would."""
    return torch.Generator().manual_seed((seed * 1_000_003 + arch_step) % (2 ** 63) + 7)
