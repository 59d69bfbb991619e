"""The install recipe, read through `make -n` (nothing is installed): `make install` gets the
user extras only, `make test` adds the test tools and still checks torchvision's ops, the
TORCH_INDEX variable installs torch and torchvision from that index first, pip's progress is
shown, and the Makefile's torch bounds are pyproject's."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def make_n(tmp_path: Path, *args: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)  # a fresh copy: no .venv, everything runs
    r = subprocess.run(["make", "-n", *args], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_install_has_no_test_extras_and_test_has_them(tmp_path: Path) -> None:
    install = make_n(tmp_path, "install")
    assert '-e ".[all]"' in install and "[test]" not in install
    assert "--index-url" not in install  # the registry's torch by default
    assert not re.search(r"pip install[^\n]* -q\b", install)  # pip shows its progress
    test = make_n(tmp_path, "test")
    assert '-e ".[test]"' in test and "torchvision.ops" in test and "nms(" in test
    assert "pytest" in test


def test_torch_index_installs_torch_and_torchvision_from_it_first(tmp_path: Path) -> None:
    out = make_n(tmp_path, "install", "TORCH_INDEX=https://download.pytorch.org/whl/cpu")
    lines = out.splitlines()
    first = next(i for i, x in enumerate(lines) if "--index-url" in x)
    assert "https://download.pytorch.org/whl/cpu" in lines[first]
    assert '"torch' in lines[first] and '"torchvision' in lines[first]
    assert first < next(i for i, x in enumerate(lines) if '-e ".[all]"' in x)


def test_pins_agree() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {re.split(r"[<>=\[]", d)[0]: d for d in project["dependencies"]}
    makefile = (ROOT / "Makefile").read_text()
    for name in ("torch", "torchvision"):
        assert f'"{deps[name]}"' in makefile  # TORCH_REQS matches the package's bounds
        assert re.search(r">=[\d.]+,<\d", deps[name])  # lower and upper bound
    extras = project["optional-dependencies"]
    assert set(extras["all"]) == {*extras["plots"], *extras["tensorboard"], *extras["timm"]}
    assert set(extras["all"]) <= set(extras["test"])
