"""The searches under torchrun: two gloo processes on CPU run the differentiable search and
the one-shot supernet training to the end (one path per step leaves most candidates
without gradients, which DDP must be told about), and rank 0 writes usable outputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fnacli.checkpoint import read_checkpoint

# MobileNetV2's seven stages (a torchvision seed remaps onto it), tiny widths, with op,
# depth (skip) and channel choices so every kind of candidate is in play
SPACE = {"schema": "fnacli/space@1", "stem": {"out": 16, "stride": 2},
         "stages": [{"out": 8, "stride": 1, "ops": ["k3_e1"]},
                    {"out": [8, 12], "stride": 2, "layers": 2, "ops": ["k3_e3", "k5_e3", "skip"]},
                    {"out": 16, "stride": 2, "ops": ["k3_e6", "k3_e6"]},
                    {"out": 24, "stride": 2, "ops": ["k3_e6"]},
                    {"out": 32, "stride": 1, "ops": ["k3_e6"]},
                    {"out": [40, 48], "stride": 2, "layers": 1, "ops": ["k3_e3", "k3_e6"]},
                    {"out": 64, "stride": 1, "ops": ["k3_e6"]}],
         "head": {"out": 128}}
COMMON = ["--task", "ssdlite", "--size", "64", "--batch-size", "4", "--workers", "0",
          "--device", "cpu", "--seed", "0", "--epochs", "1"]


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", FNACLI_CACHE_DIR=str(root / "cache"))
    return env


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from torchvision.models import mobilenet_v2

    from fnacli.detection.synthetic import SynthConfig, generate

    root = tmp_path_factory.mktemp("ddp_search")
    generate(root / "data", SynthConfig(train=16, val=4, size=64, classes=2, seed=0))
    torch.manual_seed(0)
    torch.save(mobilenet_v2(width_mult=0.35).state_dict(), root / "seed.pth")
    (root / "space.json").write_text(json.dumps(SPACE))
    r = subprocess.run([sys.executable, "-m", "fnacli", "expand", str(root / "seed.pth"),
                        "--space", str(root / "space.json"), "-o", str(root / "super.safetensors")],
                       capture_output=True, text=True, env=_env(root))
    assert r.returncode == 0, r.stderr
    return {"root": root, "data": root / "data", "super": root / "super.safetensors"}


def _torchrun(world: dict[str, Path], *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "fnacli", "search", str(world["super"]), "--data", str(world["data"]),
           *COMMON, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env=_env(world["root"]))


def test_differentiable_search_under_torchrun(world: dict[str, Path]) -> None:
    out = world["root"] / "searched.safetensors"
    r = _torchrun(world, "--warmup-epochs", "0", "--arch-every", "1", "--arch-lr", "0.1",
                  "-o", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    ck = read_checkpoint(out)
    assert ck.kind == "searched"
    alphas = [t for k, t in ck.tensors.items() if k.startswith("arch.alpha.")]
    assert alphas and max(t.abs().max().item() for t in alphas) > 0.01  # α/β moved
    d = subprocess.run([sys.executable, "-m", "fnacli", "derive", str(out)],
                       capture_output=True, text=True)
    assert d.returncode == 0 and json.loads(d.stdout)["schema"] == "fnacli/arch@1"


def _fixed_layout_data(world: dict[str, Path]) -> Path:
    """The training split with one box layout in every image (different pictures and labels):
    SSD normalises its loss by the matched anchors of each process's batch, which then are the
    same for a half batch as for the whole one (as in test_distributed.py)."""
    root = world["root"] / "layout"
    if not root.exists():
        shutil.copytree(world["data"], root)
        ann = root / "annotations/instances_train.json"
        doc = json.loads(ann.read_text())
        layout = [[4, 6, 24, 20], [34, 30, 26, 28]]
        cats = [c["id"] for c in doc["categories"]]
        doc["annotations"] = [
            {"id": 2 * im["id"] + k, "image_id": im["id"], "bbox": box, "iscrowd": 0,
             "category_id": cats[(im["id"] + k) % len(cats)], "area": box[2] * box[3]}
            for im in doc["images"] for k, box in enumerate(layout)]
        ann.write_text(json.dumps(doc))
    return root


def test_oneshot_supernet_training_under_torchrun(world: dict[str, Path]) -> None:
    root = world["root"]
    data = _fixed_layout_data(world)
    # CPU processes cannot share BatchNorm statistics (SyncBatchNorm needs GPUs): --freeze-bn;
    # SGD, since RMSprop's g / sqrt(E[g^2]) turns float noise in tiny gradients into full steps
    args = ["--strategy", "evolution", "--train-only", "--augment", "none", "--data", str(data),
            "--freeze-bn", "--optimizer", "sgd", "--lr", "0.05"]
    one, two = root / "trained1.safetensors", root / "trained2.safetensors"
    r1 = subprocess.run([sys.executable, "-m", "fnacli", "search", str(world["super"]), *COMMON,
                         *args, "--trained", str(one), "-o", str(root / "evo1.safetensors")],
                        capture_output=True, text=True, timeout=300, env=_env(root))
    assert r1.returncode == 0, r1.stderr[-3000:]
    r2 = _torchrun(world, *args, "--trained", str(two), "-o", str(root / "evo2.safetensors"))
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert read_checkpoint(two).kind == "supernet"
    # rank 0's weights (DDP keeps the ranks equal) equal one process on the same global batch:
    # both ranks ran, sampled the same single path at every step and averaged their gradients
    # (a rank alone sees other labels). Tolerance: float summation order, far below what
    # training moved.
    a, b = read_checkpoint(one).tensors, read_checkpoint(two).tensors
    start = read_checkpoint(world["super"]).tensors
    assert a.keys() == b.keys()
    moved = diff = 0.0
    for k in a:
        if not a[k].is_floating_point():
            continue
        assert torch.allclose(a[k].double(), b[k].double(), atol=1e-5, rtol=1e-4), k
        diff = max(diff, (a[k].double() - b[k].double()).abs().max().item())
        if k in start and start[k].shape == a[k].shape:
            moved = max(moved, (a[k].double() - start[k].double()).abs().max().item())
    assert moved > 100 * diff, (moved, diff)
