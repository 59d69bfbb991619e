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
from fnacli.errors import UserError
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
        table = L.build_latency_table(space, task, size, 3, FAST)
    return table, timed


@pytest.fixture(scope="module")
def seg_timed(space: SpaceSpec) -> tuple[L.LatencyTable, dict]:
    """A deeplabv3 table and the neck/head timings its fixed-part entries came from."""
    return timed_latency_table(space, "deeplabv3")


@pytest.fixture(scope="module")
def tables(space: SpaceSpec, seg_timed: tuple) -> dict[str, L.LatencyTable]:
    return {**{task: L.build_latency_table(space, task, SIZE, 3, FAST)
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
    madds = build_lut(space, task, SIZE, 3)
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
    costs = CostTable("deeplabv3", SIZE, 3)
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
        module, (image,) = table._neck_head(arch, {f"stage{last}": c},
                                            {f"stage{last}": sig})
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


def test_check_reports_error_and_rank_correlation(tables: dict) -> None:
    table = tables["ssdlite"]
    result = C.check_table(table, 6, seed=1)
    s = result.summary()
    assert s["n"] == 6 and len(s["measured_ms"]) == 6 and all(v > 0 for v in s["measured_ms"])
    assert math.isfinite(s["spearman"]) and -1 <= s["spearman"] <= 1
    # a loose bound: these timings are short and the test machine is shared (the measured
    # accuracy is in docs/latency.md); scaled by how much slower the build's reference
    # networks run now than at build time
    assert 0 < s["load_drift"] and s["mean_abs_error_pct_drift_corrected"] < 100
    assert table.check_result["n"] == 6
    # the table's sums are what it predicts, plus the measured overhead
    assert result.predicted_ms == pytest.approx([t + table.overhead_ns / 1e6
                                                 for t in result.table_ms])


def test_round_trip_refusal_and_coverage(tables: dict, tmp_path: Path) -> None:
    table = tables["ssdlite"]
    path = tmp_path / "t.json"
    path.write_text(table.to_json())
    again = L.read_latency_table(path)
    assert again.layers == table.layers and again.fixed == table.fixed
    assert again.overhead_ns == table.overhead_ns and again.cfg == table.cfg
    d = json.loads(path.read_text())
    d["environment"]["device_name"] = "Some Other CPU"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(d))
    with pytest.raises(UserError, match="measured elsewhere.*--force"):
        L.read_latency_table(other)
    assert L.read_latency_table(other, force=True).env["device_name"] == "Some Other CPU"
    with pytest.raises(UserError, match="not an fnacli latency table"):
        L.LatencyTable.from_json(build_lut(table.space, "none", SIZE).to_json())
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
        L.build_latency_table(space, "none", SIZE, None, FAST, partial=part)
    monkeypatch.setattr(L.LatencyTable, "fill", real)
    assert saves == [8] and part.is_file()
    kept = L.LatencyTable.from_json(part.read_text()).layers
    timed: list[int] = []
    run = M.Bench.run

    def counting(self: M.Bench, jobs: list, progress: object = None) -> dict:
        timed.append(len(jobs))
        return run(self, jobs, progress)

    monkeypatch.setattr(M.Bench, "run", counting)
    table = L.build_latency_table(space, "none", SIZE, None, FAST, partial=part, resume=True)
    full = build_lut(space, "none", SIZE)
    assert set(table.layers) == set(full.layers)
    assert all(table.layers[k] == v for k, v in kept.items())  # kept, not measured again
    n_fixed = len(full.fixed)
    # only what was missing, and the overhead's three whole networks with the last chunk
    assert sum(timed) == len(full.layers) - 8 + n_fixed + 3 and len(timed) == 2
    with pytest.raises(UserError, match="another space"):
        other = SpaceSpec.from_dict({**TINY, "head": {"out": 32}})
        L.build_latency_table(other, "none", SIZE, None, FAST, partial=part, resume=True)


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
    assert "mean abs error" in err and "Spearman" in err
    assert not Path(f"{out}.partial").exists()
    assert L.read_latency_table(out).check_result["n"] == 4
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
        L.read_latency_table(out).latency_ms(space.max_arch()))

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
    costs = CostTable("deeplabv3", (64, 32), 19)
    total = sum(layers[k] for k in costs.layer_keys(arch)) + sum(
        fixed[f] for f in costs.fixed_needs(arch)) + d["overhead_ns"]
    assert json.loads(stdout)[0]["latency_ms"] == pytest.approx(total / 1e6, abs=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_table_and_check(space: SpaceSpec) -> None:
    cfg = M.MeasureConfig(device="cuda", min_rounds=6, max_rounds=9, rel_tol=0.1)
    table = L.build_latency_table(space, "ssdlite", SIZE, 3, cfg)
    assert table.env["device"] == "cuda" and table.env["device_name"]
    s = C.check_table(table, 5).summary()
    assert all(v > 0 for v in s["measured_ms"]) and math.isfinite(s["mean_abs_error_pct"])
