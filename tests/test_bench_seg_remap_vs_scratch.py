"""benchmarks/bench_seg_remap_vs_scratch.py: its summary numbers, target and settings."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_seg_remap_vs_scratch.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_seg_remap_vs_scratch", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


bench = _load()


def _result(miou: float, aacc: float) -> dict:
    return {"steps": 48, "metrics": {"mIoU": miou, "aAcc": aacc, "mAcc": 0.0}}


def test_summarise_mean_std_and_paired_difference() -> None:
    results = {"remap": {0: _result(0.4, 0.8), 1: _result(0.3, 0.7), 2: _result(0.5, 0.9)},
               "scratch": {0: _result(0.2, 0.6), 1: _result(0.35, 0.65), 2: _result(0.2, 0.7)}}
    s = bench.summarise(results)
    assert s["remap"]["mIoU"]["mean"] == pytest.approx(0.4)
    assert s["remap"]["mIoU"]["std"] == pytest.approx(0.1)
    d = s["difference"]["mIoU"]
    assert d["values"] == pytest.approx([0.2, -0.05, 0.3]) and d["remap_wins"] == 2
    assert s["difference"]["aAcc"]["remap_wins"] == 3


def test_target_is_fna_deeplabv3_at_the_seed_widths() -> None:
    from fnacli.spec import builtin_arch, mobilenetv2

    seed, target = mobilenetv2(0.5), bench.target_spec(0.5)
    assert [s.out for s in target.stages] == [s.out for s in seed.stages]
    assert [s.ops for s in target.stages] == [s.ops for s in builtin_arch("fna-deeplabv3").stages]


def test_seed_budget_is_a_step_count_unless_seconds_are_asked_for() -> None:
    cfg = bench.Settings()
    args = cfg.seed_args()
    assert args[args.index("--max-steps") + 1] == 300 and cfg.seed()["steps"] == 300
    timed = bench.Settings(pretrain_steps=None)
    assert "steps" not in timed.seed() and timed.seed() != cfg.seed()


def test_fresh_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(SystemExit) as e:
        bench.main(["--fresh", "--workdir", str(tmp_path)])
    assert e.value.code == 2
    assert (tmp_path / "precious.txt").read_text() == "keep me"
