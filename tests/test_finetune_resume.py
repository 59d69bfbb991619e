"""Resuming a fine-tune: a finished run extended with more epochs (as timm and detectron2
allow), TensorBoard keeping the step it resumed at, and the closing "last loss" being the
last logged value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_finetune import world  # noqa: F401 - the module's fixture

TRAIN = ["--task", "ssdlite", "--batch-size", "2", "--size", "96", "--workers", "0",
         "--threads", "1", "--seed", "3", "--log-every", "3", "--device", "cpu"]


def _lines(path: Path, event: str) -> list[dict]:
    rows = [json.loads(x) for x in Path(f"{path}.metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["event"] == event]


def test_a_finished_run_extends_with_more_epochs(world: dict, run_cli,  # noqa: F811
                                                 tmp_path: Path) -> None:
    out = tmp_path / "f.safetensors"
    base = ["finetune", world["target"], "--data", world["data"], "-o", out, *TRAIN]
    code, stdout, err = run_cli([*base, "--epochs", "1", "--json"])
    assert code == 0, err
    first = json.loads(stdout)
    assert first["steps"] == 4 and first["finished"]
    # the closing "last loss" is the last logged value (the average the last line wrote)
    assert first["last_loss"] == pytest.approx(_lines(out, "train")[-1]["loss"])
    assert f"last loss {_lines(out, 'train')[-1]['loss']:.4f}" in err
    before = out.read_bytes()
    code, stdout, err = run_cli([*base, "--epochs", "2", "--resume", "--json"])
    assert code == 0, err
    again = json.loads(stdout)
    assert again["steps"] == 8 and again["epochs"] == 2 and again["finished"]
    assert out.read_bytes() != before
    assert [r["step"] for r in _lines(out, "train")] == [3, 4, 6, 8]  # one run's lines
    code, _, err = run_cli([*base, "--epochs", "1", "--resume"])  # fewer epochs: refused
    assert code == 2 and "epochs=2" in err and "epochs=1" in err


def test_tensorboard_keeps_the_step_a_run_resumed_at(world: dict, run_cli,  # noqa: F811
                                                     tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, tb = tmp_path / "f.safetensors", tmp_path / "tb"
    base = ["finetune", world["target"], "--data", world["data"], "-o", out, *TRAIN,
            "--epochs", "2", "--eval-every", "1", "--log-every", "2", "--tensorboard", tb]
    code, _, err = run_cli([*base, "--stop-after", "4"])  # stops after epoch 1 (step 4)
    assert code == 0 and "stopped after 4 steps" in err, err
    code, _, err = run_cli([*base, "--resume"])
    assert code == 0, err
    acc = EventAccumulator(str(tb))
    acc.Reload()
    assert [e.step for e in acc.Scalars("val/AP")] == [4, 8]
    assert [e.step for e in acc.Scalars("train/loss")] == [2, 4, 6, 8]
