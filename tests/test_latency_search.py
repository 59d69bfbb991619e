"""Latency in the search: the differentiable search with --cost latency derives a network that
is measured faster under a larger weight; one-shot candidates stay under --max-latency; both
run on deeplabv3 (segmentation) with its latency table."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from test_evolution import SPACE as ONESHOT_SPACE
from test_evolution import all_genomes, fake_fitness
from test_search import RUN, SPACE, env, supernet  # noqa: F401 - fixtures

import fnacli.cost.latency as L
import fnacli.cost.measure as M
from fnacli.errors import UserError
from fnacli.search import evolution as E
from fnacli.spec import ArchSpec, SpaceSpec

FAST = M.MeasureConfig(threads=1, min_rounds=6, max_rounds=6, sample_s=0.001, blocks=2)


@pytest.fixture(scope="module")
def table(env: dict) -> Path:  # noqa: F811
    path = env["root"] / "latency.json"
    t = L.build_latency_table(SpaceSpec.from_dict(SPACE), "ssdlite", (64, 64), 2, FAST)
    path.write_text(t.to_json())
    return path


def test_larger_latency_weight_derives_a_faster_network(env: dict, supernet: Path,  # noqa: F811
                                                        table: Path, run_cli) -> None:
    runs = {}
    for name, lam in (("flat", "0"), ("costly", "3000")):
        out = env["root"] / f"lat_{name}.safetensors"
        code, stdout, err = run_cli(["search", supernet, "--data", env["data"], "-o", out, *RUN,
                                     "--cost", "latency", "--latency-table", table,
                                     "--lambda", lam, "--json"])
        assert code == 0, err
        runs[name] = json.loads(stdout)
        assert "ms expected latency" in " ".join(err.split())
    flat, costly = runs["flat"], runs["costly"]
    assert costly["latency_ms"] < flat["latency_ms"]  # by the table
    assert costly["expected_latency_ms"] < flat["expected_latency_ms"]
    # the table's own prediction, recomputed here from the derived specs (not the search's
    # report), must order them the same way: a larger weight buys a network the table prices
    # lower. No live timing: on a shared 2-core machine two tiny networks' wall clocks flip.
    lut = L.read_latency_table(table)
    archs = {n: ArchSpec.from_dict(runs[n]["derived"]) for n in ("flat", "costly")}
    predicted = {n: lut.latency_ms(a) for n, a in archs.items()}
    for n in archs:
        assert predicted[n] == pytest.approx(runs[n]["latency_ms"], rel=1e-6)
    assert predicted["costly"] < predicted["flat"]
    assert archs["costly"] != archs["flat"]
    lines = [json.loads(x) for x in Path(f"{env['root'] / 'lat_costly.safetensors'}"
                                         ".metrics.jsonl").read_text().splitlines()]
    assert any("expected_latency_ms" in r for r in lines if r["event"] == "arch_step")
    # a budget above the start penalises nothing: the search is then the λ = 0 one
    code, stdout, err = run_cli(["search", supernet, "--data", env["data"], "-o",
                                 env["root"] / "lat_budget.safetensors", *RUN, "--cost",
                                 "latency", "--latency-table", table, "--lambda", "3000",
                                 "--target-latency", "10s", "--json"])
    assert code == 0, err
    assert json.loads(stdout)["derived"] == flat["derived"]


def test_latency_options_are_checked_before_any_work(env: dict, supernet: Path,  # noqa: F811
                                                     table: Path, run_cli) -> None:
    def error(extra: list) -> str:
        code, stdout, err = run_cli(["search", supernet, "--data", env["data"], "-o",
                                     env["root"] / "never.safetensors", *RUN, *extra])
        assert code == 2 and stdout == "", err
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        return lines[0]

    assert "--latency-table" in error(["--cost", "latency"])
    assert "--cost latency" in error(["--target-latency", "5ms"])
    assert "--target-latency" in error(["--cost", "latency", "--latency-table", table,
                                        "--target-latency", "soon"])
    assert "does not apply" in error(["--max-latency", "5ms"])
    d = json.loads(table.read_text())
    d["environment"]["device_name"] = "elsewhere"
    other = env["root"] / "other.json"
    other.write_text(json.dumps(d))
    assert "measured elsewhere" in error(["--cost", "latency", "--latency-table", other])
    assert not (env["root"] / "never.safetensors").exists()


@pytest.fixture(scope="module")
def oneshot_table() -> L.LatencyTable:
    space = SpaceSpec.from_dict(ONESHOT_SPACE)
    return L.build_latency_table(space, "ssdlite", (64, 64), 2, FAST)


@pytest.mark.parametrize("strategy", ["evolution", "random"])
def test_every_oneshot_candidate_is_under_max_latency(oneshot_table: L.LatencyTable,
                                                      strategy: str) -> None:
    enc = E.Encoding(oneshot_table.space)
    lat = sorted(oneshot_table.latency_ms(enc.arch(g)) for g in all_genomes(enc))
    limit = lat[len(lat) // 2]
    calls: list[str] = []
    cfg = E.SearchConfig(strategy=strategy, population=6, parents=3, generations=3, seed=1,
                         candidates=12, max_latency=limit)
    search = E.OneShotSearch(enc, oneshot_table.arch_madds, fake_fitness(enc, calls), cfg,
                             latency=oneshot_table.latency_ms)
    result = search.run()
    assert result.finished and search.cache
    for c in search.cache.values():
        assert oneshot_table.latency_ms(enc.arch(c.genome)) <= limit
    assert "max_latency" in cfg.identity()
    assert "max_latency" not in E.SearchConfig().identity()  # older states still resume
    # below the fastest architecture: refused before any evaluation
    tight = E.SearchConfig(strategy=strategy, population=6, max_latency=lat[0] * 0.9)
    with pytest.raises(UserError, match="below the fastest"):
        E.OneShotSearch(enc, oneshot_table.arch_madds, fake_fitness(enc, []), tight,
                        latency=oneshot_table.latency_ms).run()


# -- deeplabv3: a latency search on segmentation data ---------------------------------------
SEG_RUN = ["--task", "deeplabv3", "--size", "64", "--batch-size", "2", "--workers", "0",
           "--device", "cpu", "--seed", "0"]


@pytest.fixture(scope="module")
def seg(env: dict) -> dict:  # noqa: F811
    from fnacli.segmentation.synthetic import SegSynthConfig, generate

    root = env["root"] / "seg"
    generate(root / "data", SegSynthConfig(train=8, val=2, width=96))
    table = L.build_latency_table(SpaceSpec.from_dict(SPACE), "deeplabv3", (64, 64), None, FAST)
    (root / "latency.json").write_text(table.to_json())
    return {"root": root, "data": root / "data", "table": root / "latency.json"}


def test_deeplabv3_latency_searches_run_to_the_end(env: dict, supernet: Path,  # noqa: F811
                                                   seg: dict, run_cli) -> None:
    table = L.read_latency_table(seg["table"])
    out = seg["root"] / "searched.safetensors"
    code, stdout, err = run_cli(["search", supernet, "--data", seg["data"], "-o", out,
                                 *SEG_RUN, "--epochs", "2", "--warmup-epochs", "1",
                                 "--arch-every", "1", "--arch-lr", "0.1", "--cost", "latency",
                                 "--latency-table", seg["table"], "--lambda", "3000", "--json"])
    assert code == 0, err
    res = json.loads(stdout)
    assert res["finished"] and res["task"] == "deeplabv3" and res["arch_steps"] > 0
    derived = ArchSpec.from_dict(res["derived"])
    assert res["latency_ms"] == pytest.approx(table.latency_ms(derived), abs=1e-5)
    assert 0 < res["expected_latency_ms"] < 1e3
    # derive reports the same prediction for the searched checkpoint
    code, stdout, err = run_cli(["derive", out, "--json", "--latency-table", seg["table"]])
    assert code == 0, err
    assert json.loads(stdout)["latency_ms"] == pytest.approx(res["latency_ms"], abs=1e-5)
    # one-shot under a latency limit: every evaluated candidate is under it by the table
    enc = E.Encoding(table.space)
    rng = random.Random(0)
    lat = sorted(table.latency_ms(enc.arch(enc.random(rng))) for _ in range(50))
    limit = lat[len(lat) // 2]
    code, stdout, err = run_cli(["search", supernet, "--data", seg["data"], "-o",
                                 seg["root"] / "oneshot.safetensors", *SEG_RUN,
                                 "--strategy", "random", "--candidates", "3", "--epochs", "1",
                                 "--calib-images", "2", "--calib-batch", "2",
                                 "--latency-table", seg["table"], "--max-latency",
                                 f"{limit}ms", "--json"])
    assert code == 0, err
    res = json.loads(stdout)
    assert res["finished"] and res["evaluated"] == 3 and res["best_latency_ms"] <= limit
    history = [json.loads(x) for x in Path(f"{seg['root'] / 'oneshot.safetensors'}"
                                           ".history.jsonl").read_text().splitlines()]
    cands = [ArchSpec.from_dict(json.loads(r["key"])) for r in history if r["event"] == "candidate"]
    assert len(cands) == 3 and all(table.latency_ms(a) <= limit for a in cands)
