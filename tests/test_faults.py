"""Fault injection: bad inputs of every command, unwritable outputs, full and read-only disks,
concurrent writers, kill -9 at chosen points, SIGTERM/SIGINT.

Extend it by adding a row to ``CASES`` (placeholders in capitals are the files of the
``world`` fixture) or a kill point to ``KILLS``. Every bad-input case must exit 2 before any
work with one ``fnacli: error:`` line naming the file or option, no traceback, and leave no
file behind. Every kill point must, resumed (or rerun), give the same bytes as an
uninterrupted run.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import torchvision_seed

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "tests" / "fault_runner.py"

# MobileNetV2's seven stages (a width-0.35 seed remaps onto it), two searchable stages
SPACE = {"schema": "fnacli/space@1", "stem": {"out": 16, "stride": 2},
         "stages": [{"out": 8, "stride": 1, "ops": ["k3_e1"]},
                    {"out": 8, "stride": 2, "ops": ["k3_e6"]},
                    {"out": [8, 16], "stride": 2, "layers": 2, "ops": ["k3_e3", "k5_e3", "skip"]},
                    {"out": 24, "stride": 2, "ops": ["k3_e6"]},
                    {"out": [24, 32], "stride": 1, "layers": 2, "ops": ["k3_e3", "skip"]},
                    {"out": 56, "stride": 2, "ops": ["k3_e6"]},
                    {"out": 112, "stride": 1, "ops": ["k3_e6"]}],
         "head": {"out": 128}}
ARCH = {"schema": "fnacli/arch@1", "stem": {"out": 16, "stride": 2},
        "stages": [{"out": 8, "stride": 1, "ops": ["k3_e1"]},
                   {"out": 8, "stride": 2, "ops": ["k3_e6"]},
                   {"out": 16, "stride": 2, "ops": ["k3_e6"]},
                   {"out": 24, "stride": 2, "ops": ["k3_e6"]},
                   {"out": 32, "stride": 1, "ops": ["k3_e6"]},
                   {"out": 56, "stride": 2, "ops": ["k3_e6"]},
                   {"out": 112, "stride": 1, "ops": ["k3_e6"]}],
        "head": {"out": 128}}
TINY = ["--size", "64", "--workers", "0", "--seed", "1"]
FINETUNE = ["--task", "ssdlite", "--epochs", "2", "--batch-size", "2", *TINY,
            "--checkpoint-every", "2"]
DIFF = ["--task", "ssdlite", "--epochs", "2", "--warmup-epochs", "1", "--batch-size", "2",
        "--arch-every", "1", "--device", "cpu", *TINY, "--checkpoint-every", "1"]
EVO = ["--strategy", "evolution", "--task", "ssdlite", "--epochs", "1", "--batch-size", "2",
       "--device", "cpu", "--calib-images", "4", "--calib-batch", "2", "--population", "3",
       "--parents", "2", "--generations", "2", *TINY, "--checkpoint-every", "1"]
LUT = ["madds", "--space", "SPACE", "--lut", "--task", "ssdlite", "--size", "64",
       "--num-classes", "2"]
SYNTH = ["data", "synth", "--train", "6", "--val", "3", "--size", "48", "--classes", "2"]


def fnacli(args: list[object], stdin: str = "") -> tuple[int, str, str]:
    """``fnacli ARGS`` in this process through the real entry point: (code, stdout, stderr)."""
    from fnacli.cli.app import main

    saved = sys.argv, sys.stdin, sys.stdout, sys.stderr
    sys.argv = ["fnacli", *map(str, args)]
    sys.stdin, sys.stdout, sys.stderr = io.StringIO(stdin), io.StringIO(), io.StringIO()
    old_debug = os.environ.pop("FNACLI_DEBUG", None)
    try:
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        return code, sys.stdout.getvalue(), sys.stderr.getvalue()
    finally:
        sys.argv, sys.stdin, sys.stdout, sys.stderr = saved
        if old_debug is not None:
            os.environ["FNACLI_DEBUG"] = old_debug


def spawn(args: list[object], cwd: Path, kill: str = "", slow: str = "",
          **popen: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "FNACLI_TEST_KILL": kill,
           "FNACLI_TEST_SLOW": slow, "OMP_NUM_THREADS": "1", "FNACLI_DEBUG": "0"}

    def child_setup() -> None:  # a test run in the background would hand on SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    return subprocess.Popen([sys.executable, str(RUNNER), *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=child_setup, **popen)


def error_line(err: str) -> str:
    """The one line that says what is wrong: fnacli's own, or the parser's "Error:" line of
    a usage error (which comes with the usage and a hint, as click prints it)."""
    lines = [x for x in err.strip().splitlines() if x.strip()]
    if lines and lines[0].startswith("Usage: "):
        errors = [x for x in lines if x.startswith("Error: ")]
        assert len(errors) == 1 and len(lines) == 3, err
        return errors[0]
    assert len(lines) == 1 and lines[0].startswith("fnacli: error: "), err
    return lines[0]


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def metrics_without_time(path: Path) -> list[dict]:
    """Log lines without wall-clock times, and without the flag that says a resumed search
    took an evaluation from the history instead of repeating it (same numbers)."""
    return [{k: v for k, v in json.loads(x).items() if k not in ("seconds", "reused")}
            for x in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Tiny data, a seed, a backbone, a supernet, a detector, and files that are wrong in
    every way the table needs."""
    from fnacli.checkpoint import load_seed, save_checkpoint
    from fnacli.detection.synthetic import SynthConfig, generate
    from fnacli.remap import remap_state
    from fnacli.search import supernet_io
    from fnacli.spec import ArchSpec, SpaceSpec

    root = tmp_path_factory.mktemp("faults")
    cache = os.environ.get("FNACLI_CACHE_DIR")
    os.environ["FNACLI_CACHE_DIR"] = str(root / "cache")
    w: dict[str, Path] = {"root": root, "data": root / "data", "seed": root / "seed.pth",
                          "target": root / "target.safetensors", "space": root / "space.json",
                          "arch": root / "arch.json", "super": root / "super.safetensors"}
    generate(w["data"], SynthConfig(train=8, val=4, size=64, classes=2, seed=0))
    torch.save(torchvision_seed(0.35).state_dict(), w["seed"])
    state, seed_spec = load_seed(str(w["seed"]))
    arch = ArchSpec.from_dict(ARCH)
    tensors, _ = remap_state(state, seed_spec, arch)
    save_checkpoint(w["target"], tensors, "backbone", {"spec": ARCH})
    w["space"].write_text(json.dumps(SPACE))
    w["arch"].write_text(json.dumps(ARCH))
    sup, meta = supernet_io.expand(str(w["seed"]), SpaceSpec.from_dict(SPACE))
    save_checkpoint(w["super"], sup, "supernet", meta)
    w["detector"] = root / "detector.safetensors"
    code, _, err = fnacli(["finetune", w["target"], "--data", w["data"], "-o", w["detector"],
                           *FINETUNE[:-2], "--epochs", "1"])
    assert code == 0, err
    _bad_files(w)
    yield w
    if cache is None:
        os.environ.pop("FNACLI_CACHE_DIR", None)
    else:
        os.environ["FNACLI_CACHE_DIR"] = cache


