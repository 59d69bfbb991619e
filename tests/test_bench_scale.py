"""benchmarks/bench_scale.py: the COCO-size set it builds, its memory reading, and a small run
end to end (``--quick``, 10k images, is for people: minutes on a shared 2-core machine)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_scale.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_scale", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


bench = _load()


def test_the_set_is_coco_like_and_hard_linked(tmp_path: Path) -> None:
    from fnacli.detection.data import find_split, load_split

    boxes = bench.build_set(tmp_path / "coco", 40, 6)
    train = load_split(find_split(tmp_path / "coco", "train"), train=False, label_offset=1)
    assert len(train) == 40 and boxes["train"] == len(train.records.ann_id)
    assert train.cat_ids == bench.CATEGORY_IDS and len(train.cat_ids) == 80
    assert max(train.cat_ids) == 90  # COCO's ids, gaps included
    sizes = set(zip(train.records.width.tolist(), train.records.height.tolist(), strict=True))
    assert len(sizes) > 2 and any(w != h for w, h in sizes)
    inodes = {os.stat(train.image_path(i)).st_ino for i in range(len(train))}
    assert len(inodes) <= len(bench.SIZES)  # 40 names, at most 8 files
    doc = json.loads((tmp_path / "coco/annotations/instances_val2017.json").read_text())
    assert len(doc["images"]) == 6 and all(len(a["segmentation"][0]) == 16
                                           for a in doc["annotations"])
    assert not {im["id"] for im in doc["images"]} & set(train.all_image_ids)


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="Linux only")
def test_private_memory_reading_sees_an_allocation() -> None:
    import numpy as np

    before = bench._private_mb(os.getpid())[0]
    block = np.ones(64 * 2**20 // 8)  # 64 MB, touched
    assert bench._private_mb(os.getpid())[0] - before > 48
    del block


def test_the_table_prints_every_row_with_its_goal() -> None:
    rows = [bench.row("a", 3.0, 2.0, "s", 1.5, "ref"), bench.row("b", 1.0, None, "s", None)]
    text = bench.render(rows, "header")
    assert "| a | 3.00 s | 2.00 s (ref) | 1.50x | ≤ 1.5x | yes |" in text
    assert "| b | 1.00 s | — | — | — | — |" in text


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="Linux only")
def test_a_small_run_prints_every_row(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(SCRIPT), "--images", "120", "--json",
                        "--workdir", str(tmp_path / "w")], capture_output=True, text=True,
                       timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    names = [row["measurement"] for row in out["rows"]]
    assert len(names) == 10 and names[0].startswith("launch → first training step")
    assert any("4 workers" in n for n in names) and names[-1] == "eval: time"
    assert all(row["ratio"] > 0 for row in out["rows"] if row["goal"])
    memory = [row for row in out["rows"] if "worker private memory" in row["measurement"]]
    assert all(row["ok"] for row in memory)  # < 50 MB per worker
    assert not (tmp_path / "w").exists()  # removed unless --keep
