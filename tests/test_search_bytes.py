"""The differentiable search stopped mid-way and resumed writes the same bytes as one run
without a stop: the searched checkpoint byte for byte, and the metrics file line for line
(less its wall-clock ``seconds``). Stops fall mid-epoch during warm-up (an unlogged loss
window in the state), at an epoch's end, and mid-epoch during the α/β phase (the α/β
optimiser, the arch-step count and the position in the α/β images in the state)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import torchvision_seed

SPACE = {"schema": "fnacli/space@1", "name": "tiny", "stem": {"out": 16, "stride": 2},
         "stages": [{"out": 8, "stride": 1, "ops": ["k3_e1"]},
                    {"out": [8, 12], "stride": 2, "layers": 2, "ops": ["k3_e3", "skip"]},
                    {"out": [16, 24], "stride": 2, "layers": 2, "ops": ["k3_e3", "k5_e6",
                                                                         "skip"]},
                    {"out": [24, 32], "stride": 2, "layers": 2, "ops": ["k3_e3", "skip"]},
                    {"out": 32, "stride": 1, "layers": 1, "ops": ["k3_e3", "skip"]},
                    {"out": [48, 56], "stride": 2, "layers": 1, "ops": ["k3_e3", "skip"]},
                    {"out": 112, "stride": 1, "layers": 1, "ops": ["k3_e6"]}],
         "head": {"out": 256}}
# 3 weight steps an epoch: epoch 1 warm-up, epoch 2 one α/β step after each weight step;
# a metrics line every 4 steps and at each epoch's end (steps 3, 4, 6)
OPTIONS = {"task": "ssdlite", "size": 64, "epochs": 2, "warmup_epochs": 1, "batch_size": 4,
           "arch_every": 1, "arch_lr": 0.1, "lam": 3000.0, "workers": 0, "device": "cpu",
           "seed": 0, "log_every": 4}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    from fnacli.checkpoint import save_checkpoint
    from fnacli.detection.synthetic import SynthConfig, generate
    from fnacli.search.supernet_io import expand
    from fnacli.spec import SpaceSpec

    root = tmp_path_factory.mktemp("bytes")
    generate(root / "data", SynthConfig(train=24, val=2, size=64, classes=2, seed=0))
    seed = root / "mbv2_035.pth"
    torch.save(torchvision_seed(0.35).state_dict(), seed)
    tensors, meta = expand(str(seed), SpaceSpec.from_dict(SPACE), "non-overlapping", 0)
    save_checkpoint(root / "super.safetensors", tensors, "supernet", meta)
    yield {"root": root, "data": root / "data", "super": root / "super.safetensors"}


def run(world: dict[str, Path], out: Path, **given: object) -> object:
    import fnacli

    return fnacli.search_differentiable(fnacli.DifferentiableSearchConfig(
        supernet=world["super"], output=out, data=world["data"], **{**OPTIONS, **given}))


def outcome(out: Path) -> tuple[str, list[dict]]:
    """The searched checkpoint's sha256 and the metrics lines without wall-clock times."""
    lines = [json.loads(x) for x in Path(f"{out}.metrics.jsonl").read_text().splitlines()]
    return (hashlib.sha256(out.read_bytes()).hexdigest(),
            [{k: v for k, v in r.items() if k != "seconds"} for r in lines])


def test_stopped_and_resumed_search_writes_the_uninterrupted_bytes(world: dict[str, Path]
                                                                   ) -> None:
    whole = world["root"] / "whole.safetensors"
    assert run(world, whole).finished
    digest, lines = outcome(whole)
    assert [r["event"] for r in lines] == ["train", "epoch", "train", "arch_step", "arch_step",
                                           "train", "arch_step", "epoch"]
    assert not Path(f"{whole}.ckpt").exists()

    parts = world["root"] / "parts.safetensors"
    # stops after steps 2 (warm-up, steps 1-2 not yet logged), 3 (an epoch's end), 5
    # (after two α/β steps), then to the end
    for stop, resume in ((2, False), (1, True), (2, True)):
        r = run(world, parts, stop_after=stop, resume=resume)
        assert not r.finished and Path(f"{parts}.ckpt").exists()
    assert run(world, parts, resume=True).finished
    got_digest, got_lines = outcome(parts)
    assert got_lines == lines
    assert got_digest == digest
