"""The latency lookup table: measured on a tiny space (backbone, the detectors, deeplabv3), its
sums and expectations, --check, resume, refusing a table measured elsewhere, the CLI, and
CUDA timing where a GPU is."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from test_lut import TINY, one_hot_pick, searchable

import fnacli.cost.check as C
import fnacli.cost.latency as L
import fnacli.cost.measure as M
from fnacli.cost.lut import build_lut
from fnacli.cost.parts import neck_head
from fnacli.errors import UserError
from fnacli.pipeline.profile import cost_target as T
from fnacli.spec import SpaceSpec

FAST = M.MeasureConfig(threads=1, min_rounds=6, max_rounds=6, sample_s=0.001, blocks=2)
SIZE = (96, 96)


@pytest.fixture(scope="module")
def space() -> SpaceSpec:
    return SpaceSpec.from_dict(TINY)


def timed_latency_table(space: SpaceSpec, task: str, size: tuple[int, int] = SIZE
                        ) -> tuple[L.LatencyTable, dict]:
    """A latency table of ``task`` (3 classes) and the neck/head timings its fixed-part
    entries came from: {(signature, "ref" | (map, channels)): Timing}."""
    timed: dict = {}
    run = M.Bench.run

    def recording(self: M.Bench, jobs: list, progress: object = None) -> dict:
        out = run(self, jobs, progress)
        timed.update({k[1:]: t for k, t in out.items() if k[0] == "nh"})
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(M.Bench, "run", recording)
        table = L.build_latency_table(space, T(task), size, 3, FAST)
    return table, timed


@pytest.fixture(scope="module")
def seg_timed(space: SpaceSpec) -> tuple[L.LatencyTable, dict]:
    """A deeplabv3 table and the neck/head timings its fixed-part entries came from."""
    return timed_latency_table(space, "deeplabv3")


@pytest.fixture(scope="module")
def tables(space: SpaceSpec, seg_timed: tuple) -> dict[str, L.LatencyTable]:
    return {**{task: L.build_latency_table(space, T(task), SIZE, 3, FAST)
               for task in ("ssdlite", "retinanet")}, "deeplabv3": seg_timed[0]}


def test_median_interval_and_rank_correlation() -> None:
    med, lo, hi = M.median_ci([5, 1, 4, 2, 3, 9, 7])
    assert med == 4 and (lo, hi) == (1, 9)  # n = 7: only the extremes give 95%
    xs = list(range(20))
    med, lo, hi = M.median_ci(xs)
    assert med == 9.5 and lo == 5 and hi == 14  # binomial(20, ½): P(6 ≤ X ≤ 14) ≥ 0.95
    assert C.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert C.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # a textbook example: d² sum 2 over n = 5 -> 1 - 6·2/(5·24) = 0.9
    assert C.spearman([1, 2, 3, 4, 5], [2, 1, 3, 4, 5]) == pytest.approx(0.9)
    assert L.parse_latency("12ms", "--x") == 12 and L.parse_latency("800us", "--x") == 0.8
    assert L.parse_latency("0.5s", "--x") == 500 and L.parse_latency("3", "--x") == 3
    for bad in ("fast", "-1ms", "0"):
        with pytest.raises(UserError):
            L.parse_latency(bad, "--max-latency")


@pytest.mark.parametrize("task", ["ssdlite", "retinanet", "deeplabv3"])
def test_table_covers_the_space_and_sums_like_the_madds_table(tables: dict, space: SpaceSpec,
                                                              task: str) -> None:
    table = tables[task]
    madds = build_lut(space, T(task), SIZE, 3)
    # the same entries as the MAdds table (shared enumeration), every one measured
    assert set(table.layers) == set(madds.layers) and set(table.fixed) == set(madds.fixed)
    assert all(ns > 0 for ns, _ in table.layers.values())
    assert all(table.layers[k][1] == madds.layers[k][1] for k in madds.layers)  # params
    assert table.env["threads"] == 1 and table.env["torch"] == torch.__version__
    # timed with freed memory kept in the process (glibc; docs/latency.md), and recorded
    assert table.env["allocator"] == M.keep_freed_memory() == M.allocator_setting()
    if M._libc_mallopt() is not None:
        assert table.env["allocator"] == "glibc, freed memory kept"
    assert table.memory_format in ("contiguous", "channels_last")
    assert table.stats["median_ci_rel"] is not None and table.stats["build_s"] > 0
    # the overhead is the median gap of 7 whole networks (3 swung by one network's noise)
    gaps = table.stats["overhead_gaps_ns"]
    assert len(gaps) == len(table.stats["calibration_ms"]) == L.OVERHEAD_NETWORKS >= 7
    assert gaps == sorted(gaps) and abs(table.overhead_ns - gaps[len(gaps) // 2]) <= 1
    # one-hot α/β: the expectation is the architecture's predicted latency
    rng = random.Random(0)
    for _ in range(5):
        alpha, beta, arch = one_hot_pick(space, rng)
        exp = float(table.expected_latency(alpha, beta))
        assert exp == pytest.approx(table.latency_ns(arch), rel=1e-6)  # float32 α/β
    # (no ordering of two layers' timings here: a layer this small is mostly dispatch
    # overhead, and beside another test process the order flipped; how well a table
    # predicts is measured by `fnacli latency --check`, docs/latency.md)


def test_deeplabv3_entries_are_its_neck_and_head_timed_at_each_last_width(
        seg_timed: tuple, space: SpaceSpec) -> None:
    from fnacli.cost.space import with_out
    from fnacli.cost.table import CostTable

    table, timed = seg_timed
    ref = space.max_arch()
    last = len(space.stages) - 1
    sig = tuple(table.geometry(ref).stage_out[-1])
    assert sig == (6, 6)  # 96 / output stride 16: the last stride became dilation
    costs = CostTable(T("deeplabv3"), SIZE, 3)
    for c in space.stages[-1].outs:
        arch = with_out(ref, last, c)
        # what a deeplabv3 network needs beyond its layers: the stem, ASPP and classifier
        # (no head conv), every one in the table
        needs = table.fixed_needs(arch)
        assert {g for g, *_ in needs} == {"stem", "aspp", "seg_classifier"}
        assert all(f in table.fixed for f in needs)
        # T(ref) + the single-map delta is the neck/head timed at that width (to rounding);
        # the constant classifier is inside it
        t = timed[(sig, "ref" if c == ref.stages[-1].out else (f"stage{last}", c))]
        assert table.fixed[("aspp", c, sig)] == ("neck", round(t.median_s * L.NS), 0)
        assert table.fixed[("seg_classifier", 0, sig)][1] == 0
        p = table.profile(arch)
        assert p.madds_parts["neck"] + p.madds_parts["head"] == round(t.median_s * L.NS)
        # what was timed is the network's ASPP + classifier at that width, logits at the
        # input size: its parameters are the MAdds table's neck and head
        module, (image,) = neck_head(table.task_obj, arch, table.num_classes, table.size,
                                     {f"stage{last}": c}, {f"stage{last}": sig}, 1)
        with torch.no_grad():
            out = module.eval()(image)["out"]
        assert out.shape == (1, 3, SIZE[1], SIZE[0])
        exact = costs.profile(arch).params_parts
        assert sum(q.numel() for q in module.parameters()) == exact["neck"] + exact["head"]


def test_expected_latency_has_gradients(tables: dict, space: SpaceSpec) -> None:
    table = tables["ssdlite"]
    layers, stages = searchable(space)
    a = {k: torch.zeros(len(space.stages[k[0]].layer_candidates(k[1])), requires_grad=True)
         for k in layers}
    b = {s: torch.zeros(len(space.stages[s].outs), requires_grad=True) for s in stages}
    exp = table.expected_latency({k: v.softmax(0) for k, v in a.items()},
                                 {k: v.softmax(0) for k, v in b.items()})
    exp.backward()
    # every choice with more than one candidate gets a gradient
    assert all(v.grad is not None and v.grad.abs().sum() > 0
               for v in [*a.values(), *b.values()] if len(v) > 1)


def exact_measurements(table: L.LatencyTable, scale: float = 1.0,
                       slow: dict[int, float] | None = None) -> object:
    """A stand-in for timing whole networks: each network "measures" exactly ``scale`` times
    what ``table`` predicts for it (its entries summed by hand, plus the overhead); ``slow``
    makes the first timing of network i that many times longer (a preempted sample)."""
    from fnacli.cost.lut import Lut

    reference = Lut.arch_madds  # the plain sum of the entries, not the table's prediction
    first = dict(slow or {})
    calls: list[list] = []

    def measure(specs: list, fmt: object = None) -> list[M.Timing]:
        calls.append(list(specs))
        out = []
        for s in specs:
            sec = scale * (reference(table, s) + table.overhead_ns) / 1e9
            i = next((k for k, a in enumerate(archs) if a == s), None)
            if i in first:
                sec *= first.pop(i)
            out.append(M.Timing(sec, sec, sec, 7))
        return out

    archs: list = []
    measure.calls, measure.archs = calls, archs  # type: ignore[attr-defined]
    return measure


@pytest.mark.parametrize("scale", [1.0, 1.2])
def test_check_reports_an_injected_error_exactly(tables: dict, monkeypatch: pytest.MonkeyPatch,
                                                 scale: float) -> None:
    """The check's arithmetic on known errors: networks that run exactly 1/1.2 as long as
    predicted (every entry and the overhead 20% too high) must report 20% (median, 90th
    percentile and mean), Spearman 1 and a failed verdict; exact predictions 0% and a pass."""
    from fnacli.cost.space import random_arch

    table = tables["ssdlite"]
    measure = exact_measurements(table, 1 / scale)
    monkeypatch.setattr(table, "measure_networks", measure)
    monkeypatch.setitem(table.stats, "calibration_ms", [])  # no drift probes: error as is
    rng = random.Random(3)
    measure.archs.extend(random_arch(table.space, rng) for _ in range(12))
    result = C.check_table(table, 12, seed=3)
    assert result.archs == measure.archs  # the check drew the same seeded architectures
    s = result.summary()
    want = 100 * (scale - 1)  # (predicted - measured) / measured = scale - 1
    assert s["median_abs_error_pct"] == pytest.approx(want, abs=0.01)
    assert s["p90_abs_error_pct"] == pytest.approx(want, abs=0.01)
    assert s["mean_abs_error_pct"] == pytest.approx(want, abs=0.01)
    v = result.verdict()
    assert v.spearman == pytest.approx(1.0) and v.n == 12 and not v.retimed
    assert v.verdict == ("pass" if scale == 1.0 else "fail")
    if scale != 1.0:
        assert "median error 20.0% >= 10%" in v.line()


def test_check_retimes_a_preempted_network_and_warns_below_ten(
        tables: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from fnacli.cost.space import random_arch

    table = tables["ssdlite"]
    # network 4's first timing is 3x too long (another process took the core): the check
    # times it again and keeps the faster timing, so the verdict is the exact table's
    measure = exact_measurements(table, 1.0, slow={4: 3.0})
    monkeypatch.setattr(table, "measure_networks", measure)
    monkeypatch.setitem(table.stats, "calibration_ms", [])
    rng = random.Random(5)
    measure.archs.extend(random_arch(table.space, rng) for _ in range(11))
    result = C.check_table(table, 11, seed=5)
    assert result.retimed == [4] and measure.calls[-1] == [measure.archs[4]]
    v = result.verdict()
    assert v.verdict == "pass" and v.median_abs_error_pct == pytest.approx(0, abs=1e-9)
    # too few architectures: figures, no verdict
    measure.archs[:] = measure.archs[:3]
    few = C.check_table(table, 3, seed=5).verdict()
    assert few.verdict == "no verdict" and "too few" in few.line()


def test_verdict_statistics_by_hand() -> None:
    from fnacli.cost.verdict import judge, outliers, percentile

    # |errors| 1..10 % and 50 %: the median is the 6th smallest (6); the 90th percentile
    # sits at position 0.9 · 10 = 9 of the sorted list (0-based): 10
    measured = [100.0] * 11
    predicted = [100 + e for e in range(1, 11)] + [50.0]
    v = judge(predicted, measured)
    assert v.median_abs_error_pct == pytest.approx(6.0)
    assert v.p90_abs_error_pct == pytest.approx(10.0)
    assert v.mean_abs_error_pct == pytest.approx((55 + 50) / 11)
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([1, 2, 3, 4], 90) == pytest.approx(3.7)  # 3 + 0.7 · (4 - 3)
    assert outliers(predicted, measured) == [10]


def test_round_trip_refusal_and_coverage(tables: dict, tmp_path: Path) -> None:
    table = tables["ssdlite"]
    path = tmp_path / "t.json"
    path.write_text(table.to_json())
    again = L.read_latency_table(path, T)
    assert again.layers == table.layers and again.fixed == table.fixed
    assert again.overhead_ns == table.overhead_ns and again.cfg == table.cfg
    d = json.loads(path.read_text())
    d["environment"]["device_name"] = "Some Other CPU"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(d))
    with pytest.raises(UserError, match="measured elsewhere.*--force"):
        L.read_latency_table(other, T)
    assert L.read_latency_table(other, T, force=True).env["device_name"] == "Some Other CPU"
    with pytest.raises(UserError, match="not an fnacli latency table"):
        L.LatencyTable.from_json(build_lut(table.space, T("none"), SIZE).to_json())
    from fnacli.spec import mobilenetv2

    with pytest.raises(UserError, match="no entry for"):
        table.latency_ns(mobilenetv2(0.35))  # outside the space: never measured on the fly


def test_an_interrupted_build_resumes(space: SpaceSpec, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    part = tmp_path / "t.json.partial"
    monkeypatch.setattr(L, "_CHUNK", 8)
    saves = []
    real = L.LatencyTable.fill

    def interrupted(self: L.LatencyTable, *a: object, **k: object) -> None:
        def stop(t: L.LatencyTable) -> None:
            part.write_text(t.to_json())
            saves.append(len(t.layers))
            raise KeyboardInterrupt

        self.on_progress = stop
        real(self, *a, **k)

    monkeypatch.setattr(L.LatencyTable, "fill", interrupted)
    with pytest.raises(KeyboardInterrupt):
        L.build_latency_table(space, T("none"), SIZE, None, FAST, partial=part)
    monkeypatch.setattr(L.LatencyTable, "fill", real)
    assert saves == [8] and part.is_file()
    kept = L.LatencyTable.from_json(part.read_text(), task_of=T).layers
    timed: list[int] = []
    run = M.Bench.run

    def counting(self: M.Bench, jobs: list, progress: object = None) -> dict:
        timed.append(len(jobs))
        return run(self, jobs, progress)

    monkeypatch.setattr(M.Bench, "run", counting)
    table = L.build_latency_table(space, T("none"), SIZE, None, FAST, partial=part, resume=True)
    full = build_lut(space, T("none"), SIZE)
    assert set(table.layers) == set(full.layers)
    assert all(table.layers[k] == v for k, v in kept.items())  # kept, not measured again
    n_fixed = len(full.fixed)
    # only what was missing, and the overhead's whole networks with the last chunk
    assert sum(timed) == len(full.layers) - 8 + n_fixed + L.OVERHEAD_NETWORKS
    assert len(timed) == 2
    with pytest.raises(UserError, match="another space"):
        other = SpaceSpec.from_dict({**TINY, "head": {"out": 32}})
        L.build_latency_table(other, T("none"), SIZE, None, FAST, partial=part, resume=True)


def test_cli_builds_checks_and_refuses(space: SpaceSpec, tmp_path: Path, run_cli) -> None:
    spec_file = tmp_path / "space.json"
    spec_file.write_text(json.dumps(TINY))
    out = tmp_path / "lat.json"
    args = ["latency", "--space", spec_file, "--task", "none", "--size", "64", "--rounds", "6",
            "--max-rounds", "6", "--tolerance", "0.2"]
    code, stdout, err = run_cli([*args, "-o", out, "--check", "4", "--json"])
    assert code == 0, err
    s = json.loads(stdout)
    assert s["table"] == str(out) and s["layers"] > 0 and s["check"]["n"] == 4
    assert "median abs error" in err and "90th percentile" in err and "Spearman" in err
    assert "NO VERDICT over 4 architectures" in " ".join(err.split())  # fewer than 10
    assert s["check"]["verdict"]["verdict"] == "no verdict"
    assert not Path(f"{out}.partial").exists()
    assert L.read_latency_table(out, T).check_result["n"] == 4
    # check an existing table again
    code, stdout, err = run_cli(["latency", "--table", out, "--check", "3"])
    assert code == 0 and "Spearman" in stdout, err
    # madds reports the prediction beside MAdds
    arch = tmp_path / "arch.json"
    arch.write_text(space.max_arch().to_json())
    code, stdout, err = run_cli(["madds", arch, "--input", "64", "--latency-table", out,
                                 "--json"])
    assert code == 0, err
    assert json.loads(stdout)[0]["latency_ms"] == pytest.approx(
        L.read_latency_table(out, T).latency_ms(space.max_arch()))

    def error(a: list) -> str:
        code, stdout, err = run_cli(a)
        assert code == 2 and stdout == "", err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fnacli: error:"), err
        return lines[0]

    assert "--force" in error([*args, "-o", out])
    assert "--device" in error([*args, "--device", "tpu", "-o", tmp_path / "x.json"])
    assert "--space" in error(["latency", "--task", "none"])
    assert "--check" in error(["latency", "--table", out])
    assert "measured for none" in error(["madds", arch, "--latency-table", out, "--task",
                                         "ssdlite"])
    Path(f"{tmp_path / 'y.json'}.partial").write_text("{}")
    assert "--resume" in error([*args, "-o", tmp_path / "y.json"])


def test_cli_measures_and_predicts_deeplabv3(space: SpaceSpec, tmp_path: Path,
                                             run_cli) -> None:
    from fnacli.cost.table import CostTable

    spec_file = tmp_path / "space.json"
    spec_file.write_text(json.dumps(TINY))
    out = tmp_path / "seg.json"
    # refused before this task implemented the latency hooks
    code, stdout, err = run_cli(["latency", "--space", spec_file, "--task", "deeplabv3",
                                 "--size", "64x32", "--rounds", "6", "--max-rounds", "6",
                                 "--tolerance", "0.2", "-o", out, "--check", "2", "--json"])
    assert code == 0, err
    s = json.loads(stdout)
    assert s["check"]["n"] == 2 and "Spearman" in err
    d = json.loads(out.read_text())
    assert (d["task"], d["input"], d["num_classes"]) == ("deeplabv3", [64, 32], 19)
    # the prediction madds reports is the sum of the arch's entries in the file + overhead
    arch = space.max_arch()
    arch_file = tmp_path / "arch.json"
    arch_file.write_text(arch.to_json())
    code, stdout, err = run_cli(["madds", arch_file, "--task", "deeplabv3", "--input", "64x32",
                                 "--latency-table", out, "--json"])
    assert code == 0, err
    layers = {tuple(r[:6]): r[6] for r in d["layers"]}
    fixed = {(r[0], r[1], tuple(r[2])): r[4] for r in d["fixed"]}
    costs = CostTable(T("deeplabv3"), (64, 32), 19)
    total = sum(layers[k] for k in costs.layer_keys(arch)) + sum(
        fixed[f] for f in costs.fixed_needs(arch)) + d["overhead_ns"]
    assert json.loads(stdout)[0]["latency_ms"] == pytest.approx(total / 1e6, abs=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_table_and_check(space: SpaceSpec) -> None:
    cfg = M.MeasureConfig(device="cuda", min_rounds=6, max_rounds=9, rel_tol=0.1)
    table = L.build_latency_table(space, T("ssdlite"), SIZE, 3, cfg)
    assert table.env["device"] == "cuda" and table.env["device_name"]
    s = C.check_table(table, 5).summary()
    assert all(v > 0 for v in s["measured_ms"]) and math.isfinite(s["mean_abs_error_pct"])
