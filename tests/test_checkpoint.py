"""fnacli safetensors I/O and reading MobileNetV2 seeds from anywhere."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import torchvision_seed
from safetensors import safe_open
from safetensors.torch import save_file

from fnacli import __version__
from fnacli.checkpoint import (
    FORMAT,
    from_state_dict,
    load_seed,
    read_checkpoint,
    save_checkpoint,
)
from fnacli.errors import UserError
from fnacli.nn.backbone import Backbone
from fnacli.spec import ArchSpec, Op, Stage, mobilenetv2


def _tiny_spec() -> ArchSpec:
    # strides that differ from MobileNetV2's, so a test can tell metadata from inference
    stages = (Stage(8, 1, (Op(3, 1),)), Stage(16, 1, (Op(5, 3), Op(3, 6))),
              Stage(16, 2, (Op(7, 2),)))
    return ArchSpec(8, 2, stages, 32)


# -- save / read ----------------------------------------------------------------------------
def test_round_trip_keeps_tensors_kind_meta_and_spec(tmp_path: Path) -> None:
    spec = _tiny_spec()
    state = Backbone(spec).state_dict()
    path = tmp_path / "b.safetensors"
    save_checkpoint(path, state, "backbone", {"spec": spec.to_dict(), "note": {"a": [1, 2]}})
    ck = read_checkpoint(path)
    assert ck.kind == "backbone" and ck.spec == spec and ck.space is None
    assert ck.meta == {"spec": spec.to_dict(), "note": {"a": [1, 2]}}
    assert ck.version == __version__
    assert set(ck.tensors) == set(state)  # safetensors stores keys sorted
    assert all(torch.equal(ck.tensors[k], v) for k, v in state.items())
    # what a plain safetensors reader sees: fnacli's metadata, the spec as JSON
    with safe_open(str(path), framework="pt") as f:
        md = f.metadata()
    # Hugging Face tools expect format "pt"; fnacli's own tag has its own key
    assert md["format"] == "pt" and md["fnacli_format"] == FORMAT and md["kind"] == "backbone"
    assert md["fnacli_version"] == __version__
    assert ArchSpec.from_dict(json.loads(md["spec"])) == spec


def test_save_refuses_to_overwrite_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "b.safetensors"
    t = {"x": torch.ones(2)}
    save_checkpoint(path, t, "backbone", {})
    with pytest.raises(UserError, match="already exists.*--force"):
        save_checkpoint(path, {"x": torch.zeros(2)}, "backbone", {})
    assert torch.equal(read_checkpoint(path).tensors["x"], torch.ones(2))
    save_checkpoint(path, {"x": torch.zeros(2)}, "backbone", {}, force=True)
    assert torch.equal(read_checkpoint(path).tensors["x"], torch.zeros(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.safetensors"]


def test_failed_write_leaves_nothing_behind(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = Path.write_bytes

    def boom(self: Path, data: bytes) -> int:
        real_write(self, data[: len(data) // 2])  # a partly written file, then a crash
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", boom)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "b.safetensors", {"x": torch.ones(1)}, "backbone", {})
    assert list(tmp_path.iterdir()) == []


def test_shared_storage_and_views_are_saved(tmp_path: Path) -> None:
    base = torch.arange(6.0)
    save_checkpoint(tmp_path / "s.safetensors", {"a": base, "b": base, "c": base.view(2, 3).t(),
                                                 "d": base[2:], "e": base[:3]}, "supernet", {})
    t = read_checkpoint(tmp_path / "s.safetensors").tensors
    assert torch.equal(t["a"], t["b"]) and torch.equal(t["c"], base.view(2, 3).t())
    assert torch.equal(t["d"], base[2:]) and torch.equal(t["e"], base[:3])


def test_save_rejects_unknown_kind_and_reserved_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "x", {}, "weights", {})
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "x", {}, "backbone", {"kind": 1})


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty file"),
    (b'{"schema": "fnacli/arch@1"}', "a JSON file"),
    (b"hello world, not a checkpoint", "not a checkpoint"),
])
def test_read_checkpoint_says_what_a_wrong_file_is(tmp_path: Path, content: bytes,
                                                   message: str) -> None:
    p = tmp_path / "f.safetensors"
    p.write_bytes(content)
    with pytest.raises(UserError, match=message):
        read_checkpoint(p)


def test_read_checkpoint_refuses_pickles_plain_and_truncated_safetensors(tmp_path: Path) -> None:
    torch.save({"x": torch.ones(1)}, tmp_path / "a.pth")
    with pytest.raises(UserError, match="PyTorch pickle, not an fnacli checkpoint"):
        read_checkpoint(tmp_path / "a.pth")
    save_file({"x": torch.ones(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(UserError, match="without fnacli metadata"):
        read_checkpoint(tmp_path / "plain.safetensors")
    save_checkpoint(tmp_path / "ok.safetensors", {"x": torch.ones(1000)}, "backbone", {})
    data = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="damaged or truncated"):
        read_checkpoint(tmp_path / "cut.safetensors")
    with pytest.raises(UserError, match="no such file"):
        read_checkpoint(tmp_path / "missing.safetensors")


def test_files_with_the_tag_under_format_still_read(tmp_path: Path) -> None:
    """fnacli 0.1's first files: the schema tag under 'format', no 'fnacli_format'."""
    spec = _tiny_spec()
    state = Backbone(spec).state_dict()
    save_file(state, str(tmp_path / "old.safetensors"),
              metadata={"format": FORMAT, "kind": "backbone", "fnacli_version": "0.1.0",
                        "spec": json.dumps(spec.to_dict())})
    ck = read_checkpoint(tmp_path / "old.safetensors")
    assert ck.kind == "backbone" and ck.spec == spec
    assert all(torch.equal(ck.tensors[k], v) for k, v in state.items())
    tensors, seed_spec = load_seed(str(tmp_path / "old.safetensors"))
    assert seed_spec == spec
    # a plain "pt" safetensors without fnacli's tag is not an fnacli checkpoint
    save_file(state, str(tmp_path / "plain.safetensors"), metadata={"format": "pt"})
    with pytest.raises(UserError, match="without fnacli metadata"):
        read_checkpoint(tmp_path / "plain.safetensors")


