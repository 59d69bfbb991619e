"""The cost lookup table: exactness of one-hot costs, the nested expectation, gradients,
persistence and the on-disk cache."""

from __future__ import annotations

import itertools
import json
import random

import pytest
import torch

import fnacli.cost.lut as lut_mod
import fnacli.cost.units as units_mod
from fnacli.cost.count import profile_exact
from fnacli.cost.lut import Lut, build_lut, cache_path, load_or_build_lut
from fnacli.cost.table import CostTable
from fnacli.errors import UserError
from fnacli.pipeline.profile import cost_target as T
from fnacli.spec import SKIP, ArchSpec, Op, SpaceSpec, Stage, builtin_space

TINY = {
    "schema": "fnacli/space@1", "stem": {"out": 8, "stride": 2},
    "stages": [
        {"out": 8, "stride": 1, "ops": ["k3_e1"]},
        {"out": [8, 12], "stride": 2, "layers": 2, "ops": ["k3_e3", "k5_e3", "skip"]},
        {"out": [16, 20], "stride": 2, "layers": 2, "ops": ["k3_e3", "skip"]},
        {"out": 24, "stride": 2, "ops": ["k3_e3"]},  # fixed, but its input width varies
        {"out": [24, 32], "stride": 2, "layers": 1, "ops": ["k3_e3", "k7_e6"]},
    ],
    "head": {"out": 64},
}


def arch_of(space: SpaceSpec, ops: dict[tuple[int, int], int], outs: dict[int, int]) -> ArchSpec:
    """The architecture of candidate indices (skips dropped)."""
    stages = []
    for s, st in enumerate(space.stages):
        chosen = [st.layer_candidates(i)[ops.get((s, i), 0)] for i in range(st.layers)]
        stages.append(Stage(st.outs[outs.get(s, 0)], st.stride,
                            tuple(Op.parse(c) for c in chosen if c != SKIP)))
    return ArchSpec(space.stem_out, space.stem_stride, tuple(stages), space.head_out)


def searchable(space: SpaceSpec) -> tuple[list[tuple[int, int]], list[int]]:
    layers = [(s, i) for s, st in enumerate(space.stages) if st.searchable
              for i in range(st.layers)]
    return layers, [s for s, st in enumerate(space.stages) if len(st.outs) > 1]


def one_hot_pick(space: SpaceSpec, rng: random.Random) -> tuple[dict, dict, ArchSpec]:
    layers, stages = searchable(space)
    ops = {k: rng.randrange(len(space.stages[k[0]].layer_candidates(k[1]))) for k in layers}
    outs = {s: rng.randrange(len(space.stages[s].outs)) for s in stages}
    alpha = {k: torch.nn.functional.one_hot(torch.tensor(v), len(
        space.stages[k[0]].layer_candidates(k[1]))).float() for k, v in ops.items()}
    beta = {s: torch.nn.functional.one_hot(torch.tensor(v), len(space.stages[s].outs)).float()
            for s, v in outs.items()}
    return alpha, beta, arch_of(space, ops, outs)


@pytest.fixture(scope="module")
def tiny() -> SpaceSpec:
    return SpaceSpec.from_dict(TINY)


@pytest.mark.parametrize(("task", "size"), [("ssdlite", (96, 80)), ("retinanet", (97, 65)),
                                            ("classifier", (64, 64))])
