"""The steps as a library caller uses them: real signatures and docstrings, every spec form
the CLI takes (names, files, ``Path``s, ``ArchSpec``s, dicts), a config plus overrides, and
errors that name the parameter as written (the CLI keeps naming the flag)."""

from __future__ import annotations

import inspect
import json
import pydoc
from pathlib import Path

import pytest

import fnacli

STEPS = ("expand", "search", "search_differentiable", "search_oneshot", "derive", "remap",
         "finetune", "evaluate", "profile", "build_table",
         "measure_latency", "export", "compare")


@pytest.mark.parametrize("name", STEPS)
def test_help_of_a_step_lists_its_parameters(name: str) -> None:
    fn = getattr(fnacli, name)
    sig = inspect.signature(fn)
    assert "args" not in sig.parameters and "kwargs" not in sig.parameters
    assert sig.return_annotation is not inspect.Signature.empty
    text = pydoc.render_doc(fn, renderer=pydoc.plaintext)
    for p in sig.parameters.values():
        assert f"\n    {p.name} : " in text, p.name  # each parameter documented
    assert "see the module docstring" not in text


def test_remap_signature_has_types_and_defaults() -> None:
    sig = inspect.signature(fnacli.remap)
    assert list(sig.parameters)[:3] == ["seed", "spec", "output"]
    assert repr(sig.parameters["seed"].annotation) == "str | Path"
    assert sig.parameters["width"].default == "first"
    assert sig.parameters["spec"].default is inspect.Parameter.empty


def test_profile_takes_every_spec_form(tmp_path: Path) -> None:
    arch = fnacli.load_arch("mobilenetv2-0.5")
    f = tmp_path / "arch.json"
    f.write_text(arch.to_json(), encoding="utf-8")
    ref = fnacli.profile([arch], size=64).profiles[0].madds
    for specs in (["mobilenetv2-0.5"], "mobilenetv2-0.5", [f], f, [str(f)], arch.to_dict(),
                  [arch.to_dict()], {"spec": arch.to_dict()}, [("mine", arch)]):
        r = fnacli.profile(specs, size=64)
        assert [p.madds for p in r.profiles] == [ref], specs
    named = fnacli.profile({"half": "mobilenetv2-0.5", "full": "mobilenetv2"}, size=64)
    assert [p.name for p in named.profiles] == ["half", "full"]
    assert named.profiles[1].madds > ref
    r = fnacli.profile(["mobilenetv2", "mobilenetv2-0.5"], task="ssdlite", size=64)
    assert [p.name for p in r.profiles] == ["mobilenetv2", "mobilenetv2-0.5"]
    with pytest.raises(fnacli.UserError, match="^ab: unknown built-in architecture"):
        fnacli.profile(["ab"])  # a two-letter name is a name, not a (name, spec) pair


def test_remap_and_expand_take_paths(tmp_path: Path, tv_seed_path: Path) -> None:
    out = tmp_path / "t.safetensors"
    r = fnacli.remap(Path(tv_seed_path), "mobilenetv2-0.75", output=out)
    assert out.is_file() and r.output == str(out) and r.seed == str(tv_seed_path)
    d = fnacli.remap(tv_seed_path, fnacli.load_arch("mobilenetv2-0.75").to_dict())
    assert d.params == r.params
    sup = tmp_path / "s.safetensors"
    e = fnacli.expand(Path(tv_seed_path), sup, space=Path(_tiny_space(tmp_path)))
    assert sup.is_file() and e.output == str(sup)


def _tiny_space(tmp_path: Path) -> Path:
    ops = ["k3_e3", "skip"]
    doc = {"schema": "fnacli/space@1", "name": "tiny", "stem": {"out": 16, "stride": 2},
           "head": {"out": 64},
           "stages": [{"out": 8, "stride": 1, "ops": ["k3_e1"]},
                      *({"out": o, "stride": s, "layers": 1, "ops": ops}
                        for o, s in ((8, 2), (16, 2), (24, 2), (32, 1), (48, 2))),
                      {"out": 64, "stride": 1, "ops": ["k3_e6"]}]}
    p = tmp_path / "space.json"
    p.write_text(json.dumps(doc), encoding="utf-8")
    return p


def test_a_config_with_overrides(tmp_path: Path, tv_seed_path: Path) -> None:
    cfg = fnacli.RemapConfig(tv_seed_path, "mobilenetv2-0.75")
    out = tmp_path / "o.safetensors"
    r = fnacli.remap(cfg, output=out)
    assert out.is_file() and r.output == str(out) and cfg.output is None
    with pytest.raises(TypeError, match="only positional argument"):
        fnacli.remap(cfg, "mobilenetv2")


def test_errors_name_the_parameter_and_the_cli_the_flag(tmp_path: Path, run_cli) -> None:
    with pytest.raises(fnacli.UserError, match=r"^noise: expected at least 0\.0") as e:
        fnacli.remap("seed.pth", "mobilenetv2", noise=-1.0)
    assert e.value.cli_message.startswith("--noise: expected at least 0.0")
    with pytest.raises(fnacli.UserError, match="^output: a checkpoint is binary"):
        fnacli.remap("seed.pth", "mobilenetv2", output="-")
    with pytest.raises(fnacli.UserError, match="^size: expected N or WxH"):
        fnacli.profile("mobilenetv2", size="tiny")
    code, _, err = run_cli(["remap", "seed.pth", "--spec", "mobilenetv2", "-o", "-"])
    assert code == 2 and "error: -o: a checkpoint is binary" in err
    code, _, err = run_cli(["remap", "seed.pth", "--spec", "mobilenetv2", "--noise", "inf",
                            "-o", str(tmp_path / "x.safetensors")])
    assert code == 2 and "error: --noise: expected a finite number" in err


@pytest.mark.parametrize("name", STEPS)
def test_every_parameter_has_a_meaning(name: str) -> None:
    assert "(undocumented)" not in (getattr(fnacli, name).__doc__ or "")


def test_default_threads_leave_the_workers_their_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from fnacli.pipeline import common

    monkeypatch.setattr(common, "cpu_cores", lambda: 16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert common.choose_threads(0, workers=2) == 14
    assert common.choose_threads(0, workers=0) == 16
    assert common.choose_threads(3, workers=2) == 3  # given: as given
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun: 4 processes share the 16 cores
    assert common.choose_threads(0, workers=2) == 2
    monkeypatch.setattr(common, "cpu_cores", lambda: 2)
    assert common.choose_threads(0, workers=4) == 1  # never below one


def test_a_training_step_runs_at_its_threads() -> None:
    import torch

    from fnacli.pipeline.common import in_processes

    class Cfg:
        device, threads, workers = "cpu", 1, 0

    class Result:
        pass

    def step(cfg: object, env: object) -> Result:
        r = Result()
        r.threads = torch.get_num_threads()  # type: ignore[attr-defined]
        return r

    before = torch.get_num_threads()
    try:
        assert in_processes(step, Cfg()).threads == 1
    finally:
        torch.set_num_threads(before)


def test_every_computing_command_takes_threads() -> None:
    import typer.main

    from fnacli.cli.app import app

    group = typer.main.get_command(app)
    for name in ("expand", "search", "finetune", "eval", "export", "latency", "pretrain-seed"):
        flags = {o for p in group.commands[name].params for o in p.opts}
        assert "--threads" in flags, name


@pytest.mark.parametrize("name", (*STEPS, "sample"))
def test_api_doc_shows_each_signature(name: str) -> None:
    from fnacli.pipeline.common import signature_text

    doc = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text(encoding="utf-8")
    assert f"```text\n{signature_text(getattr(fnacli, name))}\n```" in doc
