"""Where cost tables are cached (FNACLI_CACHE_DIR, then XDG_CACHE_HOME, then ~/.cache), and a
cache that cannot be written: said plainly, never reported as written (issue #25)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from test_lut import TINY

import fnacli.cost.cache as C
from fnacli.cost.lut import load_or_build_lut
from fnacli.spec import SpaceSpec


@pytest.fixture
def no_cache_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("FNACLI_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(C, "_warned", set())
    return monkeypatch


def test_cache_dir_follows_fnacli_then_xdg_then_home(no_cache_env: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    mp = no_cache_env
    mp.setenv("HOME", str(tmp_path / "home"))
    assert C.cache_dir() == tmp_path / "home" / ".cache" / "fnacli"
    mp.setenv("XDG_CACHE_HOME", "relative/cache")  # not absolute: ignored (XDG spec)
    assert C.cache_dir() == tmp_path / "home" / ".cache" / "fnacli"
    mp.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert C.cache_dir() == tmp_path / "xdg" / "fnacli"
    mp.setenv("FNACLI_CACHE_DIR", str(tmp_path / "own"))
    assert C.cache_dir() == tmp_path / "own"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_cache_under_a_file_shadowed_home_is_said_not_saved(
        no_cache_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("a file where the home folder should be")
    no_cache_env.setenv("HOME", str(home))
    records = _Records()
    logger = logging.getLogger("fnacli")
    logger.addHandler(records)
    try:
        lut = load_or_build_lut(SpaceSpec.from_dict(TINY), "none", (32, 32))
    finally:
        logger.removeHandler(records)
    assert lut.cached_at is None and len(lut.layers) > 0  # built all the same
    said = [m for m in records.messages if "could not save" in m]
    assert said and str(home / ".cache" / "fnacli") in said[0]
    assert not any(p.is_file() for p in tmp_path.rglob("*.json"))


def test_madds_lut_prints_no_path_it_did_not_write(no_cache_env: pytest.MonkeyPatch,
                                                   tmp_path: Path, run_cli) -> None:
    home = tmp_path / "home"
    home.write_text("")
    no_cache_env.setenv("HOME", str(home))
    space = tmp_path / "tiny.json"
    import json

    space.write_text(json.dumps(TINY))
    code, out, err = run_cli(["madds", "--space", space, "--lut", "--size", "32"])
    assert code == 0, err
    assert out.strip() == ""  # before: the cache path, never written
    assert "could not save" in err and "not cached" in err
    # a writable XDG_CACHE_HOME is used, and its path printed, once it exists
    no_cache_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    code, out, err = run_cli(["madds", "--space", space, "--lut", "--size", "32"])
    assert code == 0, err
    assert Path(out.strip()).is_file() and Path(out.strip()).is_relative_to(tmp_path / "xdg")


def test_latency_refuses_an_unwritable_cache_before_measuring(
        no_cache_env: pytest.MonkeyPatch, tmp_path: Path, run_cli) -> None:
    home = tmp_path / "home"
    home.write_text("")
    no_cache_env.setenv("HOME", str(home))
    code, _, err = run_cli(["latency", "--space", "fna", "--task", "none", "--size", "32"])
    assert code == 2
    assert "cannot save the latency table in the cache" in err and "-o FILE" in err
