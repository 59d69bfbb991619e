"""Fault injection, round 2: side files planted as links, full disks, a closed stdout, odd
names, bounds, weights that are not weights, resumes of another run, and the export's
parity check (issue 25). Each test fails on the code before that issue.

Every refusal is exit 2 with one ``fnacli: error:`` line naming the file, before any work,
and leaves nothing behind; a planted link's target is never touched.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
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
    w["detector"] = root / "detector.safetensors"
    code, _, err = fnacli(["finetune", w["target"], "--data", w["data"], "-o", w["detector"],
                           *FINETUNE])
    assert code == 0, err
    yield w


def edited(src: Path, dest: Path, tensors: dict | None = None, meta: dict | None = None,
           drop: tuple[str, ...] = ()) -> Path:
    """A copy of checkpoint ``src`` with some tensors replaced or added and some metadata
    values (JSON) replaced: written with safetensors directly, as an editor would."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        metadata = dict(f.metadata())
        state = {k: f.get_tensor(k) for k in f.keys() if k not in drop}
    state.update(tensors or {})
    metadata.update({k: json.dumps(v) for k, v in (meta or {}).items()})
    save_file(state, str(dest), metadata=metadata)
    return dest


def cli_subprocess(args: list[object], cwd: Path, timeout: float = 120,
                   memory_gb: int = 24) -> tuple[int, str, str]:
    """``fnacli ARGS`` in a child process with an address-space limit and a timeout: cases
    that crashed the process (a segfault) or ran without end on the code before the fix."""
    def limits() -> None:
        lim = memory_gb << 30
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))

    repo = os.environ.get("PYTHONPATH") or str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": repo,
           "OMP_NUM_THREADS": "1", "FNACLI_DEBUG": "0"}
    try:
        r = subprocess.run([sys.executable, "-m", "fnacli", *map(str, args)], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=timeout, preexec_fn=limits)
    except subprocess.TimeoutExpired:
        return -1, "", f"timed out after {timeout} s"
    return r.returncode, r.stdout, r.stderr


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(PRECIOUS)
    return victim


def _remap(w: dict[str, Path], out: Path, *more: object) -> list[object]:
    return ["remap", w["seed"], "--spec", w["arch"], "-o", out, *more]


def _refused(code: int, out: str, err: str, names: object) -> str:
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


