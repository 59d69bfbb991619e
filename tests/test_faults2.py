"""Fault injection, round 2: side files planted as links, full disks, a closed stdout, odd
names, bounds, weights that are not weights, resumes of another run, and the export's
parity check (issue 25). Each test fails on the code before that issue.

Every refusal is exit 2 with one ``fnacli: error:`` line naming the file, before any work,
and leaves nothing behind; a planted link's target is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import torchvision_seed
from test_faults import ARCH, TINY, error_line, fnacli, tree

FINETUNE = ["--task", "ssdlite", "--epochs", "1", "--batch-size", "2", *TINY]
PRECIOUS = b"precious bytes nobody may overwrite\n"


@pytest.fixture(scope="module")
def world2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A seed, an arch, a remapped backbone and a tiny detection dataset."""
    from fnacli.checkpoint import load_seed, save_checkpoint
    from fnacli.detection.synthetic import SynthConfig, generate
    from fnacli.remap import remap_state
    from fnacli.spec import ArchSpec

    root = tmp_path_factory.mktemp("faults2")
    w = {"root": root, "seed": root / "seed.pth", "arch": root / "arch.json",
         "target": root / "target.safetensors", "data": root / "data"}
    torch.save(torchvision_seed(0.35).state_dict(), w["seed"])
    w["arch"].write_text(json.dumps(ARCH))
    state, seed_spec = load_seed(str(w["seed"]))
    tensors, _ = remap_state(state, seed_spec, ArchSpec.from_dict(ARCH))
    save_checkpoint(w["target"], tensors, "backbone", {"spec": ARCH})
    generate(w["data"], SynthConfig(train=4, val=2, size=64, classes=2, seed=0))
    yield w


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(PRECIOUS)
    return victim


def _remap(w: dict[str, Path], out: Path, *more: object) -> list[object]:
    return ["remap", w["seed"], "--spec", w["arch"], "-o", out, *more]


def _refused(code: int, out: str, err: str, names: Path) -> str:
    assert code == 2, err
    assert out == "" and "Traceback" not in err
    line = error_line(err)
    assert str(names) in line, line
    return line


def _fixed_token(n: int = 10) -> str:
    return "q" * n


# -- 1. side files never follow links ------------------------------------------------------
def test_a_link_planted_at_the_lock_file_is_refused_and_its_target_untouched(
        world2: dict[str, Path], tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    lock = out / ".r.safetensors.lock"
    lock.symlink_to(victim)
    code, stdout, err = fnacli(_remap(world2, out / "r.safetensors"))
    _refused(code, stdout, err, lock)
    assert victim.read_bytes() == PRECIOUS
    assert sorted(p.name for p in out.iterdir()) == [lock.name]
    # a hard link is a regular file, but not one fnacli made: refused as well
    lock.unlink()
    os.link(victim, lock)
    code, stdout, err = fnacli(_remap(world2, out / "r.safetensors"))
    _refused(code, stdout, err, lock)
    assert victim.read_bytes() == PRECIOUS


def test_a_link_planted_at_the_write_probe_is_refused_and_its_target_untouched(
        world2: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fnacli.io as fio

    victim = _victim(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    # the name earlier versions used (predictable: the pid) and the random one, made
    # predictable here to plant a link at it
    (out / f".fnacli-probe~{os.getpid()}.tmp").symlink_to(victim)
    monkeypatch.setattr(fio, "random_token", _fixed_token, raising=False)
    probe = out / f".fnacli-probe~{os.getpid()}-{_fixed_token()}.tmp"
    probe.symlink_to(victim)
    code, stdout, err = fnacli(_remap(world2, out / "r.safetensors"))
    _refused(code, stdout, err, probe)
    assert victim.read_bytes() == PRECIOUS


def test_a_link_planted_at_the_temporary_file_is_refused_and_its_target_untouched(
        world2: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fnacli.io as fio

    victim = _victim(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(fio, "random_token", _fixed_token, raising=False)
    tmp = out / f".r.safetensors~{os.getpid()}-{_fixed_token(6)}.tmp"
    tmp.symlink_to(victim)
    code, stdout, err = fnacli(_remap(world2, out / "r.safetensors"))
    _refused(code, stdout, err, tmp)
    assert victim.read_bytes() == PRECIOUS
    assert not (out / "r.safetensors").exists()


@pytest.mark.parametrize("suffix", [".ckpt", ".metrics.jsonl"])
def test_a_link_planted_at_a_state_file_is_refused_before_any_work(
        world2: dict[str, Path], tmp_path: Path, suffix: str) -> None:
    victim = _victim(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    side = out / f"f.safetensors{suffix}"
    side.symlink_to(victim)
    code, stdout, err = fnacli(["finetune", world2["target"], "--data", world2["data"], "-o",
                                out / "f.safetensors", *FINETUNE, "--force"])
    _refused(code, stdout, err, side)
    assert victim.read_bytes() == PRECIOUS
    assert sorted(p.name for p in out.iterdir()) == [side.name]


def test_a_link_planted_at_the_synth_marker_is_refused_and_its_target_untouched(
        tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    out = tmp_path / "d"
    out.mkdir()
    marker = out / ".fnacli-synth.partial"
    marker.symlink_to(victim)
    code, stdout, err = fnacli(["data", "synth", out, "--train", "2", "--val", "1", "--size",
                                "48", "--classes", "2", "--force"])
    _refused(code, stdout, err, marker)
    assert victim.read_bytes() == PRECIOUS


# -- 2. synth --force over a linked split folder -------------------------------------------
@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_synth_force_over_a_linked_split_folder_changes_nothing(tmp_path: Path,
                                                                task: str) -> None:
    out = tmp_path / "d"
    args = ["data", "synth", out, "--task", task, "--train", "2", "--val", "1", "--size",
            "48", "--classes", "2"]
    if task == "segmentation":
        args = ["data", "synth", out, "--task", task, "--train", "2", "--val", "1"]
    code, _, err = fnacli(args)
    assert code == 0, err
    elsewhere = tmp_path / "elsewhere"
    split = out / "train" if task == "detection" else out / "leftImg8bit" / "train"
    shutil.move(split, elsewhere)
    split.symlink_to(elsewhere, target_is_directory=True)
    before, kept = tree(out), tree(elsewhere)
    code, stdout, err = fnacli([*args, "--force", "--seed", "3"])
    _refused(code, stdout, err, split)
    assert tree(out) == before and tree(elsewhere) == kept
