"""What a person reads: plain, unwrapped log lines when stderr is a file, a live bar that keeps
progress and ETA at 80 columns, TensorBoard event files, formatted numbers, epochs from 1."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fnacli.progress import TrainLogger, fmt, fmt_duration


def test_numbers_are_formatted_for_people() -> None:
    assert fmt(11.473865509033203) == "11.47"
    assert fmt(0.000125) == "0.000125" and fmt(1.23456e-5) == "1.235e-05"
    assert fmt(3) == "3" and fmt("x") == "x"
    assert fmt_duration(3725.4) == "1:02:05" and fmt_duration(90061) == "1d 1:01:01"


def test_plain_lines_go_to_the_fnacli_logger_not_to_stderr(
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Off a terminal a training loop's lines are library messages: the ``fnacli`` logger
    carries them (the CLI shows them on stderr), nothing is written to stderr directly."""
    logger = logging.getLogger("fnacli")  # as a library caller has it: no CLI handler
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "propagate", True)
    with caplog.at_level(logging.INFO, logger="fnacli"):
        with TrainLogger(20, 0, "finetune ssdlite", True, epochs=2, terminal=False) as log:
            log.step()
            log.report(1, 1, {"loss": 1.5}, lr=0.01)
            log.epoch_end(1, 10, {"AP": 0.25})
    assert capsys.readouterr().err == ""
    lines = [r.getMessage() for r in caplog.records if r.name == "fnacli"]
    assert lines[0].startswith("finetune ssdlite: epoch 1/2 step 1/20 (5%) loss 1.5 lr 0.01")
    assert lines[1].startswith("finetune ssdlite: epoch 1/2 done at step 10/20: AP 0.25")


def test_live_bar_keeps_progress_and_eta_at_80_columns() -> None:
    from rich.console import Console

    log = TrainLogger(300, 0, "finetune retinanet", True, epochs=12, images_per_step=8,
                      stream=io.StringIO(), terminal=True)
    for _ in range(3):
        log.step("epoch 1/12 loss 11.47 lr 0.00125 E[MAdds] 480.2M argmax 512.3M "
                 "16:33 24:3636 32:363636 64:3636 96:363 160:363 320:6")
    out = io.StringIO()
    Console(file=out, width=80, force_terminal=False).print(
        log.bar.make_tasks_table(log.bar.tasks))
    lines = [x for x in out.getvalue().splitlines() if x.strip()]
    assert len(lines) == 1 and len(lines[0]) <= 80, lines  # one row, cut, not wrapped
    row = lines[0]
    assert "3/300" in row and "eta" in row
    assert re.search(r"eta \d+:\d\d:\d\d", row), row  # the remaining time itself
    assert "epoch 1/12" in row  # the status text starts, cut where the width ends


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import torchvision

    from fnacli.checkpoint import load_seed, save_checkpoint
    from fnacli.detection.synthetic import SynthConfig, generate
    from fnacli.remap import remap_state
    from fnacli.spec import mobilenetv2

    root = tmp_path_factory.mktemp("logs")
    generate(root / "data", SynthConfig(train=8, val=2, size=64, classes=2, seed=0))
    torch.manual_seed(0)
    seed = root / "mbv2_035.pth"
    torch.save(torchvision.models.mobilenet_v2(width_mult=0.35).state_dict(), seed)
    state, seed_spec = load_seed(str(seed))
    remapped, _ = remap_state(state, seed_spec, mobilenetv2(0.35))
    target = root / "target.safetensors"
    save_checkpoint(target, remapped, "backbone", {"spec": mobilenetv2(0.35).to_dict()})
    return {"root": root, "data": root / "data", "target": target}


def test_finetune_with_stderr_to_a_file_writes_plain_lines_and_tensorboard(
        world: dict[str, Path]) -> None:
    root = world["root"]
    out, log_path, tb = root / "final.safetensors", root / "job.log", root / "tb"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "80",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "FNACLI_TENSORBOARD": str(tb)}  # the environment variable, not the option
    with open(log_path, "w") as err:
        proc = subprocess.run(
            [sys.executable, "-m", "fnacli", "finetune", str(world["target"]), "--data",
             str(world["data"]), "-o", str(out), "--task", "ssdlite", "--epochs", "2",
             "--batch-size", "2", "--size", "64", "--workers", "0", "--threads", "1",
             "--eval-every", "1", "--log-every", "2", "--device", "cpu"],
            stdout=subprocess.PIPE, stderr=err, text=True, env=env, timeout=600)
    text = log_path.read_text()
    assert proc.returncode == 0, text
    assert proc.stdout == ""  # the result is a file
    lines = text.splitlines()
    steps = [x for x in lines if re.match(r"finetune ssdlite: epoch \d/2 step \d/8 ", x)]
    # every 2 steps (and each epoch's last): steps 2, 4, 6, 8, each one whole line with the
    # loss terms, lr, throughput and ETA
    assert [int(re.search(r"step (\d)/8", x).group(1)) for x in steps] == [2, 4, 6, 8], text
    for x in steps:
        assert re.search(r" loss [\d.e+-]+ bbox_regression [\d.e+-]+ classification "
                         r"[\d.e+-]+ lr [\d.e+-]+ [\d.e+-]+ img/s eta \d+:\d\d:\d\d$", x), x
    assert steps[0].startswith("finetune ssdlite: epoch 1/2 step 2/8 (25%)")
    epochs = [x for x in lines if " done at step " in x]
    assert len(epochs) == 2 and epochs[0].startswith("finetune ssdlite: epoch 1/2 done at "
                                                     "step 4/8: AP "), text
    assert "elapsed" in epochs[1] and "eta 0:00:00" in epochs[1]
    # no 11.473865509033203: at most 5 significant digits anywhere
    assert not re.search(r"(?<![\d.])(?:[1-9]\d*\.\d{5,}|0\.0*[1-9]\d{5,})", text), text
    assert not any("━" in x for x in lines) and "" not in lines  # no bar (or its remains)
    summary = [x for x in lines if x.startswith("detector: ")]
    assert len(summary) == 1 and str(out) in summary[0]  # one line, however long the path

    # epochs counted from 1 in the metrics file too
    rows = [json.loads(x) for x in Path(f"{out}.metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["event"] == "epoch"] == [1, 2]
    assert {r["epoch"] for r in rows if r["event"] == "train"} == {1, 2}

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert list(tb.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(tb))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/classification", "train/bbox_regression",
            "val/AP", "val/AP50"} <= tags, tags
    assert [e.step for e in acc.Scalars("train/loss")] == [2, 4, 6, 8]
    assert [e.step for e in acc.Scalars("val/AP")] == [4, 8]


def test_tensorboard_without_the_package_fails_before_any_work(monkeypatch, tmp_path) -> None:
    import importlib.util

    from fnacli.errors import UserError
    from fnacli.progress import tensorboard_dir

    monkeypatch.delenv("FNACLI_TENSORBOARD", raising=False)
    assert tensorboard_dir(None) is None
    monkeypatch.setenv("FNACLI_TENSORBOARD", str(tmp_path / "env"))
    assert tensorboard_dir(None) == tmp_path / "env"
    assert tensorboard_dir(tmp_path / "opt") == tmp_path / "opt"  # the option wins
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(UserError, match=r"fnacli\[tensorboard\]"):
        tensorboard_dir(tmp_path / "opt")
