"""COCO-scale loading (issue 27): header-only image checks, the split cache and its
invalidation, the records buffer that workers share, views of a loaded split."""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fnacli.detection import split_cache
from fnacli.detection.data import CocoDetection, find_split, load_split
from fnacli.detection.image_check import decoded_size, header_size, image_sizes
from fnacli.errors import UserError

CATS = [{"id": 5, "name": "a"}, {"id": 9, "name": "b"}]


def _jpeg(size: tuple[int, int], **save: object) -> bytes:
    rng = np.random.default_rng(size[0])
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
        buf, "JPEG", **save)
    return buf.getvalue()


def _write(root: Path, n: int = 4, size: tuple[int, int] = (40, 30)) -> Path:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "train").mkdir(exist_ok=True)
    images, anns = [], []
    for i in range(1, n + 1):
        (root / "train" / f"{i}.jpg").write_bytes(_jpeg(size))
        images.append({"id": 10 * i, "file_name": f"{i}.jpg", "width": size[0],
                       "height": size[1]})
        anns.append({"id": i, "image_id": 10 * i, "category_id": 5 if i % 2 else 9,
                     "bbox": [1, 2, 10, 12]})
    anns.append({"id": 10_000, "image_id": 10, "category_id": 9, "bbox": [0, 0, 0.5, 9]})
    ann = root / "annotations" / "instances_train.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": CATS}))
    return ann


