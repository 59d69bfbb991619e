"""Two gloo processes under torchrun train to the same weights as one process on the same
global batch.

What makes the two runs comparable (docs/distributed.md):
- BatchNorm: SyncBatchNorm needs GPUs, so on CPU each process would normalise with its own
  half-batch statistics; ``--freeze-bn`` uses the running statistics in both runs.
- Loss normalisation: torchvision's SSD divides the batch's summed loss by the number of
  matched anchors *in that process's batch*, and DDP averages gradients over processes. The
  two agree when every image has the same number of matched anchors, so all training
  images here carry the same box layout (different pictures and labels), and
  ``--augment none`` keeps it that way.
Remaining differences are float summation order: tolerance 1e-5, against updates that are
orders of magnitude larger.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fnacli.checkpoint import read_checkpoint, save_checkpoint
from fnacli.detection.synthetic import SynthConfig, generate
from fnacli.nn.backbone import Backbone
from fnacli.spec import mobilenetv2

ARGS = ["--task", "ssdlite", "--epochs", "1", "--batch-size", "4", "--size", "64",
        "--workers", "0", "--augment", "none", "--freeze-bn", "--optimizer", "sgd",
        "--lr", "0.1", "--schedule", "cosine", "--seed", "1"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ddp")
    generate(root / "data", SynthConfig(train=8, val=2, size=64, seed=2))
    ann = root / "data/annotations/instances_train.json"
    doc = json.loads(ann.read_text())
    layout = [[4, 6, 24, 20], [34, 30, 26, 28]]
    doc["annotations"] = [
        {"id": 2 * im["id"] + k, "image_id": im["id"], "category_id": 1 + (im["id"] + k) % 3,
         "bbox": box, "area": box[2] * box[3], "iscrowd": 0}
        for im in doc["images"] for k, box in enumerate(layout)]
    ann.write_text(json.dumps(doc))
    torch.manual_seed(0)
    spec = mobilenetv2(0.35)
    target = root / "target.safetensors"
    save_checkpoint(target, Backbone(spec).state_dict(), "backbone", {"spec": spec.to_dict()})
    return {"root": root, "data": root / "data", "target": target}


def _finetune(cmd: list[str], out: Path, setup: dict[str, Path]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"  # two processes on a small machine
    return subprocess.run([*cmd, "finetune", str(setup["target"]), "--data",
                           str(setup["data"]), "-o", str(out), *ARGS, "--json"],
                          capture_output=True, text=True, timeout=300, env=env)


def test_two_gloo_processes_match_one_process(setup: dict[str, Path]) -> None:
    root = setup["root"]
    one, two = root / "one.safetensors", root / "two.safetensors"
    r1 = _finetune([sys.executable, "-m", "fnacli"], one, setup)
    assert r1.returncode == 0, r1.stderr
    r2 = _finetune([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc-per-node", "2", "-m", "fnacli"], two, setup)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "2 processes" in " ".join(r2.stderr.split())
    # only rank 0 prints the result
    assert [json.loads(x)["steps"] for x in r2.stdout.splitlines() if x.startswith("{")] == [2]
    a, b = read_checkpoint(one).tensors, read_checkpoint(two).tensors
    init = Backbone(mobilenetv2(0.35)).state_dict()
    start = read_checkpoint(setup["target"]).tensors
    assert init.keys() == start.keys()
    moved = diff = 0.0
    for k in a:
        assert torch.allclose(a[k].double(), b[k].double(), atol=1e-5, rtol=1e-4), k
        diff = max(diff, (a[k].double() - b[k].double()).abs().max().item())
        body = k.removeprefix("backbone.body.")
        if k.startswith("backbone.body.") and a[k].is_floating_point():
            moved = max(moved, (a[k] - start[body]).abs().max().item())
    # the runs trained, by far more than they differ: the agreement is not trivial
    assert moved > 100 * diff, (moved, diff)