def test_expected_cost_is_the_expectation_over_all_architectures(tiny, task, size) -> None:
    """Brute force: E[MAdds] = Σ over every architecture of P(arch) x MAdds(arch), with
    independent random α/β (this is what nests eqs. 5-8 with the input-width extension)."""
    lut = build_lut(tiny, T(task), size)
    layers, stages = searchable(tiny)
    g = torch.Generator().manual_seed(1)
    # float64 so that every distribution sums to 1 as exactly as the brute force assumes
    alpha = {k: torch.rand(len(tiny.stages[k[0]].layer_candidates(k[1])), generator=g,
                           dtype=torch.float64).softmax(0) for k in layers}
    beta = {s: torch.rand(len(tiny.stages[s].outs), generator=g, dtype=torch.float64).softmax(0)
            for s in stages}
    choices = [range(len(alpha[k])) for k in layers] + [range(len(beta[s])) for s in stages]
    archs, probs = [], []
    for pick in itertools.product(*choices):
        ops, outs = dict(zip(layers, pick, strict=False)), dict(zip(stages, pick[len(layers):],
                                                                    strict=True))
        archs.append(arch_of(tiny, ops, outs))
        p = 1.0
        for k, v in ops.items():
            p *= float(alpha[k][v])
        for s, v in outs.items():
            p *= float(beta[s][v])
        probs.append(p)
    assert len(archs) == 192
    costs = [p.madds for p in CostTable(T(task), size).profile_many(archs)]
    brute = sum(p * c for p, c in zip(probs, costs, strict=True))
    got = lut.expected_madds(alpha, beta)
    assert float(got) == pytest.approx(brute, rel=1e-9)
    # and a few of those architectures traced in full agree with the table exactly
    for arch in archs[::67]:
        assert lut.arch_madds(arch) == profile_exact(arch, T(task), size, lut.num_classes).madds


def test_gradient_flows_to_alpha_and_beta(tiny) -> None:
    lut = build_lut(tiny, T("ssdlite"), (96, 80))
    layers, stages = searchable(tiny)
    a_logits = {k: torch.zeros(len(tiny.stages[k[0]].layer_candidates(k[1])), requires_grad=True)
                for k in layers}
    b_logits = {s: torch.zeros(len(tiny.stages[s].outs), requires_grad=True) for s in stages}
    cost = lut.expected_madds({k: v.softmax(0) for k, v in a_logits.items()},
                              {s: v.softmax(0) for s, v in b_logits.items()})
    assert cost.dtype == torch.float32 and cost.requires_grad
    cost.backward()
    for k, v in {**a_logits, **b_logits}.items():
        assert v.grad is not None and torch.isfinite(v.grad).all(), k
        assert v.grad.abs().sum() > 0 or len(v) == 1, k  # a lone candidate has no gradient
    # wider output channels cost more: the gradient pushes β towards the narrow candidate
    assert b_logits[4].grad[1] > 0 > b_logits[4].grad[0]
    # skip is free: its α gradient is the most negative of its layer
    assert a_logits[(1, 1)].grad.argmin() == 2


def test_missing_or_misshapen_probabilities(tiny) -> None:
    lut = build_lut(tiny, T("none"), (64, 64))
    alpha, beta, _ = one_hot_pick(tiny, random.Random(0))
    with pytest.raises(KeyError, match="alpha"):
        lut.expected_madds({k: v for k, v in alpha.items() if k != (1, 0)}, beta)
    with pytest.raises(ValueError, match="expected shape"):
        lut.expected_madds(alpha, {**beta, 2: torch.ones(3) / 3})


@pytest.mark.slow
def test_one_hot_equals_exact_madds_in_fna_and_fna_channels() -> None:
    rng = random.Random(7)
    cases = [("fna", "ssdlite", (320, 320)), ("fna-channels", "ssdlite", (320, 320)),
             ("fna", "retinanet", (161, 129)), ("fna-channels", "retinanet", (161, 129))]
    for name, task, size in cases:
        space = builtin_space(name)
        lut = build_lut(space, T(task), size)
        for _ in range(2):
            alpha, beta, arch = one_hot_pick(space, rng)
            exact = profile_exact(arch, T(task), size, 80).madds  # full fvcore trace
            assert float(lut.expected_madds(alpha, beta)) == pytest.approx(exact, rel=1e-6)
            assert lut.arch_madds(arch) == exact