def _age(path: Path, seconds: float = 60) -> None:
    """Date a file back, as files written before the cache are (fresh ones are re-checked)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


def _aged(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            _age(p)


# -- image checks ----------------------------------------------------------------------------
@pytest.mark.parametrize("save", [{}, {"progressive": True}, {"quality": 30},
                                  {"exif": b"Exif\x00\x00" + b"\x00" * 5000}])
def test_header_size_matches_pil_without_decoding(tmp_path: Path, save: dict) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(_jpeg((123, 45), **save))
    assert header_size(str(path)) == (123, 45) == Image.open(path).size
    png = tmp_path / "a.png"
    Image.new("RGB", (7, 300)).save(png)
    assert header_size(str(png)) == (7, 300)
    Image.new("RGB", (9, 8)).save(tmp_path / "a.bmp")  # not parsed here: PIL's header
    assert header_size(str(tmp_path / "a.bmp")) == (9, 8)
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00")  # a JPEG start, no frame
    assert header_size(str(tmp_path / "junk.jpg")).startswith("cannot be read as an image")


def test_header_check_is_the_default_and_decode_catches_a_truncated_image(
        tmp_path: Path) -> None:
    _write(tmp_path)
    whole = (tmp_path / "train" / "2.jpg").read_bytes()
    (tmp_path / "train" / "2.jpg").write_bytes(whole[:len(whole) // 2])  # the header survives
    assert isinstance(decoded_size(str(tmp_path / "train" / "2.jpg")), str)
    ds = load_split(find_split(tmp_path, "train"), train=False, label_offset=1)
    assert len(ds) == 4  # header-only: the truncated file passes
    with pytest.raises(UserError, match=r"2\.jpg: cannot be read as an image .*image id 20"):
        load_split(find_split(tmp_path, "train"), train=False, label_offset=1,
                   check_images="decode")


def test_the_environment_picks_the_check_for_commands(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path)
    whole = (tmp_path / "train" / "1.jpg").read_bytes()
    (tmp_path / "train" / "1.jpg").write_bytes(whole[:len(whole) // 2])
    monkeypatch.setenv("FNACLI_IMAGE_CHECK", "decode")
    with pytest.raises(UserError, match=r"1\.jpg: cannot be read"):
        load_split(find_split(tmp_path, "train"), train=False, label_offset=1)
    monkeypatch.setenv("FNACLI_IMAGE_CHECK", "full")
    with pytest.raises(UserError, match="FNACLI_IMAGE_CHECK: expected one of none, header, "
                                        "decode, got 'full'"):
        load_split(find_split(tmp_path, "train"), train=False, label_offset=1)


def test_parallel_checks_give_the_same_answers_in_order(tmp_path: Path) -> None:
    paths = []
    for i, size in enumerate([(10, 20), (31, 7), (64, 64)]):
        p = tmp_path / f"{i}.jpg"
        p.write_bytes(_jpeg(size))
        paths.append(str(p))
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    paths = (paths + [str(tmp_path / "bad.jpg")]) * 700  # past the process-pool threshold
    got = image_sizes(paths, "header", workers=2)
    assert got[:3] == [(10, 20), (31, 7), (64, 64)] and got[3].startswith("cannot be read")
    assert got == got[:4] * 700


# -- the split cache ---------------------------------------------------------------------------
def test_second_load_comes_from_the_cache(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path)
    _aged(tmp_path)
    first = load_split(find_split(tmp_path, "train"), train=True, label_offset=1)
    assert list(split_cache.cache_folder().glob("split-*.npz"))

    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("parsed or checked again")

    monkeypatch.setattr("fnacli.detection.split_index.load_columns", refuse)
    monkeypatch.setattr("fnacli.detection.split_index.image_sizes", refuse)
    again = load_split(find_split(tmp_path, "train"), train=True, label_offset=1)
    assert again.ids == first.ids == [10, 20, 30, 40]
    for k in range(len(first)):
        assert again[k][1]["boxes"].tolist() == first[k][1]["boxes"].tolist()
        assert again[k][1]["labels"].tolist() == first[k][1]["labels"].tolist()


def test_cache_sees_an_image_that_changed_size_or_time(tmp_path: Path) -> None:
    _write(tmp_path)
    _aged(tmp_path)
    load_split(find_split(tmp_path, "train"), train=False, label_offset=1)
    # same byte count, other pixel size: only the modification time says it changed
    img = tmp_path / "train" / "3.jpg"
    other = bytearray(img.read_bytes())
    sof = other.index(b"\xff\xc0")
    other[sof + 5:sof + 7] = (31).to_bytes(2, "big")  # the frame header's height
    img.write_bytes(bytes(other))
    _age(img, 30)  # not the time it was checked at, and long before the cache was written
    with pytest.raises(UserError, match=r"3\.jpg: is 40x31 on disk but .* says 40x30"):
        load_split(find_split(tmp_path, "train"), train=False, label_offset=1)
    img.write_bytes(_jpeg((40, 30)))  # fixed: loads again
    assert len(load_split(find_split(tmp_path, "train"), train=False, label_offset=1)) == 4


def test_cache_sees_a_changed_annotation_file_and_a_deeper_check(tmp_path: Path) -> None:
    ann = _write(tmp_path)
    _aged(tmp_path)
    assert load_split(find_split(tmp_path, "train"), train=False, label_offset=1).ids[0] == 10
    doc = json.loads(ann.read_text())
    doc["annotations"][0]["category_id"] = 77
    ann.write_text(json.dumps(doc))
    with pytest.raises(UserError, match="unknown category_id 77"):
        load_split(find_split(tmp_path, "train"), train=False, label_offset=1)
    doc["annotations"][0]["category_id"] = 9
    ann.write_text(json.dumps(doc))
    _aged(tmp_path)
    load_split(find_split(tmp_path, "train"), train=False, label_offset=1)  # header-checked
    whole = (tmp_path / "train" / "4.jpg").read_bytes()
    (tmp_path / "train" / "4.jpg").write_bytes(whole[:-200])
    _age(tmp_path / "train" / "4.jpg", 30)  # changed, but dated back: size tells
    with pytest.raises(UserError, match=r"4\.jpg: cannot be read"):
        load_split(find_split(tmp_path, "train"), train=False, label_offset=1,
                   check_images="decode")


def test_a_missing_image_after_caching_is_named(tmp_path: Path) -> None:
    ann = _write(tmp_path)
    _aged(tmp_path)
    load_split(find_split(tmp_path, "train"), train=False, label_offset=1)
    (tmp_path / "train" / "2.jpg").unlink()
    with pytest.raises(UserError, match=f"{ann}: image id 20 '2.jpg' not found"):
        load_split(find_split(tmp_path, "train"), train=False, label_offset=1)


# -- one buffer, shared by workers; views ----------------------------------------------------
def test_the_dataset_is_one_buffer_and_pickles_small(tmp_path: Path) -> None:
    _write(tmp_path, n=200)
    ds = load_split(find_split(tmp_path, "train"), train=True, label_offset=1)
    assert ds.coco.imgs  # built in this process ...
    blob = pickle.dumps(ds)
    assert b"pycocotools" not in blob  # ... and never sent to a worker
    assert len(blob) < ds.records.buffer.nbytes + ds._rows.nbytes + 2048
    for name, value in vars(ds).items():  # no per-image Python objects anywhere
        assert not isinstance(value, list | dict | set) or len(value) <= 2, name
    assert all(v.base is not None for v in ds.records._columns.values())  # views of one buffer
    clone = pickle.loads(blob)
    assert clone.ids == ds.ids and clone[3][1]["boxes"].tolist() == ds[3][1]["boxes"].tolist()


def test_views_by_image_id_share_the_records(tmp_path: Path) -> None:
    _write(tmp_path)
    train = load_split(find_split(tmp_path, "train"), train=True, label_offset=1)
    held = train.view([40, 10], train=False, transform=None)
    assert held.ids == [10, 40] and held.records is train.records and not held.train
    assert len(held[0][1]["boxes"]) == 2  # evaluation keeps the degenerate box
    assert len(train[0][1]["boxes"]) == 1
    assert train.view().ids == train.ids and train.view(train=False).all_image_ids == [
        10, 20, 30, 40]
    assert held.path_of(40) == tmp_path / "train" / "4.jpg"
    with pytest.raises(UserError, match="no image id 11"):
        train.view([10, 11])


def test_dataset_class_still_takes_the_old_flag(tmp_path: Path) -> None:
    _write(tmp_path)
    assert len(CocoDetection(find_split(tmp_path, "train"), train=True,
                             check_images=False)) == 4


# -- the two readers agree ---------------------------------------------------------------------
def test_msgspec_reader_and_json_reader_give_the_same_columns(tmp_path: Path) -> None:
    from fnacli.detection.annotations import _DECODER, _struct_columns, columns

    rng = np.random.default_rng(0)
    images = [{"id": int(i), "file_name": f"{i}.jpg", "width": 50, "height": 40, "x": [1]}
              for i in rng.permutation(30) + 7]
    anns = []
    for k in range(200):
        w = 0.5 if k % 11 == 0 else float(rng.uniform(1, 12))  # some degenerate
        a = {"id": 1000 - k, "image_id": images[k % 30]["id"],
             "category_id": int(rng.choice([9, 5])),
             "bbox": [float(rng.uniform(-0.4, 45)), int(rng.integers(0, 38)), w, 3],
             "segmentation": [[1, 2, 3, 4]]}
        if k % 3:
            a["area"] = float(k)
        if k % 7 == 0:
            a["iscrowd"] = 1
        anns.append(a)
    text = json.dumps({"images": images, "annotations": anns, "categories": CATS})
    fast = _struct_columns(_DECODER.decode(text.encode()))
    slow = columns(json.loads(text), tmp_path / "x.json")
    for name, value in vars(slow).items():
        other = getattr(fast, name)
        if isinstance(value, np.ndarray):
            assert value.dtype == other.dtype and np.array_equal(value, other), name
        else:
            assert value == other, name
    assert slow.clipped > 0 and slow.crowd.any() and slow.degenerate.any()


@pytest.mark.parametrize("bad, message", [
    ({"iscrowd": True}, None),  # msgspec refuses a bool; json's reader takes it (truthy)
    ({"bbox": [1, 2, "3", 4]}, "'bbox' must be 4 finite numbers"),
    ({"id": 1.0}, "'id' must be an integer"),
    ({"image_id": 12345}, "image_id 12345 is not in 'images'"),
])
def test_what_msgspec_refuses_goes_to_the_entry_checker(tmp_path: Path, bad: dict,
                                                        message: str | None) -> None:
    ann = _write(tmp_path)
    doc = json.loads(ann.read_text())
    doc["annotations"][1].update(bad)
    ann.write_text(json.dumps(doc))
    if message is None:
        ds = load_split(find_split(tmp_path, "train"), train=False, label_offset=1)
        assert ds.records.crowd.tolist() == [False, False, True, False, False]
    else:
        with pytest.raises(UserError, match=rf"annotations\[1\]( \(id .*\))?: {message}"):
            load_split(find_split(tmp_path, "train"), train=False, label_offset=1)
