"""benchmarks/bench_search_quality.py: its statistics, its architectures, and a --quick run
end to end (every item, every command in one process)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_search_quality.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_search_quality", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while being defined
    spec.loader.exec_module(mod)
    return mod


bench = _load()


def _tau_by_definition(a: list[float], b: list[float]) -> float:
    """Kendall's τ-a (no ties): (concordant − discordant) / number of pairs."""
    pairs = list(itertools.combinations(range(len(a)), 2))
    s = sum((1 if (a[i] - a[j]) * (b[i] - b[j]) > 0 else -1) for i, j in pairs)
    return s / len(pairs)


def _tau_b_by_definition(a: list[float], b: list[float]) -> float:
    """Kendall's τ-b: (C − D) / sqrt((P − T_a)(P − T_b)) over all P pairs, T_x the pairs tied
    in x; nan when either ranking is all ties."""
    pairs = list(itertools.combinations(range(len(a)), 2))
    sign = [(a[i] - a[j]) * (b[i] - b[j]) for i, j in pairs]
    c_minus_d = sum(1 if x > 0 else -1 if x < 0 else 0 for x in sign)
    ta = sum(a[i] == a[j] for i, j in pairs)
    tb = sum(b[i] == b[j] for i, j in pairs)
    den = ((len(pairs) - ta) * (len(pairs) - tb)) ** 0.5
    return c_minus_d / den if den else float("nan")


