"""`fnacli derive`: argmax of hand-set α/β, the minimum-depth rule, the exact top-K list, and
its errors."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from fnacli.checkpoint import save_checkpoint
from fnacli.nn.supernet import Path as SPath
from fnacli.nn.supernet import Supernet, op_choices, path_to_arch, width_choices
from fnacli.pipeline.profile import cost_target as T
from fnacli.search import arch as A
from fnacli.spec import ArchSpec, SpaceSpec


def small_space() -> SpaceSpec:
    cands = ["k3_e3", "k5_e6", "skip"]
    return SpaceSpec.from_dict({
        "schema": "fnacli/space@1", "stem": {"out": 8, "stride": 2},
        "stages": [{"out": 8, "stride": 1, "ops": ["k3_e1"]},
                   {"out": [8, 12, 16], "stride": 2, "layers": 3, "ops": cands},
                   {"out": 24, "stride": 2, "layers": 2, "ops": cands},
                   {"out": [24, 32], "stride": 2, "layers": 1, "ops": ["k3_e6", "k5_e3"]}],
        "head": {"out": 48}})


def write_supernet(path: Path, space: SpaceSpec, alpha: dict, beta: dict,
                   search: dict | None = None) -> Path:
    with torch.device("meta"):
        shapes = Supernet(space).state_dict()
    tensors = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in shapes.items()}
    tensors.update(A.to_tensors(alpha, beta))
    meta = {"space": space.to_dict(), "masks": "non-overlapping"}
    if search is not None:
        meta["search"] = search
    save_checkpoint(path, tensors, "searched" if search else "supernet", meta)
    return path


def hand_logits(space: SpaceSpec, choice: dict, widths: dict) -> tuple[dict, dict]:
    """Logits whose argmax is the given candidate per layer / width per stage."""
    alpha = {}
    for s, i, cands in op_choices(space):
        t = torch.zeros(len(cands))
        t[cands.index(choice[(s, i)])] = 2.0
        alpha[(s, i)] = t
    beta = {}
    for s, outs in width_choices(space):
        t = torch.zeros(len(outs))
        t[outs.index(widths[s])] = 2.0
        beta[s] = t
    return alpha, beta


CHOICE = {(1, 0): "k5_e6", (1, 1): "skip", (1, 2): "k3_e3", (2, 0): "k3_e3", (2, 1): "skip",
          (3, 0): "k5_e3"}
WIDTHS = {1: 12, 3: 24}
EXPECTED = {"schema": "fnacli/arch@1", "stem": {"out": 8, "stride": 2},
            "stages": [{"out": 8, "stride": 1, "ops": ["k3_e1"]},
                       {"out": 12, "stride": 2, "ops": ["k5_e6", "k3_e3"]},
                       {"out": 24, "stride": 2, "ops": ["k3_e3"]},
                       {"out": 24, "stride": 2, "ops": ["k5_e3"]}],
            "head": {"out": 48}}


def test_derive_of_hand_set_logits(tmp_path: Path, run_cli) -> None:
    space = small_space()
    ck = write_supernet(tmp_path / "s.safetensors", space, *hand_logits(space, CHOICE, WIDTHS))
    code, out, err = run_cli(["derive", ck])
    assert code == 0, err
    assert json.loads(out) == EXPECTED
    assert out == ArchSpec.from_dict(EXPECTED).to_json()  # canonical text
    # -o writes the same text; a second time needs --force
    code, _, _ = run_cli(["derive", ck, "-o", tmp_path / "a.json"])
    assert code == 0 and (tmp_path / "a.json").read_text() == out
    code, _, err = run_cli(["derive", ck, "-o", tmp_path / "a.json"])
    assert code == 2 and "--force" in err


def test_min_depth_keeps_layers_that_argmax_would_skip(tmp_path: Path, run_cli) -> None:
    space = small_space()
    alpha, beta = hand_logits(space, CHOICE, WIDTHS)
    ck = write_supernet(tmp_path / "s.safetensors", space, alpha, beta)
    code, out, _ = run_cli(["derive", ck, "--min-depth", "2"])
    assert code == 0
    spec = json.loads(out)
    # the skipped layer 1 of stage 1 becomes its best non-skip candidate (ties: the first)
    assert spec["stages"][1]["ops"] == ["k5_e6", "k3_e3", "k3_e3"]
    assert spec["stages"][2]["ops"] == ["k3_e3", "k3_e3"]
    # a searched checkpoint carries its own --min-depth
    ck2 = write_supernet(tmp_path / "t.safetensors", space, alpha, beta,
                         {"strategy": "differentiable", "min_depth": 2})
    assert json.loads(run_cli(["derive", ck2])[1]) == spec


def test_collapse_to_skip_is_warned(tmp_path: Path, run_cli) -> None:
    space = small_space()
    choice = {(s, i): ("skip" if "skip" in c else c[0]) for s, i, c in op_choices(space)}
    ck = write_supernet(tmp_path / "s.safetensors", space, *hand_logits(space, choice, WIDTHS))
    code, out, err = run_cli(["derive", ck])
    assert code == 0 and "collapse" in err and "--min-depth" in err
    assert [len(s["ops"]) for s in json.loads(out)["stages"]] == [1, 1, 1, 1]


def brute_force(space: SpaceSpec, a: dict, b: dict) -> dict[str, float]:
    """Probability of every distinct architecture by enumerating every choice."""
    ops, widths = op_choices(space), width_choices(space)
    out: dict[str, float] = {}
    for oc in itertools.product(*[range(len(c)) for *_, c in ops]):
        p_ops = math.prod(float(a[(s, i)][j]) for (s, i, _), j in zip(ops, oc, strict=True))
        for wc in itertools.product(*[range(len(o)) for _, o in widths]):
            p = p_ops * math.prod(float(b[s][j]) for (s, _), j in zip(widths, wc, strict=True))
            path = SPath({(s, i): j for (s, i, _), j in zip(ops, oc, strict=True)},
                         {s: j for (s, _), j in zip(widths, wc, strict=True)})
            key = path_to_arch(space, path).to_json(compact=True)
            out[key] = out.get(key, 0.0) + p
    return out


def test_top_k_is_exact_and_sums_to_one() -> None:
    space = small_space()
    torch.manual_seed(3)
    f64 = torch.float64  # so that the sums are exact to 1e-9
    logits_a = {(s, i): torch.randn(len(c), dtype=f64) for s, i, c in op_choices(space)}
    logits_b = {s: torch.randn(len(o), dtype=f64) for s, o in width_choices(space)}
    a, b = A.probs(space, logits_a, logits_b)
    want = brute_force(space, a, b)
    assert math.isclose(sum(want.values()), 1.0, rel_tol=1e-9)
    got, exact = A.top_k(space, a, b, len(want) + 5)
    assert exact and len(got) == len(want)  # duplicates from skip positions merged
    assert math.isclose(sum(p for p, _ in got), 1.0, rel_tol=1e-9)
    for p, spec in got:
        assert math.isclose(p, want[spec.to_json(compact=True)], rel_tol=1e-9)
    top5, _ = A.top_k(space, a, b, 5)
    assert [round(p, 12) for p, _ in top5] == sorted(
        (round(v, 12) for v in want.values()), reverse=True)[:5]
    # the argmax path's architecture is not necessarily the most likely architecture, but
    # the most likely one is at least as likely as the argmax path
    _, _, p_path = A.derive(space, logits_a, logits_b)
    assert top5[0][0] >= p_path - 1e-12


def test_top_and_show_in_the_cli(tmp_path: Path, run_cli) -> None:
    space = small_space()
    torch.manual_seed(4)
    alpha = {(s, i): torch.randn(len(c)) for s, i, c in op_choices(space)}
    beta = {s: torch.randn(len(o)) for s, o in width_choices(space)}
    ck = write_supernet(tmp_path / "s.safetensors", space, alpha, beta)
    code, out, err = run_cli(["derive", ck, "--top", "4", "--json", "--show", "--task", "none",
                              "--size", "64"])
    assert code == 0, err
    report = json.loads(out)
    want, _ = A.top_k(space, *A.probs(space, alpha, beta), 4)
    assert [t["probability"] for t in report["top"]] == pytest.approx([p for p, _ in want])
    assert [t["spec"] for t in report["top"]] == [s.to_dict() for _, s in want]
    assert all(t["madds"] > 0 for t in report["top"])
    assert "top 4" in err and "derived architecture" in err  # the tables went to stderr
    # the top table shows what differs: a column per stage whose ops/width are not shared
    specs = [s for _, s in want]
    differ = A.differing_stages(specs)
    assert differ and all(f"stage {s}" in err for s in differ)
    flat = " ".join(err.split())
    assert "the same in all" in flat or len(differ) == len(specs[0].stages)


def test_differing_stages_and_stage_text() -> None:
    a = ArchSpec.from_dict({"schema": "fnacli/arch@1", "stem": {"out": 16, "stride": 2}, "stages": [
        {"out": 8, "stride": 1, "ops": ["k3_e1"]},
        {"out": 16, "stride": 2, "ops": ["k3_e6", "k5_e3"]},
        {"out": 24, "stride": 2, "ops": ["k3_e6"]}]})
    b = ArchSpec.from_dict({**a.to_dict(), "stages": [
        *a.to_dict()["stages"][:1], {"out": 16, "stride": 2, "ops": ["k3_e6", "k7_e6"]},
        {"out": 32, "stride": 2, "ops": ["k3_e6"]}]})
    assert A.differing_stages([a, a]) == []
    assert A.differing_stages([a, b]) == [1, 2]  # ops in stage 1, width in stage 2
    assert A.stage_text(b.stages[1]) == "16: k3_e6 k7_e6"


def test_collapse_warning_names_the_remedies_of_its_search() -> None:
    space = small_space()
    # every layer that may be skipped is skipped
    path = SPath({(s, i): c.index("skip") if "skip" in c else 0 for s, i, c in op_choices(space)},
                 {s: 0 for s, _ in width_choices(space)})
    diff = A.collapse_warning(space, path, strategy="differentiable")
    evo = A.collapse_warning(space, path, strategy="evolution")
    assert "--min-depth" in diff and "--lambda" in diff
    assert "--max-madds" in evo and "--min-depth" not in evo and "--lambda" not in evo


def test_derive_refuses_other_files(tmp_path: Path, run_cli) -> None:
    (tmp_path / "x.json").write_text("{}")
    code, out, err = run_cli(["derive", tmp_path / "x.json"])
    assert code == 2 and out == "" and "x.json" in err and "Traceback" not in err
    backbone = tmp_path / "b.safetensors"
    save_checkpoint(backbone, {"w": torch.zeros(1)}, "backbone", {})
    code, _, err = run_cli(["derive", backbone])
    assert code == 2 and "backbone checkpoint" in err and "supernet" in err


# -- deriving within a MAdds window ----------------------------------------------------------
def toy_cost(arch: ArchSpec) -> float:
    """An independent cost: per layer kernel² · expansion · width (not the LUT)."""
    return float(sum(o.kernel ** 2 * o.expand * st.out for st in arch.stages for o in st.ops))


def _paths(space: SpaceSpec):
    ops, widths = op_choices(space), width_choices(space)
    for oc in itertools.product(*[range(len(c)) for *_, c in ops]):
        for wc in itertools.product(*[range(len(o)) for _, o in widths]):
            yield SPath({(s, i): j for (s, i, _), j in zip(ops, oc, strict=True)},
                        {s: j for (s, _), j in zip(widths, wc, strict=True)})


def _path_prob(a: dict, b: dict, p: SPath) -> float:
    return math.prod(float(a[k][j]) for k, j in p.ops.items()) * math.prod(
        float(b[s][j]) for s, j in p.widths.items())


@pytest.mark.parametrize("seed", range(6))
def test_derive_within_lands_in_the_window_at_the_best_single_change(seed: int) -> None:
    space = small_space()
    torch.manual_seed(seed)
    logits_a = {(s, i): 2 * torch.randn(len(c), dtype=torch.float64) for s, i, c in
                op_choices(space)}
    logits_b = {s: 2 * torch.randn(len(o), dtype=torch.float64) for s, o in width_choices(space)}
    a, b = A.probs(space, logits_a, logits_b)
    argmax_arch, argmax_path, _ = A.derive(space, logits_a, logits_b)
    c0 = toy_cost(argmax_arch)
    costs = sorted({toy_cost(path_to_arch(space, p)) for p in _paths(space)})
    # a window away from the argmax's cost, on the far side of the median
    mid = costs[len(costs) // 2]
    lo, hi = (costs[len(costs) // 8], costs[len(costs) // 4]) if c0 > mid else (
        costs[3 * len(costs) // 4], costs[7 * len(costs) // 8])
    arch, path, prob, moved = A.derive_within(space, logits_a, logits_b, toy_cost, lo, hi)
    assert lo <= toy_cost(arch) <= hi and moved >= 1
    assert prob == pytest.approx(_path_prob(a, b, path), rel=1e-9)
    assert arch == path_to_arch(space, path)
    # when one change suffices, it is the most probable change that lands inside
    singles = []
    for p in _paths(space):
        diff = sum(p.ops[k] != argmax_path.ops[k] for k in p.ops) + sum(
            p.widths[s] != argmax_path.widths[s] for s in p.widths)
        if diff == 1 and lo <= toy_cost(path_to_arch(space, p)) <= hi:
            singles.append(_path_prob(a, b, p))
    if singles:
        assert moved == 1 and prob == pytest.approx(max(singles), rel=1e-9)
    # a window the argmax already meets changes nothing
    same = A.derive_within(space, logits_a, logits_b, toy_cost, c0 * 0.99, c0 * 1.01)
    assert same[0] == argmax_arch and same[3] == 0


def detector_supernet(tmp_path: Path, search: dict | None = None) -> Path:
    """A supernet of a space SSDLite can tap (strides to 32), random α/β."""
    from test_evolution import SPACE

    space = SpaceSpec.from_dict(SPACE)
    torch.manual_seed(0)
    alpha = {(s, i): torch.randn(len(c)) for s, i, c in op_choices(space)}
    beta = {s: torch.randn(len(o)) for s, o in width_choices(space)}
    return write_supernet(tmp_path / "s.safetensors", space, alpha, beta, search)


def test_derive_window_in_the_cli(tmp_path: Path, run_cli) -> None:
    from fnacli.cost.count import profile_exact
    from fnacli.cost.lut import load_or_build_lut
    from fnacli.search.supernet_io import read_supernet

    ck = detector_supernet(tmp_path)
    code, out, err = run_cli(["derive", ck, "--json", "--task", "ssdlite", "--size", "64"])
    assert code == 0, err
    base = json.loads(out)
    c0 = profile_exact(ArchSpec.from_dict(base["spec"]), T("ssdlite"), (64, 64),
                       80).madds_parts["backbone"]
    # a window of the space's backbone costs away from the argmax's
    space = read_supernet(ck).space
    lut = load_or_build_lut(space, T("ssdlite"), (64, 64), 80)
    costs = sorted({lut.arch_cost(path_to_arch(space, p), "backbone") for p in _paths(space)})
    assert costs[0] < c0 < costs[-1]
    lo, hi = ((costs[len(costs) // 8], costs[len(costs) // 4]) if c0 > costs[len(costs) // 2]
              else (costs[3 * len(costs) // 4], costs[7 * len(costs) // 8]))
    code, out, err = run_cli(["derive", ck, "--json", "--task", "ssdlite", "--size", "64",
                              "--min-madds", f"{lo:.0f}", "--max-madds", f"{hi:.0f}"])
    assert code == 0, err
    report = json.loads(out)
    spec = ArchSpec.from_dict(report["spec"])
    exact = profile_exact(spec, T("ssdlite"), (64, 64), 80).madds_parts["backbone"]
    assert lo <= exact <= hi and report["window"]["cost_scope"] == "backbone"
    assert report["window"]["madds"] == pytest.approx(exact, rel=5e-3)
    assert report["window"]["moved"] >= 1 and "moved off the argmax" in err
    assert report["probability"] < base["probability"]


@pytest.mark.parametrize("args, message", [
    (["--cost-scope", "detector"], "--cost-scope: only with --min-madds"),
    (["--min-madds", "2M", "--max-madds", "1M"], "--min-madds 2M is above --max-madds 1M"),
    (["--min-madds", "50G"], "above the most expensive architecture"),
    (["--max-madds", "lots"], "--max-madds: expected 300M, 1.2G, 3e8 or 60%"),
    (["--max-madds", "60%"], "a relative budget is taken of the seed"),
    (["--min-madds", "1M", "--cost-scope", "all"], "--cost-scope: expected one of"),
])
def test_derive_window_errors(tmp_path: Path, run_cli, args: list, message: str) -> None:
    ck = detector_supernet(tmp_path)
    code, out, err = run_cli(["derive", ck, "--task", "ssdlite", "--size", "64", *args])
    assert code == 2 and out == "" and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_derive_window_refuses_a_one_shot_checkpoint(tmp_path: Path, run_cli) -> None:
    ck = detector_supernet(tmp_path, {"strategy": "evolution", "task": "ssdlite",
                                      "size": [64, 64]})
    code, _, err = run_cli(["derive", ck, "--min-madds", "1M"])
    assert code == 2 and "give the window to 'fnacli search'" in err


def test_derive_latency_window_in_the_cli(tmp_path: Path, run_cli) -> None:
    """--min/--max-latency: the most likely architecture whose predicted latency (by the
    table, whole network) lies in the window; one window at a time, and a table needed."""
    import fnacli.cost.latency as L
    from fnacli.cost.lut import load_or_build_lut
    from fnacli.cost.measure import MeasureConfig
    from fnacli.search.supernet_io import read_supernet

    ck = detector_supernet(tmp_path)
    space = read_supernet(ck).space
    fast = MeasureConfig(threads=1, min_rounds=6, max_rounds=6, sample_s=0.001, blocks=2)
    table = L.build_latency_table(space, T("ssdlite"), (64, 64), 80, fast)
    # timings beside other jobs are noisy: entries made deterministic (MAdds-like, k5 ops 3x
    # dearer than MAdds say), so the window below is one the walk can reach every time
    lut = load_or_build_lut(space, T("ssdlite"), (64, 64), 80)
    table.layers = {k: (m // 100 * (3 if k[0].startswith("k5") else 1) + 1, p)
                    for k, (m, p) in lut.layers.items()}
    table.fixed = {k: (part, m // 100 + 1, p) for k, (part, m, p) in lut.fixed.items()}
    table.overhead_ns = 0
    lat = tmp_path / "lat.json"
    lat.write_text(table.to_json())
    code, out, err = run_cli(["derive", ck, "--json", "--task", "ssdlite", "--size", "64"])
    assert code == 0, err
    t0 = table.latency_ms(ArchSpec.from_dict(json.loads(out)["spec"]))
    times = sorted({table.latency_ms(path_to_arch(space, p)) for p in _paths(space)})
    assert times[0] < t0 < times[-1]
    lo, hi = ((times[len(times) // 8], times[len(times) // 4]) if t0 > times[len(times) // 2]
              else (times[3 * len(times) // 4], times[7 * len(times) // 8]))
    code, out, err = run_cli(["derive", ck, "--json", "--task", "ssdlite", "--size", "64",
                              "--latency-table", str(lat), "--min-latency", f"{lo:.6f}ms",
                              "--max-latency", f"{hi:.6f}ms"])
    assert code == 0, err
    report = json.loads(out)
    got = table.latency_ms(ArchSpec.from_dict(report["spec"]))
    assert lo - 1e-6 <= got <= hi + 1e-6 and report["window"]["latency_ms"] == pytest.approx(got)
    assert report["window"]["moved"] >= 1 and "predicted latency" in err
    for args, message in [
            (["--max-latency", "1ms"], "--min/--max-latency: give --latency-table"),
            (["--latency-table", str(lat), "--max-latency", "1ms", "--min-madds", "1M"],
             "give one window"),
            (["--latency-table", str(lat), "--max-latency", f"{times[0] / 2:.6f}ms"],
             "no architecture within the predicted latency window was reached")]:
        code, out, err = run_cli(["derive", ck, "--task", "ssdlite", "--size", "64", *args])
        assert code == 2 and out == "" and message in err and "Traceback" not in err
