"""One-shot fitness that ranks (issue #22): the default fitness set, several BN-calibration
draws averaged, the remapping-aware prior in evolution's fitness, and the confirmation stage
(successive halving of the best candidates, each remapped from the seed and fine-tuned)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import torch
from test_bn_recal import one_thread  # noqa: F401  (autouse: one torch thread)
from test_evolution import COMMON, SIZE, cli, space, trained, work  # noqa: F401 - fixtures

from fnacli.errors import UserError
from fnacli.search import evolution as E

TINY = ["--population", 2, "--parents", 1, "--generations", 1]


def _history(out: Path) -> list[dict]:
    return [c for c in map(json.loads, Path(f"{out}.history.jsonl").read_text().splitlines())
            if c["event"] == "candidate"]


# -- the default fitness set -----------------------------------------------------------------
def test_default_fitness_images_have_a_floor_and_detnas_cap() -> None:
    from fnacli.search import fitness_data as FD

    # before: min(5000, 20%): 51 of the benchmark's 256 images, 3 of 16
    want = {16: 5, 100: 30, 256: 77, 426: 128, 427: 128, 640: 128, 641: 128, 1000: 200,
            25000: 5000, 118287: 5000}
    for n, k in want.items():
        assert FD.holdout_count(n, None) == FD.default_count(n) == k, n
    assert FD.default_count(2) == 1  # at least one, and one left to train on
    assert FD.holdout_count(256, 0.2) == 51 and FD.holdout_count(256, 40) == 40  # as given


# -- several BN-calibration draws ------------------------------------------------------------
def _splits(data: Path) -> tuple:
    from fnacli.detection.data import find_split, load_split

    return (load_split(find_split(data, "train"), train=True, label_offset=1),
            load_split(find_split(data, "val"), train=False, label_offset=1))


def test_calibration_draws_differ_and_the_first_is_the_one_subset(work: dict) -> None:  # noqa: F811
    from fnacli.search.bn_recal import calibration_draws, calibration_subset

    pool, _ = _splits(work["data"])
    draws = calibration_draws(pool, 6, 3, 3)
    assert [d.ids for d in draws] == [d.ids for d in calibration_draws(pool, 6, 3, 3)]
    assert draws[0].ids == calibration_subset(pool, 6, 3).ids  # R=1: today's subset
    assert all(len(d) == 6 for d in draws)
    assert len({tuple(d.ids) for d in draws}) == 3  # three different subsets
    assert calibration_draws(pool, 99, 3, 2) == [pool, pool]  # fewer images: all of them
    with pytest.raises(UserError, match="--calib-draws"):
        calibration_draws(pool, 6, 3, 0)


def test_several_draws_score_the_mean_of_their_metrics(trained: dict) -> None:  # noqa: F811
    import random

    from fnacli.search.bn_recal import calibration_draws
    from fnacli.search.oneshot import PathEvaluator, build_oneshot_detector, load_trained

    ckpt, info = load_trained(trained["trained"])
    det, sup = build_oneshot_detector(ckpt, "ssdlite", info.num_classes, (SIZE, SIZE), "t")
    pool, val = _splits(trained["data"])
    draws = calibration_draws(pool, 4, 0, 3)
    enc = E.Encoding(ckpt.space)
    g = enc.random(random.Random(2))
    single = [PathEvaluator(det, sup, enc, d, val, 4)(g) for d in draws]
    assert len({s["AP50"] for s in single}) > 1  # the draws do score differently here
    both = PathEvaluator(det, sup, enc, draws, val, 4, metric="AP50")
    assert both.cached
    got = both(g)
    for k in single[0]:
        assert got[k] == pytest.approx(statistics.fmean(s[k] for s in single), abs=1e-12), k
    assert [got[f"AP50@draw{r}"] for r in range(3)] == [s["AP50"] for s in single]
    assert got["AP50@std"] == pytest.approx(statistics.stdev(s["AP50"] for s in single))
    # decoding the draws' shared images once gives what reading them every time gives
    assert PathEvaluator(det, sup, enc, draws, val, 4, metric="AP50",
                         cache_images=False)(g) == got
    # one draw (in a list or not) scores exactly as before: the plain numbers, nothing added
    assert PathEvaluator(det, sup, enc, [draws[0]], val, 4, metric="AP50")(g) == single[0]


def test_a_search_averages_its_draws_and_resumes_only_with_the_same_r(trained: dict,  # noqa: F811
                                                                       run_cli,
                                                                       monkeypatch) -> None:
    tmp = trained["tmp"]
    base = [trained["trained"], "--skip-training", "--data", trained["data"], *TINY, *COMMON]
    code, _, err = cli([*base, "-o", tmp / "r1.safetensors"], tmp)
    assert code == 0, err
    code, _, err = cli([*base, "-o", tmp / "r2.safetensors", "--calib-draws", 2], tmp)
    assert code == 0, err
    assert "2 draws, fitness their mean" in err
    one = {c["key"]: c for c in _history(tmp / "r1.safetensors")}
    two = _history(tmp / "r2.safetensors")
    assert {c["key"] for c in two} == set(one)  # the same candidates (the same seed)
    for c in two:
        s = c["stats"]
        assert c["fitness"] == pytest.approx((s["AP@draw0"] + s["AP@draw1"]) / 2, abs=1e-12)
        assert s["AP@std"] == pytest.approx(abs(s["AP@draw0"] - s["AP@draw1"]) / math.sqrt(2))
        # draw 0 is the single subset: R=1's fitness exactly
        assert s["AP@draw0"] == one[c["key"]]["fitness"] == one[c["key"]]["stats"]["AP"]
        assert set(one[c["key"]]["stats"]) == set(s) - {"AP@draw0", "AP@draw1", "AP@std"}
    state1 = json.loads(Path(f"{tmp / 'r1.safetensors'}.search.json").read_text())
    assert "calib_draws" not in state1["identity"]  # R=1: the identity of before the option
    from fnacli.checkpoint import read_checkpoint

    assert read_checkpoint(tmp / "r2.safetensors").meta["search"]["calib_draws"] == 2
    assert "calib_draws" not in read_checkpoint(tmp / "r1.safetensors").meta["search"]
    monkeypatch.setenv("FNACLI_CACHE_DIR", str(tmp / "cache"))
    code, _, err = run_cli(["search", "--strategy", "evolution", *map(str, base), "-o",
                            str(tmp / "r2.safetensors"), "--calib-draws", "3", "--resume"])
    last = err.strip().splitlines()[-1]  # (after the search's opening line)
    assert code == 2 and "calib_draws=2" in last and "calib_draws=3" in last


# -- the remapping-aware prior ---------------------------------------------------------------
def test_the_remap_prior_ranks_an_expansion_cut_below_by_weight_log_keep() -> None:
    from fnacli.search import remap_prior as R
    from fnacli.spec import mobilenetv2

    enc = E.Encoding(space())
    seed = mobilenetv2(0.35)  # stage 4 of the seed: k3_e6 layers
    weight = 0.7

    def flat(genomes: list) -> list[dict]:  # every candidate the same metric: the prior ranks
        return [{"AP": 0.25} for _ in genomes]

    search = E.OneShotSearch(enc, lambda a: 1.0, flat, E.SearchConfig(
        population=6, parents=2, generations=3, seed=1),
        fitness_term=R.fitness_term(seed, weight))
    search.run()
    for c in search.cache.values():
        assert c.stats["AP"] == 0.25
        assert c.fitness == pytest.approx(0.25 + weight * R.arch_log_keep(enc.arch(c.genome),
                                                                          seed))
    best = search.ranked()[0]
    assert best.fitness == max(0.25 + weight * R.arch_log_keep(enc.arch(c.genome), seed)
                               for c in search.cache.values())
    # one layer e6 -> e3 (stage 4, layer 0: k5_e6 keeps the seed's k3_e6 whole, k3_e3 half of
    # its hidden channels): fitness lower by weight * log(1/2), all else equal
    ops = [c for s, i, c in enc.ops]
    k = next(j for j, (s, i, _) in enumerate(enc.ops) if (s, i) == (4, 0))
    g = [0] * len(enc.sizes)
    keep_all, cut = list(g), list(g)
    keep_all[k], cut[k] = ops[k].index("k5_e6"), ops[k].index("k3_e3")
    term = R.fitness_term(seed, weight)
    assert term(enc.arch(cut)) - term(enc.arch(keep_all)) == pytest.approx(weight * math.log(0.5))
    two = E.OneShotSearch(enc, lambda a: 1.0, flat, E.SearchConfig(), fitness_term=term)
    cands = [two._add(tuple(x), enc.key(x), flat([x])[0], 0, False) for x in (cut, keep_all)]
    assert [c.key for c in sorted(cands, key=E.Candidate.rank_key)] == [enc.key(keep_all),
                                                                         enc.key(cut)]


def test_a_search_with_the_remap_prior(trained: dict, run_cli, monkeypatch) -> None:  # noqa: F811
    from fnacli.checkpoint import read_checkpoint, save_checkpoint
    from fnacli.search import remap_prior as R
    from fnacli.search.supernet_io import read_supernet
    from fnacli.spec import ArchSpec

    tmp = trained["tmp"]
    out = tmp / "prior.safetensors"
    base = [trained["trained"], "--skip-training", "--data", trained["data"], *TINY, *COMMON]
    code, _, err = cli([*base, "-o", out, "--remap-prior", 0.5], tmp)
    assert code == 0, err
    seed = read_supernet(trained["trained"]).seed_spec
    for c in _history(out):
        arch = ArchSpec.from_dict(json.loads(c["key"]))
        assert c["fitness"] == pytest.approx(c["stats"]["AP"] + 0.5 * R.arch_log_keep(arch, seed))
        assert R.arch_log_keep(arch, seed) < 0  # the test space cuts something everywhere
    assert read_checkpoint(out).meta["search"]["remap_prior"] == 0.5
    monkeypatch.setenv("FNACLI_CACHE_DIR", str(tmp / "cache"))
    code, _, err = run_cli(["search", "--strategy", "evolution", *map(str, base), "-o", str(out),
                            "--remap-prior", "1", "--resume"])
    assert code == 2 and "remap_prior=0.5" in err
    # a supernet that records no seed: refused before any work, as derive --remap-prior
    ck = read_checkpoint(trained["trained"])
    bare = tmp / "no-seed.safetensors"
    save_checkpoint(bare, ck.tensors, "supernet",
                    {k: v for k, v in ck.meta.items() if k != "seed_spec"})
    code, _, err = run_cli(["search", "--strategy", "evolution", str(bare), "--skip-training",
                            "--data", str(trained["data"]), "-o", str(tmp / "ns.safetensors"),
                            "--remap-prior", "0.5", *map(str, COMMON)])
    assert code == 2 and err.count("\n") == 1
    assert "--remap-prior: the supernet does not record the seed" in err


# -- the confirmation stage --------------------------------------------------------------------
def test_successive_halving_trains_the_better_half_for_twice_the_epochs() -> None:
    from fnacli.pipeline.confirm import successive_halving

    calls = []
    # candidate i's metric after e epochs; 3 leads at 2, 1 overtakes it at 4 and 8
    table = {0: {2: 0.10, 4: 0.20}, 1: {2: 0.30, 4: 0.50, 8: 0.70}, 2: {2: 0.05},
             3: {2: 0.40, 4: 0.45, 8: 0.60}, 4: {2: float("nan")}}

    def score(i: int, e: int) -> float:
        calls.append((i, e))
        return table[i][e]

    rungs, win = successive_halving(5, 2, score)
    assert calls == [(0, 2), (1, 2), (2, 2), (3, 2), (4, 2), (0, 4), (1, 4), (3, 4),
                     (1, 8), (3, 8)]
    assert [r["epochs"] for r in rungs] == [2, 4, 8]
    assert [[x["candidate"] for x in r["runs"] if x["kept"]] for r in rungs] == [[0, 1, 3],
                                                                                [1, 3], [1]]
    assert win == 1
    # a tie goes to the better search rank; a stopped run stops it without a winner
    assert successive_halving(2, 1, lambda i, e: 0.5)[1] == 0
    rungs, win = successive_halving(4, 1, lambda i, e: None if i == 2 else 0.1)
    assert win is None and rungs == []


@pytest.fixture(scope="module")
def seed_pth(work: dict) -> Path:  # noqa: F811
    return work["tmp"] / "seed.pth"


def test_confirmation_keeps_the_halving_winner_and_derive_gives_it(trained: dict,  # noqa: F811
                                                                   seed_pth: Path,
                                                                   monkeypatch) -> None:
    """The bookkeeping, with the fine-tuning replaced by a deterministic stand-in: the top 3
    by fitness, 2 epochs, then the better 2 for 4 epochs; the winner (search rank 3 here)
    is what the searched checkpoint derives to; a resumed run reuses every run."""
    from fnacli.pipeline import confirm as C
    from fnacli.pipeline.derive import derive
    from fnacli.pipeline.search_oneshot import search_oneshot
    from fnacli.search.supernet_io import read_supernet
    from fnacli.spec import ArchSpec

    monkeypatch.setenv("FNACLI_CACHE_DIR", str(trained["tmp"] / "cache"))
    calls: list[tuple[str, int]] = []
    order: dict[str, float] = {}

    def stand_in(o, spec, name, epochs, *rest):  # noqa: ANN001, ANN002, ANN202
        key = spec.to_json(compact=True)
        calls.append((key, epochs))
        return {"AP": order[key] * epochs, "AP50": 0.0}

    monkeypatch.setattr(C, "train_and_score", stand_in)
    out = trained["tmp"] / "confirmed.safetensors"
    kwargs = dict(supernet=trained["trained"], output=out, skip_training=True,
                  data=str(trained["data"]), population=4, parents=2, generations=1,
                  size=SIZE, workers=0, device="cpu", calib_images=8, calib_batch=4, seed=3,
                  confirm_top=3, confirm_epochs=2, seed_checkpoint=str(seed_pth))
    # the search's ranking first (no confirmation), to set the stand-in's preferences
    plain = search_oneshot(**{**kwargs, "output": trained["tmp"] / "unconfirmed.safetensors",
                              "confirm_top": 0, "confirm_epochs": None,
                              "seed_checkpoint": None})
    ranked = read_supernet(plain.output).meta["search"]["top"]
    keys = [ArchSpec.from_dict(t["arch"]).to_json(compact=True) for t in ranked[:3]]
    order.update({keys[0]: 0.2, keys[1]: 0.1, keys[2]: 0.3})  # rank 3 best, then rank 1

    result = search_oneshot(**kwargs)
    assert result.finished
    assert calls == [(keys[0], 2), (keys[1], 2), (keys[2], 2), (keys[0], 4), (keys[2], 4)]
    table = result.details["confirm"]
    assert [(r["epochs"], [(x["rank"], x["kept"]) for x in r["runs"]]) for r in table["rungs"]
            ] == [(2, [(1, True), (2, False), (3, True)]), (4, [(1, False), (3, True)])]
    assert table["rungs"][1]["runs"][1]["metric"] == pytest.approx(0.3 * 4)
    assert table["winner"]["rank"] == 3
    winner = ArchSpec.from_dict(table["winner"]["arch"])
    assert winner.to_json(compact=True) == keys[2]
    meta = read_supernet(out).meta["search"]
    assert meta["confirm"] == table and meta["derived"] == winner.to_dict()
    assert meta["top"][0]["arch"] == ranked[0]["arch"]  # the fitness ranking stays listed
    assert derive(out).arch == winner  # what 'fnacli derive' gives
    assert "confirmation: successive halving of the top 3" in str(result.report()[1])
    assert "search rank 3 of the top 3, confirmed" in result.message
    # --resume: every run is in OUT.confirm.json, nothing is trained again
    calls.clear()
    again = search_oneshot(**kwargs, resume=True)
    assert calls == [] and again.details["confirm"] == table
    # another first-rung budget is another confirmation: refused on resume
    with pytest.raises(UserError, match="epochs"):
        search_oneshot(**{**kwargs, "confirm_epochs": 1}, resume=True)


def test_confirmation_end_to_end(trained: dict, seed_pth: Path, monkeypatch) -> None:  # noqa: F811
    """One tiny real confirmation: 2 candidates remapped from the seed, fine-tuned 1 epoch on
    the supernet's 11 training images (never a fitness image) and scored on the 5 fitness
    images; the better one is the derived architecture."""
    from fnacli.model_checkpoint import load_detector
    from fnacli.pipeline import finetune as F
    from fnacli.pipeline.derive import derive
    from fnacli.pipeline.fitness import fitness_sets
    from fnacli.pipeline.search_oneshot import OneShotSearchConfig, search_oneshot
    from fnacli.search.oneshot import load_trained
    from fnacli.spec import ArchSpec
    from fnacli.tasks import get_task

    monkeypatch.setenv("FNACLI_CACHE_DIR", str(trained["tmp"] / "cache"))
    seen: list[list[int]] = []
    real = F._datasets

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        train_set, val_set = real(*args, **kwargs)
        seen.append(list(train_set.ids))
        return train_set, val_set

    monkeypatch.setattr(F, "_datasets", spy)
    out = trained["tmp"] / "e2e.safetensors"
    opts = dict(supernet=trained["trained"], output=out, skip_training=True,
                data=str(trained["data"]), population=2, parents=1, generations=1,
                size=SIZE, workers=0, device="cpu", calib_images=8, calib_batch=4, seed=3,
                batch_size=4, confirm_top=2, confirm_epochs=1, seed_checkpoint=str(seed_pth))
    result = search_oneshot(**opts)
    assert result.finished
    table = result.details["confirm"]
    assert [r["epochs"] for r in table["rungs"]] == [1]  # 2 candidates: one rung
    fit, pool, record = fitness_sets(OneShotSearchConfig(**opts), load_trained(
        trained["trained"])[1], get_task("ssdlite"))
    assert len(seen) == 2 and all(sorted(s) == sorted(pool.ids) for s in seen)
    assert len(pool) == 11 and not set(pool.ids) & set(record["ids"])
    # each metric is the fine-tuned detector's AP on the fitness set, measured again here
    runs = sorted((out.parent / f"{out.name}.confirm").glob("rank*-e1.safetensors"))
    assert len(runs) == 2
    state = json.loads(Path(f"{out}.confirm.json").read_text())
    for path in runs:
        model, _ = load_detector(path)
        ap = get_task("ssdlite").evaluate(model, fit, batch_size=4).stats["AP"]
        rank = int(path.name.split("-")[0].removeprefix("rank"))
        assert state["results"][f"{rank}/1"]["metric"] == ap
    metrics = {x["rank"]: x["metric"] for x in table["rungs"][0]["runs"]}
    winner = max(metrics, key=lambda r: (metrics[r], -r))
    assert table["winner"]["rank"] == winner
    assert derive(out).arch == ArchSpec.from_dict(table["winner"]["arch"])
    assert set(result.files) >= {"confirm", "confirm_runs"}


def test_bad_options_exit_2_before_any_work(trained: dict, seed_pth: Path,  # noqa: F811
                                            run_cli, monkeypatch, tmp_path: Path) -> None:
    from torchvision.models import mobilenet_v2

    from fnacli.pipeline.search_oneshot import search_oneshot

    monkeypatch.setenv("FNACLI_CACHE_DIR", str(trained["tmp"] / "cache"))
    other = tmp_path / "other.pth"
    torch.save(mobilenet_v2(width_mult=0.5).state_dict(), other)
    train = ["search", "--strategy", "evolution", str(trained["super"]), "--task", "ssdlite",
             "--data",
             str(trained["data"]), "--epochs", "1", *map(str, COMMON)]
    out = ["-o", str(tmp_path / "x.safetensors")]
    cases = [
        (["--strategy", "random", "--retrain", "3", "--confirm-top", "2", "--seed-checkpoint",
          str(seed_pth)], "--confirm-top: --retrain scores nothing"),
        (["--strategy", "random", "--retrain", "3", "--calib-draws", "2"],
         "--calib-draws: --retrain scores nothing"),
        (["--confirm-top", "2"], "--confirm-top: give --seed-checkpoint"),
        (["--confirm-top", "1", "--seed-checkpoint", str(seed_pth)], "at least 2"),
        (["--confirm-epochs", "2"], "--confirm-epochs: only with --confirm-top"),
        (["--confirm-top", "2", "--seed-checkpoint", str(tmp_path / "none.pth")],
         "no such file"),
        (["--confirm-top", "2", "--train-only", "--seed-checkpoint", str(seed_pth)],
         "--train-only"),
        (["--confirm-top", "2", "--seed-checkpoint", str(other)],
         "is not the seed"),
    ]
    for extra, message in cases:
        code, _, err = run_cli([*train, *out, *extra])
        assert code == 2 and message in err and err.count("\n") == 1, (extra, err)
    # out of range: the parser's usage error (exit 2), and the step's for a library caller
    for flag, value in (("--confirm-top", "-1"), ("--calib-draws", "0"),
                        ("--remap-prior", "-1"), ("--confirm-epochs", "0")):
        code, _, err = run_cli([*train, *out, flag, value])
        assert code == 2 and f"Invalid value for '{flag}'" in err, (flag, err)
        name = flag[2:].replace("-", "_")
        with pytest.raises(UserError, match=f"^{name}: expected at least"):
            search_oneshot(supernet=trained["super"], output=tmp_path / "y.safetensors",
                           **{name: int(value)})
    assert list(tmp_path.iterdir()) == [other]  # nothing trained, nothing written
    code, _, err = run_cli(["search", "--strategy", "differentiable", str(trained["super"]),
                            *out, "--confirm-top", "2"])
    assert code == 2 and "--confirm-top does not apply" in err
