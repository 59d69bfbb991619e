"""MAdds/params counting: the convention, the published figures, the fast path, the CLI."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
import zlib
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from fnacli.cost.count import count, params_by_part, profile_exact
from fnacli.cost.table import CostTable, profile_specs
from fnacli.cost.units import mbconv_params
from fnacli.errors import UserError
from fnacli.nn.blocks import MBConv
from fnacli.pipeline.common import parse_size
from fnacli.pipeline.profile import cost_target as T
from fnacli.spec import SKIP, ArchSpec, Op, Stage, builtin_arch, builtin_space, mobilenetv2


def _down(n: int, s: int) -> int:
    return (n - 1) // s + 1


def hand_madds(spec: ArchSpec, h: int, w: int, classes: int | None = None) -> int:
    """MobileNetV2-family conv (+ fc) multiply-accumulates, written out by hand."""
    h, w = _down(h, spec.stem_stride), _down(w, spec.stem_stride)
    total = 3 * spec.stem_out * 9 * h * w
    for _, _, cin, cout, op, stride in spec.layers():
        hid = cin * op.expand
        ho, wo = _down(h, stride), _down(w, stride)
        total += cin * hid * h * w if op.expand > 1 else 0
        total += hid * (op.kernel ** 2 + cout) * ho * wo
        h, w = ho, wo
    if spec.head_out:
        total += spec.stages[-1].out * spec.head_out * h * w
    if classes:
        total += spec.out_channels * classes
    return total


# -- the convention ----------------------------------------------------------------------
def test_only_conv_and_linear_multiply_accumulates_count() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=True)
            self.bn = nn.BatchNorm2d(8)
            self.fc = nn.Linear(8, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.bn(self.conv(x))) + 1.0
            y = nn.functional.interpolate(y, scale_factor=2.0)  # not counted
            y = nn.functional.adaptive_avg_pool2d(y, 1).flatten(1)  # not counted
            return torch.sigmoid(self.fc(y))

    params, madds = count(Net(), (6, 4))  # width 6, height 4
    assert madds["backbone"] == 3 * 8 * 9 * 4 * 6 + 8 * 5  # no bias, BN, add, upsample, pool
    assert params == (3 * 8 * 9 + 8) + 16 + (8 * 5 + 5)


def test_mobilenetv2_classifier_matches_paper_and_torchvision() -> None:
    from torchvision.models import mobilenet_v2

    p = profile_exact(mobilenetv2(), T("classifier"), (224, 224), 1000)
    assert p.madds == hand_madds(mobilenetv2(), 224, 224, 1000) == 300_774_272
    assert abs(p.madds / 300e6 - 1) < 0.02  # the paper's 300M
    tv = mobilenet_v2()
    assert p.params == sum(q.numel() for q in tv.parameters())  # 3.5M
    assert round(p.params / 1e6, 1) == 3.5
    # torchvision's own network counts the same under our convention
    assert sum(count(tv.eval(), (224, 224))[1].values()) == p.madds
    assert p.madds_parts == {"backbone": p.madds - 1_280_000, "neck": 0, "head": 1_280_000}


def test_backbone_counts_the_ssd_tap_expansion_once() -> None:
    spec = mobilenetv2(0.5)
    p = profile_exact(spec, T("none"), (160, 160), 0)
    assert p.madds == hand_madds(spec, 160, 160)


def test_ssdlite_mobilenetv2_matches_paper() -> None:
    p = profile_exact(mobilenetv2(), T("ssdlite"), (320, 320), 80)
    assert round(p.madds / 1e9, 1) == 0.8  # "0.8B"
    assert round(p.params / 1e6, 1) == 4.3  # "4.3M"
    assert p.madds_parts["backbone"] == hand_madds(mobilenetv2(), 320, 320)
    assert p.params_parts["backbone"] + p.params_parts["neck"] + p.params_parts["head"] \
        == p.params


@pytest.mark.slow
def test_retinanet_mobilenetv2_matches_fna_table3() -> None:
    spec = mobilenetv2()
    p = profile_exact(spec, T("retinanet"), (1088, 800), 80)  # W=1088, H=800
    assert abs(p.madds / 133.05e9 - 1) < 0.02
    assert round(p.params / 1e6, 2) == 11.49
    # the backbone part is the backbone alone (no 1280 conv): check against a hand count
    assert p.madds_parts["backbone"] == hand_madds(replace(spec, head_out=None), 800, 1088)
    # the LUT fast path reproduces the trace exactly
    fast = CostTable(T("retinanet"), (1088, 800)).profile(spec)
    assert (fast.madds_parts, fast.params_parts) == (p.madds_parts, p.params_parts)


# -- fast path == full trace ------------------------------------------------------------------
def random_arch(space_name: str, rng: random.Random) -> ArchSpec:
    space = builtin_space(space_name)
    stages = []
    for st in space.stages:
        ops = []
        for i in range(st.layers):
            c = rng.choice(st.layer_candidates(i))
            if c != SKIP:
                ops.append(Op.parse(c))
        stages.append(Stage(rng.choice(st.outs), st.stride, tuple(ops)))
    return ArchSpec(space.stem_out, space.stem_stride, tuple(stages), space.head_out)


@pytest.mark.parametrize(("task", "size"), [("none", (97, 131)), ("classifier", (128, 128)),
                                            ("ssdlite", (161, 129)), ("retinanet", (193, 129))])
def test_fast_path_equals_full_trace(task: str, size: tuple[int, int]) -> None:
    rng = random.Random(zlib.crc32(task.encode()))  # stable across processes (not hash())
    specs = [random_arch("fna-channels", rng), random_arch("fna", rng), mobilenetv2(0.75),
             replace(mobilenetv2(0.5), head_out=None)]
    fast = profile_specs(specs, T(task), size)
    for spec, f in zip(specs, fast, strict=True):
        e = profile_exact(spec, T(task), size, f.num_classes)
        assert f.madds_parts == e.madds_parts, spec  # exact; the requirement is ±0.5%
        assert f.params_parts == e.params_parts, spec


def test_mbconv_params_formula_matches_module() -> None:
    for cin, cout, k, e, s in [(16, 24, 3, 6, 2), (24, 24, 5, 3, 1), (32, 16, 7, 1, 1)]:
        m = MBConv(cin, cout, k, e, s)
        assert mbconv_params(Op(k, e), cin, cout) == sum(p.numel() for p in m.parameters())


def test_params_by_part_of_a_detector_sums_to_total() -> None:
    from fnacli.tasks import build_detector

    det = build_detector(mobilenetv2(0.35), "ssdlite", num_classes=3, size=(64, 64))
    parts = params_by_part(det)
    assert sum(parts.values()) == sum(p.numel() for p in det.parameters())
    assert parts["backbone"] == sum(p.numel() for p in det.backbone.body.parameters())


# -- CLI ------------------------------------------------------------------------------------
def test_parse_size() -> None:
    assert parse_size("320", min_side=1) == (320, 320)
    assert parse_size("1088x800", min_side=1) == (1088, 800)  # width x height
    assert parse_size(" 97 × 65 ", min_side=1) == (97, 65)
    for bad in ("abc", "0", "12x", "x12", "3.5"):
        with pytest.raises(UserError, match="--size"):
            parse_size(bad, min_side=1)
    with pytest.raises(UserError, match="at least 32"):
        parse_size("31")


def test_cli_json_table_and_exact(run_cli) -> None:
    code, out, err = run_cli(["madds", "mobilenetv2", "mobilenetv2-0.5", "--task", "classifier",
                              "--json"])
    assert code == 0
    rows = json.load(io.StringIO(out))  # one document: a list, one object per spec
    assert [r["name"] for r in rows] == ["mobilenetv2", "mobilenetv2-0.5"]
    assert rows[0]["madds"] == 300_774_272 and rows[0]["params"] == 3_504_872
    assert rows[0]["input"] == [224, 224] and rows[0]["num_classes"] == 1000
    assert "MAdds" in err and "300.77M" in err
    # --input: the old spelling of --size (hidden, for one release) means the same
    code, out2, _ = run_cli(["madds", "mobilenetv2-0.5", "--task", "ssdlite", "--input", "161x97",
                             "--exact", "--json"])
    code3, out3, _ = run_cli(["madds", "mobilenetv2-0.5", "--task", "ssdlite", "--size",
                              "161x97", "--json"])
    assert code == code3 == 0
    (exact,), (fast,) = json.loads(out2), json.loads(out3)
    assert exact["method"] == "exact" and fast["method"] == "lut"
    assert exact["madds_parts"] == fast["madds_parts"] and exact["input"] == [161, 97]


def test_cli_stdin_json_lines_and_document(run_cli) -> None:
    lines = "\n".join(s.to_json(compact=True) for s in (mobilenetv2(), mobilenetv2(0.5))) + "\n"
    code, out, _ = run_cli(["madds", "-", "--json"], stdin=lines)
    assert code == 0 and json.loads(out)[1]["name"] == "<stdin>:2"
    code, out, _ = run_cli(["madds", "-", "--jsonl"], stdin=lines)  # JSON lines on request
    assert code == 0 and json.loads(out.splitlines()[1])["name"] == "<stdin>:2"
    code, out, _ = run_cli(["madds", "-", "--json"], stdin=mobilenetv2().to_json())
    assert code == 0 and json.loads(out)[0]["madds"] == hand_madds(mobilenetv2(), 224, 224)


def test_cli_checkpoints(run_cli, tmp_path) -> None:
    from fnacli.checkpoint import save_checkpoint

    spec = builtin_arch("fna-ssdlite")
    good = tmp_path / "b.safetensors"
    from fnacli.nn.backbone import Backbone

    # a real backbone's tensors: a checkpoint's names and shapes are checked when it is read
    save_checkpoint(good, Backbone(spec).state_dict(), "backbone", {"spec": spec.to_dict()})
    code, out, err = run_cli(["madds", str(good), "--json", "--task", "ssdlite"])
    assert code == 0, err
    assert json.loads(out)[0]["madds"] == CostTable(T("ssdlite"), (320, 320)).profile(spec).madds
    bad = tmp_path / "s.safetensors"
    save_checkpoint(bad, {"x": torch.zeros(1)}, "supernet",
                    {"space": builtin_space("fna").to_dict()})
    code, out, err = run_cli(["madds", str(bad)])
    assert code == 2 and out == ""
    assert "no architecture spec" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [["nosuch-net"], ["mobilenetv2", "--input", "abc"],
                                  ["BAD"], ["mobilenetv2", "-o", "x.json"], []])
def test_cli_bad_input_exits_2_with_one_line(run_cli, tmp_path, monkeypatch, args) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "BAD").write_text('{"schema": "fnacli/arch@1", "stem": {"out": 32}}')
    code, out, err = run_cli(["madds", *args])
    assert code == 2 and out == ""
    assert err.startswith("fnacli: error: ") and len(err.strip().splitlines()) == 1


def test_cli_malformed_json_lines(run_cli) -> None:
    code, _, err = run_cli(["madds", "-"], stdin=mobilenetv2().to_json(compact=True) + "\n{oops\n")
    assert code == 2 and "<stdin>:2" in err


def test_madds_help_does_not_import_torch() -> None:
    code = ("import sys; from typer.testing import CliRunner; from fnacli.cli.app import app; "
            "r = CliRunner().invoke(app, ['madds', '--help']); "
            "assert r.exit_code == 0, r.output; assert 'WIDTHxHEIGHT' in r.output; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_madds_of_a_detector_checkpoint_uses_its_task_size_and_classes(tmp_path: Path,
                                                                        run_cli) -> None:
    from fnacli.cost.table import profile_specs
    from fnacli.model_checkpoint import DetectorInfo, build, save_detector

    spec = mobilenetv2(0.35)
    cats = [{"id": i + 1, "name": f"c{i}"} for i in range(3)]
    info = DetectorInfo(spec, "ssdlite", 3, (128, 96), cats)
    final = tmp_path / "final.safetensors"
    save_detector(final, build(info), info)
    code, out, err = run_cli(["madds", str(final), "--json"])
    assert code == 0, err
    (got,) = json.loads(out)
    assert (got["task"], got["input"], got["num_classes"]) == ("ssdlite", [128, 96], 3)
    want = profile_specs([spec], T("ssdlite"), (128, 96), 3)[0]
    assert got["madds"] == want.madds and got["params"] == want.params
    assert "ssdlite @ 128x96, 3 classes" in err
    # an option given wins over what the checkpoint records; another task counts at its own
    # default size
    code, out, _ = run_cli(["madds", str(final), "--json", "--input", "160"])
    assert json.loads(out)[0]["input"] == [160, 160] and json.loads(out)[0]["num_classes"] == 3
    code, out, _ = run_cli(["madds", str(final), "mobilenetv2-0.35", "--json", "--task", "none"])
    rows = json.loads(out)
    assert [r["input"] for r in rows] == [[224, 224]] * 2 and rows[0]["madds"] == rows[1]["madds"]
