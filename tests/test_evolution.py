"""One-shot search (DetNAS): genome encoding, evolution and random search under a MAdds limit,
exact resume, and the whole `search --strategy evolution|random` on synthetic data."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import assert_stem_bn_recalibrated
from test_bn_recal import one_thread  # noqa: F401  (autouse: one torch thread)
from typer.testing import CliRunner

from fnacli.errors import UserError
from fnacli.pipeline.profile import cost_target as T
from fnacli.search import arch as A
from fnacli.search import evolution as E
from fnacli.spec import ArchSpec, SpaceSpec

# seven stages like MobileNetV2 (a width-0.35 seed remaps onto it); two searchable stages
SPACE = {"schema": "fnacli/space@1", "stem": {"out": 16, "stride": 2},
         "stages": [{"out": 8, "stride": 1, "ops": ["k3_e1"]},
                    {"out": 8, "stride": 2, "ops": ["k3_e6"]},
                    {"out": [8, 16], "stride": 2, "layers": 3, "ops": ["k3_e3", "k5_e3", "skip"]},
                    {"out": 24, "stride": 2, "ops": ["k3_e6"]},
                    {"out": [24, 32], "stride": 1, "layers": 2, "ops": ["k3_e3", "k5_e6", "skip"]},
                    {"out": 56, "stride": 2, "ops": ["k3_e6"]},
                    {"out": 112, "stride": 1, "ops": ["k3_e6"]}],
         "head": {"out": 128}}
SIZE = 64


def space() -> SpaceSpec:
    return SpaceSpec.from_dict(SPACE)


def backbone_madds(arch: ArchSpec, size: int = SIZE) -> float:
    """Conv multiply-accumulates of the backbone, by hand (an independent cost function)."""
    def conv(res: int, cin: int, cout: int, k: int, stride: int, groups: int = 1) -> tuple:
        out = math.ceil(res / stride)
        return out, out * out * cout * (cin // groups) * k * k

    res, total = conv(size, 3, arch.stem_out, 3, arch.stem_stride)
    for _, _, cin, cout, op, stride in arch.layers():
        hid = cin * op.expand
        m = 0
        if op.expand != 1:
            m += conv(res, cin, hid, 1, 1)[1]
        res, dw = conv(res, hid, hid, op.kernel, stride, hid)
        m += dw + conv(res, hid, cout, 1, 1)[1]
        total += m
    total += conv(res, arch.stages[-1].out, arch.head_out, 1, 1)[1]
    return float(total)


def fake_fitness(enc: E.Encoding, calls: list[str]):
    """A deterministic fitness with structure (prefers k5 ops and wide stages) plus a hash
    term so ties are rare; records every evaluated key."""
    def evaluate(genomes):
        out = []
        for g in genomes:
            key = enc.key(g)
            calls.append(key)
            noise = int(hashlib.sha256(key.encode()).hexdigest()[:6], 16) / 16 ** 6
            ops = [str(o) for st in enc.arch(g).stages for o in st.ops]
            out.append({"AP": ops.count("k5_e3") + ops.count("k5_e6") + 0.1 * noise,
                        "AP50": noise})
        return out
    return evaluate


def all_genomes(enc: E.Encoding) -> list[tuple[int, ...]]:
    return list(itertools.product(*[range(n) for n in enc.sizes]))


# -- encoding ----------------------------------------------------------------------------------
def test_genome_order_is_the_alpha_beta_order_and_logits_derive_to_it() -> None:
    sp = space()
    enc = E.Encoding(sp)
    alpha, beta = A.init_logits(sp)
    assert enc.sizes == tuple(len(t) for t in alpha.values()) + tuple(len(t) for t in beta.values())
    archs = set()
    for g in all_genomes(enc):
        arch = enc.arch(g)
        archs.add(E.arch_key(arch))
        assert enc.encode(enc.path(g)) == g
        # the searched checkpoint's logits: derive's argmax gives back this architecture
        tensors = E.arch_logits(enc, g)
        a, b = A.from_tensors(sp, tensors, "test")
        assert A.derive(sp, a, b)[0] == arch
        assert all("skip" not in str(o) for st in arch.stages for o in st.ops)
    # genomes with a skip in different places collapse: keys are per architecture
    assert len(archs) == sp.num_architectures() < len(all_genomes(enc))
    with pytest.raises(UserError):
        enc.path((0,) * (len(enc) - 1))


def test_cheapest_is_the_minimum_over_the_space() -> None:
    enc = E.Encoding(space())
    costs = [backbone_madds(enc.arch(g)) for g in all_genomes(enc)]
    assert backbone_madds(enc.arch(enc.cheapest(backbone_madds))) == min(costs)


def test_cheapest_chooses_each_layer_on_its_own() -> None:
    # no skip: every layer runs, and a stage's first layer may prefer another op than the rest
    sp = SpaceSpec.from_dict({**SPACE, "stages": [
        *SPACE["stages"][:2],
        {"out": 16, "stride": 2, "layers": 3, "ops": ["k3_e3", "k5_e3"]},
        *SPACE["stages"][3:]]})
    enc = E.Encoding(sp)

    def cost(arch: ArchSpec) -> float:  # k3 is cheap first in a stage, k5 later
        return float(sum((1 if o.kernel == 3 else 2) if i == 0 else (2 if o.kernel == 3 else 1)
                         for st in arch.stages for i, o in enumerate(st.ops)))

    costs = [cost(enc.arch(g)) for g in all_genomes(enc)]
    assert cost(enc.arch(enc.cheapest(cost))) == min(costs)


def test_parse_madds() -> None:
    assert E.parse_madds("800M") == 8e8
    assert E.parse_madds("1.2g") == 1.2e9 and E.parse_madds("1.2B") == 1.2e9
    assert E.parse_madds("3e8") == 3e8
    for bad in ("abc", "-5M", "0", "nan"):
        with pytest.raises(UserError):
            E.parse_madds(bad)


# -- the search ----------------------------------------------------------------------------------
def median_limit(enc: E.Encoding) -> float:
    costs = sorted(backbone_madds(enc.arch(g)) for g in all_genomes(enc))
    return costs[len(costs) // 2]


def make_search(tmp: Path | None, calls: list[str], **cfg) -> E.OneShotSearch:
    enc = E.Encoding(space())
    config = E.SearchConfig(**{"population": 6, "parents": 3, "generations": 4, "seed": 1,
                               "max_madds": median_limit(enc), **cfg})
    return E.OneShotSearch(enc, backbone_madds, fake_fitness(enc, calls), config,
                           tmp / "state.json" if tmp else None,
                           tmp / "history.jsonl" if tmp else None)


@pytest.mark.parametrize("strategy", ["evolution", "random"])
def test_every_candidate_is_new_and_within_the_limit(tmp_path: Path, strategy: str) -> None:
    calls: list[str] = []
    search = make_search(tmp_path, calls, strategy=strategy, candidates=16)
    result = search.run()
    limit = search.config.max_madds
    assert result.finished and len(calls) == len(set(calls)) == len(search.cache)
    assert len(calls) == (16 if strategy == "random" else 6 * 4)
    for c in search.cache.values():
        assert c.madds == backbone_madds(search.encoding.arch(c.genome)) <= limit
    # the limit really rejected draws (the median cost lets about half of the space in)
    assert any(m > limit for m in search._madds.values())
    ranked = search.ranked()
    assert result.best == ranked[0]
    assert [c.fitness for c in ranked] == sorted((c.fitness for c in ranked), reverse=True)
    lines = [json.loads(x) for x in (tmp_path / "history.jsonl").read_text().splitlines()]
    gens = [x for x in lines if x["event"] == "generation"]
    assert len(gens) == (4 if strategy == "evolution" else 3)  # random: 6 + 6 + 4
    assert [x["population"] for x in gens][-1] == (6 if strategy == "evolution" else 4)
    assert sum(x["event"] == "candidate" for x in lines) == len(calls)


def test_evolution_finds_better_than_its_first_generation() -> None:
    calls: list[str] = []
    search = make_search(None, calls, generations=5)
    search.run()
    first = max(c.fitness for c in search.cache.values() if c.generation == 0)
    assert search.ranked()[0].fitness > first


class _ParentLog(E.Encoding):
    """An encoding that records every genome mutation and crossover take as a parent."""

    def __init__(self, sp: SpaceSpec) -> None:
        super().__init__(sp)
        self.generation = 0
        self.parents: list[tuple[int, tuple[int, ...]]] = []  # (generation drawn, parent)

    def mutate(self, g, rng, prob):  # noqa: ANN001, ANN201
        self.parents.append((self.generation, g))
        return super().mutate(g, rng, prob)

    def crossover(self, a, b, rng):  # noqa: ANN001, ANN201
        self.parents += [(self.generation, a), (self.generation, b)]
        return super().crossover(a, b, rng)


def parents_by_generation(pool: str | None) -> tuple[dict[int, set], E.OneShotSearch]:
    enc = _ParentLog(space())
    calls: list[str] = []
    cfg = {"population": 8, "parents": 3, "generations": 5, "seed": 2}
    config = E.SearchConfig(**cfg, **({"parent_pool": pool} if pool else {}))
    search = E.OneShotSearch(enc, backbone_madds, fake_fitness(enc, calls), config)
    search.on_round = lambda r: setattr(enc, "generation", enc.generation + 1)
    search.run()
    used: dict[int, set] = {}
    for gen, g in enc.parents:
        used.setdefault(gen, set()).add(g)
    return used, search


def test_parents_are_the_top_k_of_the_current_population_by_default() -> None:
    """DetNAS's Alg. 2: the parents of generation j+1 are select-topk(P^(j)), the k best of
    generation j alone; the elitist pool (the k best of every generation so far) is the
    option. Before the fix the elitist pool was the only one: in this run 2 of the 12
    parents of generations 1-4 were not in the previous generation's top 3."""
    used, search = parents_by_generation(None)
    assert search.config.parent_pool == "population" and len(used) == 4
    outside_elitist = 0
    for gen, parents in used.items():
        last = sorted((c for c in search.cache.values() if c.generation == gen - 1),
                      key=E.Candidate.rank_key)[:3]
        so_far = sorted((c for c in search.cache.values() if c.generation < gen),
                        key=E.Candidate.rank_key)[:3]
        assert parents == {c.genome for c in last}
        outside_elitist += len(parents - {c.genome for c in so_far})
    assert outside_elitist > 0  # the two rules differ on this run
    used, search = parents_by_generation("elitist")
    for gen, parents in used.items():
        so_far = sorted((c for c in search.cache.values() if c.generation < gen),
                        key=E.Candidate.rank_key)[:3]
        assert parents == {c.genome for c in so_far}
    with pytest.raises(UserError, match="--parent-pool"):
        E.SearchConfig(parent_pool="all")


