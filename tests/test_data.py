"""COCO loading: finding files, label mapping, cleaning, validation errors, splitting."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from fnacli.detection.data import CocoDetection, find_split, load_split, split_half
from fnacli.detection.transforms import AUGMENTS, train_transform
from fnacli.errors import UserError

CATS = [{"id": 12, "name": "c"}, {"id": 3, "name": "a"}, {"id": 7, "name": "b"}]


def _dataset(root: Path, anns: list[dict], images: int = 3, folder: str = "train2017",
             split: str = "train2017", size: tuple[int, int] = (64, 48)) -> Path:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / folder).mkdir(parents=True, exist_ok=True)
    ims = []
    for i in range(1, images + 1):
        Image.new("RGB", size, (10 * i, 0, 0)).save(root / folder / f"im{i}.png")
        ims.append({"id": i, "file_name": f"im{i}.png", "width": size[0], "height": size[1]})
    doc = {"images": ims, "annotations": anns, "categories": CATS}
    path = root / "annotations" / f"instances_{split}.json"
    path.write_text(json.dumps(doc))
    return path


def _ann(aid: int, iid: int, cat: int, box: list, **kw: object) -> dict:
    return {"id": aid, "image_id": iid, "category_id": cat, "bbox": box, **kw}


GOOD = [_ann(1, 1, 3, [1, 2, 10, 20]), _ann(2, 1, 12, [5, 5, 30, 30]),
        _ann(3, 2, 7, [0, 0, 64, 48]), _ann(4, 3, 3, [10, 10, 5, 5])]


@pytest.mark.parametrize("offset", [0, 1])
def test_label_mapping_round_trips_non_contiguous_ids(tmp_path: Path, offset: int) -> None:
    _dataset(tmp_path, GOOD)
    ds = load_split(find_split(tmp_path, "train"), train=False, label_offset=offset)
    assert ds.cat_ids == [3, 7, 12]  # ascending id order gives labels
    assert [ds.label_of(c) for c in (3, 7, 12)] == [offset, offset + 1, offset + 2]
    for c in (3, 7, 12):
        assert ds.category_of(ds.label_of(c)) == c
    assert ds.categories() == [{"id": 3, "name": "a"}, {"id": 7, "name": "b"},
                               {"id": 12, "name": "c"}]
    image, target = ds[0]
    assert image.shape == (3, 48, 64) and image.dtype == torch.float32
    assert image.max() <= 1.0
    assert target["image_id"] == 1
    assert target["labels"].tolist() == [ds.label_of(3), ds.label_of(12)]
    assert target["boxes"].tolist() == [[1, 2, 11, 22], [5, 5, 35, 35]]  # xywh -> xyxy


def test_training_drops_crowd_degenerate_and_clips(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    anns = [_ann(1, 1, 3, [1, 2, 10, 20]),
            _ann(2, 1, 3, [5, 5, 30, 30], iscrowd=1),
            _ann(3, 2, 7, [10, 10, 0.5, 20]),  # degenerate: w <= 1
            _ann(4, 3, 12, [50, 40, 30, 30])]  # sticks out of the 64x48 image
    _dataset(tmp_path, anns)
    with caplog.at_level(logging.INFO, logger="fnacli"):
        train = load_split(find_split(tmp_path, "train"), train=True, label_offset=1)
    assert train.ids == [1, 3]  # image 2 has no usable box left
    assert train[0][1]["boxes"].tolist() == [[1, 2, 11, 22]]  # crowd box left out
    assert train[1][1]["boxes"].tolist() == [[50, 40, 64, 48]]  # clipped to the image
    text = caplog.text
    assert "1 boxes reached outside" in text and "1 degenerate boxes" in text
    assert "1 crowd boxes" in text and "1 of 3 images have no usable box" in text
    full = load_split(find_split(tmp_path, "train"), train=False, label_offset=1)
    assert full.ids == [1, 2, 3] and len(full[0][1]["boxes"]) == 2  # eval keeps everything


def test_find_split_layouts(tmp_path: Path) -> None:
    ann = _dataset(tmp_path / "coco", GOOD)
    f = find_split(tmp_path / "coco", "train")
    assert f.ann == ann and f.image_dirs[0] == tmp_path / "coco" / "train2017"
    # explicit paths, images in a folder of any name
    ann2 = _dataset(tmp_path / "x", GOOD, folder="pics", split="mine")
    f = find_split(None, "train", ann2, tmp_path / "x" / "pics")
    assert len(load_split(f, train=True, label_offset=1)) == 3
    with pytest.raises(UserError, match="no annotations/instances_val"):
        find_split(tmp_path / "coco", "val")
    (tmp_path / "coco/annotations/instances_train_extra.json").write_text("{}")
    (tmp_path / "coco/annotations/instances_train2017.json").rename(
        tmp_path / "coco/annotations/instances_train_b.json")
    with pytest.raises(UserError, match="several train annotation files"):
        find_split(tmp_path / "coco", "train")


def test_split_half_is_seeded_disjoint_and_complete(tmp_path: Path) -> None:
    _dataset(tmp_path, [_ann(i, i, 3, [1, 1, 10, 10]) for i in range(1, 10)], images=9)
    ds = load_split(find_split(tmp_path, "train"), train=True, label_offset=1)
    a, b = split_half(ds, seed=1)
    a2, b2 = split_half(ds, seed=1)
    a3, _ = split_half(ds, seed=2)
    assert a.ids == a2.ids and b.ids == b2.ids
    assert sorted(a.ids + b.ids) == ds.ids and not set(a.ids) & set(b.ids)
    assert abs(len(a) - len(b)) <= 1 and a3.ids != a.ids
    assert b[0][1]["image_id"] == b.ids[0]  # views load their own images


@pytest.mark.parametrize("augment", AUGMENTS)
def test_augmentation_depends_only_on_seed_epoch_image(tmp_path: Path, augment: str) -> None:
    _dataset(tmp_path, GOOD)
    ds = load_split(find_split(tmp_path, "train"), train=True, label_offset=1,
                    transform=train_transform(augment), seed=5)
    torch.manual_seed(0)
    x1, t1 = ds[(2, 1)]
    torch.manual_seed(123)  # the global RNG state does not matter
    ds[(0, 0)]
    x2, t2 = ds[(2, 1)]
    assert torch.equal(x1, x2) and torch.equal(t1["boxes"], t2["boxes"])
    assert t1["labels"].tolist() == t2["labels"].tolist()
    if augment != "none":  # some epoch changes the sample (image 1's boxes are asymmetric)
        ref = ds[(2, 0)][1]["boxes"]
        assert any(ds[(e, 0)][1]["boxes"].shape != ref.shape
                   or not torch.equal(ds[(e, 0)][1]["boxes"], ref) for e in range(8))


# -- bad datasets: one clear line, exit 2, before any training ------------------------------
def _bad(tmp_path: Path, how: str) -> str:
    root = tmp_path / "bad"
    ann = _dataset(root, GOOD)
    doc = json.loads(ann.read_text())
    if how == "missing-ann":
        ann.unlink()
        return "no annotations/instances_train*.json"
    if how == "malformed":
        ann.write_text('{"images": [')
        return f"{ann}: not valid JSON"
    if how == "image-missing":
        (root / "train2017" / "im2.png").unlink()
        return f"{ann}: image id 2 'im2.png' not found in"
    if how == "outside":
        doc["annotations"][1]["bbox"] = [70, 5, 10, 10]
        ann.write_text(json.dumps(doc))
        return f"{ann}: annotations[1] (id 2): bbox [70, 5, 10, 10] lies outside its 64x48 image"
    if how == "unknown-category":
        doc["annotations"][2]["category_id"] = 99
        ann.write_text(json.dumps(doc))
        return f"{ann}: annotations[2] (id 3): unknown category_id 99 (categories: 3, 7, 12)"
    if how == "size-mismatch":
        Image.new("RGB", (32, 32)).save(root / "train2017" / "im3.png")
        return "im3.png: is 32x32 on disk but"
    if how == "not-an-image":
        (root / "train2017" / "im1.png").write_bytes(b"not a png")
        return "im1.png: cannot be read as an image"
    if how == "no-images-key":
        ann.write_text(json.dumps({"annotations": [], "categories": CATS}))
        return f"{ann}: missing 'images' list"
    raise AssertionError(how)


BAD = ["missing-ann", "malformed", "image-missing", "outside", "unknown-category",
       "size-mismatch", "not-an-image", "no-images-key"]


@pytest.fixture(scope="module")
def backbone_target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fnacli.checkpoint import save_checkpoint
    from fnacli.nn.backbone import Backbone
    from fnacli.spec import mobilenetv2

    spec = mobilenetv2(0.35)
    target = tmp_path_factory.mktemp("target") / "t.safetensors"
    save_checkpoint(target, Backbone(spec).state_dict(), "backbone", {"spec": spec.to_dict()})
    return target


@pytest.mark.parametrize("how", BAD)
def test_bad_dataset_raises_one_line_naming_file_and_entry(
        tmp_path: Path, how: str, backbone_target: Path, run_cli) -> None:
    expected = _bad(tmp_path, how)
    with pytest.raises(UserError) as e:
        load_split(find_split(tmp_path / "bad", "train"), train=True, label_offset=1)
    assert expected in str(e.value) and "\n" not in str(e.value)
    # the same through the command line: exit 2, that one line, no traceback, no outputs
    out = tmp_path / "final.safetensors"
    code, stdout, err = run_cli(["finetune", str(backbone_target), "--task", "ssdlite", "--data",
                               str(tmp_path / "bad"), "-o", str(out), "--epochs", "1",
                               "--workers", "0"])
    assert code == 2 and stdout == ""
    assert err.strip().splitlines() == [f"fnacli: error: {e.value}"]
    assert not out.exists() and not Path(f"{out}.ckpt").exists()


def test_bad_dataset_via_cli_exits_2_before_training(tmp_path: Path, backbone_target: Path,
                                                    run_cli) -> None:
    """A real process: exit status 2 and a single error line."""
    expected = _bad(tmp_path, "outside")
    target = backbone_target
    out = tmp_path / "final.safetensors"
    r = subprocess.run([sys.executable, "-m", "fnacli", "finetune", str(target), "--task",
                        "ssdlite", "--data", str(tmp_path / "bad"), "-o", str(out),
                        "--epochs", "1", "--batch-size", "2", "--size", "64", "--workers", "0"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.startswith("fnacli: error:")]
    assert len(lines) == 1 and expected in lines[0]
    assert "Traceback" not in r.stderr and not out.exists()
    assert not Path(f"{out}.ckpt").exists()
    # eval refuses a backbone (in-process main(): same exit path, no interpreter start-up)
    code, _, err = run_cli(["eval", str(target), "--data", str(tmp_path / "bad")])
    assert code == 2 and "a backbone checkpoint; expected a detector" in err




def test_dataset_class_is_a_torch_dataset(tmp_path: Path) -> None:
    _dataset(tmp_path, GOOD)
    ds = CocoDetection(find_split(tmp_path, "train"), train=True, check_images=False)
    assert len(ds) == 3 and ds.num_classes == 3
