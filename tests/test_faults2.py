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
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
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


def _refused_in_run(code: int, out: str, err: str, names: object) -> str:
    """A refusal after the run's opening line (a resume is checked when training starts):
    exit 2, one error line naming ``names``, no traceback, nothing on stdout."""
    assert code == 2, err
    assert out == "" and "Traceback" not in err
    errors = [x for x in err.splitlines() if x.startswith("fnacli: error: ")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    assert str(names) in errors[0], errors[0]
    return errors[0]


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


# -- 2. export: a full disk, an interrupted check; a closed stdout; names that are not text --
def _export(w: dict[str, Path], out: Path, fmt: str, *more: object) -> list[object]:
    return ["export", w["detector"], "-o", out, "--format", fmt, "--samples", "1",
            "--no-latency", *more]


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_to_a_full_disk_is_exit_2_and_leaves_nothing(world2: dict[str, Path],
                                                            tmp_path: Path, fmt: str) -> None:
    """A real full disk (a 256 KiB tmpfs, where mounting is allowed)."""
    from test_faults import tmpfs

    with tmpfs(tmp_path / "disk", 256 << 10) as disk:
        out = disk / "m.bin"
        code, stdout, err = cli_subprocess(_export(world2, out, fmt), tmp_path)
        line = _refused(code, stdout, err, out)
        assert "no space left on device" in line
        assert list(disk.iterdir()) == []  # no temporary file, no lock


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_enospc_simulated_keeps_the_earlier_file(world2: dict[str, Path],
                                                        tmp_path: Path, fmt: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Any machine: the disk fills up while the exported file is written."""
    import errno

    out = tmp_path / "m.bin"
    out.write_bytes(PRECIOUS)
    real = Path.write_bytes

    def full(self: Path, data: bytes) -> int:
        if self.parent == tmp_path:
            real(self, bytes(data)[:1000])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    code, stdout, err = fnacli(_export(world2, out, fmt, "--force"))
    line = _refused(code, stdout, err, out)
    assert "no space left on device" in line and "earlier file is unchanged" in line
    assert out.read_bytes() == PRECIOUS
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def test_an_export_interrupted_during_its_check_keeps_the_previous_output(
        world2: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from fnacli import interrupt

    fexport = importlib.import_module("fnacli.export")  # fnacli.export is also the step

    out = tmp_path / "m.pt"
    out.write_bytes(PRECIOUS)

    def sigint(*args: object, **kwargs: object) -> None:
        raise interrupt.Interrupted(2)

    monkeypatch.setattr(fexport, "compare_raw", sigint)
    code, stdout, err = fnacli(_export(world2, out, "torchscript", "--force"))
    assert code == 130, err
    assert out.read_bytes() == PRECIOUS
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def test_a_closed_stdout_is_exit_2_with_one_line(world2: dict[str, Path],
                                                 tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH") or str(
        Path(__file__).resolve().parents[1]), "FNACLI_DEBUG": "0"}
    r = subprocess.run([sys.executable, "-m", "fnacli", "madds", str(world2["arch"]), "--json"],
                       cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True,
                       preexec_fn=lambda: os.close(1), timeout=120)
    assert r.returncode == 2, r.stderr
    assert error_line(r.stderr).startswith("fnacli: error: standard output is closed")


@pytest.mark.parametrize("command", ["remap", "synth"])
def test_an_output_name_that_is_not_text_is_exit_2_before_any_work(
        world2: dict[str, Path], tmp_path: Path, command: str) -> None:
    out = os.fsencode(tmp_path) + b"/\xff-out"
    args = {"remap": [b"remap", os.fsencode(world2["seed"]), b"--spec",
                      os.fsencode(world2["arch"]), b"-o", out],
            "synth": [b"data", b"synth", out, b"--train", b"2", b"--val", b"1", b"--size",
                      b"48"]}[command]
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH") or str(
        Path(__file__).resolve().parents[1]), "FNACLI_DEBUG": "0", "LC_ALL": "C.UTF-8"}
    r = subprocess.run([os.fsencode(sys.executable), b"-m", b"fnacli", *args], cwd=tmp_path,
                       env=env, capture_output=True, timeout=120)
    err = r.stderr.decode("utf-8", "backslashreplace")
    assert r.returncode == 2, err
    assert "\\xff-out: the name is not valid utf-8 text" in error_line(err)
    assert os.listdir(tmp_path) == []


# -- 6. export parity, judged against float64 ----------------------------------------------
def _runner(outputs: list[np.ndarray]) -> Callable:
    return lambda x: [o.copy() for o in outputs]


def test_raw_parity_is_judged_against_float64_not_a_fixed_tolerance() -> None:
    from fnacli.export import Parity, compare_raw

    rng = np.random.default_rng(0)
    truth = rng.uniform(-1, 1, size=(1, 50, 4))
    noise = rng.normal(size=truth.shape)
    x = [torch.zeros(1)]
    # PyTorch float32 itself is 1.3e-4 from float64, the export 1.6e-4: as good as PyTorch
    # (the fixed 1e-4 tolerance of earlier versions failed it)
    p = Parity()
    compare_raw(_runner([truth]), _runner([(truth + 1.3e-4 * np.sign(noise)).astype(np.float32)]),
                _runner([(truth - 1.6e-4 * np.sign(noise)).astype(np.float32)]), x, p)
    assert p.ok, p.problems
    assert p.raw_torch_err == pytest.approx(1.3e-4, rel=0.05)
    assert p.raw_export_err == pytest.approx(1.6e-4, rel=0.05)
    # an export 100 times worse than PyTorch's own rounding fails, naming both errors
    p = Parity()
    compare_raw(_runner([truth]), _runner([(truth + 1e-6).astype(np.float32)]),
                _runner([(truth + 1e-3).astype(np.float32)]), x, p)
    assert not p.ok and "PyTorch float32" in p.problems[0]


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_nan_or_inf_output_fails_parity(bad: float) -> None:
    from fnacli.export import Parity, compare_raw

    truth = np.ones((1, 8))
    broken = truth.astype(np.float32)
    broken[0, 3] = bad
    p = Parity()
    compare_raw(_runner([truth]), _runner([truth.astype(np.float32)]), _runner([broken]),
                [torch.zeros(1)], p)
    assert not p.ok and "NaN or infinite" in " ".join(p.problems)


def test_an_exported_model_with_nan_outputs_fails_its_check(tmp_path: Path) -> None:
    from fnacli.export import export_model

    net = torch.nn.Conv2d(3, 2, 3)
    with torch.no_grad():
        net.weight[0, 0, 0, 0] = float("nan")
    res = export_model(net, tmp_path / "m.pt", fmt="torchscript", size=(32, 32),
                       measure=False)
    assert res.parity is not None and not res.parity.ok
    assert "NaN" in res.failure


def test_detections_at_a_near_tie_are_excused_and_others_are_not() -> None:
    from fnacli.export import match_detections
    from fnacli.parity import Cuts

    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 60, 60]], dtype=np.float32)
    scores = np.array([0.9, 0.5, 0.05005], dtype=np.float32)
    labels = np.array([1, 1, 2])
    cuts = Cuts(score_thresh=0.05, nms_thresh=0.5, per_image=100)
    ref = (boxes, scores, labels)
    # the export's scores differ by 2e-4 (float32 rounding): the box at the threshold falls out
    got = (boxes[:2], scores[:2] + 2e-4, labels[:2])
    unmatched, _, _, excused = match_detections(ref, got, 4e-4, 1e-2, cuts)
    assert (unmatched, excused) == (0, 1)
    # a confident box missing is no near-tie
    got = (boxes[1:], scores[1:], labels[1:])
    unmatched, _, _, excused = match_detections(ref, got, 4e-4, 1e-2, cuts)
    assert (unmatched, excused) == (1, 0)
    # two overlapping boxes of one class with scores 1e-4 apart: NMS keeps either
    a = np.array([[0, 0, 10, 10], [1, 0, 11, 10]], dtype=np.float32)
    ref = (a[:1], np.array([0.7000], np.float32), np.array([1]))
    got = (a[1:], np.array([0.7001], np.float32), np.array([1]))
    unmatched, _, _, excused = match_detections(ref, got, 4e-4, 1e-2, cuts)
    assert (unmatched, excused) == (0, 2)


def test_a_check_that_compared_zero_boxes_says_so_and_rechecks_lower(
        world2: dict[str, Path], tmp_path: Path) -> None:
    from fnacli.export import export_model, load_model

    model, info = load_model(world2["detector"])
    res = export_model(model, tmp_path / "m.pt", fmt="torchscript", size=info["size"],
                       measure=False, score_thresh=0.999)
    p = res.parity
    assert p is not None and sum(p.detections) == 0
    assert p.recheck is not None and p.recheck["score_thresh"] == 0.001
    assert p.recheck["boxes"] > 0 and p.ok, p.problems
    assert "zero boxes compared at 0.999, so re-checked at 0.001" in "\n".join(res.report())


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_a_young_detector_passes_its_export_check_on_its_data(
        world2: dict[str, Path], tmp_path: Path, fmt: str) -> None:
    code, stdout, err = fnacli(["export", world2["detector"], "-o", tmp_path / "m", "--format",
                                fmt, "--data", world2["data"], "--samples", "2", "--no-latency",
                                "--score-thresh", "0.001", "--json"])
    assert code == 0, err
    parity = json.loads(stdout)["parity"]
    assert parity["ok"] and parity["raw_torch_err"] > 0
    assert parity["raw_export_err"] <= parity["raw_allowed"]


def test_a_segmenter_export_reads_its_own_data_layout(world2: dict[str, Path],
                                                      tmp_path: Path) -> None:
    from fnacli.model_checkpoint import DetectorInfo, build, save_detector
    from fnacli.spec import ArchSpec

    info = DetectorInfo(ArchSpec.from_dict(ARCH), "deeplabv3", 19, (64, 64),
                        [{"id": i, "name": f"c{i}"} for i in range(19)])
    seg = tmp_path / "seg.safetensors"
    torch.manual_seed(0)
    save_detector(seg, build(info).eval(), info)
    data = tmp_path / "segdata"
    code, _, err = fnacli(["data", "synth", data, "--task", "segmentation", "--train", "1",
                           "--val", "2"])
    assert code == 0, err
    code, stdout, err = fnacli(["export", seg, "-o", tmp_path / "m.pt", "--format",
                                "torchscript", "--data", data, "--samples", "2",
                                "--no-latency", "--json"])
    assert code == 0, err
    assert json.loads(stdout)["parity"]["images"] == 2


# -- 5. a resume belongs to its run -------------------------------------------------------
def _stopped_run(w: dict[str, Path], out: Path, target: Path, data: Path) -> list[object]:
    args = ["finetune", target, "--data", data, "-o", out, *FINETUNE, "--epochs", "2",
            "--eval-every", "0"]
    code, _, err = fnacli([*args, "--stop-after", "1"])
    assert code == 0, err
    assert Path(f"{out}.ckpt").is_file()
    return args


def test_a_resume_on_another_training_set_is_refused_naming_both(world2: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    from fnacli.detection.synthetic import SynthConfig, generate

    other = tmp_path / "other"  # as many images and classes, other pictures
    generate(other, SynthConfig(train=4, val=2, size=64, classes=2, seed=7))
    out = tmp_path / "f.safetensors"
    args = _stopped_run(world2, out, world2["target"], world2["data"])
    state = Path(f"{out}.ckpt").read_bytes()
    code, stdout, err = fnacli([*args[:3], other, *args[4:], "--resume"])
    line = _refused_in_run(code, stdout, err, f"{out}.ckpt")
    assert "another training set" in line
    assert str(world2["data"] / "annotations") in line and str(other / "annotations") in line
    assert Path(f"{out}.ckpt").read_bytes() == state and not out.exists()
    # the same data moved elsewhere is the same training set
    moved = tmp_path / "moved"
    shutil.copytree(world2["data"], moved)
    code, _, err = fnacli([*args[:3], moved, *args[4:], "--resume"])
    assert code == 0, err


def test_a_resume_with_another_architecture_is_one_line(world2: dict[str, Path],
                                                        tmp_path: Path) -> None:
    from fnacli.checkpoint import load_seed, save_checkpoint
    from fnacli.remap import remap_state
    from fnacli.spec import ArchSpec

    wider = json.loads(json.dumps(ARCH))
    wider["stages"][4]["out"] = 40
    state, seed_spec = load_seed(str(world2["seed"]))
    tensors, _ = remap_state(state, seed_spec, ArchSpec.from_dict(wider))
    other = tmp_path / "wider.safetensors"
    save_checkpoint(other, tensors, "backbone", {"spec": wider})
    out = tmp_path / "f.safetensors"
    args = _stopped_run(world2, out, world2["target"], world2["data"])
    code, stdout, err = fnacli([args[0], other, *args[2:], "--resume"])
    line = _refused_in_run(code, stdout, err, f"{out}.ckpt")
    assert "belongs to another architecture" in line
