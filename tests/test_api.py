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
