"""A remapping-aware prior: how much of the seed's weights a candidate keeps once remapped.

None of the papers has it. fnacli's benchmark (docs/search-quality.md) found that what loses
AP after fine-tuning is cutting expansions (an e6 -> e3 layer keeps half of its hidden
channels), while growing a kernel (zero taps: the seed's function is kept exactly) or
dropping a layer (every other layer keeps its weights) loses little. A search that ranks
candidates by supernet loss alone knows nothing of this. Here every candidate gets

    keep = (hidden channels kept) x (weights of the layer kept, kernel taps counted)
           x (output channels kept)

against the seed layer the remap takes it from (``fnacli.remap``: new layer i of a stage takes
seed layer min(i, depth - 1)), and a dropped seed layer counts as ``skip_keep``. The prior
adds ``weight * log(keep)`` to a candidate's log-probability (``adjust_alpha``: per layer, for
every way of deriving) or to a candidate's fitness (``fitness_term``: evolution). Off by
default (weight 0): it is measured in docs/search-quality.md before it could become one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from fnacli.nn.supernet import op_choices
from fnacli.spec import SKIP, ArchSpec, Op, SpaceSpec

# a dropped seed layer: every other layer keeps its weights, this one's function is gone; put
# between an expansion cut (0.5) and a lossless change (1) as the benchmark's AP order has it
SKIP_KEEP = 0.75


def layer_keep(op: Op, seed_op: Op, cin: int, cout: int, seed_cout: int | None = None) -> float:
    """The fraction of the seed layer's weights a layer ``op`` remapped from ``seed_op`` keeps
    (input ``cin``, output ``cout``; the seed's output ``seed_cout``, default ``cout``)."""
    seed_cout = seed_cout or cout
    hidden = min(op.expand, seed_op.expand) / seed_op.expand
    expand_row = cin if seed_op.expand > 1 else 0  # a 1x expansion layer has no expand conv
    # per seed hidden channel: its expansion row, its depthwise taps, its projection column
    kept = expand_row + min(op.kernel, seed_op.kernel) ** 2 + min(cout, seed_cout)
    return hidden * kept / (expand_row + seed_op.kernel ** 2 + seed_cout)


def _seed_op(seed: ArchSpec, s: int, i: int) -> Op | None:
    st = seed.stages[s] if s < len(seed.stages) else None
    if st is None or not st.ops:
        return None
    return st.ops[min(i, st.depth - 1)]


def candidate_keep(space: SpaceSpec, seed: ArchSpec, skip_keep: float = SKIP_KEEP
                   ) -> dict[tuple[int, int], list[float]]:
    """keep of every candidate of every searchable layer (space layer i against seed layer
    min(i, depth - 1): exact while skips come last in a stage, which is how a derived
    architecture is remapped). ``skip`` keeps ``skip_keep`` where the seed has layer i, else
    everything (nothing of the seed is dropped)."""
    out: dict[tuple[int, int], list[float]] = {}
    for s, i, cands in op_choices(space):
        st = space.stages[s]
        seed_op = _seed_op(seed, s, i)
        cin = (space.stages[s - 1].outs[-1] if s else space.stem_out) if i == 0 else st.outs[-1]
        seed_has = s < len(seed.stages) and i < seed.stages[s].depth
        seed_out = seed.stages[s].out if s < len(seed.stages) else None
        row = []
        for c in cands:
            if c == SKIP:
                row.append(skip_keep if seed_has else 1.0)
            elif seed_op is None:
                row.append(1.0)
            else:
                row.append(layer_keep(Op.parse(c), seed_op, cin, st.outs[-1], seed_out))
        out[(s, i)] = row
    return out


def adjust_alpha(space: SpaceSpec, seed: ArchSpec, alpha: Mapping[tuple[int, int], torch.Tensor],
                 weight: float, skip_keep: float = SKIP_KEEP) -> dict[tuple[int, int],
                                                                     torch.Tensor]:
    """α logits with ``weight * log(keep)`` added per candidate: softmax of the result is the
    search's probabilities times keep^weight, renormalised per layer."""
    if weight == 0:
        return dict(alpha)
    keep = candidate_keep(space, seed, skip_keep)
    return {k: a + weight * torch.log(torch.tensor(keep[k], dtype=a.dtype, device=a.device)
                                      .clamp_min(1e-12))
            for k, a in alpha.items()}


def arch_log_keep(arch: ArchSpec, seed: ArchSpec, skip_keep: float = SKIP_KEEP) -> float:
    """Σ log keep over an architecture's layers as the remap builds it (layer j of a stage from
    seed layer min(j, depth - 1)), plus log ``skip_keep`` per seed layer it drops."""
    total = 0.0
    cin = arch.stem_out
    for s, st in enumerate(arch.stages):
        sd = seed.stages[s] if s < len(seed.stages) else None
        for j, op in enumerate(st.ops):
            if sd is not None and sd.ops:
                total += math.log(max(1e-12, layer_keep(op, sd.ops[min(j, sd.depth - 1)],
                                                        cin if j == 0 else st.out, st.out,
                                                        sd.out)))
        if sd is not None and sd.depth > st.depth:
            total += (sd.depth - st.depth) * math.log(skip_keep)
        cin = st.out
    return total


def fitness_term(seed: ArchSpec, weight: float, skip_keep: float = SKIP_KEEP):  # noqa: ANN201
    """evolution's hook: ``arch -> weight * Σ log keep`` (added to a candidate's fitness)."""
    def term(arch: ArchSpec) -> float:
        return weight * arch_log_keep(arch, seed, skip_keep)

    return term
