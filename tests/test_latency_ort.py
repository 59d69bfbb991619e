"""Latency tables timed in onnxruntime (fp32 and int8): what a table records, the refusal to mix
runtimes, that each entry is its module's exported graph, and searches on such a table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_lut import TINY

pytest.importorskip("onnxruntime")

import fnacli.cost.latency as L  # noqa: E402
import fnacli.cost.measure as M  # noqa: E402
from fnacli.errors import UserError  # noqa: E402
from fnacli.pipeline.profile import cost_target as T  # noqa: E402
from fnacli.spec import SpaceSpec  # noqa: E402

FAST = dict(threads=1, min_rounds=6, max_rounds=6, sample_s=0.001, blocks=2)
SIZE = (64, 64)
SPACE = TINY  # the MAdds table tests' tiny space (its ops: k3/k5/k7, e1/e3/e6, skip)


def ort_cfg(precision: str = "fp32") -> M.MeasureConfig:
    return M.MeasureConfig(**FAST, runtime="onnxruntime", precision=precision, clock="cpu")


@pytest.fixture(scope="module")
def space() -> SpaceSpec:
    return SpaceSpec.from_dict(SPACE)


@pytest.fixture(scope="module")
def ort_tables(space: SpaceSpec, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ort")
    out = {}
    for precision in ("fp32", "int8"):
        table = L.build_latency_table(space, T("ssdlite"), SIZE, 2, ort_cfg(precision))
        out[precision] = root / f"{precision}.json"
        out[precision].write_text(table.to_json())
    return out


def test_table_records_its_runtime_and_covers_the_space(ort_tables: dict,
                                                        space: SpaceSpec) -> None:
    import onnxruntime

    from fnacli.cost.lut import Lut

    madds = Lut(space, T("ssdlite"), SIZE, 2).build()
    for precision, path in ort_tables.items():
        d = json.loads(path.read_text())
        env = d["environment"]
        assert env["runtime"] == "onnxruntime" and env["onnxruntime"] == onnxruntime.__version__
        assert env["precision"] == precision and env["threads"] == 1
        assert env["provider"] == "CPUExecutionProvider" and env["opt_level"] == "all"
        assert env["clock"] == "cpu" and d["measure"]["runtime"] == "onnxruntime"
        assert (env["quantisation"] is not None) == (precision == "int8")
        table = L.read_latency_table(path, T)
        assert table.cfg == ort_cfg(precision) and "onnxruntime" in table.describe()
        # the same entries as the MAdds table, each a positive time
        assert set(table.layers) == set(madds.layers) and set(table.fixed) == set(madds.fixed)
        assert all(ns > 0 for ns, _ in table.layers.values())
        assert table.identity()["runtime"].startswith(f"onnxruntime {onnxruntime.__version__} "
                                                      f"{precision}")


def test_each_entry_times_the_modules_exported_graph(monkeypatch: pytest.MonkeyPatch,
                                                     space: SpaceSpec) -> None:
    """What the onnxruntime bench times is the module's graph: the same outputs as the module
    (fp32), with the neck and head's prepared maps as graph inputs (not folded constants)."""
    import numpy as np

    import fnacli.cost.ort as R

    compiled: list = []
    real = R.compile_module

    def spy(module: torch.nn.Module, inputs: list, cfg: R.OrtConfig) -> R.OrtCall:
        call = real(module, inputs, cfg)
        compiled.append((module, inputs, call))
        return call

    monkeypatch.setattr(R, "compile_module", spy)
    L.build_latency_table(space, T("ssdlite"), SIZE, 2, ort_cfg())
    assert compiled
    neck_heads = 0
    for module, inputs, call in compiled:
        mod, xs = R.graph_inputs(module, inputs)
        names = [i.name for i in call.sess.get_inputs()]
        if isinstance(mod, R._MapsIn):
            neck_heads += 1
            assert len(names) >= 2  # the maps are inputs
        with torch.inference_mode():
            want = mod(*xs)
        want = [want] if isinstance(want, torch.Tensor) else list(want)
        got = call.sess.run(None, {n: xs[int(n[2:])].numpy() for n in names})
        assert len(got) == len(want)
        for a, b in zip(want, got, strict=True):
            np.testing.assert_allclose(b, a.numpy(), rtol=1e-3, atol=1e-4)
    assert neck_heads >= 1


