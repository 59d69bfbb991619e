"""COCO evaluation against hand-made ground truth with known answers."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.cocoeval import COCOeval
from torch import nn

from fnacli.detection.data import _quiet_coco, find_split, load_split
from fnacli.detection.evaluate import (
    STAT_NAMES,
    Detections,
    coco_bbox_eval,
    evaluate,
    to_detections,
)

# two images, three categories with non-contiguous ids; every box is "large" (> 96² px)
GT = {
    "images": [{"id": 1, "file_name": "a.png", "width": 300, "height": 300},
               {"id": 2, "file_name": "b.png", "width": 300, "height": 300}],
    "categories": [{"id": 4, "name": "cat"}, {"id": 9, "name": "dog"}, {"id": 11, "name": "x"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 4, "bbox": [10, 10, 100, 100], "area": 1e4,
         "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 9, "bbox": [150, 150, 120, 110], "area": 13200,
         "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 4, "bbox": [50, 60, 200, 150], "area": 3e4,
         "iscrowd": 0},
    ],
}


def _det(ann: dict, dx: float = 0.0, score: float = 0.9) -> dict:
    x, y, w, h = ann["bbox"]
    return {"image_id": ann["image_id"], "category_id": ann["category_id"],
            "bbox": [x + dx, y, w, h], "score": score}


def test_perfect_detections_score_one() -> None:
    gt = _quiet_coco(json.loads(json.dumps(GT)))
    res = coco_bbox_eval(gt, [_det(a) for a in GT["annotations"]], per_class=True)
    assert list(res.stats) == list(STAT_NAMES)
    for name in ("AP", "AP50", "AP75", "APl", "AR1", "AR10", "AR100", "ARl"):
        assert res.stats[name] == pytest.approx(1.0)
    # no small or medium ground truth: COCOeval's -1
    assert res.stats["APs"] == res.stats["APm"] == res.stats["ARs"] == res.stats["ARm"] == -1
    assert res.per_class == pytest.approx({"cat": 1.0, "dog": 1.0, "x": -1.0})


def test_shifted_boxes_score_the_hand_computed_value() -> None:
    # A 100x100 box shifted right by 23 px has IoU 77/123 = 0.626: a match at the IoU
    # thresholds 0.50, 0.55, 0.60 and a miss at 0.65 … 0.95, so AP = 3/10 for that
    # category; the other two boxes are exact (AP 1). Mean over cat and dog = (0.3+1)/2.
    gt = _quiet_coco(json.loads(json.dumps(GT)))
    # (the shifted box scores lower, so the exact one ranks first)
    dets = [_det(GT["annotations"][0], dx=23, score=0.5), _det(GT["annotations"][1]),
            _det(GT["annotations"][2])]
    res = coco_bbox_eval(gt, dets, per_class=True)
    # cat: image 1 box matched only at t<=0.6, image 2 exact. At each threshold precision
    # is 1 up to the recall reached: recall 1 for t<=0.6 (AP 1), 0.5 for t>0.6: the
    # 101-point interpolated precision is 1 for recall <= 0.5 and 0 beyond -> 51/101.
    cat = (3 * 1.0 + 7 * 51 / 101) / 10
    assert res.per_class["cat"] == pytest.approx(cat)
    assert res.per_class["dog"] == pytest.approx(1.0)
    assert res.stats["AP"] == pytest.approx((cat + 1.0) / 2)
    assert res.stats["AP50"] == pytest.approx(1.0)
    assert res.stats["AP75"] == pytest.approx((51 / 101 + 1.0) / 2)


def test_single_shifted_box_ap_is_three_tenths() -> None:
    one = {**GT, "annotations": GT["annotations"][:1]}
    gt = _quiet_coco(json.loads(json.dumps(one)))
    res = coco_bbox_eval(gt, [_det(one["annotations"][0], dx=23)])
    assert res.stats["AP"] == pytest.approx(0.3)
    assert res.stats["AP50"] == pytest.approx(1.0) and res.stats["AP75"] == 0.0


def test_no_detections_gives_zeros_not_a_crash() -> None:
    gt = _quiet_coco(json.loads(json.dumps(GT)))
    res = coco_bbox_eval(gt, [], per_class=True)
    assert res.stats["AP"] == res.stats["AP50"] == res.stats["AR100"] == 0.0
    assert res.stats["APs"] == -1.0  # still "no ground truth there"
    assert res.per_class == {"cat": 0.0, "dog": 0.0, "x": -1.0}
    assert len(res.detections) == 0


def test_false_positives_lower_precision_not_recall() -> None:
    gt = _quiet_coco(json.loads(json.dumps(GT)))
    dets = [_det(a) for a in GT["annotations"]]
    # a confident wrong-class box on image 2 ranks above the true one for "dog"
    dets.append({"image_id": 2, "category_id": 9, "bbox": [0, 0, 120, 120], "score": 0.99})
    res = coco_bbox_eval(gt, dets, per_class=True)
    # dog: first detection (0.99) false, second (0.9) true: precision 1/2 at recall 1
    assert res.per_class["dog"] == pytest.approx(0.5)
    assert res.stats["AR100"] == pytest.approx(1.0)


def test_results_map_labels_back_to_category_ids_as_xywh() -> None:
    outs = [{"boxes": torch.tensor([[10.0, 20.0, 40.0, 60.0]]), "labels": torch.tensor([2]),
             "scores": torch.tensor([0.5])}]
    res = to_detections(outs, [7], np.array([4, 9, 11]), label_offset=1)
    assert res.to_list() == [{"image_id": 7, "category_id": 9, "bbox": [10.0, 20.0, 30.0, 40.0],
                              "score": 0.5}]


class _Oracle(nn.Module):
    """Returns the ground truth boxes of each image as detections (labels as the dataset
    produced them), to test the whole predict -> results -> COCOeval path."""

    def __init__(self, dataset: object) -> None:
        super().__init__()
        self.dataset = dataset
        self.calls = 0

    def forward(self, images: list[torch.Tensor]) -> list[dict]:
        outs = []
        for _ in images:
            _, target = self.dataset[self.calls]
            self.calls += 1
            n = len(target["boxes"])
            outs.append({"boxes": target["boxes"], "labels": target["labels"],
                         "scores": torch.linspace(0.9, 0.5, n)})
        return outs


@pytest.mark.parametrize("offset", [0, 1])
def test_evaluate_runs_a_model_over_a_split(tmp_path: Path, offset: int) -> None:
    (tmp_path / "annotations").mkdir()
    (tmp_path / "val").mkdir()
    for im in GT["images"]:
        Image.new("RGB", (300, 300)).save(tmp_path / "val" / im["file_name"])
    (tmp_path / "annotations" / "instances_val.json").write_text(json.dumps(GT))
    ds = load_split(find_split(tmp_path, "val"), train=False, label_offset=offset)
    res = evaluate(_Oracle(ds), ds, batch_size=2)
    assert res.stats["AP"] == pytest.approx(1.0)
    assert sorted(res.detections.category_id.tolist()) == [4, 4, 9]


# -- the vectorised path against the per-detection one it replaced ------------------------------
def _per_detection_results(outputs: list[dict], image_ids: list[int],
                           category_of: object) -> list[dict]:
    """The conversion evaluation used before issue 27: one dict per detection, Python floats."""
    results = []
    for out, iid in zip(outputs, image_ids, strict=True):
        boxes = out["boxes"].detach().cpu().to(torch.float64)
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        for box, label, score in zip(xywh, out["labels"].tolist(), out["scores"].tolist(),
                                     strict=True):
            results.append({"image_id": iid, "category_id": category_of(int(label)),
                            "bbox": [round(v, 2) for v in box], "score": round(float(score), 5)})
    return results


def _random_outputs(gt: dict, per_image: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    outs = []
    for _ in gt["images"]:
        xy = torch.rand(per_image, 2, generator=g) * 250
        wh = torch.rand(per_image, 2, generator=g) * 150 + 2
        outs.append({"boxes": torch.cat([xy, xy + wh], 1),
                     "labels": torch.randint(1, 4, (per_image,), generator=g),
                     "scores": torch.rand(per_image, generator=g)})
    # plus the ground truth, slightly off, so that the numbers are not all zero
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        out = outs[a["image_id"] - 1]
        label = [4, 9, 11].index(a["category_id"]) + 1
        out["boxes"] = torch.cat([out["boxes"], torch.tensor([[x + 1.3, y, x + w, y + h - 2.1]])])
        out["labels"] = torch.cat([out["labels"], torch.tensor([label])])
        out["scores"] = torch.cat([out["scores"], torch.tensor([0.777])])
    return outs


@pytest.mark.parametrize("seed", [0, 1])
def test_column_conversion_equals_the_per_detection_one(seed: int) -> None:
    outs = _random_outputs(GT, 40, seed)
    cats = [4, 9, 11]
    old = _per_detection_results(outs, [1, 2], lambda label: cats[label - 1])
    new = to_detections(outs, [1, 2], np.array(cats), label_offset=1)
    assert new.to_list() == old
    assert Detections.from_list(old).to_list() == old
    # and COCOeval scores them identically: pycocotools' own loadRes on the old list
    gt = _quiet_coco(json.loads(json.dumps(GT)))
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes([dict(d) for d in old]), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    res = coco_bbox_eval(_quiet_coco(json.loads(json.dumps(GT))), new)
    assert 0 < res.stats["AP"] < 1
    assert list(res.stats.values()) == [float(v) for v in ev.stats]


def test_results_of_unknown_images_are_refused() -> None:
    gt = _quiet_coco(json.loads(json.dumps(GT)))
    with pytest.raises(ValueError, match="not in the ground truth"):
        coco_bbox_eval(gt, [{"image_id": 5, "category_id": 4, "bbox": [0, 0, 9, 9],
                             "score": 0.5}])