# -- 3. bounds before any work ---------------------------------------------------------------
@pytest.mark.parametrize("command", ["export", "finetune", "eval"])
def test_100000_threads_are_refused_before_any_work(world2: dict[str, Path], tmp_path: Path,
                                                    command: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    args = {"export": ["export", world2["detector"], "-o", out / "m.pt", "--format",
                       "torchscript"],
            "finetune": ["finetune", world2["target"], "--data", world2["data"], "-o",
                         out / "f", *FINETUNE],
            "eval": ["eval", world2["detector"], "--data", world2["data"], "--workers", "0"]}
    code, stdout, err = cli_subprocess([*args[command], "--threads", "100000"], tmp_path)
    line = _refused(code, stdout, err, "--threads")
    assert "1024" in line
    assert list(out.iterdir()) == []


def test_a_size_of_100000_is_refused_before_any_work(world2: dict[str, Path],
                                                     tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    code, stdout, err = cli_subprocess(["finetune", world2["target"], "--data", world2["data"],
                                        "-o", out / "f", *FINETUNE, "--size", "100000"],
                                       tmp_path)
    line = _refused(code, stdout, err, "--size")
    assert "at most 8192" in line
    assert list(out.iterdir()) == []  # no metrics.jsonl of a run that never started


def test_a_checkpoint_whose_metadata_names_size_100000_is_refused(world2: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    bad = edited(world2["detector"], tmp_path / "big.safetensors", meta={"size": [100000, 64]})
    for args in (["eval", bad, "--data", world2["data"], "--workers", "0"],
                 ["export", bad, "-o", tmp_path / "m.pt", "--format", "torchscript"]):
        code, stdout, err = cli_subprocess(args, tmp_path)
        line = _refused(code, stdout, err, bad)
        assert "100000x64" in line
    assert not (tmp_path / "m.pt").exists()


def test_export_samples_1e9_is_refused_before_any_work(world2: dict[str, Path],
                                                       tmp_path: Path) -> None:
    code, stdout, err = cli_subprocess(["export", world2["detector"], "-o", tmp_path / "m.pt",
                                        "--format", "torchscript", "--samples", "1000000000"],
                                       tmp_path, timeout=90)
    line = _refused(code, stdout, err, "--samples")
    assert "512" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# -- 4. weights that are not weights ---------------------------------------------------------
def _a_weight(path: Path) -> tuple[str, torch.Tensor]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        key = next(k for k in f.keys() if k.endswith("conv.weight"))
        return key, f.get_tensor(key)


@pytest.mark.parametrize("kind", ["int8", "complex", "nan", "inf"])
def test_a_tensor_that_is_not_a_finite_float_is_refused_naming_it(
        world2: dict[str, Path], tmp_path: Path, kind: str) -> None:
    key, w = _a_weight(world2["detector"])
    bad_w = {"int8": lambda: (w * 100).to(torch.int8),
             "complex": lambda: w.to(torch.complex64),
             "nan": lambda: w.index_put_((torch.tensor([0]),), torch.tensor(float("nan"))),
             "inf": lambda: w.index_put_((torch.tensor([0]),), torch.tensor(float("inf")))}[kind]()
    bad = edited(world2["detector"], tmp_path / f"{kind}.safetensors", tensors={key: bad_w})
    out = tmp_path / "out"
    out.mkdir()
    for args in (["eval", bad, "--data", world2["data"], "--workers", "0"],
                 ["export", bad, "-o", out / "m.pt", "--format", "torchscript"],
                 ["finetune", bad, "--data", world2["data"], "-o", out / "f", *FINETUNE]):
        code, stdout, err = fnacli(args)
        line = _refused(code, stdout, err, bad)
        assert key in line, line
        assert list(out.iterdir()) == []


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_floating_checkpoints_of_any_precision_are_read_as_float32(
        world2: dict[str, Path], tmp_path: Path, dtype: torch.dtype) -> None:
    from safetensors import safe_open

    from fnacli.checkpoint import read_checkpoint

    with safe_open(str(world2["detector"]), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    cast = {k: v.to(dtype) for k, v in state.items() if v.is_floating_point()}
    ckpt = read_checkpoint(edited(world2["detector"], tmp_path / "c.safetensors", cast))
    for k, v in ckpt.tensors.items():
        want = state[k].to(dtype).to(state[k].dtype) if k in cast else state[k]
        assert v.dtype == state[k].dtype and torch.equal(v, want), k


def test_a_huge_stray_tensor_is_refused_from_the_header_without_reading_it(
        world2: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors

    bad = edited(world2["detector"], tmp_path / "junk.safetensors",
                 tensors={"junk": torch.zeros(1024, 1024)})
    real = safetensors.safe_open
    read: list[str] = []

    class Spy:
        def __init__(self, *args: object, **kwargs: object) -> None:
            self.f = real(*args, **kwargs)

        def __enter__(self) -> Spy:
            self.f.__enter__()
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.__exit__(*exc)

        def __getattr__(self, name: str) -> object:
            return getattr(self.f, name)

        def get_tensor(self, key: str) -> torch.Tensor:
            read.append(key)
            if key == "junk":  # what a tensor of many GB does
                raise MemoryError("cannot allocate 40 GB")
            return self.f.get_tensor(key)

    monkeypatch.setattr(safetensors, "safe_open", Spy)
    code, stdout, err = fnacli(["eval", bad, "--data", world2["data"], "--workers", "0"])
    line = _refused(code, stdout, err, bad)
    assert "unexpected tensor junk" in line and "damaged" not in line
    assert "junk" not in read
    # and a known tensor with the wrong shape is refused the same way
    key, w = _a_weight(world2["detector"])
    bad = edited(world2["detector"], tmp_path / "shape.safetensors",
                 tensors={key: torch.zeros(w.shape[0] * 64, *w.shape[1:])})
    read.clear()
    code, stdout, err = fnacli(["eval", bad, "--data", world2["data"], "--workers", "0"])
    assert key in _refused(code, stdout, err, bad) and read == []