def test_runtimes_do_not_mix(ort_tables: dict, space: SpaceSpec, tmp_path: Path,
                             run_cli) -> None:
    def refused(args: list) -> str:
        code, stdout, err = run_cli(args)
        assert code == 2 and stdout == "", err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fnacli: error:"), err
        return lines[0]

    # a check runs in the table's runtime and precision, never another
    assert "timed in onnxruntime" in refused(["latency", "--table", ort_tables["fp32"],
                                              "--check", "10", "--runtime", "torch"])
    assert "--precision int8" in refused(["latency", "--table", ort_tables["fp32"],
                                          "--check", "10", "--precision", "int8"])
    assert "--precision int8" in refused(["latency", "--space", "fna", "--precision", "int8"])
    assert "--clock cpu" in refused(["latency", "--space", "fna", "--clock", "cpu",
                                     "--threads", "2"])
    # a table timed in another onnxruntime version is refused like another machine's
    d = json.loads(ort_tables["fp32"].read_text())
    d["environment"]["onnxruntime"] = "0.1.0"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(d))
    with pytest.raises(UserError, match="measured elsewhere.*onnxruntime"):
        L.read_latency_table(other, T)
    # an eager table's partial is not resumed as an onnxruntime one (nor the reverse)
    part = tmp_path / "t.json.partial"
    eager = L.LatencyTable(space, T("ssdlite"), SIZE, 2, M.MeasureConfig(**FAST))
    part.write_text(eager.to_json())
    with pytest.raises(UserError, match="another space, task, size or machine"):
        L.build_latency_table(space, T("ssdlite"), SIZE, 2, ort_cfg(), partial=part, resume=True)
    # tables from before runtimes were recorded read as torch's
    assert M.runtime_of({}) == "torch eager"
    assert M.same_machine({"device": "cpu"}, {"device": "cpu", "runtime": "torch"}) == []


def test_oneshot_search_on_an_onnxruntime_table(ort_tables: dict) -> None:
    """Evolution under --max-latency with an int8 table: every candidate evaluated is under
    the limit by that table (the fitness is a stand-in; the search logic is the real one)."""
    from test_evolution import all_genomes, fake_fitness

    from fnacli.search import evolution as E

    table = L.read_latency_table(ort_tables["int8"], T)
    enc = E.Encoding(table.space)
    lat = sorted(table.latency_ms(enc.arch(g)) for g in all_genomes(enc))
    limit = lat[len(lat) // 2]
    cfg = E.SearchConfig(strategy="evolution", population=4, parents=2, generations=2, seed=1,
                         candidates=8, max_latency=limit)
    search = E.OneShotSearch(enc, table.arch_madds, fake_fitness(enc, []), cfg,
                             latency=table.latency_ms)
    assert search.run().finished and search.cache
    assert all(table.latency_ms(enc.arch(c.genome)) <= limit for c in search.cache.values())


def test_madds_and_check_take_an_onnxruntime_table(ort_tables: dict, tmp_path: Path,
                                                   run_cli) -> None:
    from fnacli.search.evolution import Encoding

    table = L.read_latency_table(ort_tables["fp32"], T)
    enc = Encoding(table.space)
    arch = enc.arch([0] * len(enc.sizes))
    spec = tmp_path / "a.json"
    spec.write_text(json.dumps(arch.to_dict()))
    code, stdout, err = run_cli(["madds", spec, "--task", "ssdlite", "--size", "64",
                                 "--num-classes", "2", "--latency-table", ort_tables["fp32"],
                                 "--json"])
    assert code == 0, err
    assert json.loads(stdout)[0]["latency_ms"] == pytest.approx(table.latency_ms(arch), rel=1e-3)
    code, stdout, err = run_cli(["latency", "--table", ort_tables["fp32"], "--check", "3",
                                 "--json"])
    assert code == 0, err
    s = json.loads(stdout)["check"]
    assert s["n"] == 3 and s["verdict"]["verdict"] == "no verdict"
    assert "NO VERDICT" in err and "too few" in err
