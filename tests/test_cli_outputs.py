"""What commands write on stdout: one JSON document per ``--json`` (read with ``json.load``),
nothing for a command whose result is a file, and pipes that connect (derive's JSON report
into ``remap --spec -`` and ``madds -``)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from fnacli.spec import ArchSpec

ROOT = Path(__file__).resolve().parents[1]
OPS = ["k3_e3", "skip"]
SPACE = {"schema": "fnacli/space@1", "name": "tiny", "stem": {"out": 16, "stride": 2},
         "head": {"out": 64},
         "stages": [{"out": 8, "stride": 1, "ops": ["k3_e1"]},
                    *({"out": o, "stride": s, "layers": 1, "ops": OPS}
                      for o, s in ((8, 2), (16, 2), (24, 2), (32, 1), (48, 2))),
                    {"out": 64, "stride": 1, "ops": ["k3_e6"]}]}


def load(out: str) -> object:
    """One JSON document, exactly (json.load refuses JSON Lines)."""
    return json.load(io.StringIO(out))


@pytest.fixture
def supernet(tmp_path: Path, tv_seed_path: Path, run_cli) -> Path:
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    sup = tmp_path / "super.safetensors"
    code, out, err = run_cli(["expand", tv_seed_path, "--space", space, "-o", sup])
    assert code == 0 and out == "", err  # a file: nothing on stdout
    code, out, err = run_cli(["expand", tv_seed_path, "--space", space, "-o",
                              tmp_path / "s2.safetensors", "--json"])
    assert code == 0 and load(out)["output"] == str(tmp_path / "s2.safetensors")
    return sup


def test_derive_json_pipes_into_remap_and_madds(supernet: Path, tv_seed_path: Path,
                                                tmp_path: Path, run_cli) -> None:
    code, report, err = run_cli(["derive", supernet, "--json"])
    assert code == 0, err
    doc = load(report)
    spec = ArchSpec.from_dict(doc["spec"])
    out = tmp_path / "t.safetensors"
    code, stdout, err = run_cli(["remap", tv_seed_path, "--spec", "-", "-o", out], stdin=report)
    assert code == 0 and stdout == "", err
    code, stdout, err = run_cli(["remap", tv_seed_path, "--spec", "-", "-o",
                                 tmp_path / "u.safetensors", "--json"], stdin=report)
    assert code == 0 and load(stdout)["spec"] == spec.to_dict()
    remapped = stdout
    code, stdout, err = run_cli(["madds", "-", "--json"], stdin=report)
    assert code == 0, err
    (row,) = load(stdout)
    code, bare, _ = run_cli(["madds", "-", "--json"], stdin=spec.to_json())
    assert load(bare)[0]["madds"] == row["madds"]
    # a remap --json report pipes too
    code, stdout, err = run_cli(["madds", "-", "--json"], stdin=remapped)
    assert code == 0 and load(stdout)[0]["madds"] == row["madds"], err


def test_madds_json_is_one_document_and_jsonl_is_lines(run_cli) -> None:
    code, out, _ = run_cli(["madds", "mobilenetv2", "mobilenetv2-0.5", "--json"])
    rows = load(out)
    assert code == 0 and [r["name"] for r in rows] == ["mobilenetv2", "mobilenetv2-0.5"]
    code, out, _ = run_cli(["madds", "mobilenetv2", "mobilenetv2-0.5", "--jsonl"])
    assert [json.loads(x)["name"] for x in out.splitlines()] == ["mobilenetv2",
                                                                  "mobilenetv2-0.5"]
    code, out, _ = run_cli(["madds", "mobilenetv2"])
    assert code == 0 and out == ""  # the table is on stderr


def test_data_synth_prints_json_only_when_asked(tmp_path: Path, run_cli) -> None:
    args = ["data", "synth", "--train", "2", "--val", "1", "--size", "64"]
    code, out, err = run_cli([*args, tmp_path / "a"])
    assert code == 0 and out == "", err
    code, out, err = run_cli([*args, tmp_path / "b", "--json"])
    assert code == 0 and isinstance(load(out), dict)


def test_every_json_flag_prints_one_document() -> None:
    """The commands print ``--json`` results through ``print_json`` (one ``json.dumps``) only:
    no command module prints JSON text itself."""
    for module in (ROOT / "fnacli" / "cli").glob("*.py"):
        text = module.read_text(encoding="utf-8")
        if module.name in ("common.py", "latency.py"):  # latency: its --check output is reworked
            continue                                    # separately (issue 26, verdicts)
        assert not re.search(r"print_result\(\s*json\.dumps", text), module.name


def test_a_seeds_inferred_architecture(tv_seed_path: Path, tmp_path: Path, run_cli) -> None:
    """``remap SEED --show-spec`` prints the spec fnacli infers from a torchvision state dict;
    ``madds SEED`` counts it (the same numbers as the built-in of that width)."""
    code, out, err = run_cli(["remap", tv_seed_path, "--show-spec"])
    assert code == 0, err
    assert ArchSpec.from_dict(json.loads(out)) == fnacli_arch("mobilenetv2-0.75")
    code, out, err = run_cli(["madds", tv_seed_path, "mobilenetv2-0.75", "--json"])
    assert code == 0, err
    seed_row, builtin_row = load(out)
    assert seed_row["name"] == str(tv_seed_path) and seed_row["madds"] == builtin_row["madds"]
    code, out, err = run_cli(["remap", tv_seed_path, "-o", tmp_path / "x.safetensors"])
    assert code == 2 and "--spec" in err
    junk = tmp_path / "junk.pth"
    import torch

    torch.save({"weight": torch.zeros(2)}, junk)
    code, out, err = run_cli(["madds", junk])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1


def fnacli_arch(name: str) -> ArchSpec:
    from fnacli.spec import load_arch

    return load_arch(name)


def test_spec_and_space_complete_built_in_names(tmp_path: Path, monkeypatch) -> None:
    import os
    import subprocess
    import sys

    from fnacli.cli import common as c

    assert c.complete_arch("fna-") == ["fna-retinanet", "fna-ssdlite", "fna-deeplabv3"]
    assert "fna-channels" in c.complete_space("fna")
    (tmp_path / "fna-mine.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert c.complete_arch("fna-m") == ["fna-mine.json"]  # files after names
    env = {**os.environ, "_FNACLI_COMPLETE": "complete_bash",
           "COMP_WORDS": "fnacli remap seed.pth --spec mobilenetv2-0.7", "COMP_CWORD": "4",
           "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "fnacli"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert "mobilenetv2-0.75" in r.stdout.split(), r.stderr


def test_usage_lines_spell_arguments_alike(run_cli) -> None:
    for cmd in (["expand"], ["remap"], ["pretrain-seed"], ["data", "synth"]):
        code, out, _ = run_cli([*cmd, "--help"])
        usage = out.splitlines()[0]
        arg = usage.split("[OPTIONS]")[1].strip()
        assert arg == arg.upper(), usage


@pytest.mark.parametrize("status", ["epoch 3/12 loss 6.123 lr 0.0125",
                                    "epoch 12/12 loss 12.35 detector E[MAdds] 612.3M argmax 5.1M"])
def test_the_bar_keeps_the_loss_at_80_columns(status: str) -> None:
    from rich.console import Console

    from fnacli.progress import _live_bar

    bar = _live_bar("finetune retinanet", io.StringIO(), force_terminal=True)
    task = bar.add_task("", total=15000)
    bar.update(task, advance=7000, description=status)
    console = Console(file=io.StringIO(), width=80, force_terminal=False)
    console.print(bar.make_tasks_table(bar.tasks))
    line = console.file.getvalue().splitlines()[0]
    loss = re.search(r"loss [\d.]+", status).group(0)
    assert loss in line and "7000/15000" in line and len(line) <= 80, line


def test_export_writes_a_file_and_nothing_on_stdout(tmp_path: Path, run_cli) -> None:
    import warnings

    from fnacli.model_checkpoint import DetectorInfo, build, save_detector
    from fnacli.spec import mobilenetv2

    info = DetectorInfo(mobilenetv2(0.35), "ssdlite", 3, (96, 96),
                        [{"id": i + 1, "name": f"c{i}"} for i in range(3)])
    final = tmp_path / "final.safetensors"
    save_detector(final, build(info), info)
    out = tmp_path / "m.pt"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, stdout, err = run_cli(["export", final, "-o", out, "--format", "torchscript",
                                     "--no-latency", "--samples", "1"])
    assert code == 0 and out.is_file() and stdout == "", err
    assert str(out) in err  # the report names the file, on stderr
    assert not [w for w in caught if issubclass(w.category, FutureWarning)]
    code, stdout, err = run_cli(["export", final, "-o", out, "--format", "torchscript",
                                 "--no-latency", "--samples", "1", "--force", "--json"])
    assert code == 0 and load(stdout)["output"] == str(out)