def test_read_checkpoint_rejects_other_formats_and_kinds(tmp_path: Path) -> None:
    save_file({"x": torch.ones(1)}, str(tmp_path / "v2.safetensors"),
              metadata={"format": "fnacli/checkpoint@2", "kind": "backbone"})
    with pytest.raises(UserError, match="format 'fnacli/checkpoint@2' is not supported"):
        read_checkpoint(tmp_path / "v2.safetensors")
    save_file({"x": torch.ones(1)}, str(tmp_path / "k.safetensors"),
              metadata={"format": FORMAT, "kind": "weights"})
    with pytest.raises(UserError, match="unknown checkpoint kind 'weights'"):
        read_checkpoint(tmp_path / "k.safetensors")
    save_file({"x": torch.ones(1)}, str(tmp_path / "m.safetensors"),
              metadata={"format": FORMAT, "kind": "backbone", "spec": "{not json"})
    with pytest.raises(UserError, match="metadata entry 'spec' is not valid JSON"):
        read_checkpoint(tmp_path / "m.safetensors")


# -- seeds: torchvision, timm, wrapped, prefixed, fnacli -------------------------------------
@pytest.mark.parametrize("width", [1.0, 0.75, 0.35])
def test_torchvision_seed_spec_is_inferred(tmp_path: Path, width: float) -> None:
    model = torchvision_seed(width)
    torch.save(model.state_dict(), tmp_path / "s.pth")
    tensors, spec = load_seed(str(tmp_path / "s.pth"))
    assert spec == mobilenetv2(width)
    Backbone(spec).load_state_dict(tensors, strict=True)
    assert torch.equal(tensors["stages.1.0.expand.conv.weight"],
                       model.state_dict()["features.2.conv.0.0.weight"])
    assert torch.equal(tensors["head.bn.running_var"],
                       model.state_dict()["features.18.1.running_var"])


