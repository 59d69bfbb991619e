"""The recipes are shell scripts users run as is: check their syntax, and run their first
steps at a tiny size on synthetic data (TINY=1)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
PAPER_RECIPES = ["fna_ssdlite", "fna_retinanet", "jung_channels_retinanet", "detnas_evolution"]


@pytest.mark.parametrize("script", sorted(p.name for p in RECIPES.glob("*.sh")))
def test_recipe_syntax(script):
    r = subprocess.run(["bash", "-n", str(RECIPES / script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("recipe_inputs")
    fnacli = [sys.executable, "-m", "fnacli"]
    subprocess.run([*fnacli, "data", "synth", str(d / "data"), "--train", "8", "--val", "4",
                    "--size", "96"], check=True, capture_output=True)
    subprocess.run([*fnacli, "pretrain-seed", str(d / "seed.pth"), "--width", "0.35", "--size",
                    "32", "--max-steps", "1"], check=True, capture_output=True)
    return d


def _run(recipe: str, out: Path, inputs: Path, steps: int) -> subprocess.CompletedProcess:
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ["PATH"], "TINY": "1",
           "STEPS": str(steps), "OUT": str(out), "DATA": str(inputs / "data"),
           "SEED": str(inputs / "seed.pth"), "FNACLI": f"{sys.executable} -m fnacli"}
    return subprocess.run(["bash", str(RECIPES / f"{recipe}.sh")], env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("recipe", PAPER_RECIPES)
def test_recipe_first_step_runs_tiny(recipe, tiny_inputs, tmp_path):
    r = _run(recipe, tmp_path / recipe, tiny_inputs, steps=1)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / recipe / "super.safetensors").is_file()
    assert "stopping after 1 step(s)" in r.stderr


def test_fna_ssdlite_recipe_runs_end_to_end_tiny(tiny_inputs, tmp_path):
    r = _run("fna_ssdlite", tmp_path / "run", tiny_inputs, steps=99)
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"AP", "AP50", "AP75", "ARl"} <= set(metrics)
    arch = json.loads((tmp_path / "run" / "arch.json").read_text())
    assert arch["schema"] == "fnacli/arch@1"
    assert not (tmp_path / "run" / "searched.safetensors.ckpt").exists()  # search finished


def test_detnas_random_baseline_draws_its_architectures_tiny(tiny_inputs, tmp_path):
    # the expand and the draw (the fine-tuning steps are the ones every recipe runs)
    r = _run("detnas_random_baseline", tmp_path / "rb", tiny_inputs, steps=2)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "stopping after 2 step(s)" in r.stderr
    doc = json.loads((tmp_path / "rb" / "baseline.baseline.json").read_text())
    assert len(doc["architectures"]) == 2 and doc["cost_scope"] == "backbone"
    assert all(Path(a["spec"]).is_file() for a in doc["architectures"])


def test_fna_deeplabv3_recipe_runs_end_to_end_tiny(tiny_inputs, tmp_path):
    seg = tmp_path / "segdata"
    subprocess.run([sys.executable, "-m", "fnacli", "data", "synth", str(seg), "--task",
                    "segmentation", "--train", "20", "--val", "2", "--size", "96"], check=True,
                   capture_output=True)
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ["PATH"], "TINY": "1",
           "OUT": str(tmp_path / "run"), "DATA": str(seg),
           "SEED": str(tiny_inputs / "seed.pth"), "FNACLI": f"{sys.executable} -m fnacli"}
    r = subprocess.run(["bash", str(RECIPES / "fna_deeplabv3.sh")], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics) == {"mIoU", "aAcc", "mAcc"}
    assert "BN statistics recalibrated on 1 training batches" in r.stderr
    assert not (seg / "annotations").exists()  # no detection data written into it


def test_quickstart_runs_end_to_end_tiny(tmp_path):
    """`make demo`'s script, every step at a tiny size (TINY=1), then once more: a rerun
    skips every finished step and prints the same summary."""
    import json

    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ["PATH"], "TINY": "1",
           "FNACLI_DEMO_DIR": str(tmp_path / "demo"), "FNACLI": f"{sys.executable} -m fnacli"}
    runs = [subprocess.run(["bash", str(RECIPES / "quickstart.sh")], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=600) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr[-3000:]
    demo = tmp_path / "demo"
    for name in ("metrics.json", "metrics-seed-arch.json"):
        stats = json.loads((demo / name).read_text())
        assert len(stats) == 12 and all(-1 <= v <= 1 for v in stats.values())
    arch = json.loads((demo / "arch.json").read_text())
    assert arch["schema"] == "fnacli/arch@1"
    assert runs[0].stdout and runs[1].stdout == runs[0].stdout  # the summary, unchanged
