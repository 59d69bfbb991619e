"""The deeplabv3 task through the library and the CLI: cost table (FNA Table 1), expected
cost, the whole pipeline on synthetic segmentation data, bad data, inference modes."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fnacli.cost.count import profile_exact
from fnacli.cost.lut import Lut
from fnacli.cost.table import CostTable
from fnacli.nn.supernet import Path as NetPath
from fnacli.nn.supernet import op_choices, path_to_arch
from fnacli.pipeline.profile import cost_target as T
from fnacli.spec import builtin_space, mobilenetv2
from fnacli.tasks import get_task


def test_madds_cli_reproduces_fna_table1(run_cli) -> None:
    code, out, _ = run_cli(["madds", "mobilenetv2", "fna-deeplabv3", "--task", "deeplabv3",
                            "--input", "2048x1024", "--json"])
    assert code == 0
    rows = json.load(io.StringIO(out))
    # FNA Table 1: MobileNetV2 2.57M / 24.52B, FNA 2.55M / 24.17B (ours 2.47M, docs/madds.md)
    assert [r["params"] for r in rows] == [2_567_507, 2_466_419]
    assert [r["madds"] for r in rows] == [24_521_555_968, 24_174_739_456]
    # to the printed digits: |ours - paper| < half a unit of the last digit, except FNA's
    # params (2.47M vs 2.55M, explained in docs/madds.md)
    assert abs(rows[0]["params"] - 2.57e6) < 0.005e6
    for row, paper in zip(rows, (24.52e9, 24.17e9), strict=True):
        assert abs(row["madds"] - paper) < 0.005e9
    assert rows[0]["input"] == [2048, 1024] and rows[0]["num_classes"] == 19
    assert rows[0]["madds_parts"]["neck"] == 5_439_569_920  # the ASPP
    code, out, _ = run_cli(["madds", "mobilenetv2", "--task", "deeplabv3", "--json"])
    assert json.loads(out)[0]["input"] == [2048, 1024]  # Table 1's size is the default


def test_cost_table_matches_fvcore_on_an_atrous_network() -> None:
    spec = mobilenetv2(0.5)
    lut = CostTable(T("deeplabv3"), (160, 96), 19).profile(spec)
    exact = profile_exact(spec, T("deeplabv3"), (160, 96), 19)
    assert (lut.madds_parts, lut.params_parts) == (exact.madds_parts, exact.params_parts)


def test_expected_cost_of_one_hot_alpha_is_the_exact_cost() -> None:
    space = builtin_space("fna-seg")
    lut = Lut(space, T("deeplabv3"), (96, 64), 19).build()
    rng = random.Random(0)
    path = NetPath({(s, i): rng.randrange(len(c)) for s, i, c in op_choices(space)})
    alpha = {(s, i): torch.nn.functional.one_hot(torch.tensor(path.ops[(s, i)]), len(c)).double()
             for s, i, c in op_choices(space)}
    arch = path_to_arch(space, path)
    assert float(lut.expected_madds(alpha, {})) == profile_exact(arch, T("deeplabv3"), (96, 64),
                                                                 19).madds


def test_task_declares_fna_segmentation_recipes() -> None:
    task = get_task("deeplabv3")
    d = task.search_defaults
    assert (d.epochs, d.warmup_epochs, d.lam, d.tau) == (80, 30, 9e-3, 45.0)
    assert (d.arch_lr, d.arch_weight_decay, d.arch_fraction, d.schedule) == \
        (1e-3, 4e-5, 0.2, "cosine")
    assert d.size == (321, 321) and d.augment == "search"
    assert task.recipe.size == (769, 769) and task.default_augment == "finetune"
    assert (task.recipe.optimizer, task.recipe.momentum, task.recipe.weight_decay) == \
        ("sgd", 0.9, 5e-4)
    assert task.output_stride == 16 and not task.uses_head_conv


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from torchvision.models import mobilenet_v2

    from fnacli.checkpoint import save_checkpoint
    from fnacli.nn.backbone import Backbone
    from fnacli.segmentation.synthetic import SegSynthConfig, generate

    w = tmp_path_factory.mktemp("deeplab")
    generate(w / "data", SegSynthConfig(train=8, val=2, width=96))
    torch.manual_seed(0)
    torch.save(mobilenet_v2(width_mult=0.35).state_dict(), w / "seed.pth")
    spec = mobilenetv2(0.35)
    save_checkpoint(w / "backbone.safetensors", Backbone(spec).state_dict(), "backbone",
                    {"spec": spec.to_dict()})
    return w


TINY = ["--size", "64", "--batch-size", "2", "--epochs", "1", "--workers", "0",
        "--device", "cpu"]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["deeplabv3", "deeplabv3plus"])
def test_pipeline_expand_search_derive_remap_finetune_eval(run_cli, work: Path,
                                                           task: str) -> None:
    """The whole pipeline for each segmentation task (the same data, recipe and checks)."""
    w, data = work / task, work / "data"
    w.mkdir(exist_ok=True)
    assert run_cli(["expand", work / "seed.pth", "--space", "fna-seg", "-o",
                    w / "super.safetensors"])[0] == 0
    code, out, err = run_cli(["search", w / "super.safetensors", "--task", task,
                              "--data", data, "-o", w / "searched.safetensors",
                              "--warmup-epochs", "0", "--json", *TINY])
    assert code == 0, err
    found = json.loads(out)
    assert found["arch_steps"] > 0 and found["task"] == task
    # 20% of the 8 training images hold out for α/β: 6 for weights -> 3 steps of 2
    assert found["steps"] == 3
    code, arch, _ = run_cli(["derive", w / "searched.safetensors"])
    assert code == 0
    code, _, err = run_cli(["remap", work / "seed.pth", "--spec", "-", "-o",
                            w / "target.safetensors"], stdin=arch)
    assert code == 0, err
    code, out, err = run_cli(["finetune", w / "target.safetensors", "--task", task,
                              "--data", data, "-o", w / "final.safetensors",
                              "--bn-recalibrate", "1", "--inference", "slide", "--json",
                              *TINY])
    assert code == 0, err
    assert json.loads(out)["steps"] == 4 and json.loads(out)["bn_recalibrated_batches"] == 1
    from fnacli.checkpoint import read_checkpoint

    ckpt = read_checkpoint(w / "final.safetensors")
    assert ckpt.kind == "segmenter"
    assert ckpt.meta["inference"] == {"mode": "slide", "window": [64, 64]}
    code, out, err = run_cli(["eval", w / "final.safetensors", "--data", data, "--json",
                              "--per-class"])
    assert code == 0, err
    metrics = json.loads(out)
    assert set(metrics) == {"mIoU", "aAcc", "mAcc", "per_class_IoU"}
    per_class = metrics["per_class_IoU"]
    assert 0 <= metrics["mIoU"] <= 1 and len(per_class) == 19
    assert isinstance(per_class["road"], float)  # in every synthetic image
    # a class neither in the split nor predicted has no IoU (JSON null), not 0
    assert all(v is None or 0 <= v <= 1 for v in per_class.values())
    assert "mean IoU over classes" in err
    # boxes asked of a segmenter: refused before any work, nothing written
    code, _, err = run_cli(["eval", w / "final.safetensors", "--data", data, "--detections",
                            w / "dets.json"])
    assert code == 2 and "--detections" in err and task in err
    assert len(err.strip().splitlines()) == 1 and not (w / "dets.json").exists()
    # a segmenter exports to ONNX: its logits, checked against PyTorch by onnxruntime
    code, out, err = run_cli(["export", w / "final.safetensors", "-o", w / "seg.onnx",
                              "--size", "64", "--json"])
    assert code == 0, err
    summary = json.loads(out)
    assert (w / "seg.onnx").stat().st_size > 0 and summary["postprocess"] is False
    assert summary["parity"]["ok"] and "detections" not in err.splitlines()[0]
    # a segmenter continues fine-tuning; the task comes from the checkpoint
    code, _, err = run_cli(["finetune", w / "final.safetensors", "--data", data, "-o",
                            w / "more.safetensors", *TINY])
    assert code == 0, err


@pytest.mark.slow
@pytest.mark.parametrize("task", ["deeplabv3", "deeplabv3plus-os8"])
def test_oneshot_search_scores_on_held_out_training_images(run_cli, work: Path,
                                                           task: str) -> None:
    w = work
    if not (w / "super.safetensors").exists():
        run_cli(["expand", w / "seed.pth", "--space", "fna-seg", "-o", w / "super.safetensors"])
    code, out, err = run_cli(["search", w / "super.safetensors", "--task", task,
                              "--strategy", "random", "--data", w / "data", "-o",
                              w / f"oneshot-{task}.safetensors", "--candidates", "2",
                              "--calib-images", "2", "--calib-batch", "2", "--json", *TINY])
    assert code == 0, err
    res = json.loads(out)
    assert res["metric"] == "mIoU" and res["evaluated"] == 2
    assert "(2 held out for fitness)" in err  # 20% of the 8 training images, never val


def _break(root: Path, how: str) -> Path:
    label = root / "gtFine" / "train" / "synth" / "synth_000001_000019_gtFine_labelIds.png"
    if how == "id":
        arr = np.asarray(Image.open(label)).copy()
        arr[0, 0] = 77
        Image.fromarray(arr).save(label)
    elif how == "size":
        Image.open(label).resize((40, 20), Image.Resampling.NEAREST).save(label)
    else:
        label.unlink()
    return label


@pytest.mark.parametrize(("how", "says"), [("id", "label id 77 is not a Cityscapes label id"),
                                           ("size", "mask is 40x20 but its image"),
                                           ("missing", "missing label file")])
def test_bad_segmentation_data_exits_2_naming_the_file(run_cli, work: Path, tmp_path: Path,
                                                       how: str, says: str) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(work / "data", data)
    label = _break(data, how)
    code, out, err = run_cli(["finetune", work / "backbone.safetensors", "--task", "deeplabv3",
                              "--data", data, "-o", tmp_path / "x.safetensors", *TINY])
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and says in lines[0]
    named = label.name if how != "missing" else label.name.replace("_gtFine_labelIds",
                                                                   "_leftImg8bit")
    assert named in lines[0] and "Traceback" not in err