@pytest.mark.parametrize("wrap", [
    lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3},
    lambda sd: {"model": {f"backbone.{k}": v for k, v in sd.items()}, "optimizer": {}},
    lambda sd: {"model": {"state_dict": {f"module.backbone.{k}": v for k, v in sd.items()}}},
    lambda sd: {f"model.backbone.body.{k}": v for k, v in sd.items()},
])
def test_wrapped_and_prefixed_seeds(tmp_path: Path, wrap: object, tv_seed_path: Path) -> None:
    sd = torch.load(tv_seed_path, weights_only=True)
    torch.save(wrap(sd), tmp_path / "w.pth")
    tensors, spec = load_seed(str(tmp_path / "w.pth"))
    ref, ref_spec = load_seed(str(tv_seed_path))
    assert spec == ref_spec == mobilenetv2(0.75)
    assert all(torch.equal(tensors[k], ref[k]) for k in ref)


def test_legacy_pickle_format_and_missing_bn_counters(tmp_path: Path) -> None:
    sd = {k: v for k, v in torchvision_seed(0.35).state_dict().items()
          if not k.endswith("num_batches_tracked")}  # as very old checkpoints are
    torch.save(sd, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    tensors, spec = load_seed(str(tmp_path / "old.pt"))
    assert spec == mobilenetv2(0.35)
    Backbone(spec).load_state_dict(tensors, strict=True)


def test_timm_seed_and_timm_safetensors(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    for name, width in (("mobilenetv2_100", 1.0), ("mobilenetv2_050", 0.5)):
        model = timm.create_model(name)
        torch.save({"state_dict": model.state_dict()}, tmp_path / "t.pth")
        tensors, spec = load_seed(str(tmp_path / "t.pth"))
        assert spec == mobilenetv2(width), name
        Backbone(spec).load_state_dict(tensors, strict=True)
    # timm's hub files are plain safetensors (no fnacli metadata)
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    tensors, spec = load_seed(str(tmp_path / "model.safetensors"))
    assert spec == mobilenetv2(0.5)
    assert torch.equal(tensors["stages.0.0.dw.conv.weight"],
                       model.state_dict()["blocks.0.0.conv_dw.weight"])


def test_timm_deeper_variant_groups_stages_by_key() -> None:
    timm = pytest.importorskip("timm")
    from fnacli.checkpoint import from_state_dict

    _, spec = from_state_dict(timm.create_model("mobilenetv2_110d").state_dict(), "110d")
    assert [s.depth for s in spec.stages] == [1, 3, 4, 5, 4, 4, 1]
    assert [s.stride for s in spec.stages] == [1, 2, 2, 2, 1, 2, 1]


def test_fnacli_backbone_and_detector_checkpoints_as_seeds(tmp_path: Path) -> None:
    spec = _tiny_spec()
    torch.manual_seed(1)
    state = Backbone(spec).state_dict()
    save_checkpoint(tmp_path / "b.safetensors", state, "backbone", {"spec": spec.to_dict()})
    tensors, got = load_seed(str(tmp_path / "b.safetensors"))
    assert got == spec  # strides from the metadata, not MobileNetV2's guess
    assert all(torch.equal(tensors[k], v) for k, v in state.items())
    # a detector: backbone under backbone.body.*, heads elsewhere, no head conv (RetinaNet)
    det = {f"backbone.body.{k}": v for k, v in state.items() if not k.startswith("head.")}
    det["head.classification_head.conv.weight"] = torch.ones(3, 3)
    save_checkpoint(tmp_path / "d.safetensors", det, "detector",
                    {"spec": spec.to_dict(), "task": "retinanet"})
    tensors, got = load_seed(str(tmp_path / "d.safetensors"))
    assert got.head_out is None and got.stages == spec.stages
    Backbone(got).load_state_dict(tensors, strict=True)
    save_checkpoint(tmp_path / "s.safetensors", state, "supernet", {})
    with pytest.raises(UserError, match="a supernet checkpoint; a seed must be a backbone"):
        load_seed(str(tmp_path / "s.safetensors"))


# -- refusing bad seeds ------------------------------------------------------------------------
class _Evil:
    """Unpickling this would create a file (a harmless stand-in for running any code)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (open, (str(self.target), "w"))


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_not_executed(tmp_path: Path, how: str) -> None:
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    if how == "torch.save":  # the zip archive torch.save writes
        torch.save({"features.0.0.weight": torch.ones(1), "x": _Evil(target)}, path)
    else:  # a bare pickle stream
        with path.open("wb") as f:
            pickle.dump({"x": _Evil(target)}, f, protocol=2)
    with pytest.raises(UserError, match=r"refused to load: it references .*open"):
        load_seed(str(path))
    assert not target.exists()


def test_wrong_seed_files_say_what_they_are(tmp_path: Path, tv_seed_path: Path) -> None:
    from torchvision.models import mobilenet_v3_small, resnet18

    cases = {}
    torch.save(resnet18().state_dict(), tmp_path / "resnet.pth")
    cases["resnet.pth"] = "not a MobileNetV2 state dict .*conv1.weight"
    torch.save(mobilenet_v3_small().state_dict(), tmp_path / "v3.pth")
    cases["v3.pth"] = "not MobileNetV2-shaped: unexpected tensor 'features.1.block"
    (tmp_path / "spec.json").write_text(mobilenetv2().to_json())
    cases["spec.json"] = "a JSON file, not a checkpoint"
    data = tv_seed_path.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 3])
    cases["cut.pth"] = "damaged or not a PyTorch checkpoint"
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pth")
    cases["meta.pth"] = "a dict with keys epoch, lr; expected a state dict of tensors"
    torch.save([torch.ones(1)], tmp_path / "list.pth")
    cases["list.pth"] = "a list; expected a state dict"
    (tmp_path / "notes.txt").write_text("just text")
    cases["notes.txt"] = "not a checkpoint"
    sd = torch.load(tv_seed_path, weights_only=True)
    sd["features.2.conv.0.0.weight"] = torch.ones(96, 20, 1, 1)  # 96/20: no integral ratio
    torch.save(sd, tmp_path / "odd.pth")
    cases["odd.pth"] = "not an integral expansion ratio"
    sd = {k: v for k, v in torch.load(tv_seed_path, weights_only=True).items()
          if not k.startswith(("features.14.", "features.15.", "features.16."))}
    torch.save(sd, tmp_path / "short.pth")  # the 160-channel stage removed
    cases["short.pth"] = r"\d stages found; strides are not stored"
    for name, message in cases.items():
        with pytest.raises(UserError, match=message) as e:
            load_seed(str(tmp_path / name))
        assert str(e.value).startswith(str(tmp_path / name)) and "\n" not in str(e.value), name
    with pytest.raises(UserError, match="no such file"):
        load_seed(str(tmp_path / "missing.pth"))


def test_torchvision_weight_names(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match="unknown torchvision MobileNetV2 weights 'NOPE'"):
        load_seed("torchvision:NOPE")
    import urllib.error

    import torchvision.models._api as tv_api  # where get_state_dict looks the loader up

    def offline(*a: object, **k: object) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)
    with pytest.raises(UserError, match=r"could not fetch torchvision's weights .*download "
                                        r"https://download\.pytorch\.org/.*mobilenet_v2"):
        load_seed("torchvision:IMAGENET1K_V1")
    sd = torchvision_seed(1.0).state_dict()
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", lambda *a, **k: sd)
    tensors, spec = load_seed("torchvision:IMAGENET1K_V2")
    assert spec == mobilenetv2() and torch.equal(tensors["stem.conv.weight"],
                                                 sd["features.0.0.weight"])


def test_torchvision_weights_offline_keep_stdout_clean(monkeypatch, run_cli, tmp_path):
    """torch.hub announces downloads on stdout; a failed fetch must leave stdout (the
    results channel) empty and say one line on stderr."""
    import sys
    import urllib.error

    import torchvision.models._api as tv_api

    def chatty_offline(*a: object, **k: object) -> None:
        sys.stdout.write('Downloading: "https://download.pytorch.org/x.pth" to /tmp/x.pth\n')
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", chatty_offline)
    out = tmp_path / "o.safetensors"
    code, stdout, err = run_cli(["remap", "torchvision:IMAGENET1K_V1", "--spec", "mobilenetv2",
                                 "-o", str(out)])
    assert code == 2 and stdout == "" and not out.exists()
    assert len(err.strip().splitlines()) == 1 and "could not fetch" in err


def test_same_checkpoint_same_bytes_across_processes(tmp_path):
    """safetensors orders its header through a per-process random hash map; fnacli rewrites
    it canonically so the same tensors and metadata always give the same file."""
    import hashlib
    import subprocess
    import sys

    code = ("import sys, torch\n"
            "from fnacli.checkpoint import save_checkpoint\n"
            "t = {f'w{i}': torch.arange(i + 1.0) for i in range(12)}\n"
            "meta = {k: {'v': k} for k in 'qwertyuiopasdfgh'}\n"
            "save_checkpoint(sys.argv[1], t, 'backbone', meta)\n")
    digests = set()
    for i in range(3):
        out = tmp_path / f"c{i}.safetensors"
        subprocess.run([sys.executable, "-c", code, str(out)], check=True)
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
        ck = read_checkpoint(out)
        assert ck.meta["q"] == {"v": "q"} and torch.equal(ck.tensors["w3"], torch.arange(4.0))
    assert len(digests) == 1


@pytest.mark.parametrize("name", ["mobilenetv2_035", "mobilenetv2_050", "mobilenetv2_075",
                                  "mobilenetv2_100", "mobilenetv2_110d", "mobilenetv2_120d",
                                  "mobilenetv2_140"])
def test_timm_names_as_specs_have_timms_widths_and_depths(name: str) -> None:
    """A timm model name as a spec is the network timm's constructor builds."""
    timm = pytest.importorskip("timm")
    from fnacli.spec import builtin_arch, load_arch

    torch.manual_seed(0)
    _, inferred = from_state_dict(timm.create_model(name).state_dict(), name)
    assert load_arch(name) == builtin_arch(name) == inferred


def test_timm_seed_uses_timms_pretrained_loading(tmp_path: Path, monkeypatch) -> None:
    """timm:NAME goes through timm.create_model(pretrained=True); here timm's loader reads a
    local file in place of the hub (the same code path after the download)."""
    timm = pytest.importorskip("timm")
    import fnacli.checkpoint as C

    torch.manual_seed(1)
    saved = timm.create_model("mobilenetv2_050").state_dict()
    torch.save(saved, tmp_path / "w.pth")
    calls = []

    def from_file(name: str) -> torch.nn.Module:
        calls.append(name)
        return timm.create_model(name, pretrained=True,
                                 pretrained_cfg_overlay={"file": str(tmp_path / "w.pth")})

    monkeypatch.setattr(C, "create_timm_model", from_file)
    tensors, spec = load_seed("timm:mobilenetv2_050")
    assert calls == ["mobilenetv2_050"] and spec == mobilenetv2(0.5)
    assert torch.equal(tensors["stem.conv.weight"], saved["conv_stem.weight"])
    with pytest.raises(UserError, match="no pretrained weights for mobilenetv2_075"):
        load_seed("timm:mobilenetv2_075")
    with pytest.raises(UserError, match="not a timm MobileNetV2"):
        load_seed("timm:resnet50")


def test_timm_seed_offline_says_what_to_download(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "TORCH_HOME": str(tmp_path / "torch"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run([sys.executable, "-m", "fnacli", "remap", "timm:mobilenetv2_100",
                        "--spec", "mobilenetv2_100", "-o", str(tmp_path / "o.safetensors")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and r.stdout == ""
    line, = r.stderr.strip().splitlines()
    assert line.startswith("fnacli: error: timm:mobilenetv2_100: could not fetch timm's weights")
    assert "https://huggingface.co/timm/mobilenetv2_100" in line
    assert line.endswith("elsewhere and pass the file instead")