def test_json_round_trip_and_cache(tiny, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FNACLI_CACHE_DIR", str(tmp_path / "cache"))
    first = load_or_build_lut(tiny, T("retinanet"), (97, 65), num_classes=3)
    path = cache_path(tiny, T("retinanet"), (97, 65), 3)
    assert path.is_file() and json.loads(path.read_text())["schema"] == "fnacli/lut@1"

    def boom(*args, **kwargs):
        raise AssertionError("rebuilt although cached")

    monkeypatch.setattr(lut_mod, "build_lut", boom)
    again = load_or_build_lut(tiny, T("retinanet"), (97, 65), num_classes=3)
    assert again.layers == first.layers and again.fixed == first.fixed
    alpha, beta, arch = one_hot_pick(tiny, random.Random(3))
    assert float(again.expected_madds(alpha, beta)) == float(first.expected_madds(alpha, beta))
    # another class count is another table
    assert cache_path(tiny, T("retinanet"), (97, 65), 4) != path
    with pytest.raises(AssertionError, match="rebuilt"):
        load_or_build_lut(tiny, T("retinanet"), (97, 65), num_classes=4)
    # a table another fnacli version counted is not reused
    d = json.loads(path.read_text())
    path.write_text(json.dumps({**d, "fnacli_version": "0.0.0-other"}))
    with pytest.raises(AssertionError, match="rebuilt"):
        load_or_build_lut(tiny, T("retinanet"), (97, 65), num_classes=3)


def test_malformed_table_is_a_user_error() -> None:
    with pytest.raises(UserError, match="not an fnacli lookup table"):
        Lut.from_json('{"schema": "other"}', "x.json", task_of=T)
    good = json.loads(build_lut(SpaceSpec.from_dict(TINY), T("none"), (64, 64)).to_json())
    good["layers"][0] = ["k3_e3", 1]
    with pytest.raises(UserError, match="malformed"):
        Lut.from_json(json.dumps(good), "x.json", task_of=T)


def test_cli_writes_the_table(run_cli, tmp_path) -> None:
    out = tmp_path / "lut.json"
    space = tmp_path / "space.json"
    space.write_text(json.dumps(TINY))
    args = ["madds", "--space", str(space), "--task", "retinanet", "--input", "97x65", "--lut",
            "-o", str(out)]
    code, _, err = run_cli(args)
    assert code == 0 and "layer entries" in err
    lut = Lut.from_json(out.read_text(), task_of=T)
    assert lut.size == (97, 65) and lut.task == "retinanet" and lut.num_classes == 80
    arch = SpaceSpec.from_dict(TINY).max_arch()
    assert lut.arch_madds(arch) == profile_exact(arch, T("retinanet"), (97, 65), 80).madds
    code, _, err = run_cli(args)
    assert code == 2 and "--force" in err
    code, _, _ = run_cli([*args, "--force"])
    assert code == 0
    code, _, err = run_cli(["madds", "--lut", "-o", str(out)])
    assert code == 2 and "--space" in err


def test_madds_specs_are_warm_after_the_first_call(run_cli, tmp_path, monkeypatch) -> None:
    """`fnacli madds SPEC` keeps the per-unit counts on disk: a later process (here: the
    in-memory counts dropped) traces nothing and prints the same numbers."""
    monkeypatch.setenv("FNACLI_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(units_mod, "PP", {})
    monkeypatch.setattr(units_mod, "_PP_DISK", {})
    args = ["madds", "mobilenetv2-0.75", "--task", "ssdlite", "--json"]
    code, cold, err = run_cli(args)
    assert code == 0, err
    assert units_mod.unit_cache_path().is_file()
    monkeypatch.setattr(units_mod, "PP", {})
    monkeypatch.setattr(units_mod, "_PP_DISK", {})

    def boom(*args, **kwargs):
        raise AssertionError("traced although cached")

    monkeypatch.setattr(units_mod, "unit_madds", boom)
    code, warm, err = run_cli(args)
    assert code == 0, err
    assert json.loads(warm) == json.loads(cold)
    from fnacli.spec import load_arch

    exact = profile_exact(load_arch("mobilenetv2-0.75"), T("ssdlite"), (320, 320), 80)
    assert json.loads(cold)[0]["madds"] == exact.madds