def test_kendall_tau_known_values() -> None:
    assert bench.kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert bench.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    a, b = [0.3, 0.1, 0.5, 0.2, 0.9, 0.4], [0.2, 0.3, 0.6, 0.1, 0.5, 0.4]
    assert bench.kendall_tau(a, b) == pytest.approx(_tau_by_definition(a, b))
    assert bench.kendall_tau(a, b) == pytest.approx(9 / 15)  # 12 concordant, 3 discordant
    # τ-b with ties: scipy.stats.kendalltau([1, 2, 2, 3], [1, 3, 2, 4]) = 0.9128709...
    assert bench.kendall_tau([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(0.9128709, abs=1e-6)
    assert _tau_b_by_definition([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(0.9128709, abs=1e-6)


def test_hand_picked_architectures_are_members_of_the_search_space() -> None:
    from fnacli.search.arch import path_of_arch
    from fnacli.spec import load_space, mobilenetv2

    space = load_space(str(bench.SPACE))
    seed = mobilenetv2(0.5)
    picked = [bench.staged_arch(*a) for a in bench.HAND_PICKED.values()]
    for arch in (seed, bench.uniform_arch("k7_e3"), bench.uniform_arch("k3_e3"), *picked):
        path_of_arch(space, arch)  # raises when not in the space
        assert [s.out for s in arch.stages] == [s.out for s in seed.stages]
    assert bench.staged_arch() == seed
    shallow = bench.staged_arch(*bench.HAND_PICKED["seed-shallow"])
    assert [s.depth for s in shallow.stages] == [1, 2, 2, 3, 2, 2, 1]
    late = bench.staged_arch(*bench.HAND_PICKED["early-e3-late-k7"])
    assert [str(s.ops[0]) for s in late.stages[1:]] == ["k3_e3"] * 3 + ["k7_e6"] * 3
    assert {str(op) for s in bench.uniform_arch("k7_e3").stages[1:] for op in s.ops} == {
        "k7_e3"}


def test_channel_space_spans_half_to_full_width() -> None:
    from fnacli.spec import mobilenetv2

    seed = mobilenetv2(0.5)
    space = bench.channel_space(3)
    for st, sp in zip(seed.stages[1:], space.stages[1:], strict=True):
        assert max(sp.outs) == st.out and min(sp.outs) <= st.out // 2 + 4
        assert sp.candidates == ("k3_e6",) and sp.layers == st.depth
    assert len(bench.channel_space(6).stages[4].outs) > len(space.stages[4].outs)


def test_write_doc_replaces_only_the_results_section(tmp_path: Path) -> None:
    doc = tmp_path / "d.md"
    doc.write_text(f"# T\n\nintro\n\n{bench.BEGIN}\nold\n{bench.END}\n\nreading\n")
    bench.write_doc(doc, "new table\n")
    assert doc.read_text() == f"# T\n\nintro\n\n{bench.BEGIN}\nnew table\n{bench.END}\n\nreading\n"
    fresh = tmp_path / "f.md"
    bench.write_doc(fresh, "x\n")
    assert f"{bench.BEGIN}\nx\n{bench.END}" in fresh.read_text()


def test_jobs_run_lower_priority_numbers_first() -> None:
    import threading

    gate, order = threading.Event(), []
    jobs = bench.Jobs(1)
    first = jobs.submit(0, gate.wait)  # holds the only worker while the rest queue up
    futs = [jobs.submit(p, order.append, name) for p, name in
            ((2, "seed1-a"), (1, "seed0-a"), (-1, "search"), (1, "seed0-b"))]
    gate.set()
    first.result(timeout=10)
    for f in futs:
        f.result(timeout=10)
    jobs.close()
    assert order == ["search", "seed0-a", "seed0-b", "seed1-a"]


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path: Path) -> None:
    work, doc, raw = tmp_path / "work", tmp_path / "sq.md", tmp_path / "sq.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--workdir", str(work),
                           "--doc", str(doc), "--json-out", str(raw)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(raw.read_text())
    arms = {"seed", *bench.HAND_PICKED, "all-k3_e3", "all-k7_e3", "differentiable",
            "differentiable-sampled", "evolution", "evolution-ft-recipe", "random-0", "random-1",
            "width-non-overlapping", "width-overlapping",
            "rule first/center", "rule bn/center", "rule std/center", "rule l1/center",
            "rule first/dilate"}
    assert set(res["summary"]) == arms
    # one budget for every arm: 16 images / batch 8, 1 epoch
    assert {r["steps"] for runs in res["runs"].values() for r in runs} == {2}
    for runs in res["runs"].values():
        assert all(len(r["metrics"]) == 12 and -1 <= r["metrics"]["AP"] <= 1 for r in runs)
    # the rule arm with the default rules is the all-k7_e3 arm itself
    assert res["runs"]["rule first/center"] == res["runs"]["all-k7_e3"]
    # random architectures within ±5% of the target, below the seed's MAdds
    target = res["target_madds"]
    assert target < res["seed_madds"]
    assert all(abs(res["madds"][f"random-{i}"] / target - 1) <= 0.05 for i in range(2))
    # ... and so is every searched architecture (derive's window, evolution's limits)
    for n in ("differentiable", "differentiable-sampled", "evolution", "evolution-ft-recipe",
              "width-non-overlapping", "width-overlapping"):
        assert abs(res["madds"][n] / target - 1) <= 0.05, n
    # item 4 and 6
    (cost,) = res["width_cost"]
    assert cost["shared_s"] > 0 and cost["separate_s"] > 0
    for r in (res["ranking"], res["ranking_ft_recipe"]):  # one per one-shot supernet
        assert len(r["archs"]) == 12 and set(r["fitness_AP"]) == set(r["archs"])
        fit = [r["fitness_AP"][n] for n in r["archs"]]
        ap = [res["summary"][n]["AP"]["mean"] for n in r["archs"]]
        want = _tau_b_by_definition(fit, ap)
        assert r["kendall_tau"] == pytest.approx(want, nan_ok=True)
    assert res["ranking"]["fitness_AP"] != res["ranking_ft_recipe"]["fitness_AP"]
    text = doc.read_text()
    for head in ("### 1.", "### 2.", "### 3.", "### 4.", "### 5.", "### 6.", "Kendall"):
        assert head in text
    assert "Incomplete" not in text and res["missing_runs"] == {}

    # --report-only trains nothing and reports the same runs
    made = {p: p.stat().st_mtime_ns for p in (work / "runs").glob("*.json")}
    again = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--workdir", str(work),
                            "--report-only", "--json"], capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["summary"] == res["summary"]
    assert {p: p.stat().st_mtime_ns for p in (work / "runs").glob("*.json")} == made


def test_report_only_refuses_an_empty_workdir(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as e:
        bench.main(["--quick", "--report-only", "--workdir", str(tmp_path / "none")])
    assert "--report-only" in str(e.value) and "not made yet" in str(e.value)
