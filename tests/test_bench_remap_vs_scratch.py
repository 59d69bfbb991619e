"""benchmarks/bench_remap_vs_scratch.py: the pieces, and a --quick smoke run end to end."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_remap_vs_scratch.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_remap_vs_scratch", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while being defined
    spec.loader.exec_module(mod)
    return mod


bench = _load()


def _result(ap: float, ap50: float, steps: int = 4) -> dict:
    return {"steps": steps, "metrics": {"AP": ap, "AP50": ap50}}


def test_summarise_means_std_and_paired_difference() -> None:
    results = {"remap": {0: _result(0.5, 0.9), 1: _result(0.3, 0.7), 2: _result(0.4, 0.8)},
               "scratch": {0: _result(0.2, 0.5), 1: _result(0.4, 0.6), 2: _result(0.1, 0.4)}}
    s = bench.summarise(results)
    assert s["remap"]["AP"]["values"] == [0.5, 0.3, 0.4]
    assert s["remap"]["AP"]["mean"] == pytest.approx(0.4)
    assert s["remap"]["AP"]["std"] == pytest.approx(0.1)  # sample std of .5 .3 .4
    assert s["scratch"]["AP50"]["mean"] == pytest.approx(0.5)
    # paired by seed: +.3, -.1, +.3
    d = s["difference"]["AP"]
    assert d["values"] == pytest.approx([0.3, -0.1, 0.3])
    assert d["mean"] == pytest.approx(0.5 / 3)
    assert d["std"] == pytest.approx(math.sqrt(((0.3 - 1 / 6) ** 2 * 2 + (0.1 + 1 / 6) ** 2) / 2))
    assert d["remap_wins"] == 2
    assert s["difference"]["AP50"]["remap_wins"] == 3


def test_summarise_single_seed_has_no_std() -> None:
    s = bench.summarise({"remap": {0: _result(0.2, 0.3)}, "scratch": {0: _result(0.1, 0.3)}})
    assert s["remap"]["AP"]["std"] is None
    assert s["difference"]["AP50"]["remap_wins"] == 0  # a tie is not a win


def test_target_differs_from_seed_only_in_ops_and_depth() -> None:
    from fnacli.spec import builtin_arch, mobilenetv2

    seed, target = mobilenetv2(0.5), bench.target_spec(0.5)
    assert target != seed
    assert [s.out for s in target.stages] == [s.out for s in seed.stages]
    assert (target.stem_out, target.head_out) == (seed.stem_out, seed.head_out)
    assert [s.ops for s in target.stages] == [s.ops for s in builtin_arch("fna-ssdlite").stages]
    assert [s.depth for s in target.stages] != [s.depth for s in seed.stages]


def test_random_backbone_is_a_seeded_torchvision_style_init(tmp_path: Path) -> None:
    from fnacli.checkpoint import read_checkpoint
    from fnacli.nn.backbone import Backbone

    spec = bench.target_spec(0.5)
    spec_path = tmp_path / "t.json"
    spec_path.write_text(spec.to_json())
    paths = [tmp_path / f"r{i}.safetensors" for i in range(3)]
    for p, seed in zip(paths, (0, 0, 1), strict=True):
        bench.random_backbone(spec_path, p, seed)
    a, b, c = (read_checkpoint(p) for p in paths)
    assert a.kind == "backbone" and a.spec == spec
    Backbone(spec).load_state_dict(a.tensors, strict=True)
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)  # same seed
    w = "stages.4.0.expand.conv.weight"
    assert not torch.equal(a.tensors[w], c.tensors[w])  # another seed
    # Kaiming normal, fan-out: std sqrt(2 / (out * k * k)); a 1x1 conv of 48 -> 288 channels
    out = a.tensors[w].shape[0]
    assert a.tensors[w].std().item() == pytest.approx(math.sqrt(2 / out), rel=0.1)
    assert torch.all(a.tensors["stages.4.0.expand.bn.weight"] == 1)
    assert torch.all(a.tensors["stages.4.0.expand.bn.bias"] == 0)


@pytest.mark.slow
def test_quick_run_end_to_end_and_cached_rerun(tmp_path: Path) -> None:
    work = tmp_path / "work"
    cmd = [sys.executable, str(SCRIPT), "--quick", "--workdir", str(work), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    runs = result["runs"]
    assert set(runs) == {"remap", "scratch"}
    for arm in runs:
        metrics = runs[arm]["0"]["metrics"]
        assert len(metrics) == 12 and set(metrics) >= {"AP", "AP50", "AP75"}
        assert all(-1 <= v <= 1 for v in metrics.values())
    # the same budget for both arms: 16 images / batch 8 x 1 epoch
    assert runs["remap"]["0"]["steps"] == runs["scratch"]["0"]["steps"] == 2
    diff = result["summary"]["difference"]["AP50"]["values"][0]
    assert diff == pytest.approx(runs["remap"]["0"]["metrics"]["AP50"]
                                 - runs["scratch"]["0"]["metrics"]["AP50"])
    # the table: header, both arms, the difference row
    for text in ("AP mean ± std", "AP50 mean ± std", "AP per seed", "remap − scratch",
                 "scratch", "remap better on AP in"):
        assert text in proc.stderr
    # both arms trained the same architecture, from different starting points
    from fnacli.checkpoint import read_checkpoint

    remap = read_checkpoint(work / "remap.safetensors")
    scratch = read_checkpoint(work / "runs" / "scratch-init-s0.safetensors")
    assert remap.spec == scratch.spec == bench.target_spec(0.5)
    assert not torch.equal(remap.tensors["stem.conv.weight"], scratch.tensors["stem.conv.weight"])

    # re-run: everything comes from the work dir, the same numbers, no training
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "fnacli finetune" not in again.stderr and "cached" in again.stderr
    assert json.loads(again.stdout)["summary"] == result["summary"]


def test_fresh_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(SystemExit) as e:
        bench.main(["--fresh", "--workdir", str(tmp_path)])
    assert e.value.code == 2
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_pretrain_steps_makes_the_seed_budget_step_based() -> None:
    timed, stepped = bench.Settings(), bench.Settings(pretrain_steps=700)
    assert "--seconds" in timed.seed_args() and "steps" not in timed.seed()
    args = stepped.seed_args()
    assert args[args.index("--max-steps") + 1] == 700
    assert args[args.index("--seconds") + 1] >= 86_400  # the time limit never binds
    assert stepped.seed() != timed.seed()  # a different seed: not taken from the cache
