"""The public Python API: ``import fnacli`` stays torch-free, the steps resolve lazily, and
the notebook session of docs/api.md runs as written (the whole pipeline, tiny sizes)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
API_DOC = ROOT / "docs" / "api.md"

LAZY = """
import sys
import fnacli
assert "torch" not in sys.modules
assert callable(fnacli.remap) and callable(fnacli.search) and callable(fnacli.profile)
assert "torch" not in sys.modules  # resolving a step does not import torch either
assert callable(fnacli.measure_latency) and callable(fnacli.export)
assert fnacli.RemapConfig.__name__ == "RemapConfig"
import fnacli.export  # the exporters' module: the step keeps the name
from fnacli.export import load_model
assert fnacli.export.__module__ == "fnacli.pipeline.export" and callable(load_model)
try:
    fnacli.no_such_thing
except AttributeError:
    pass
else:
    raise SystemExit("no AttributeError")
"""


def test_import_is_cheap_and_steps_are_lazy() -> None:
    r = subprocess.run([sys.executable, "-c", LAZY], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr


def test_config_or_fields() -> None:
    import fnacli
    from fnacli.pipeline.common import make_config

    cfg = fnacli.RemapConfig("seed.pth", "mobilenetv2", output="o.safetensors", width="bn")
    assert make_config(fnacli.RemapConfig, (cfg,), {}) is cfg
    assert make_config(fnacli.RemapConfig, ("seed.pth", "mobilenetv2"),
                       {"output": "o.safetensors", "width": "bn"}) == cfg
    with pytest.raises(fnacli.UserError, match="no such file"):
        fnacli.remap("missing.pth", "mobilenetv2")


def test_api_doc_example_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", API_DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1
    env = {**os.environ, "FNACLI_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    code = "import torch; torch.set_num_threads(1)\n" + blocks[0]
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    assert "candidate architectures" in out and "searched ssdlite" in out
    assert re.search(r'"schema":"fnacli/arch@1"', out)
    assert "parameters remapped" in out and "'AP':" in out
    assert (tmp_path / "nb" / "final.safetensors").is_file()
    assert re.search(r"^spec0 [\d.]+M MAdds", out, re.M) and re.search(r"^spec1 ", out, re.M)


def test_library_callers_get_the_settings_ranges(tmp_path: Path) -> None:
    """A config's numbers are held to the same ranges as the CLI's options, before any work:
    the check names the parameter (the CLI its flag), and nothing is written."""
    import fnacli

    out = tmp_path / "o.safetensors"
    for kwargs, message in (({"noise": -0.5}, "noise: expected at least 0.0, got -0.5"),
                            ({"noise": float("inf")}, "noise: expected a finite number")):
        with pytest.raises(fnacli.UserError, match=re.escape(message)):
            fnacli.remap("missing.pth", "mobilenetv2", output=out, **kwargs)
    with pytest.raises(fnacli.UserError, match="^mutation_prob: expected at least 0.0 and at "
                                               "most 1.0, got 1.5"):
        fnacli.search(fnacli.OneShotSearchConfig("missing.safetensors", tmp_path / "s",
                                                 mutation_prob=1.5))
    with pytest.raises(fnacli.UserError, match="^population: expected at least 1, got 0"):
        fnacli.search(fnacli.OneShotSearchConfig("missing.safetensors", tmp_path / "s",
                                                 population=0))
    assert not out.exists() and not any(tmp_path.iterdir())


def test_every_option_of_a_step_is_its_configs_setting() -> None:
    """One declaration per setting: each option of a config-backed command has the default,
    help and range of its config field (the CLI adds only output-format and alias flags)."""
    import dataclasses

    import typer.main

    import fnacli
    from fnacli.cli.app import app
    from fnacli.pipeline.data import SynthDataConfig
    from fnacli.pipeline.pretrain import PretrainSeedConfig

    configs = {"expand": [fnacli.ExpandConfig], "remap": [fnacli.RemapConfig],
               "derive": [fnacli.DeriveConfig], "eval": [fnacli.EvaluateConfig],
               "export": [fnacli.ExportConfig], "latency": [fnacli.LatencyConfig],
               "finetune": [fnacli.FinetuneConfig], "madds": [fnacli.ProfileConfig,
                                                              fnacli.TableConfig],
               "search": [fnacli.DifferentiableSearchConfig, fnacli.OneShotSearchConfig],
               "data synth": [SynthDataConfig], "pretrain-seed": [PretrainSeedConfig],
               "sample": [fnacli.SampleConfig]}
    cli_only = {"as_json", "as_jsonl", "json_out", "ann_alias", "images_alias", "input_alias",
                "no_check", "no_latency", "lut", "show", "strategy", "eval.detections",
                "eval.force", "derive.output", "madds.latency_table", "madds.reference",
                "remap.show_spec"}
    group = typer.main.get_command(app)
    checked = 0
    for name, classes in configs.items():
        by_name: dict = {}
        for f in (f for cls in classes for f in dataclasses.fields(cls)):
            by_name.setdefault(f.name, f)
        by_flag = {f.metadata.get("flags", ("--" + f.name.replace("_", "-"),))[0]: f
                   for f in reversed(by_name.values())}
        command = group
        for word in name.split():
            command = command.commands[word]
        for p in command.params:
            f = by_name.get(p.name, by_flag.get(p.opts[0])) if p.opts[0].startswith("--") else None
            if {p.name, f"{name}.{p.name}"} & cli_only:
                continue  # the CLI's own (eval's --detections is a file, the config's a flag)
            assert f is not None or p.param_type_name == "argument", (name, p.name)
            if f is None:
                continue
            default = getattr(p.default, "value", p.default)
            if f.default is not dataclasses.MISSING and f"{name}.{p.name}" not in (
                    "madds.task", "madds.space"):  # madds: [a checkpoint's own task], --lut only
                assert default == f.default, (name, p.name, default, f.default)
            if "help" in f.metadata:
                assert p.help == f.metadata["help"], (name, p.name)
            for bound in ("min", "max"):
                assert getattr(p, bound, None) == f.metadata.get(bound), (name, p.name, bound)
            checked += 1
    assert checked > 150