def test_resume_mid_generation_gives_the_uninterrupted_result(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    calls_a: list[str] = []
    whole = make_search(tmp_path / "a", calls_a)
    ref = whole.run()

    calls_b: list[str] = []
    first = make_search(tmp_path / "b", calls_b).run(stop_after=15)  # stops inside generation 2
    assert not first.finished and first.rounds == 2
    resumed = make_search(tmp_path / "b", calls_b)
    got = resumed.run(resume=True)

    assert got.finished and got.rounds == ref.rounds
    assert [c.key for c in got.population] == [c.key for c in ref.population]
    assert [c.key for c in got.top] == [c.key for c in ref.top]
    assert {k: c.fitness for k, c in resumed.cache.items()} == \
        {k: c.fitness for k, c in whole.cache.items()}
    # the evaluations of the unfinished generation were not paid for twice
    assert sorted(calls_b) == sorted(calls_a)

    def history(p: Path) -> list[dict]:
        recs = [json.loads(x) for x in (p / "history.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in ("seconds", "reused")} for r in recs]

    # the history reads like the uninterrupted run's (the unfinished generation once)
    assert history(tmp_path / "b") == history(tmp_path / "a")

    # a resume with other settings is refused
    with pytest.raises(UserError, match="population"):
        make_search(tmp_path / "b", [], population=5).run(resume=True)


def test_resume_inside_the_first_generation(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    calls_a: list[str] = []
    ref = make_search(tmp_path / "a", calls_a).run()
    calls_b: list[str] = []
    first = make_search(tmp_path / "b", calls_b).run(stop_after=3)  # inside generation 0
    assert not first.finished and first.rounds == 0
    assert (tmp_path / "b" / "state.json").is_file()  # something to resume from
    got = make_search(tmp_path / "b", calls_b).run(resume=True)
    assert got.finished and [c.key for c in got.top] == [c.key for c in ref.top]
    assert sorted(calls_b) == sorted(calls_a)  # generation 0's evaluations reused


def test_a_limit_below_the_cheapest_architecture_is_refused() -> None:
    enc = E.Encoding(space())
    cheapest = backbone_madds(enc.arch(enc.cheapest(backbone_madds)))
    with pytest.raises(UserError, match="cheapest"):
        make_search(None, [], max_madds=cheapest * 0.99).run()


def quartile_window(enc: E.Encoding) -> tuple[float, float]:
    costs = sorted(backbone_madds(enc.arch(g)) for g in all_genomes(enc))
    return costs[len(costs) // 4], costs[len(costs) // 2]


def test_dearest_is_the_maximum_over_the_space() -> None:
    enc = E.Encoding(space())
    costs = [backbone_madds(enc.arch(g)) for g in all_genomes(enc)]
    assert backbone_madds(enc.arch(enc.dearest(backbone_madds))) == max(costs)


@pytest.mark.parametrize("strategy", ["evolution", "random"])
def test_a_madds_window_keeps_every_candidate_inside(strategy: str) -> None:
    """--min-madds with --max-madds: DetNAS's matched-cost comparison; draws below the
    window are rejected too (without the floor some candidates fall below it)."""
    enc = E.Encoding(space())
    lo, hi = quartile_window(enc)
    search = make_search(None, [], strategy=strategy, candidates=12, min_madds=lo, max_madds=hi)
    search.run()
    assert search.cache and all(lo <= c.madds <= hi for c in search.cache.values())
    free = make_search(None, [], strategy=strategy, candidates=12, max_madds=hi)
    free.run()
    assert any(c.madds < lo for c in free.cache.values())
    assert "min_madds" in search.config.identity() and "min_madds" not in free.config.identity()


def test_an_impossible_madds_window_is_refused() -> None:
    enc = E.Encoding(space())
    dearest = backbone_madds(enc.arch(enc.dearest(backbone_madds)))
    with pytest.raises(UserError, match="--min-madds .* above the most expensive"):
        make_search(None, [], min_madds=dearest * 1.01, max_madds=None).run()
    with pytest.raises(UserError, match="--min-madds .* is above --max-madds"):
        E.SearchConfig(min_madds=2e6, max_madds=1e6)
    with pytest.raises(UserError, match="--min-madds: expected a number"):
        E.parse_madds("lots", "--min-madds")


def test_random_baseline_within_a_window() -> None:
    enc = E.Encoding(space())
    lo, hi = quartile_window(enc)
    picks = E.random_baseline(enc, backbone_madds, 4, hi, seed=0, min_madds=lo)
    assert len({enc.key(g) for g, _ in picks}) == 4
    assert all(lo <= c <= hi and c == backbone_madds(enc.arch(g)) for g, c in picks)


# -- end to end on synthetic data ------------------------------------------------------------------
@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Seed (torchvision width 0.35), supernet, synthetic data, a one-shot-trained supernet."""
    from torchvision.models import mobilenet_v2

    from fnacli.checkpoint import save_checkpoint
    from fnacli.detection.synthetic import SynthConfig, generate
    from fnacli.search import supernet_io

    tmp = tmp_path_factory.mktemp("oneshot")
    torch.manual_seed(0)
    torch.save(mobilenet_v2(width_mult=0.35).state_dict(), tmp / "seed.pth")
    tensors, meta = supernet_io.expand(str(tmp / "seed.pth"), space())
    save_checkpoint(tmp / "super.safetensors", tensors, "supernet", meta)
    generate(tmp / "data", SynthConfig(train=16, val=8, size=SIZE, classes=2))
    return {"tmp": tmp, "super": tmp / "super.safetensors", "data": tmp / "data"}


def cli(args: list[str], tmp: Path) -> tuple[int, str, str]:
    """`fnacli search --strategy evolution ARGS` (a later --strategy wins)."""
    from fnacli.cli.app import app

    r = CliRunner().invoke(app, ["search", "--strategy", "evolution", *map(str, args)],
                           env={"FNACLI_CACHE_DIR": str(tmp / "cache")})
    if r.exception and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


COMMON = ["--size", SIZE, "--workers", 0, "--device", "cpu", "--calib-images", 8,
          "--calib-batch", 4, "--seed", 3]


@pytest.fixture(scope="module")
def trained(work: dict) -> dict:
    tmp = work["tmp"]
    code, out, err = cli([work["super"], "--train-only", "--task", "ssdlite", "--data",
                          work["data"], "-o", tmp / "evo.safetensors", "--epochs", 1,
                          "--batch-size", 4, *COMMON], tmp)
    assert code == 0, err
    assert out == "" and "trained" in err  # the result is a file: nothing on stdout
    return {**work, "trained": tmp / "evo.oneshot.safetensors"}


@pytest.fixture(scope="module")
def limits(trained: dict) -> tuple[float, float]:
    """(cheapest, dearest) backbone MAdds of the space's SSDLite networks, by the LUT (the
    one-shot search limits the backbone by default, as DetNAS)."""
    from fnacli.cost.lut import load_or_build_lut

    with pytest.MonkeyPatch.context() as mp:  # the same table the searches use
        mp.setenv("FNACLI_CACHE_DIR", str(trained["tmp"] / "cache"))
        lut = load_or_build_lut(space(), T("ssdlite"), (SIZE, SIZE), 2)
    enc = E.Encoding(space())
    costs = [lut.arch_cost(enc.arch(g), "backbone") for g in all_genomes(enc)]
    return min(costs), max(costs)


EVO = ["--population", 4, "--parents", 2, "--generations", 2]


@pytest.fixture(scope="module")
def evolution_run(trained: dict, limits: tuple[float, float]) -> dict:
    tmp = trained["tmp"]
    limit = (limits[0] + limits[1]) / 2
    out = tmp / "evo.safetensors"
    code, stdout, stderr = cli([trained["trained"], "--skip-training", "--data", trained["data"],
                                "-o", out, *EVO, "--max-madds", f"{limit:.0f}", *COMMON,
                                "--json", "--tensorboard", tmp / "tb"], tmp)
    assert code == 0, stderr
    return {**trained, "out": out, "limit": limit, "summary": json.loads(stdout),
            "stderr": stderr}


def test_evolution_end_to_end(evolution_run: dict) -> None:
    from fnacli.cost.count import profile_exact
    from fnacli.search.supernet_io import read_supernet

    run, out = evolution_run, evolution_run["out"]
    assert "generation 1/2" in run["stderr"] and "generation 2/2" in run["stderr"]
    assert "median" in run["stderr"]
    hist = [json.loads(x) for x in Path(f"{out}.history.jsonl").read_text().splitlines()]
    cands = [h for h in hist if h["event"] == "candidate"]
    assert len(cands) == 8 == run["summary"]["evaluated"]
    assert all(c["madds"] <= run["limit"] for c in cands)

    ckpt = read_supernet(out)
    assert ckpt.kind == "searched"
    assert ckpt.meta["search"]["parent_pool"] == "population"  # DetNAS's Alg. 2
    top = ckpt.meta["search"]["top"]
    assert [t["rank"] for t in top] == list(range(1, 9))
    assert [t["fitness"] for t in top] == sorted((t["fitness"] for t in top), reverse=True)
    best = ArchSpec.from_dict(top[0]["arch"])
    assert A.derive(ckpt.space, ckpt.alpha, ckpt.beta)[0] == best
    assert run["summary"]["best_arch"] == best.to_dict()
    # TensorBoard: the generations' fitness, at the number of candidates evaluated
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run["tmp"] / "tb"))
    acc.Reload()
    gens = acc.Scalars("generation/best_AP")
    assert len(gens) == 2 and gens[-1].step == len(cands)
    assert acc.Scalars("generation/overall_best_AP")[-1].value == pytest.approx(
        top[0]["fitness"], abs=1e-6)
    # --json names every file of the search
    assert set(run["summary"]["files"]) == {"output", "trained", "train_metrics", "state",
                                            "history"}
    # the limit holds for an independent full fvcore count, not only for the table
    exact = profile_exact(best, T("ssdlite"), (SIZE, SIZE), 2).madds_parts["backbone"]
    assert exact == pytest.approx(top[0]["madds"], rel=5e-3)
    assert ckpt.meta["search"]["cost_scope"] == "backbone"
    # DetNAS's protocol: fitness on images held out of the training split, not on val
    fitness = ckpt.meta["search"]["fitness"]
    assert fitness["source"] == "train" and fitness["images"] == 5  # 30% of 16 (too few for 128)
    assert exact <= run["limit"] * 1.005


def test_random_search_on_the_same_trained_supernet(evolution_run: dict) -> None:
    tmp = evolution_run["tmp"]
    out = tmp / "random.safetensors"
    code, stdout, stderr = cli([evolution_run["trained"], "--skip-training", "--strategy",
                                "random", "--data", evolution_run["data"], "-o", out,
                                "--candidates", 5, "--population", 3, "--max-madds",
                                f"{evolution_run['limit']:.0f}", *COMMON], tmp)
    assert code == 0, stderr
    # the result is a file: stdout stays empty without --json, the summary is on stderr
    assert stdout == "" and "random" in stderr and str(out) in stderr
    # and every file of the search, named in one line
    files = next(x for x in stderr.splitlines() if x.startswith("files: "))
    for f in (out, Path(f"{out}.history.jsonl"), Path(f"{out}.search.json"),
              evolution_run["trained"]):
        assert str(f) in files
    hist = [json.loads(x) for x in Path(f"{out}.history.jsonl").read_text().splitlines()]
    cands = [h for h in hist if h["event"] == "candidate"]
    assert len(cands) == len({c["key"] for c in cands}) == 5
    assert all(c["madds"] <= evolution_run["limit"] for c in cands)
    # same settings, same seed: the BN recalibration + evaluation is deterministic, so a
    # candidate both searches scored has one fitness
    evo = {c["key"]: c["fitness"] for c in map(json.loads, Path(
        f"{evolution_run['out']}.history.jsonl").read_text().splitlines())
        if c["event"] == "candidate"}
    for c in cands:
        if c["key"] in evo:
            assert c["fitness"] == evo[c["key"]]


def test_resumed_search_matches_the_uninterrupted_one(evolution_run: dict) -> None:
    tmp = evolution_run["tmp"]
    out = tmp / "resumed.safetensors"
    args = [evolution_run["trained"], "--skip-training", "--data", evolution_run["data"], "-o",
            out, *EVO, "--max-madds", f"{evolution_run['limit']:.0f}", *COMMON]
    code, stdout, stderr = cli([*args, "--stop-after-candidates", 5], tmp)
    assert code == 0 and stdout == "" and "--resume" in stderr and not out.exists()
    with pytest.raises(UserError, match="exists from an earlier search"):
        cli(args, tmp)  # neither --resume nor --force: the stopped search's state is kept
    code, _, stderr = cli([*args, "--resume"], tmp)
    assert code == 0, stderr

    def final(p: Path) -> tuple:
        state = json.loads(Path(f"{p}.search.json").read_text())
        return state["population"], state["topk"], state["rounds"]

    assert final(out) == final(evolution_run["out"])
    from fnacli.checkpoint import read_checkpoint

    assert (read_checkpoint(out).meta["search"]["top"]
            == read_checkpoint(evolution_run["out"]).meta["search"]["top"])


def test_bn_recalibration_changes_a_paths_detections(trained: dict) -> None:
    from fnacli.detection.data import find_split, load_split
    from fnacli.detection.evaluate import evaluate
    from fnacli.search.bn_recal import calibration_subset
    from fnacli.search.oneshot import PathEvaluator, build_oneshot_detector, load_trained

    ckpt, info = load_trained(trained["trained"])
    det, sup = build_oneshot_detector(ckpt, "ssdlite", info.num_classes, (SIZE, SIZE), "t")
    val = load_split(find_split(trained["data"], "val"), train=False, label_offset=1)
    train = load_split(find_split(trained["data"], "train"), train=True, label_offset=1)
    enc = E.Encoding(ckpt.space)
    genome = enc.random(__import__("random").Random(0))
    sup.set_path(enc.path(genome))
    det.eval()
    stale = evaluate(det, val).stats  # statistics averaged over all paths during training
    calib = calibration_subset(train, 8)
    fresh = PathEvaluator(det, sup, enc, calib, val, 4)(genome)
    assert fresh != stale
    # the statistics left are those of the calibration images, computed independently
    images = [calib[i][0] for i in range(len(calib))]
    assert len(images) == 8
    assert_stem_bn_recalibrated(det, images, batches=2)  # 8 images in batches of 4


def test_bad_input_exits_2_with_one_line(trained: dict, run_cli, monkeypatch) -> None:
    monkeypatch.setenv("FNACLI_CACHE_DIR", str(trained["tmp"] / "cache"))
    base = ["search", "--strategy", "evolution", "--skip-training", "--data", trained["data"],
            *COMMON]
    code, _, err = run_cli([*base, trained["super"], "-o", trained["tmp"] / "x.safetensors"])
    assert code == 2 and "not trained with one-shot sampling" in err
    assert err.startswith("fnacli: error: ") and err.count("\n") == 1
    code, _, err = run_cli([*base, trained["trained"], "-o", trained["tmp"] / "y.safetensors",
                            "--max-madds", "1M"])
    assert code == 2 and "below the cheapest architecture" in err
    code, _, err = run_cli([*base, trained["trained"], "-o", trained["tmp"] / "z.safetensors",
                            "--max-madds", "lots"])
    assert code == 2 and "--max-madds" in err
    code, _, err = run_cli([*base, trained["trained"], "-o", trained["tmp"] / "v.safetensors",
                            "--parent-pool", "best"])
    assert code == 2 and "--parent-pool" in err and err.count("\n") == 1
    code, _, err = run_cli(["search", "--strategy", "random", "--warmup-epochs", 3,
                            trained["trained"], "-o", trained["tmp"] / "w.safetensors"])
    assert code == 2 and "--warmup-epochs does not apply" in err


class _Captured(Exception):
    """Raised by a stand-in for the supernet training once it has the dataset."""


@pytest.mark.parametrize("task", ["retinanet", "ssdlite"])
def test_supernet_trains_on_the_fine_tuning_augmentation(work: dict, monkeypatch,
                                                         task: str) -> None:
    """DetNAS trains its supernet like the detector it will become: the one-shot training set
    has the fine-tuning recipe's augmentation (RetinaNet: random flip; SSDLite: SSD's, with
    flip), not the differentiable search's (before: RetinaNet 'none', no flip)."""
    from torchvision.transforms import v2

    from fnacli.pipeline.search_oneshot import search_oneshot
    from fnacli.search import oneshot

    seen: dict = {}

    def capture(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen["dataset"], seen["augment"] = args[2], kwargs.get("augment")
        raise _Captured

    monkeypatch.setattr(oneshot, "train_oneshot", capture)
    with pytest.raises(_Captured):
        search_oneshot(supernet=work["super"], output=work["tmp"] / f"aug-{task}.safetensors",
                       task=task, data=str(work["data"]), train_only=True, size=SIZE,
                       workers=0, device="cpu", batch_size=4, force=True)
    kinds = {type(t) for t in seen["dataset"].transform.transforms}
    assert v2.RandomHorizontalFlip in kinds
    assert (v2.RandomIoUCrop in kinds) == (task == "ssdlite")
    assert seen["augment"] == {"retinanet": "flip", "ssdlite": "ssd"}[task]


def test_training_paths_are_uniform_and_a_function_of_the_step() -> None:
    from collections import Counter

    from fnacli.search.oneshot import uniform_path

    enc = E.Encoding(space())
    assert uniform_path(enc, 3, 17) == uniform_path(enc, 3, 17)
    draws = [uniform_path(enc, 0, k) for k in range(3000)]
    for j, n in enumerate(enc.sizes):  # every op and width candidate equally likely
        counts = Counter(g[j] for g in draws)
        assert sorted(counts) == list(range(n))
        assert all(abs(c / len(draws) - 1 / n) < 0.04 for c in counts.values()), counts


def test_supernet_training_resumes_exactly(trained: dict) -> None:
    from fnacli.checkpoint import read_checkpoint

    tmp = trained["tmp"]
    args = [trained["super"], "--train-only", "--task", "ssdlite", "--data", trained["data"],
            "-o", tmp / "again.safetensors", "--epochs", 1, "--batch-size", 4, *COMMON]
    code, out, err = cli([*args, "--stop-after", 1], tmp)
    assert code == 0, err
    assert out == "" and "--resume" in err and not (tmp / "again.oneshot.safetensors").exists()
    code, out, err = cli([*args, "--resume"], tmp)
    assert code == 0, err
    got = read_checkpoint(tmp / "again.oneshot.safetensors")
    ref = read_checkpoint(trained["trained"])
    assert got.meta["oneshot"]["trained"]["steps"] == 2  # 11 of 16 images: 5 held out
    assert got.tensors.keys() == ref.tensors.keys()
    assert any(k.startswith("detector.head.") for k in got.tensors)
    for k, v in ref.tensors.items():
        assert torch.equal(got.tensors[k], v), k
    start = read_checkpoint(trained["super"]).tensors  # and training did change the weights
    assert any(not torch.equal(start[k], v) for k, v in ref.tensors.items() if k in start)


def test_cached_scoring_gives_the_uncached_fitness(trained: dict) -> None:
    """The fast scorer (images decoded once, only the path's BN layers recalibrated and
    re-moded) scores exactly what the plain recipe scores: every BN of the detector reset
    and recalibrated in train mode, then ``evaluate`` reading the split from disk."""
    import random

    from fnacli.detection.data import find_split, load_split
    from fnacli.detection.evaluate import evaluate
    from fnacli.search.bn_recal import calibration_batches, calibration_subset, stats_forward
    from fnacli.search.oneshot import PathEvaluator, build_oneshot_detector, load_trained
    from fnacli.train import recalibrate_bn

    ckpt, info = load_trained(trained["trained"])
    det, sup = build_oneshot_detector(ckpt, "ssdlite", info.num_classes, (SIZE, SIZE), "t")
    val = load_split(find_split(trained["data"], "val"), train=False, label_offset=1)
    calib = calibration_subset(load_split(find_split(trained["data"], "train"), train=True,
                                          label_offset=1), 6)
    enc = E.Encoding(ckpt.space)
    rng = random.Random(1)
    genomes = [enc.random(rng) for _ in range(3)]
    fast = PathEvaluator(det, sup, enc, calib, val, 4)
    slow = PathEvaluator(det, sup, enc, calib, val, 4, cache_images=False)
    assert fast.cached and not slow.cached

    def reference(g: tuple) -> dict:
        sup.set_path(enc.path(g))
        recalibrate_bn(det, calibration_batches(calib, 4), stats_forward("cpu"))
        return evaluate(det, val, 4).stats

    seen = []
    for g in [*genomes, genomes[0]]:  # and again after other paths: nothing leaks
        want = reference(g)
        assert fast(g) == want == slow(g)
        seen.append(want)
    assert len({tuple(s.values()) for s in seen}) > 1  # the paths do score differently
    assert PathEvaluator(det, sup, enc, calib, val, 4, cache_bytes=10).cached is False


# -- DetNAS's data protocol ----------------------------------------------------------------------
def _options(work: dict, **given: object):  # noqa: ANN202 - a OneShotSearchConfig
    from fnacli.pipeline.search_oneshot import OneShotSearchConfig

    return OneShotSearchConfig(supernet=work["super"], output="o.safetensors",
                               data=str(work["data"]), seed=3, **given)


def test_fitness_images_are_held_out_of_supernet_training_and_val(trained: dict) -> None:
    """No image is both a fitness image and a supernet-training image (same split: by id), nor
    a fitness image and a reporting (val) image (by file); the trained supernet records the
    held-out ids and a later search scores exactly those."""
    from fnacli.checkpoint import read_checkpoint
    from fnacli.detection.data import find_split, load_split
    from fnacli.pipeline import fitness as O
    from fnacli.search import fitness_data as FD
    from fnacli.search.oneshot import OneshotInfo

    train = load_split(find_split(trained["data"], "train"), train=True, label_offset=1)
    val = load_split(find_split(trained["data"], "val"), train=False, label_offset=1)
    rest, record = O.hold_out_fitness(_options(trained), train, "ssdlite")
    held = set(record["ids"])
    assert len(held) == 5 and not held & set(rest.ids)
    assert set(rest.ids) | held == set(train.ids)
    meta = read_checkpoint(trained["trained"]).meta["oneshot"]
    assert meta["trained"]["fitness"]["ids"] == record["ids"]
    assert meta["trained"]["train_images"] == len(rest) == 11
    info = OneshotInfo.from_meta(read_checkpoint(trained["trained"]).meta, "t")
    fit, calib, rec = O.fitness_sets(_options(trained), info, "ssdlite")
    assert sorted(fit.ids) == record["ids"] and not set(fit.ids) & set(calib.ids)
    assert not FD.shared_images(fit, val)
    assert not set(FD.image_files(fit)) & set(FD.image_files(rest))
    # a fraction, and a count
    assert len(FD.holdout_ids(train, 0.5, 0)) == 8 and len(FD.holdout_ids(train, 5, 0)) == 5
    with pytest.raises(UserError, match="--fitness-images"):
        FD.holdout_ids(train, 16, 0)
    with pytest.raises(UserError, match="--fitness-images"):
        FD.parse_amount("2.5")


def test_fitness_on_the_reporting_split_is_refused_unless_forced(trained: dict) -> None:
    from fnacli.checkpoint import read_checkpoint
    from fnacli.detection.data import find_split, load_split
    from fnacli.pipeline import fitness as O
    from fnacli.search.oneshot import OneshotInfo

    val_ann = find_split(trained["data"], "val").ann
    info = OneshotInfo.from_meta(read_checkpoint(trained["trained"]).meta, "t")
    with pytest.raises(UserError, match="reporting split"):
        O.fitness_sets(_options(trained, fitness_ann=str(val_ann)), info, "ssdlite")
    fit, _, rec = O.fitness_sets(_options(trained, fitness_ann=str(val_ann), force=True),
                                  info, "ssdlite")
    assert rec["source"] == "file" and len(fit) == 8
    # the command refuses it too, before any work
    with pytest.raises(UserError, match="reporting split"):
        cli([trained["trained"], "--skip-training", "--data", trained["data"], "-o",
             trained["tmp"] / "on-val.safetensors", "--fitness-ann", val_ann, *EVO, *COMMON],
            trained["tmp"])
    train = load_split(find_split(trained["data"], "train"), train=True, label_offset=1)
    assert len(train) == 16  # (the explicit file shares no image with training here)


def test_random_baseline_draws_specs_under_the_backbone_limit(trained: dict,
                                                              limits: tuple[float, float]
                                                              ) -> None:
    """DetNAS's baseline: N random architectures of the space under the limit, as specs for
    fine-tuning with the searched one's settings (nothing trained or scored)."""
    from fnacli.cost.count import profile_exact

    tmp = trained["tmp"]
    limit = (limits[0] + limits[1]) / 2
    code, stdout, stderr = cli([trained["super"], "--strategy", "random", "--retrain", 3,
                                "--task", "ssdlite", "--max-madds", f"{limit:.0f}", "-o",
                                tmp / "baseline", "--json", *COMMON], tmp)
    assert code == 0, stderr
    doc = json.loads((tmp / "baseline.baseline.json").read_text())
    assert sorted(p.name for p in (tmp / "baseline").iterdir()) == [
        "random-1.json", "random-2.json", "random-3.json"]  # specs only
    assert doc["cost_scope"] == "backbone" and len(doc["architectures"]) == 3
    specs = [ArchSpec.from_dict(json.loads(Path(a["spec"]).read_text()))
             for a in doc["architectures"]]
    assert len({s.to_json() for s in specs}) == 3
    for spec, a in zip(specs, doc["architectures"], strict=True):
        exact = profile_exact(spec, T("ssdlite"), (SIZE, SIZE), 80).madds_parts["backbone"]
        assert exact == pytest.approx(a["madds"], rel=5e-3) and a["madds"] <= limit
    assert json.loads(stdout)["output"] == str(tmp / "baseline")
    with pytest.raises(UserError, match="^retrain: ") as e:  # the step names the parameter
        cli([trained["super"], "--strategy", "evolution", "--retrain", 3, "--task", "ssdlite",
             "-o", tmp / "b2", *COMMON], tmp)
    assert e.value.cli_message.startswith("--retrain: ")  # what the CLI prints


# -- the fitness set of a trained supernet, and one load of a split ----------------------------
def _fitness_file(work: dict, ids: list[int]) -> Path:
    """A fitness annotation file made of some training images (so those must be held out)."""
    doc = json.loads((work["data"] / "annotations" / "instances_train.json").read_text())
    keep = set(ids)
    doc["images"] = [im for im in doc["images"] if im["id"] in keep]
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] in keep]
    path = work["tmp"] / "fitness_from_train.json"
    path.write_text(json.dumps(doc))
    return path


def test_a_skip_training_search_reuses_the_supernets_fitness_file(work: dict) -> None:
    """A supernet trained with --fitness-ann and searched later without it scores on that
    file again (recorded with its image ids' fingerprint), never on images it trained on.
    Before the fix the search drew a fresh 20% of the training split: 3 images, 2 of them
    supernet training images."""
    from fnacli.checkpoint import read_checkpoint
    from fnacli.pipeline import fitness as O
    from fnacli.search import fitness_data as FD
    from fnacli.search.oneshot import OneshotInfo

    tmp = work["tmp"]
    ann = _fitness_file(work, [2, 5, 9, 11])
    code, _, err = cli([work["super"], "--train-only", "--task", "ssdlite", "--data",
                        work["data"], "-o", tmp / "ffile.safetensors", "--epochs", 1,
                        "--batch-size", 4, "--fitness-ann", ann,
                        "--fitness-img-dir", work["data"] / "train", *COMMON], tmp)
    assert code == 0, err
    meta = read_checkpoint(tmp / "ffile.oneshot.safetensors").meta
    rec = meta["oneshot"]["trained"]["fitness"]
    assert rec["excluded"] == [2, 5, 9, 11] and rec["fingerprint"] == FD.fingerprint([2, 5, 9, 11])
    assert meta["oneshot"]["trained"]["train_images"] == 12
    info = OneshotInfo.from_meta(meta, "t")
    fit, calib, record = O.fitness_sets(_options(work), info, "ssdlite")
    assert record["source"] == "file" and record["ann"] == str(ann)
    assert sorted(fit.ids) == [2, 5, 9, 11] and not {2, 5, 9, 11} & set(calib.ids)


def test_a_fitness_set_of_supernet_training_images_is_refused(trained: dict, run_cli,
                                                                monkeypatch) -> None:
    """--fitness-images other than the supernet's own draws images it trained on: refused
    (exit 2, one line) unless --force (before: a warning, and the search went on)."""
    from fnacli.checkpoint import read_checkpoint
    from fnacli.pipeline import fitness as O
    from fnacli.search.oneshot import OneshotInfo

    info = OneshotInfo.from_meta(read_checkpoint(trained["trained"]).meta, "t")
    with pytest.raises(UserError, match="training images of the one-shot supernet"):
        O.fitness_sets(_options(trained, fitness_images=6), info, "ssdlite")
    fit, _, _ = O.fitness_sets(_options(trained, fitness_images=6, force=True), info, "ssdlite")
    assert len(fit) == 6
    monkeypatch.setenv("FNACLI_CACHE_DIR", str(trained["tmp"] / "cache"))
    code, _, err = run_cli(["search", "--strategy", "evolution", "--skip-training",
                            trained["trained"], "--data", trained["data"], "-o",
                            trained["tmp"] / "leak.safetensors", "--fitness-images", 6, *EVO,
                            *COMMON])
    assert code == 2 and "trained on" in err and err.count("\n") == 1


def test_a_one_shot_run_reads_each_split_once(work: dict, monkeypatch) -> None:
    """Training, fitness hold-out, BN-calibration pool and the reporting split of one run
    (train, then search) are views of one load per split (before: the training split was
    read and validated 4 times, val twice)."""
    from fnacli.detection import data as D
    from fnacli.pipeline.search_oneshot import search_oneshot

    loads: list[str] = []
    real = D.CocoDetection.__init__

    def counting(self, files, **kwargs):  # noqa: ANN001, ANN003, ANN202
        loads.append(Path(files.ann).name)
        real(self, files, **kwargs)

    monkeypatch.setattr(D.CocoDetection, "__init__", counting)
    monkeypatch.setenv("FNACLI_CACHE_DIR", str(work["tmp"] / "cache"))
    out = work["tmp"] / "once.safetensors"
    result = search_oneshot(supernet=work["super"], output=out, task="ssdlite",
                            data=str(work["data"]), epochs=1, batch_size=4, size=SIZE,
                            workers=0, device="cpu", calib_images=4, calib_batch=4,
                            population=2, parents=1, generations=1, seed=3, force=True)
    assert result.finished
    assert sorted(loads) == ["instances_train.json", "instances_val.json"]