class _Evil:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


def _bad_files(w: dict[str, Path]) -> None:
    root = w["root"]
    bad = root / "bad"
    bad.mkdir()
    w["bad"] = bad
    (bad / "empty.pth").write_bytes(b"")
    (bad / "garbage.safetensors").write_bytes(os.urandom(512))
    (bad / "binary.json").write_bytes(b"\xff\xfe\x00\x81" * 64)
    (bad / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (bad / "bigint.json").write_text('{"schema": "fnacli/arch@1", "stem": {"out": '
                                     + "9" * 5000 + ', "stride": 2}}')
    huge = json.loads(json.dumps(ARCH))
    huge["stages"][2]["out"] = 10 ** 12
    (bad / "huge.json").write_text(json.dumps(huge))
    deep_stage = json.loads(json.dumps(ARCH))
    deep_stage["stages"][2]["ops"] = ["k3_e6"] * 1000
    (bad / "deep_stage.json").write_text(json.dumps(deep_stage))
    expand = json.loads(json.dumps(ARCH))
    expand["stages"][2]["ops"] = ["k3_e1000"]
    (bad / "expand.json").write_text(json.dumps(expand))
    many = json.loads(json.dumps(ARCH))
    many["stages"] = many["stages"] * 20
    (bad / "many_stages.json").write_text(json.dumps(many))
    five = json.loads(json.dumps(ARCH))
    five["stages"] = five["stages"][:5]
    (bad / "five.json").write_text(json.dumps(five))
    space = json.loads(json.dumps(SPACE))
    space["stages"][2]["out"] = {"min": 8, "max": 10 ** 12, "step": 1}
    (bad / "huge_space.json").write_text(json.dumps(space))
    space = json.loads(json.dumps(SPACE))
    space["stages"][2]["layers"] = 10 ** 6
    (bad / "deep_space.json").write_text(json.dumps(space))
    # a pickle that would run a shell command when unpickled without weights_only
    (bad / "evil.pth").write_bytes(pickle.dumps(_Evil(f"touch {bad / 'pwned'}"), protocol=2))
    raw = w["target"].read_bytes()
    (bad / "cut.safetensors").write_bytes(raw[:len(raw) // 2])
    # datasets: a truncated JPEG, one image under two ids, no annotations at all
    for name in ("trunc", "twice", "unannotated"):
        shutil.copytree(w["data"], bad / name)
    jpg = bad / "trunc" / "train" / "000003.jpg"
    jpg.write_bytes(jpg.read_bytes()[:len(jpg.read_bytes()) * 2 // 3])
    shutil.copy(jpg, bad / "trunc" / "val" / "000001.jpg")
    ann = bad / "twice" / "annotations" / "instances_train.json"
    doc = json.loads(ann.read_text())
    doc["images"][1]["file_name"] = doc["images"][0]["file_name"]
    ann.write_text(json.dumps(doc))
    ann = bad / "unannotated" / "annotations" / "instances_val.json"
    doc = json.loads(ann.read_text())
    doc["annotations"] = []
    ann.write_text(json.dumps(doc))
    (bad / "deep_ann").mkdir()
    (bad / "deep_ann" / "instances_train.json").write_text("[" * 100_000)
    (bad / "deep_ann" / "deep.json").write_text('{"images": ' + "[" * 100_000)
    (bad / "a_file").write_text("not a folder")


# -- the table: (id, args, substring the one error line must contain) ---------------------
# Placeholders: SEED TARGET DETECTOR SUPER SPACE ARCH DATA = the world's files, BAD/x = a
# file of _bad_files, OUT = a fresh folder for outputs (it must stay empty), LONG = a name
# of 245 characters.
REMAP = ["remap", "SEED", "--spec", "ARCH"]
FT = ["finetune", "TARGET", "--data", "DATA", *FINETUNE]
SEARCH = ["search", "SUPER", "--data", "DATA", *DIFF]
EVOL = ["search", "SUPER", "--data", "DATA", *EVO]
CASES: list[tuple[str, list[str], str]] = [
    # 1. outputs that cannot be written: refused before any work, naming the path
    ("remap-proc", [*REMAP, "-o", "/proc/fnacli.safetensors"], "/proc: cannot write here"),
    ("remap-notdir", [*REMAP, "-o", "BAD/a_file/x.safetensors"], "a_file: not a folder"),
    ("remap-isdir", [*REMAP, "-o", "OUT"], "is a folder"),
    ("remap-nofolder", [*REMAP, "-o", "OUT/no/x.safetensors"], "output folder does not exist"),
    ("remap-toolong", [*REMAP, "-o", "OUT/" + "n" * 256], "file name too long"),
    ("remap-stdout", [*REMAP, "-o", "-"], "cannot go to stdout"),
    ("finetune-toolong", [*FT, "-o", "OUT/LONG"], ".metrics.jsonl: file name too long"),
    ("finetune-proc", [*FT, "-o", "/proc/x.safetensors"], "/proc: cannot write here"),
    ("expand-proc", ["expand", "SEED", "--space", "SPACE", "-o", "/proc/x"], "/proc"),
    ("expand-notdir", ["expand", "SEED", "--space", "SPACE", "-o", "BAD/a_file/x"],
     "not a folder"),
    ("derive-proc", ["derive", "SUPER", "-o", "/proc/x.json"], "/proc: cannot write here"),
    ("madds-lut-proc", [*LUT, "-o", "/proc/lut.json"], "/proc: cannot write here"),
    ("synth-proc", [*SYNTH[:2], "/proc/fnacli-data", *SYNTH[2:]], "/proc: cannot write here"),
    ("synth-notdir", [*SYNTH[:2], "BAD/a_file", *SYNTH[2:]], "not a folder"),
    ("pretrain-proc", ["pretrain-seed", "/proc/x.pth", "--seconds", "1"], "/proc"),
    ("eval-detections-proc", ["eval", "DETECTOR", "--data", "DATA", "--workers", "0",
                              "--detections", "/proc/d.json"], "/proc: cannot write here"),
    ("search-proc", [*SEARCH, "-o", "/proc/s.safetensors"], "/proc: cannot write here"),
    ("evolution-proc", [*EVOL, "-o", "/proc/e.safetensors"], "/proc: cannot write here"),
    ("evolution-trained-notdir", [*EVOL, "-o", "OUT/e.safetensors", "--trained",
                                  "BAD/a_file/t.safetensors"], "not a folder"),
    # 2. inputs that used to pass the up-front check and fail later
    ("finetune-truncated-jpeg", [*FT, "--data", "BAD/trunc", "-o", "OUT/f.safetensors"],
     "000003.jpg: cannot be read as an image"),
    ("eval-truncated-jpeg", ["eval", "DETECTOR", "--data", "BAD/trunc", "--workers", "0"],
     "000001.jpg: cannot be read as an image"),
    ("search-truncated-jpeg", [*SEARCH, "--data", "BAD/trunc", "-o", "OUT/s.safetensors"],
     "000003.jpg: cannot be read"),
    ("remap-huge-channels", ["remap", "SEED", "--spec", "BAD/huge.json", "-o", "OUT/r"],
     "stages[2].out: 1000000000000 is more than can be built"),
    ("remap-deep-stage", ["remap", "SEED", "--spec", "BAD/deep_stage.json", "-o", "OUT/r"],
     "1000 layers in one stage"),
    ("remap-huge-expansion", ["remap", "SEED", "--spec", "BAD/expand.json", "-o", "OUT/r"],
     "expansion 1000 is more than can be built"),
    ("remap-many-stages", ["remap", "SEED", "--spec", "BAD/many_stages.json", "-o", "OUT/r"],
     "140 stages"),
    ("remap-deep-json", ["remap", "SEED", "--spec", "BAD/deep.json", "-o", "OUT/r"],
     "deep.json: JSON nested too deeply"),
    ("remap-deep-stdin", ["remap", "SEED", "--spec", "-", "-o", "OUT/r", "<" + "[" * 100_000],
     "<stdin>: JSON nested too deeply"),
    ("remap-bigint-json", ["remap", "SEED", "--spec", "BAD/bigint.json", "-o", "OUT/r"],
     "bigint.json: not valid JSON"),
    ("remap-binary-spec", ["remap", "SEED", "--spec", "BAD/binary.json", "-o", "OUT/r"],
     "binary.json: not a text file"),
    ("remap-stage-count", ["remap", "SEED", "--spec", "BAD/five.json", "-o", "OUT/r"],
     "five.json has 5"),
    ("remap-evil-pickle", ["remap", "BAD/evil.pth", "--spec", "ARCH", "-o", "OUT/r"],
     "evil.pth: refused to load"),
    ("remap-empty-seed", ["remap", "BAD/empty.pth", "--spec", "ARCH", "-o", "OUT/r"],
     "empty.pth: empty file"),
    ("expand-huge-space", ["expand", "SEED", "--space", "BAD/huge_space.json", "-o", "OUT/x"],
     "huge_space.json: stages[2].out.max: 1000000000000 is more than can be built"),
    ("expand-deep-space", ["expand", "SEED", "--space", "BAD/deep_space.json", "-o", "OUT/x"],
     "stages[2].layers: 1000000 is more than can be built"),
    ("expand-deep-json", ["expand", "SEED", "--space", "BAD/deep.json", "-o", "OUT/x"],
     "deep.json: JSON nested too deeply"),
    ("madds-deep-json", ["madds", "BAD/deep.json"], "deep.json: JSON nested too deeply"),
    ("madds-deep-stdin", ["madds", "-", "<" + "{" * 100_000], "<stdin>"),
    ("madds-huge-channels", ["madds", "BAD/huge.json"], "is more than can be built"),
    ("finetune-deep-ann", [*FT, "--train-ann", "BAD/deep_ann/instances_train.json",
                           "--train-images", "DATA/train", "-o", "OUT/f"],
     "instances_train.json: JSON nested too deeply"),
    ("eval-deep-ann", ["eval", "DETECTOR", "--ann", "BAD/deep_ann/deep.json", "--images",
                       "DATA/val", "--workers", "0"], "deep.json: JSON nested too deeply"),
    ("finetune-garbage-target", ["finetune", "BAD/garbage.safetensors", "--data", "DATA",
                                 *FINETUNE, "-o", "OUT/f"], "garbage.safetensors: not a"),
    ("derive-cut-checkpoint", ["derive", "BAD/cut.safetensors"], "cut.safetensors: damaged"),
    ("eval-backbone", ["eval", "TARGET", "--data", "DATA", "--workers", "0"], "TARGET"),
    ("search-backbone", ["search", "TARGET", "--data", "DATA", *DIFF, "-o", "OUT/s"],
     "a backbone checkpoint"),
    ("finetune-no-data", [*FT, "--data", "OUT/none", "-o", "OUT/f"], "no such folder"),
    ("finetune-resume-nothing", [*FT, "-o", "OUT/f", "--resume"],
     "no training state to resume from"),
    ("search-resume-nothing", [*SEARCH, "-o", "OUT/s", "--resume"],
     "no search state to resume from"),
    # 3. options the parser accepts but the run could not survive: refused up front
    ("finetune-batch-1", [*FT, "-o", "OUT/f", "--batch-size", "1"], "--batch-size 1"),
    ("finetune-lr-1e300", [*FT, "-o", "OUT/f", "--lr", "1e300"], "--lr: 1e+300"),
    ("finetune-lr-inf", [*FT, "-o", "OUT/f", "--lr", "inf"], "--lr: expected a finite number"),
    ("finetune-momentum-inf", [*FT, "-o", "OUT/f", "--momentum", "inf"], "--momentum"),
    ("search-tau-nan", [*SEARCH, "-o", "OUT/s", "--tau", "nan"], "--tau: expected a finite number"),
    ("finetune-size", [*FT, "-o", "OUT/f", "--size", "abc"], "--size"),
    ("search-lr-1e300", [*SEARCH, "-o", "OUT/s", "--lr", "1e300"], "--lr: 1e+300"),
    ("search-arch-lr", [*SEARCH, "-o", "OUT/s", "--arch-lr", "1e300"], "--arch-lr"),
    ("search-batch-1", [*SEARCH, "-o", "OUT/s", "--batch-size", "1"], "--batch-size 1"),
    ("search-lambda-inf", [*SEARCH, "-o", "OUT/s", "--lambda", "inf"], "--lambda"),
    ("search-tau-nan", [*SEARCH, "-o", "OUT/s", "--tau", "nan"], "--tau"),
    ("evolution-max-madds", [*EVOL, "-o", "OUT/e", "--max-madds", "lots"], "--max-madds"),
    ("evolution-lr-1e300", [*EVOL, "-o", "OUT/e", "--lr", "1e300"], "--lr"),
    ("evolution-batch-1", [*EVOL, "-o", "OUT/e", "--batch-size", "1"], "--batch-size 1"),
    ("evolution-metric", [*EVOL, "-o", "OUT/e", "--metric", "accuracy"], "--metric"),
    ("remap-noise-inf", [*REMAP, "-o", "OUT/r", "--noise", "inf"], "--noise"),
    ("pretrain-seconds-inf", ["pretrain-seed", "OUT/s.pth", "--seconds", "inf"], "--seconds"),
    ("synth-size", [*SYNTH[:2], "OUT/d", "--size", "100000"], "--size"),
    ("synth-train-0", [*SYNTH[:2], "OUT/d", "--train", "0"], "--train"),
    ("eval-device", ["eval", "DETECTOR", "--data", "DATA", "--device", "tpu"], "--device"),
    ("madds-size", ["madds", "ARCH", "--size", "12x"], "--size"),
    ("madds-lut-no-space", ["madds", "--lut", "-o", "OUT/l.json"],
     "--lut builds the table of --space"),
    # 6. judgement calls (see docs/troubleshooting.md)
    ("eval-no-annotations", ["eval", "DETECTOR", "--data", "BAD/unannotated", "--workers",
                             "0"], "instances_val.json: no annotations"),
    ("finetune-one-file-two-ids", [*FT, "--data", "BAD/twice", "-o", "OUT/f"],
     "are the same file"),
    ("pretrain-seconds-negative", ["pretrain-seed", "OUT/s.pth", "--seconds", "-1"],
     "--seconds: expected a training budget > 0"),
]


def _resolve(arg: str, w: dict[str, Path], out: Path) -> str:
    names = {"SEED": w["seed"], "TARGET": w["target"], "DETECTOR": w["detector"],
             "SUPER": w["super"], "SPACE": w["space"], "ARCH": w["arch"], "DATA": w["data"],
             "BAD": w["bad"], "OUT": out}
    head, sep, rest = arg.partition("/")
    if head in names:
        arg = str(names[head]) + (sep + rest if sep else "")
    return arg.replace("LONG", "l" * 245)


@pytest.mark.parametrize(("args", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line_and_leaves_nothing(world: dict[str, Path],
                                                            tmp_path: Path, args: list[str],
                                                            message: str, monkeypatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    if "BAD/trunc" in args:
        # image checks read headers by default (a truncated file's header is intact); the
        # decode level catches it before any work (docs/detection.md)
        monkeypatch.setenv("FNACLI_IMAGE_CHECK", "decode")
    stdin = next((a[1:] for a in args if a.startswith("<")), "")
    argv = [_resolve(a, world, out) for a in args if not a.startswith("<")]
    before = tree(world["root"]) if "BAD" not in " ".join(args) else None
    t0 = time.perf_counter()
    code, stdout, err = fnacli(argv, stdin)
    took = time.perf_counter() - t0
    assert code == 2, err
    assert "Traceback" not in err and stdout == ""
    line = error_line(err)
    assert _resolve(message, world, out) in line, line
    assert list(out.iterdir()) == [], "left behind"
    assert not (world["bad"] / "pwned").exists()  # the pickle was not run
    if before is not None:
        assert tree(world["root"]).keys() == before.keys()
    assert took < 30  # refused before any work (the slowest check decodes 12 images)


def test_the_table_covers_every_command_and_class() -> None:
    commands = {c[1][0] if c[1][0] != "data" else "data synth" for c in CASES}
    assert commands >= {"expand", "search", "derive", "remap", "finetune", "eval", "madds",
                        "data synth", "pretrain-seed"}
    assert len(CASES) >= 60


# -- 1. a long but valid output name; a full disk; a read-only folder ---------------------
def test_an_output_name_of_245_characters_works(world: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / ("n" * 240 + ".safe")
    code, _, err = fnacli([*_argv(REMAP, world, tmp_path), "-o", out])
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temp, no lock left


def _argv(args: list[str], w: dict[str, Path], out: Path) -> list[str]:
    return [_resolve(a, w, out) for a in args]


@contextlib.contextmanager
def tmpfs(folder: Path, size: int, read_only: bool = False) -> Iterator[Path]:
    """A small tmpfs at ``folder`` (a real full disk / read-only file system); skips where
    mounting is not allowed."""
    folder.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}); the "
                    "simulated ENOSPC test covers the same path")
    try:
        yield folder
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_full_disk_is_exit_2_and_the_earlier_file_is_intact(world: dict[str, Path],
                                                              tmp_path: Path) -> None:
    size = world["target"].stat().st_size
    with tmpfs(tmp_path / "disk", int(size * 1.5) // 4096 * 4096 + 8192) as disk:
        out = disk / "r.safetensors"
        code, _, err = fnacli([*_argv(REMAP, world, tmp_path), "-o", out])
        assert code == 0, err
        earlier = out.read_bytes()
        code, _, err = fnacli([*_argv(REMAP, world, tmp_path), "-o", out, "--force",
                               "--noise", "0.1"])
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "no space left on device" in lines[0], err
        assert str(out) in lines[0] and "earlier file is unchanged" in lines[0]
        assert out.read_bytes() == earlier
        assert sorted(p.name for p in disk.iterdir()) == [out.name]


def test_a_read_only_folder_is_refused_before_any_work(world: dict[str, Path],
                                                       tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        ro = stack.enter_context(tmpfs(tmp_path / "ro", 1 << 20))
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        for args in ([*REMAP, "-o", f"{ro}/r.safetensors"], [*FT, "-o", f"{ro}/f"],
                     [*SYNTH[:2], f"{ro}/d", *SYNTH[2:]]):
            code, _, err = fnacli(_argv(args, world, tmp_path))
            assert code == 2 and err.count("\n") == 1, err
            assert "read-only file system" in err and str(ro) in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permissions; the "
                    "read-only tmpfs test covers the case")
def test_a_folder_without_write_permission_is_refused(world: dict[str, Path],
                                                      tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    code, _, err = fnacli([*_argv(REMAP, world, tmp_path), "-o", folder / "r"])
    assert code == 2 and "permission denied" in err


def test_enospc_while_saving_training_state_keeps_the_earlier_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated (any machine): the disk fills up in the middle of writing the state."""
    from fnacli.errors import UserError
    from fnacli.train import build_optimizer, build_scheduler, load_train_state, save_train_state

    net = torch.nn.Linear(3, 2)
    opt = build_optimizer(net, "sgd", 0.1)
    sched = build_scheduler(opt, 10, "cosine")
    path = tmp_path / "run.ckpt"
    save_train_state(path, net, opt, sched, None, epoch=0, batch=1, step=1, identity={})
    earlier = path.read_bytes()
    real_write = Path.write_bytes

    def full_disk(self: Path, data: bytes) -> int:
        real_write(self, bytes(data)[:100])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(UserError, match="no space left on device.*earlier file is unchanged"):
        save_train_state(path, net, opt, sched, None, epoch=0, batch=2, step=2, identity={})
    monkeypatch.undo()
    assert path.read_bytes() == earlier and load_train_state(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.ckpt"]


# -- 4. what a crash leaves must not block a rerun ----------------------------------------
def test_a_metrics_file_without_state_does_not_block_a_rerun(world: dict[str, Path],
                                                             tmp_path: Path) -> None:
    out = tmp_path / "f.safetensors"
    Path(f"{out}.metrics.jsonl").write_text("")  # a run that crashed before its first save
    code, _, err = fnacli([*_argv(FT, world, tmp_path), "-o", out, "--epochs", "1"])
    assert code == 0, err
    lines = Path(f"{out}.metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 4


def test_stale_temporary_files_are_removed_by_the_next_run(world: dict[str, Path],
                                                           tmp_path: Path) -> None:
    from fnacli.io import atomic_path

    out = tmp_path / "f.safetensors"
    dead = 2 ** 22 + 17  # above pid_max on Linux: no such process
    stale = [tmp_path / f".{out.name}.ckpt~{dead}-abc123.tmp",  # this version's naming
             tmp_path / f".{out.name}.ckpt.x8_k2m9q.tmp",  # mkstemp's (earlier versions)
             tmp_path / f".{out.name}~{dead}-zzzzzz.tmp"]
    for p in stale:
        p.write_bytes(b"")
        os.utime(p, (time.time() - 3600, time.time() - 3600))
    alive = tmp_path / f".{out.name}.ckpt~{os.getppid()}-abc123.tmp"  # a live writer's
    alive.write_bytes(b"")
    other = tmp_path / ".other.safetensors~123-abc123.tmp"  # not this output's
    other.write_bytes(b"")
    code, _, err = fnacli([*_argv(FT, world, tmp_path), "-o", out, "--epochs", "1"])
    assert code == 0, err
    assert not any(p.exists() for p in stale)
    assert alive.exists() and other.exists()
    # the temporary name stays short whatever the output's name
    with atomic_path(tmp_path / ("x" * 250)) as tmp:
        assert len(tmp.name) < 255
        tmp.write_text("ok")


# -- 5. one writer per output ---------------------------------------------------------------
HOLD = ("import sys\nfrom fnacli import locks\nwith locks.output_session():\n"
        "    locks.claim(sys.argv[1])\n    print('held', flush=True)\n    sys.stdin.read()\n")


@contextlib.contextmanager
def held(path: Path) -> Iterator[int]:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "held"
        yield p.pid
    finally:
        p.communicate("")


def test_a_second_writer_is_refused_naming_the_holder(world: dict[str, Path],
                                                      tmp_path: Path) -> None:
    outputs = {"remap": ([*REMAP, "-o", "OUT/r.safetensors"], "r.safetensors"),
               "finetune": ([*FT, "-o", "OUT/f.safetensors"], "f.safetensors"),
               "search": ([*SEARCH, "-o", "OUT/s.safetensors"], "s.safetensors"),
               "evolution": ([*EVOL, "-o", "OUT/e.safetensors"], "e.safetensors"),
               "synth": ([*SYNTH[:2], "OUT/d", *SYNTH[2:]], "d"),
               "lut": ([*LUT, "-o", "OUT/l.json"], "l.json")}
    for name, (args, target) in outputs.items():
        with held(tmp_path / target) as pid:
            code, _, err = fnacli(_argv(args, world, tmp_path))
            assert code == 2, (name, err)
            assert f"another fnacli run (pid {pid}) is writing it" in err, (name, err)
            assert err.count("\n") == 1
        assert not (tmp_path / target).exists()
    # released: nothing left, and the same output can be written now
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    code, _, err = fnacli([*_argv(REMAP, world, tmp_path), "-o", tmp_path / "r.safetensors"])
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.safetensors"]


@pytest.mark.slow
def test_two_concurrent_remaps_one_wins_the_other_is_refused(world: dict[str, Path],
                                                             tmp_path: Path) -> None:
    out = tmp_path / "r.safetensors"
    procs = [spawn([*_argv(REMAP, world, tmp_path), "-o", out], tmp_path) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    codes = sorted(c for c, _ in results)
    assert codes == [0, 2], results
    loser = next(e for c, e in results if c == 2)
    assert "another fnacli run" in loser or "already exists" in loser
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.safetensors"]


# -- 8. atomic writes are durable --------------------------------------------------------------
def test_atomic_writes_fsync_the_file_and_its_folder(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from fnacli.io import write_text_atomic

    synced: list[str] = []
    real = os.fsync

    def record(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", record)
    out = tmp_path / "x.json"
    write_text_atomic(out, "{}")
    assert len(synced) == 2
    assert Path(synced[0]).name.startswith(".x.json~")  # the data, before the rename
    assert synced[1] == str(tmp_path)  # the folder, after it
    assert out.read_text() == "{}"


# -- kill -9 at chosen points, then --resume (or a plain rerun): the uninterrupted bytes -----
def _command(name: str, w: dict[str, Path], out: Path) -> list[object]:
    return {"finetune": ["finetune", w["target"], "--data", w["data"], *FINETUNE, "-o",
                         out / "f.safetensors"],
            "search": ["search", w["super"], "--data", w["data"], *DIFF, "-o",
                       out / "s.safetensors"],
            "evolution": ["search", w["super"], "--data", w["data"], *EVO, "-o",
                          out / "e.safetensors"],
            "lut": [*_argv(LUT, w, out), "-o", out / "l.json"],
            "synth": [*SYNTH[:2], out / "d", *SYNTH[2:]]}[name]


def _outcome(name: str, out: Path) -> dict[str, object]:
    """What must not depend on interruptions: the files (names and bytes), logs without
    their wall-clock times."""
    files = tree(out)
    result: dict[str, object] = {"names": sorted(files)}
    for rel, data in files.items():
        if rel.endswith((".metrics.jsonl", ".history.jsonl")):
            result[rel] = metrics_without_time(out / rel)
        elif rel.endswith(".ckpt"):  # pickle bytes depend on object sharing: compare contents
            result[rel] = _plain(torch.load(out / rel, weights_only=True))
        elif not rel.endswith(".search.json"):  # the search state holds the cache's order
            result[rel] = data
    return result


def _same(got: dict, want: dict) -> None:
    """Equal outcomes; on a difference, say which file and where."""
    assert got["names"] == want["names"]
    for k in want:
        if got[k] != want[k]:
            if isinstance(want[k], list):
                i = next((i for i, (a, b) in enumerate(zip(got[k], want[k], strict=False))
                          if a != b), min(len(got[k]), len(want[k])))
                pytest.fail(f"{k} differs at line {i}: {got[k][i:i + 1]} != {want[k][i:i + 1]}")
            pytest.fail(f"{k} differs")


def _plain(x: object) -> object:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if isinstance(x, torch.Tensor):
        return (str(x.dtype), list(x.shape), x.numpy().tobytes())
    return x


@pytest.fixture(scope="module")
def uninterrupted(world: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Each command run once without interruption (in a folder of its own), lazily."""
    done: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in done:
            out = tmp_path_factory.mktemp(f"ref-{name}")
            code, _, err = fnacli(_command(name, world, out))
            assert code == 0, err
            done[name] = _outcome(name, out)
        return done[name]

    return get  # type: ignore[return-value]


# (command, where it dies, how it goes on): a developer adds rows here
KILLS = [
    ("finetune", "fnacli.train:MetricsLog.__init__:1", "rerun"),  # before any state
    ("finetune", "fnacli.train:save_train_state:1", "resume"),  # after the first state
    ("finetune", "fnacli.io:atomic_path:2:inside:.ckpt", "resume"),  # inside a state write
    ("finetune", "fnacli.io:atomic_path:1:inside:f.safetensors", "resume"),  # the final write
    ("search", "fnacli.train:MetricsLog.__init__:1", "rerun"),
    ("search", "fnacli.train:save_train_state:1", "resume"),  # mid-epoch (running averages)
    ("search", "fnacli.io:atomic_path:3:inside:.ckpt", "resume"),
    ("evolution", "fnacli.train:save_train_state:2", "resume"),  # supernet training
    ("evolution", "fnacli.search.evolution:OneShotSearch._add:2", "resume"),  # mid-generation
    ("evolution", "fnacli.io:atomic_path:2:inside:.search.json", "resume"),  # end of gen. 1
    ("lut", "fnacli.cost.units:fill_units:1", "rerun"),  # mid-build
    ("lut", "fnacli.io:atomic_path:1:inside:l.json", "rerun"),
    ("synth", "fnacli.detection.synthetic:make_image:3", "rerun"),  # mid-train images
    ("synth", "fnacli.detection.synthetic:make_image:8", "rerun"),  # mid-val images
    ("synth", "fnacli.io:atomic_path:1:inside:instances_train.json", "rerun"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "kill", "then"), KILLS,
                         ids=[f"{n}-{k.split(':')[1]}-{k.split(':')[2]}" for n, k, _ in KILLS])
def test_kill_9_then_resume_gives_the_uninterrupted_bytes(world: dict[str, Path],
                                                          uninterrupted, tmp_path: Path,
                                                          name: str, kill: str,
                                                          then: str) -> None:
    out = tmp_path / "run"  # another folder than the uninterrupted run's: same bytes too
    out.mkdir()
    args = _command(name, world, out)
    p = spawn(args, tmp_path, kill=kill)
    _, err = p.communicate(timeout=600)
    assert p.returncode == -signal.SIGKILL, f"not killed at {kill}: {err[-2000:]}"
    code, _, err = fnacli([*args, *(["--resume"] if then == "resume" else [])])
    assert code == 0, err
    _same(_outcome(name, out), uninterrupted(name))


# -- SIGTERM / SIGINT: state saved at the step boundary, exit 143 / 130, --resume continues --
SIGNALS = [
    ("finetune", signal.SIGTERM, "fnacli.train:set_train_mode:0.4", "f.safetensors.ckpt"),
    ("finetune", signal.SIGINT, "fnacli.train:set_train_mode:0.4", "f.safetensors.ckpt"),
    ("search", signal.SIGTERM, "fnacli.train:set_train_mode:0.4",
     "s.safetensors.ckpt"),
    ("search", signal.SIGINT, "fnacli.train:set_train_mode:0.4",
     "s.safetensors.ckpt"),
    ("evolution", signal.SIGINT, "fnacli.search.evolution:OneShotSearch._add:0.5",
     "e.safetensors.history.jsonl"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "sig", "slow", "ready"), SIGNALS,
                         ids=[f"{n}-{s.name}" for n, s, _, _ in SIGNALS])
def test_a_signal_saves_state_and_resume_continues_exactly(world: dict[str, Path],
                                                           uninterrupted, tmp_path: Path,
                                                           name: str, sig: signal.Signals,
                                                           slow: str, ready: str) -> None:
    out = tmp_path / "run"
    out.mkdir()
    args = _command(name, world, out)
    p = spawn(args, tmp_path, slow=slow)
    deadline = time.monotonic() + 300
    while not ((out / ready).is_file() and (name != "evolution"
                                            or "candidate" in (out / ready).read_text())):
        assert p.poll() is None, p.communicate()[1][-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    p.send_signal(sig)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 128 + sig, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"fnacli: interrupted by {sig.name}: saved the "), last
    assert "--resume" in last and "Traceback" not in err
    code, _, err = fnacli([*args, "--resume"])
    assert code == 0, err
    _same(_outcome(name, out), uninterrupted(name))


def test_a_fresh_one_shot_run_does_not_replace_a_stopped_training_state(
        world: dict[str, Path], tmp_path: Path) -> None:
    state = tmp_path / "e.oneshot.safetensors.ckpt"
    state.write_bytes(b"state of a stopped run")
    code, _, err = fnacli([*_argv(EVOL, world, tmp_path), "-o", tmp_path / "e.safetensors"])
    assert code == 2 and "exists from an earlier run" in err and "--resume" in err, err
    assert state.read_bytes() == b"state of a stopped run"
