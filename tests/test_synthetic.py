"""The synthetic COCO-format dataset: layout, validity, determinism, CLI behaviour."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from fnacli.detection.synthetic import SHAPES, SynthConfig, generate


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_layout_and_annotations_are_valid_coco(tmp_path: Path) -> None:
    cfg = SynthConfig(train=6, val=3, size=96, classes=4, seed=3)
    counts = generate(tmp_path / "d", cfg)
    root = tmp_path / "d"
    for split, n in (("train", 6), ("val", 3)):
        doc = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
        assert [c["name"] for c in doc["categories"]] == [s[0] for s in SHAPES[:4]]
        assert len(doc["images"]) == n
        assert len(doc["annotations"]) == counts[split] >= n  # at least one object per image
        ids = {im["id"] for im in doc["images"]}
        for im in doc["images"]:
            with Image.open(root / split / im["file_name"]) as pic:
                assert pic.size == (im["width"], im["height"]) == (96, 96)
        for a in doc["annotations"]:
            x, y, w, h = a["bbox"]
            assert a["image_id"] in ids and 1 <= a["category_id"] <= 4
            assert x >= 0 and y >= 0 and x + w <= 96 and y + h <= 96
            # 15-45% of the side; the drawn area fits inside the box
            assert w >= 0.1 * 96 and h >= 0.1 * 96 and 0 < a["area"] <= w * h
        # objects never overlap
        by_image: dict[int, list] = {}
        for a in doc["annotations"]:
            by_image.setdefault(a["image_id"], []).append(a["bbox"])
        for boxes in by_image.values():
            for i, (x0, y0, w0, h0) in enumerate(boxes):
                for x1, y1, w1, h1 in boxes[i + 1:]:
                    assert x0 + w0 <= x1 or x1 + w1 <= x0 or y0 + h0 <= y1 or y1 + h1 <= y0


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    cfg = SynthConfig(train=4, val=2, size=64, seed=7)
    generate(tmp_path / "a", cfg)
    generate(tmp_path / "b", cfg)
    generate(tmp_path / "c", SynthConfig(train=4, val=2, size=64, seed=8))
    a, b, c = (_digest(tmp_path / x) for x in "abc")
    assert a == b  # annotations byte-identical, and the images too
    assert a["annotations/instances_train.json"] != c["annotations/instances_train.json"]


def test_an_image_does_not_depend_on_how_many_are_written(tmp_path: Path) -> None:
    generate(tmp_path / "few", SynthConfig(train=2, val=1, size=64, seed=1, fmt="png"))
    generate(tmp_path / "many", SynthConfig(train=5, val=1, size=64, seed=1, fmt="png"))
    for name in ("train/000000.png", "train/000001.png", "val/000000.png"):
        assert (tmp_path / "few" / name).read_bytes() == (tmp_path / "many" / name).read_bytes()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fnacli", *args], capture_output=True,
                          text=True, timeout=120)


def test_cli_refuses_to_overwrite_and_rejects_bad_options(tmp_path: Path) -> None:
    out = tmp_path / "d"
    r = _cli("data", "synth", str(out), "--train", "2", "--val", "1", "--size", "64", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["train_images"] == 2
    r = _cli("data", "synth", str(out), "--train", "2", "--val", "1", "--size", "64")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"fnacli: error: {out}: folder exists and is not empty (use --force to overwrite)"]
    r = _cli("data", "synth", str(tmp_path / "e"), "--classes", "81")
    assert r.returncode == 2 and "--classes: expected 1..80" in r.stderr
    assert "Traceback" not in r.stderr


def test_coco_like_settings_give_80_classes_many_objects_non_square(tmp_path: Path,
                                                                      run_cli) -> None:
    code, out, err = run_cli(["data", "synth", str(tmp_path / "d"), "--train", "3", "--val",
                              "1", "--size", "96", "--height", "64", "--classes", "80",
                              "--min-objects", "8", "--max-objects", "12", "--max-scale",
                              "0.2", "--min-scale", "0.1", "--json"])
    assert code == 0, err
    assert json.loads(out)["height"] == 64
    doc = json.loads((tmp_path / "d/annotations/instances_train.json").read_text())
    assert len(doc["categories"]) == 80 and len({c["name"] for c in doc["categories"]}) == 80
    assert all((im["width"], im["height"]) == (96, 64) for im in doc["images"])
    assert Image.open(tmp_path / "d/train/000000.jpg").size == (96, 64)
    per_image = [sum(a["image_id"] == im["id"] for a in doc["annotations"])
                 for im in doc["images"]]
    assert min(per_image) >= 6 and max(per_image) <= 12  # a few may not fit: rejection
    for a in doc["annotations"]:
        x, y, w, h = a["bbox"]
        assert 0 <= x and x + w <= 96 and 0 <= y and y + h <= 64
    code, _, err = run_cli(["data", "synth", str(tmp_path / "e"), "--min-objects", "5",
                            "--max-objects", "2"])
    assert code == 2 and "--min-objects/--max-objects" in err


@pytest.mark.parametrize("classes", [1, 8])
def test_every_class_count_generates(tmp_path: Path, classes: int) -> None:
    generate(tmp_path / "d", SynthConfig(train=3, val=1, size=64, classes=classes))
    doc = json.loads((tmp_path / "d/annotations/instances_train.json").read_text())
    assert len(doc["categories"]) == classes


def test_interrupted_force_rewrite_leaves_no_stale_annotations(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    import fnacli.detection.synthetic as synthetic

    out = tmp_path / "d"
    generate(out, SynthConfig(train=3, val=2, size=64))

    def interrupted(path: Path, text: str) -> None:
        raise KeyboardInterrupt  # after the new train/ folder replaced the old one

    monkeypatch.setattr(synthetic, "write_text_atomic", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate(out, SynthConfig(train=3, val=2, size=96), force=True)
    assert Image.open(out / "train" / "000000.jpg").size == (96, 96)
    # the old train annotations (64 px images) would now describe the wrong files
    assert not (out / "annotations" / "instances_train.json").exists()


def _near(pixels, colour, tol: int = 45):
    import numpy as np

    return int((np.abs(pixels.astype(int) - np.array(colour)).max(axis=-1) < tol).sum())


def test_context_variant_hides_the_class_in_a_ring_outside_the_box(tmp_path: Path) -> None:
    """Inside its box an object is dark whatever its class; only a ring of the class's
    colour around the box, outside it, tells the classes apart."""
    import numpy as np

    from fnacli.detection.synthetic import COLOUR_NAMES

    generate(tmp_path / "d", SynthConfig(train=12, val=2, size=96, classes=3, seed=2,
                                         fmt="png", variant="context"))
    doc = json.loads((tmp_path / "d/annotations/instances_train.json").read_text())
    assert [c["name"] for c in doc["categories"]] == [f"{n} ring" for n in COLOUR_NAMES[:3]]
    assert doc["info"]["variant"] == "context"
    colours = [c for _, c in SHAPES[:3]]
    files = {im["id"]: im["file_name"] for im in doc["images"]}
    seen = set()
    for a in doc["annotations"]:
        img = np.asarray(Image.open(tmp_path / "d/train" / files[a["image_id"]]))
        x, y, w, h = a["bbox"]
        cls = a["category_id"] - 1
        seen.add(cls)
        cx, cy = x + w // 2, y + h // 2
        # the object's centre is dark, whatever the class
        assert img[cy, cx].max() < 60
        # inside the box: no class colour at all (the ring lies outside)
        inside = img[y:y + h, x:x + w]
        assert all(_near(inside, c) <= 0.02 * w * h for c in colours)
        # around the box (within twice its size): its own class colour, no other
        half = max(w, h)
        x0, y0 = max(0, cx - 2 * half), max(0, cy - 2 * half)
        around = img[y0:cy + 2 * half, x0:cx + 2 * half].copy()
        around[y - y0:y - y0 + h, x - x0:x - x0 + w] = 0
        assert _near(around, colours[cls]) >= 10
    assert seen == {0, 1, 2}


def test_context_variant_differs_and_the_default_is_unchanged(tmp_path: Path) -> None:
    generate(tmp_path / "s", SynthConfig(train=2, val=1, size=64, seed=4))
    generate(tmp_path / "c", SynthConfig(train=2, val=1, size=64, seed=4, variant="context"))
    s, c = _digest(tmp_path / "s"), _digest(tmp_path / "c")
    assert s["train/000000.jpg"] != c["train/000000.jpg"]
    doc = json.loads((tmp_path / "s/annotations/instances_train.json").read_text())
    assert "variant" not in doc["info"]  # the default dataset's annotations keep their bytes
    r = _cli("data", "synth", str(tmp_path / "e"), "--variant", "nope")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_missing_parent_folders_are_created(tmp_path: Path) -> None:
    from fnacli.detection.synthetic import SynthConfig, generate
    from fnacli.errors import UserError

    out = tmp_path / "a" / "b" / "data"
    generate(out, SynthConfig(train=1, val=1, size=64, seed=0))
    assert (out / "annotations").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        generate(tmp_path / "file" / "data", SynthConfig(train=1, val=1, size=64, seed=0))
