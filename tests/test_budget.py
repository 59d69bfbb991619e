"""Budgets as users state them (fnacli.budget), the ``sample`` step and command (random
architectures of a space inside every limit), and ``madds --space`` (which budgets a space
can meet)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

import fnacli
from fnacli.budget import Amount, Budget, parse_amount
from fnacli.errors import UserError

OPS = ["k3_e3", "k5_e6", "skip"]
SPACE = {"schema": "fnacli/space@1", "name": "tiny", "stem": {"out": 16, "stride": 2},
         "head": {"out": 64},
         "stages": [{"out": 8, "stride": 1, "ops": ["k3_e1"]},
                    {"out": [8, 12], "stride": 2, "layers": 2, "ops": OPS},
                    *({"out": o, "stride": s, "layers": 2, "ops": OPS}
                      for o, s in ((16, 2), (24, 2), (32, 1), (48, 2))),
                    {"out": 64, "stride": 1, "ops": ["k3_e6"]}]}
REF = {"schema": "fnacli/arch@1", "stem": {"out": 16, "stride": 2}, "head": {"out": 64},
       "stages": [{"out": 8, "stride": 1, "ops": ["k3_e1"]},
                  *({"out": o, "stride": s, "ops": ["k3_e3", "k3_e3"]}
                    for o, s in ((12, 2), (16, 2), (24, 2), (32, 1), (48, 2))),
                  {"out": 64, "stride": 1, "ops": ["k3_e6"]}]}
RUN = {"task": "none", "size": 64}


@pytest.mark.parametrize(("text", "metric", "want"), [
    ("60%", "madds", Amount(0.6, True)), ("300M", "madds", Amount(300e6)),
    ("1.2G", "madds", Amount(1.2e9)), ("1.2b", "madds", Amount(1.2e9)),
    ("3e8", "madds", Amount(3e8)), (3e8, "madds", Amount(3e8)),
    ("2.5M", "params", Amount(2.5e6)), ("800K", "params", Amount(800e3)),
    ("12ms", "latency", Amount(12.0)), ("12", "latency", Amount(12.0)),
    ("0.5s", "latency", Amount(500.0)), ("800us", "latency", Amount(0.8)),
    ("150 %", "latency", Amount(1.5, True))])
def test_amounts_as_users_write_them(text: str, metric: str, want: Amount) -> None:
    got = parse_amount(text, metric, f"max_{metric}")
    assert got.relative == want.relative and got.value == pytest.approx(want.value)


@pytest.mark.parametrize("text", ["abc", "-5M", "0", "12 parsecs", "60%%", "nan", "inf"])
def test_malformed_amounts_name_the_parameter(text: str) -> None:
    with pytest.raises(UserError, match="^max_madds: expected") as e:
        parse_amount(text, "madds", "max_madds")
    assert e.value.cli_message.startswith("--max-madds: expected")


def test_several_limits_resolve_against_the_reference() -> None:
    budget = Budget.of(max_madds="60%", min_madds="100M", max_params="2.5M",
                       max_latency="50%")
    w = budget.resolve({"madds": 500e6, "params": 4e6, "latency": 20.0})
    assert w.bounds == {"madds": (100e6, 300e6), "params": (None, 2.5e6),
                        "latency": (None, 10.0)}
    assert w.admits({"madds": 200e6, "params": 2e6, "latency": 9.0})
    for outside in ({"madds": 90e6}, {"madds": 301e6}, {"params": 2.6e6}, {"latency": 10.1},
                    {"latency": None}):  # a latency the table does not cover is outside
        assert not w.admits({"madds": 200e6, "params": 2e6, "latency": 9.0, **outside})
    with pytest.raises(UserError, match="^max_madds: a relative budget needs a reference"):
        budget.resolve(None)
    with pytest.raises(UserError, match=r"^min_madds 400M is above max_madds 300M") as e:
        Budget.of(max_madds="300M", min_madds="400M").resolve()
    assert e.value.cli_message == "--min-madds 400M is above --max-madds 300M"


def test_an_unreachable_combination_names_the_cheapest_values() -> None:
    w = Budget.of(max_madds="300M", max_params="1M").resolve()
    cheapest = {"madds": 200e6, "params": 1.5e6}
    with pytest.raises(UserError) as e:
        w.check_reachable(cheapest, {"madds": 900e6, "params": 5e6}, "space fna")
    assert str(e.value) == ("max_params 1M: unreachable: the cheapest architecture of space "
                            "fna has 200M MAdds, 1.5M params (reachable: max_params >= 1.5M)")
    assert e.value.cli_message.startswith("--max-params 1M: unreachable")
    with pytest.raises(UserError, match="most costly architecture .* min_madds <= 900M"):
        Budget.of(min_madds="1G").resolve().check_reachable(cheapest, {"madds": 900e6})
    w.check_reachable({"madds": 250e6, "params": 0.9e6}, {"madds": 900e6})  # reachable


def test_sample_draws_different_architectures_inside_every_limit(tmp_path: Path) -> None:
    ref = fnacli.profile(REF, **RUN).profiles[0]
    r = fnacli.sample(SPACE, n=6, **RUN, max_madds="110%", min_madds="60%", max_params="95%",
                      reference=REF, seed=1)
    assert len(r.specs) == 6 and len({s.to_json() for s in r.specs}) == 6
    assert r.reference["madds"] == ref.madds_parts["backbone"]
    # the costs, counted again independently (an fvcore trace of each network)
    exact = fnacli.profile(r.specs, **RUN, exact=True).profiles
    for p, c in zip(exact, r.costs, strict=True):
        assert p.madds_parts["backbone"] == c["madds"] and p.params_parts["backbone"] == \
            c["params"]
        assert 0.6 * r.reference["madds"] <= c["madds"] <= 1.1 * r.reference["madds"]
        assert c["params"] <= 0.95 * r.reference["params"]
    again = fnacli.sample(SPACE, n=6, **RUN, max_madds=1.1 * r.reference["madds"],
                          min_madds=0.6 * r.reference["madds"],
                          max_params=0.95 * r.reference["params"], seed=1)
    assert [s.to_json() for s in again.specs] == [s.to_json() for s in r.specs]


def test_sample_refuses_unreachable_budgets_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "specs"
    with pytest.raises(UserError, match=r"^max_madds 1K: unreachable: the cheapest "
                                        r"architecture of space .* \(reachable: max_madds >= "):
        fnacli.sample(SPACE, n=2, output=out, max_madds="1K", **RUN)
    with pytest.raises(UserError, match="^max_madds: expected"):
        fnacli.sample(SPACE, n=2, output=out, max_madds="lots", **RUN)
    assert not out.exists()


def test_sample_command_outputs(tmp_path: Path, run_cli) -> None:
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    args = ["sample", "--space", space, "-n", "3", "--task", "none", "--size", "64"]
    out = tmp_path / "specs"
    code, stdout, err = run_cli([*args, "-o", out])
    assert code == 0 and stdout == "", err
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ["random-000.json", "random-001.json", "random-002.json"]
    code, stdout, err = run_cli(["madds", *files, "--task", "none", "--json"])
    assert code == 0 and len(json.load(io.StringIO(stdout))) == 3  # only specs in the folder
    code, stdout, err = run_cli([*args, "-o", "-"])
    lines = stdout.splitlines()
    assert code == 0 and len(lines) == 3
    assert [json.loads(x) for x in lines] == [json.loads(f.read_text()) for f in files]
    code, stdout, err = run_cli([*args, "--json", "--max-params", "100%", "--reference",
                                 tmp_path / "specs" / "random-000.json"])
    doc = json.load(io.StringIO(stdout))
    assert code == 0 and len(doc["architectures"]) == 3
    assert doc["budget"] == {"max_params": doc["reference"]["params"]}
    code, stdout, err = run_cli([*args, "--max-madds", "1K"])
    assert code == 2 and stdout == "" and "--max-madds 1K: unreachable" in err
    assert len(err.strip().splitlines()) == 1


def test_madds_space_shows_which_budgets_are_reachable(tmp_path: Path, run_cli) -> None:
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps(REF))
    code, stdout, err = run_cli(["madds", "--space", space, "--task", "none", "--size", "64",
                                 "--seed-spec", ref, "--json"])
    assert code == 0, err
    rows = json.load(io.StringIO(stdout))
    assert [r["name"] for r in rows] == ["cheapest", f"seed ({ref})", "dearest"]
    cheapest, seed, dearest = (r["madds"] for r in rows)
    assert cheapest < seed < dearest
    drawn = fnacli.sample(SPACE, n=8, **RUN, seed=3)
    assert all(cheapest <= c["madds"] <= dearest for c in drawn.costs)
    # the cheapest is the least the space allows: a limit just below it is refused
    with pytest.raises(UserError, match="unreachable"):
        fnacli.sample(SPACE, n=1, **RUN, max_madds=rows[0]["madds_parts"]["backbone"] - 1)
    with pytest.raises(UserError, match="^n 1: only 0 different architectures inside"):
        # at the cheapest itself the limit is reachable (one architecture), so the draw runs
        fnacli.sample(SPACE, n=1, **RUN, max_madds=rows[0]["madds_parts"]["backbone"],
                      max_tries=20)


def test_the_one_shot_search_keeps_every_candidate_inside_a_params_limit() -> None:
    """Several limits at once in DetNAS's search: MAdds and backbone parameters (counted
    here by an independent function), every candidate inside both."""
    from test_evolution import backbone_madds, fake_fitness, median_limit, space

    from fnacli.search import evolution as E

    def params(arch) -> float:  # depthwise-separable weights by hand, no BN
        total, cin = 3 * 9 * arch.stem_out, arch.stem_out
        for st in arch.stages:
            for op in st.ops:
                hidden = cin * op.expand
                total += (cin * hidden if op.expand != 1 else 0) + hidden * op.kernel ** 2 \
                    + hidden * st.out
                cin = st.out
        return float(total)

    enc = E.Encoding(space())
    all_params = sorted(params(enc.arch(enc.random(__import__("random").Random(i))))
                        for i in range(200))
    limit = all_params[len(all_params) // 2]
    calls: list[str] = []
    config = E.SearchConfig(population=6, parents=3, generations=3, seed=1,
                            max_madds=median_limit(enc) * 1.5, max_params=limit)
    search = E.OneShotSearch(enc, backbone_madds, fake_fitness(enc, calls), config,
                             params=params)
    search.run()
    assert search.cache
    for c in search.cache.values():
        arch = search.encoding.arch(c.genome)
        assert params(arch) <= limit and c.madds <= median_limit(enc) * 1.5
    assert "max_params" in config.identity()
    tight = E.SearchConfig(population=6, parents=3, generations=1, max_params=all_params[0] / 10)
    with pytest.raises(UserError, match="--max-params .* below the smallest architecture"):
        E.OneShotSearch(enc, backbone_madds, fake_fitness(enc, []), tight, params=params).run()
