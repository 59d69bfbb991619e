"""End to end through the CLI at a tiny size: synth data -> remap a torchvision MobileNetV2
0.35 seed -> finetune -> eval; plus exact --resume, continuing a detector, and the errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import assert_stem_bn_recalibrated

from fnacli.checkpoint import read_checkpoint
from fnacli.detection.evaluate import STAT_NAMES


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from fnacli.checkpoint import load_seed, save_checkpoint
    from fnacli.detection.synthetic import SynthConfig, generate
    from fnacli.remap import remap_state
    from fnacli.spec import mobilenetv2

    root = tmp_path_factory.mktemp("ft")
    generate(root / "data", SynthConfig(train=8, val=4, size=96, classes=3, seed=0))
    torch.manual_seed(0)
    seed = root / "mbv2_035.pth"
    torch.save(torchvision.models.mobilenet_v2(width_mult=0.35).state_dict(), seed)
    state, seed_spec = load_seed(str(seed))
    target_spec = mobilenetv2(0.35)
    remapped, _ = remap_state(state, seed_spec, target_spec)
    target = root / "target.safetensors"
    save_checkpoint(target, remapped, "backbone", {"spec": target_spec.to_dict()})
    return {"root": root, "data": root / "data", "seed": seed, "target": target}


TRAIN = ["--task", "ssdlite", "--epochs", "1", "--batch-size", "2", "--size", "96",
         "--workers", "0", "--seed", "3"]


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path).tensors


def test_remap_finetune_eval_and_exact_resume(world: dict[str, Path],
                                              run_cli) -> None:
    root, data = world["root"], world["data"]
    # the remap step through the CLI too (torchvision .pth seed)
    code, _, err = run_cli(["remap", str(world["seed"]), "--spec", "mobilenetv2-0.35", "-o",
                          str(root / "cli_target.safetensors")])
    assert code == 0, err
    assert read_checkpoint(root / "cli_target.safetensors").kind == "backbone"

    full = root / "full.safetensors"
    code, out, err = run_cli(["finetune", str(root / "cli_target.safetensors"), "--data",
                            str(data), "-o", str(full), *TRAIN, "--json"])
    assert code == 0, err
    summary = json.loads(out)
    assert summary["steps"] == 4 and summary["finished"]  # 8 images / batch 2
    ckpt = read_checkpoint(full)
    assert ckpt.kind == "detector" and ckpt.meta["task"] == "ssdlite"
    assert ckpt.meta["categories"] == [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"},
                                       {"id": 3, "name": "triangle"}]
    assert ckpt.meta["size"] == [96, 96] and ckpt.meta["num_classes"] == 3
    metrics = [json.loads(x) for x in Path(f"{full}.metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 4 and math.isfinite(metrics[-1]["loss"])

    # interrupted after 3 steps (mid-epoch), then resumed: bit-identical weights
    part = root / "part.safetensors"
    code, out, err = run_cli(["finetune", str(world["target"]), "--data", str(data), "-o",
                            str(part), *TRAIN, "--stop-after", "3", "--json"])
    assert code == 0 and json.loads(out)["finished"] is False and not part.exists()
    code, _, err = run_cli(["finetune", str(world["target"]), "--data", str(data), "-o",
                          str(part), *TRAIN, "--resume"])
    assert code == 0, err
    a, b = _tensors(full), _tensors(part)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # eval: 12 named finite numbers on stdout, table on stderr, detections file
    dets = root / "dets.json"
    code, out, err = run_cli(["eval", str(full), "--data", str(data), "--json", "--per-class",
                            "--detections", str(dets), "--workers", "0"])
    assert code == 0, err
    stats = json.loads(out)
    assert list(stats)[:12] == list(STAT_NAMES)
    assert all(math.isfinite(stats[k]) and -1 <= stats[k] <= 1 for k in STAT_NAMES)
    assert set(stats["per_class_AP"]) == {"circle", "square", "triangle"}
    assert "AP @[IoU=0.50:0.95]" in err
    detections = json.loads(dets.read_text())
    assert detections and {d["category_id"] for d in detections} <= {1, 2, 3}
    assert {d["image_id"] for d in detections} <= {1, 2, 3, 4}


def test_continue_a_detector_with_bn_recalibration(world: dict[str, Path],
                                                   run_cli) -> None:
    root, data = world["root"], world["data"]
    first = root / "first.safetensors"
    code, _, err = run_cli(["finetune", str(world["target"]), "--data", str(data), "-o",
                          str(first), *TRAIN, "--batch-size", "4", "--augment", "none"])
    assert code == 0, err
    second = root / "second.safetensors"
    code, out, err = run_cli(["finetune", str(first), "--data", str(data), "-o", str(second),
                            "--epochs", "1", "--batch-size", "4", "--workers", "0",
                            "--bn-recalibrate", "2", "--json"])
    assert code == 0, err
    assert json.loads(out)["bn_recalibrated_batches"] == 2
    # two batches of 4 are all 8 training images (the mean does not depend on their order)
    from fnacli.detection.data import find_split, load_split
    from fnacli.model_checkpoint import load_detector

    train = load_split(find_split(data, "train"), train=False, label_offset=1)
    assert len(train) == 8
    det, _ = load_detector(second)
    assert_stem_bn_recalibrated(det, [train[i][0] for i in range(8)], batches=2)
    meta = read_checkpoint(second).meta
    assert meta["size"] == [96, 96] and meta["task"] == "ssdlite"  # taken from the detector
    a, b = _tensors(first), _tensors(second)
    assert not torch.equal(a["head.classification_head.module_list.0.1.weight"],
                           b["head.classification_head.module_list.0.1.weight"])
    # a detector of another task cannot be continued as this one
    code, _, err = run_cli(["finetune", str(first), "--data", str(data), "-o",
                          str(root / "x.safetensors"), "--task", "retinanet"])
    assert code == 2 and "a ssdlite detector, but --task is retinanet" in err


def test_retinanet_trains_and_evaluates(world: dict[str, Path],
                                        run_cli) -> None:
    root, data = world["root"], world["data"]
    out_path = root / "retina.safetensors"
    code, out, err = run_cli(["finetune", str(world["target"]), "--task", "retinanet", "--data",
                          str(data), "-o", str(out_path), "--epochs", "1", "--batch-size", "8",
                          "--size", "96", "--workers", "0", "--eval-every", "1", "--json"])
    assert code == 0, err
    assert "head-conv tensors not used by retinanet" in " ".join(err.split())
    epoch = [json.loads(x) for x in Path(f"{out_path}.metrics.jsonl").read_text().splitlines()
             if '"epoch"' in x and '"AP"' in x]
    assert len(epoch) == 1 and math.isfinite(epoch[0]["AP"])
    # the result carries the final evaluation: the metrics file's last epoch line
    final = json.loads(out)["metrics"]
    assert final["epoch"] == 1 and final["AP"] == epoch[0]["AP"]
    code, out, err = run_cli(["eval", str(out_path), "--data", str(data), "--json",
                            "--workers", "0"])
    assert code == 0, err
    assert list(json.loads(out)) == list(STAT_NAMES)
    # explicit files: --val-ann/--val-images, and the old --ann/--images (hidden aliases)
    ann = str(data / "annotations" / "instances_val.json")
    for flags in (["--val-ann", ann, "--val-images", str(data / "val")],
                  ["--ann", ann, "--images", str(data / "val")]):
        code, again, err = run_cli(["eval", str(out_path), *flags, "--json", "--workers", "0"])
        assert code == 0, err
        assert json.loads(again) == json.loads(out)


def test_command_line_errors_exit_2_with_one_line(world: dict[str, Path],
                                                  run_cli) -> None:
    root, data = world["root"], world["data"]
    out_path = root / "e.safetensors"

    def error(args: list[str]) -> str:
        code, _, err = run_cli(args)
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fnacli: error: "), err
        return lines[0]

    base = ["finetune", str(world["target"]), "--data", str(data), "-o", str(out_path)]
    assert "--task: required when TARGET is a backbone" in error(base)
    assert "a PyTorch pickle, not an fnacli checkpoint" in error(
        ["finetune", str(world["seed"]), "--task", "ssdlite", "--data", str(data), "-o",
         str(out_path)])
    assert "no training state to resume from" in error([*base, *TRAIN, "--resume"])
    assert "no annotations/instances_train" in error(
        ["finetune", str(world["target"]), "--data", str(root), "-o", str(out_path), *TRAIN])
    out_path.write_text("x")
    assert "already exists (use --force" in error([*base, *TRAIN])
    out_path.unlink()
    Path(f"{out_path}.ckpt").write_text("x")
    assert "exists from an earlier run" in error([*base, *TRAIN])
    assert "--size: expected N or WxH" in error([*base, *TRAIN, "--size", "abc"])
