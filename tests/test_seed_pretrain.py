"""The quickstart's seed: synthetic classification data and a short pre-training run."""

import math
import subprocess
import sys

import torch

from fnacli.seed_pretrain import COLOURS, NUM_CLASSES, make_batch, pretrain


def test_batches_are_deterministic_and_coloured_by_label():
    x1, y1 = make_batch(16, 48, torch.Generator().manual_seed(3))
    x2, y2 = make_batch(16, 48, torch.Generator().manual_seed(3))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.shape == (16, 3, 48, 48) and 0 <= x1.min() and x1.max() <= 1
    assert int(y1.max()) < NUM_CLASSES
    # the shape's colour is the label's colour: the image centre region holds the most
    # saturated pixel of that colour's dominant channel
    for img, label in zip(x1, y1, strict=True):
        dominant = max(range(3), key=lambda c: COLOURS[int(label) % len(COLOURS)][c])
        pixels = img.flatten(1)
        best = pixels[:, pixels[dominant].argmax()]
        assert best[dominant] == best.max()


def test_short_pretraining_learns_something():
    model, res = pretrain(width=0.35, size=40, seconds=1e9, max_steps=80, batch_size=16, lr=0.05)
    assert res.steps == 80
    assert res.train_loss < math.log(NUM_CLASSES)  # below chance-level cross-entropy
    assert res.val_accuracy > 1.5 / NUM_CLASSES
    assert set(model.state_dict()) >= {"features.0.0.weight", "classifier.1.weight"}


def test_cli_writes_a_torchvision_state_dict(tmp_path):
    out = tmp_path / "seed.pth"
    cmd = [sys.executable, "-m", "fnacli", "pretrain-seed", str(out), "--width", "0.35",
           "--size", "32", "--max-steps", "2", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    sd = torch.load(out, weights_only=True)
    from torchvision.models import mobilenet_v2

    mobilenet_v2(width_mult=0.35, num_classes=NUM_CLASSES).load_state_dict(sd)
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_cli_rejects_an_empty_batch(tmp_path, run_cli):
    code, out, err = run_cli(["pretrain-seed", str(tmp_path / "s.pth"), "--batch-size", "0"])
    assert code == 2 and out == "" and "--batch-size" in err and "Traceback" not in err
    assert not (tmp_path / "s.pth").exists()
