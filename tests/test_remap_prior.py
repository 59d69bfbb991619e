"""Deriving by depth (skip positions summed) and the remapping-aware prior: against brute-force
enumeration, hand-computed cases, the parameter counts of real MBConv blocks, and the CLI."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import pytest
import torch
from test_derive import small_space, write_supernet

from fnacli.nn.supernet import op_choices, width_choices
from fnacli.search import arch as A
from fnacli.search import remap_prior as R
from fnacli.spec import SKIP, ArchSpec, Op, SpaceSpec, mobilenetv2


def _random_logits(space: SpaceSpec, seed: int) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed)
    return ({(s, i): 2 * torch.randn(len(c), generator=g) for s, i, c in op_choices(space)},
            {s: torch.randn(len(o), generator=g) for s, o in width_choices(space)})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_depth_distribution_matches_enumeration(seed: int) -> None:
    space = small_space()
    a, b = A.probs(space, *_random_logits(space, seed))
    for s in (1, 2):
        layers = [(i, c) for t, i, c in op_choices(space) if t == s]
        want: dict[int, float] = {}
        for choice in itertools.product(*[range(len(c)) for _, c in layers]):
            p = math.prod(float(a[(s, i)][j]) for (i, _), j in zip(layers, choice, strict=True))
            d = sum(c[j] != SKIP for (_, c), j in zip(layers, choice, strict=True))
            want[d] = want.get(d, 0.0) + p
        got = A.depth_distribution(space, s, a)
        assert got.keys() == want.keys()
        assert all(got[d] == pytest.approx(want[d]) for d in want)


def _space_one_stage(layers: int) -> SpaceSpec:
    return SpaceSpec.from_dict({
        "schema": "fnacli/space@1", "stem": {"out": 8, "stride": 2},
        "stages": [{"out": 8, "stride": 1, "ops": ["k3_e1"]},
                   {"out": 16, "stride": 2, "layers": layers, "ops": ["k3_e6", "skip"]}],
        "head": {"out": 32}})


def test_derive_by_depth_drops_the_layer_per_layer_argmax_keeps() -> None:
    # layers 1-3 (layer 0 cannot be skipped), each k3_e6 0.6 / skip 0.4: per-layer argmax
    # keeps all three (p 0.216), but dropping one has p 3 · 0.6² · 0.4 = 0.432
    space = _space_one_stage(4)
    logit = math.log(0.6 / 0.4)
    alpha = {(1, 0): torch.zeros(1), **{(1, i): torch.tensor([logit, 0.0]) for i in (1, 2, 3)}}
    layer, _, p_layer = A.derive(space, alpha, {})
    depth, path, p_depth = A.derive_by_depth(space, alpha, {})
    assert layer.stages[1].depth == 4 and p_layer == pytest.approx(0.216)
    assert depth.stages[1].depth == 3 and p_depth == pytest.approx(0.432)
    assert A.path_of_arch(space, depth) == path
    # confident α: both rules agree
    sure = {(1, 0): torch.zeros(1), **{(1, i): torch.tensor([5.0, 0.0]) for i in (1, 2, 3)}}
    assert A.derive_by_depth(space, sure, {})[0] == A.derive(space, sure, {})[0]


def _conv_params(cin: int, cout: int, k: int, e: int) -> int:
    """Weights of an MBConv's convolutions, counted on the real module (BN left out)."""
    from fnacli.nn.blocks import MBConv

    block = MBConv(cin, cout, k, e, 1)
    return sum(m.weight.numel() for m in block.modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("op, seed_op, cout, seed_cout", [
    ("k3_e3", "k3_e6", 24, 24), ("k7_e6", "k3_e6", 24, 24), ("k3_e6", "k5_e6", 24, 24),
    ("k5_e3", "k7_e6", 16, 24), ("k3_e6", "k3_e6", 24, 32)])
def test_layer_keep_is_the_shared_weights_of_real_blocks(op: str, seed_op: str, cout: int,
                                                         seed_cout: int) -> None:
    new, old = Op.parse(op), Op.parse(seed_op)
    cin = 16
    shared = _conv_params(cin, min(cout, seed_cout), min(new.kernel, old.kernel),
                          min(new.expand, old.expand))
    assert R.layer_keep(new, old, cin, cout, seed_cout) == pytest.approx(
        shared / _conv_params(cin, seed_cout, old.kernel, old.expand))


def test_expansion_cut_loses_half_kernel_growth_nothing() -> None:
    keep = R.candidate_keep(SpaceSpec.from_dict(json.loads(
        (Path(__file__).resolve().parents[1] / "recipes" / "spaces" /
         "fna-mbv2-0.5-demo.json").read_text())), mobilenetv2(0.5))
    row = keep[(2, 1)]  # stage 2 layer 1: the seed has k3_e6 there
    assert row[:6] == pytest.approx([0.5, 1.0, 0.5, 1.0, 0.5, 1.0])  # k3/5/7 × e3/e6
    assert row[6] == R.SKIP_KEEP


def test_adjust_alpha_multiplies_probabilities_by_keep() -> None:
    space = small_space()
    seed = ArchSpec.from_dict({"schema": "fnacli/arch@1", "stem": {"out": 8, "stride": 2},
                               "stages": [{"out": 8, "stride": 1, "ops": ["k3_e1"]},
                                          {"out": 16, "stride": 2, "ops": ["k5_e6"] * 3},
                                          {"out": 24, "stride": 2, "ops": ["k3_e3"] * 2},
                                          {"out": 32, "stride": 2, "ops": ["k3_e6"]}],
                               "head": {"out": 48}})
    alpha, _ = _random_logits(space, 0)
    assert R.adjust_alpha(space, seed, alpha, 0.0) == alpha
    keep = R.candidate_keep(space, seed)
    adj = R.adjust_alpha(space, seed, alpha, 1.0)
    for k, a in alpha.items():
        want = torch.softmax(a, 0) * torch.tensor(keep[k])
        assert torch.allclose(torch.softmax(adj[k], 0), want / want.sum(), atol=1e-6)
    # the seed itself keeps everything; a shallower one pays skip_keep per dropped layer
    assert R.arch_log_keep(seed, seed) == pytest.approx(0.0)
    shallow = ArchSpec.from_dict({**seed.to_dict(), "stages": [
        *seed.to_dict()["stages"][:1], {"out": 16, "stride": 2, "ops": ["k5_e6"] * 2},
        *seed.to_dict()["stages"][2:]]})
    assert R.arch_log_keep(shallow, seed) == pytest.approx(math.log(R.SKIP_KEEP))


def test_derive_cli_by_depth_and_remap_prior(tmp_path: Path, run_cli) -> None:
    space = small_space()
    alpha, beta = _random_logits(space, 3)
    plain = write_supernet(tmp_path / "s.safetensors", space, alpha, beta)
    code, out, err = run_cli(["derive", plain, "--by", "depth"])
    assert code == 0, err
    want = A.derive_by_depth(space, alpha, beta)[0]
    assert ArchSpec.from_dict(json.loads(out)) == want
    # the prior needs the seed the supernet records
    code, _, err = run_cli(["derive", plain, "--remap-prior", "1"])
    assert code == 2 and "seed" in err
    code, _, err = run_cli(["derive", plain, "--by", "width"])
    assert code == 2 and "--by" in err


def test_derive_cli_remap_prior_moves_off_an_expansion_cut(tmp_path: Path, run_cli) -> None:
    from fnacli.checkpoint import read_checkpoint, save_checkpoint

    space = small_space()
    seed = ArchSpec.from_dict({"schema": "fnacli/arch@1", "stem": {"out": 8, "stride": 2},
                               "stages": [{"out": 8, "stride": 1, "ops": ["k3_e1"]},
                                          {"out": 16, "stride": 2, "ops": ["k5_e6"] * 3},
                                          {"out": 24, "stride": 2, "ops": ["k5_e6"] * 2},
                                          {"out": 32, "stride": 2, "ops": ["k3_e6"]}],
                               "head": {"out": 48}})
    # every layer: k3_e3 (an expansion cut of the seed's k5_e6) slightly ahead of k5_e6
    alpha = {(s, i): torch.tensor([0.2, 0.0, -3.0][:len(c)]) if "k3_e3" in c else
             torch.tensor([0.0, 0.2]) for s, i, c in op_choices(space)}
    beta = {s: torch.zeros(len(o)) for s, o in width_choices(space)}
    ck = write_supernet(tmp_path / "s.safetensors", space, alpha, beta)
    meta = dict(read_checkpoint(ck).meta, seed_spec=seed.to_dict())
    save_checkpoint(ck, read_checkpoint(ck).tensors, "supernet", meta, force=True)
    code, out, _ = run_cli(["derive", ck])
    assert code == 0 and json.loads(out)["stages"][1]["ops"][0] == "k3_e3"
    code, out, err = run_cli(["derive", ck, "--remap-prior", "1"])
    assert code == 0, err
    # log 0.5 outweighs the 0.2 logit lead: the seed's op is kept
    assert json.loads(out)["stages"][1]["ops"] == ["k5_e6"] * 3


def test_evolution_fitness_takes_the_remap_term() -> None:
    from test_evolution import make_search

    search = make_search(None, [], generations=2)
    seed = search.encoding.arch(search.encoding.random(random.Random(0)))
    term = R.fitness_term(seed, 0.5)
    search.fitness_term = term
    search.run()
    for c in search.cache.values():
        arch = search.encoding.arch(c.genome)
        assert c.fitness == pytest.approx(c.stats[search.config.metric] + term(arch))
    assert any(term(search.encoding.arch(c.genome)) < 0 for c in search.cache.values())
