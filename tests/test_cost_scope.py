"""The cost term counts what is searched (Jung et al.'s eq. 5: the K searched mixed blocks;
FNA: the searched backbone), and RetinaNet's table is counted at 1088x800 as the papers do."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from test_lut import TINY, arch_of, searchable

from fnacli.cost.lut import build_lut
from fnacli.cost.table import CostTable
from fnacli.errors import UserError
from fnacli.search.architect import cost_term
from fnacli.search.differentiable import SearchConfig, search_cost
from fnacli.spec import SpaceSpec
from fnacli.train import TrainConfig

SEARCHED = [1, 2, 4]  # TINY: stage 0 is fixed, stage 3 fixed (its input width varies)


def _all_paths(space: SpaceSpec, alpha: dict, beta: dict) -> list[tuple[torch.Tensor, object]]:
    """(P(arch) as a differentiable product of the probabilities, arch) for every path."""
    layers, stages = searchable(space)
    choices = [range(len(alpha[k])) for k in layers] + [range(len(beta[s])) for s in stages]
    out = []
    for pick in itertools.product(*choices):
        ops = dict(zip(layers, pick, strict=False))
        outs = dict(zip(stages, pick[len(layers):], strict=True))
        p = torch.ones((), dtype=torch.float64)
        for k, v in ops.items():
            p = p * alpha[k][v]
        for s, v in outs.items():
            p = p * beta[s][v]
        out.append((p, arch_of(space, ops, outs)))
    return out


def _blocks_madds(table: CostTable, arch: object) -> int:
    """Independent of Lut.expected_madds: the table's entries of the searched stages' layers."""
    keys = [k for (s, *_), k in zip(arch.layers(), table.layer_keys(arch), strict=True)
            if s in SEARCHED]
    table.fill(keys, [], arch)
    return sum(table.layers[k][0] for k in keys)


def _cfg(**kw: object) -> SearchConfig:
    return SearchConfig(task="retinanet", size=(97, 65), train=TrainConfig(1, 2, 0.1),
                        warmup_epochs=0, **kw)


def test_default_scope_is_the_searched_blocks() -> None:
    cfg = _cfg()
    assert cfg.cost_scope == "blocks"
    assert cfg.lut_size == (1088, 800)  # RetinaNet: the papers' counting size
    assert cfg.identity()["cost_scope"] == "blocks"
    assert _cfg(cost_size=(97, 65)).lut_size == (97, 65)
    with pytest.raises(UserError, match="--cost-scope"):
        _cfg(cost_scope="neck").check()


@pytest.mark.parametrize("task", ["retinanet", "ssdlite"])
def test_cost_gradient_is_that_of_the_searched_blocks_alone(task: str) -> None:
    space = SpaceSpec.from_dict(TINY)
    size = (97, 65)
    lut = build_lut(space, task, size)
    table = CostTable(task, size)
    layers, stages = searchable(space)
    g = torch.Generator().manual_seed(3)
    a_logits = {k: torch.randn(len(space.stages[k[0]].layer_candidates(k[1])), generator=g,
                               dtype=torch.float64, requires_grad=True) for k in layers}
    b_logits = {s: torch.randn(len(space.stages[s].outs), generator=g, dtype=torch.float64,
                               requires_grad=True) for s in stages}
    leaves = [*a_logits.values(), *b_logits.values()]

    def probs() -> tuple[dict, dict]:
        return ({k: v.softmax(0) for k, v in a_logits.items()},
                {s: v.softmax(0) for s, v in b_logits.items()})

    cfg = SearchConfig(task=task, size=size, train=TrainConfig(1, 2, 0.1), warmup_epochs=0)
    lam, tau = 0.02, 10.0
    got = torch.autograd.grad(cost_term(search_cost(lut, *probs(), cfg), "log", lam, tau, None),
                              leaves)
    a, b = probs()
    ref_c = sum(p * _blocks_madds(table, arch) for p, arch in _all_paths(space, a, b))
    want = torch.autograd.grad(lam * torch.log(ref_c / 1e9) / math.log(tau), leaves)
    for x, y in zip(got, want, strict=True):
        assert torch.allclose(x, y, rtol=1e-9, atol=1e-15)
    # the whole detector's cost pulls more weakly (stem, fixed stage, neck and head dilute it)
    whole = torch.autograd.grad(cost_term(lut.expected_madds(*probs(), "detector"), "log", lam,
                                          tau, None), leaves)
    ratio = torch.cat([x.flatten() for x in got]).norm() / torch.cat(
        [x.flatten() for x in whole]).norm()
    assert ratio > 1.2


def test_backbone_scope_is_the_profiles_backbone_part() -> None:
    space = SpaceSpec.from_dict(TINY)
    lut = build_lut(space, "ssdlite", (96, 80))
    layers, stages = searchable(space)
    a = {k: torch.rand(len(space.stages[k[0]].layer_candidates(k[1])),
                       dtype=torch.float64).softmax(0) for k in layers}
    b = {s: torch.rand(len(space.stages[s].outs), dtype=torch.float64).softmax(0)
         for s in stages}
    table = CostTable("ssdlite", (96, 80))
    brute = sum(float(p) * table.profile(arch).madds_parts["backbone"]
                for p, arch in _all_paths(space, a, b))
    assert float(lut.expected_madds(a, b, "backbone")) == pytest.approx(brute, rel=1e-9)
    arch = arch_of(space, {}, {})
    assert lut.arch_cost(arch, "backbone") == table.profile(arch).madds_parts["backbone"]
    assert lut.arch_cost(arch, "blocks") == _blocks_madds(table, arch)
    assert lut.arch_cost(arch, "detector") == lut.arch_madds(arch)
