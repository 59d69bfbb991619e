"""Segmentation: the atrous backbone, DeepLabv3, data, transforms, the confusion-matrix
metric (FNA Table 1's figures: tests/test_deeplabv3.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models.segmentation.deeplabv3 import ASPP, ASPPPooling

from fnacli.errors import UserError
from fnacli.nn.backbone import Backbone, atrous_stages
from fnacli.segmentation.data import IGNORE, find_split, load_split
from fnacli.segmentation.evaluate import confusion_update, evaluate, predict_logits, scores
from fnacli.segmentation.model import SeparableAtrous, build_deeplabv3
from fnacli.segmentation.synthetic import SegSynthConfig, generate
from fnacli.segmentation.transforms import eval_transform, train_transform
from fnacli.spec import builtin_arch, builtin_space, mobilenetv2

MBV2_STRIDES = [1, 2, 2, 2, 1, 2, 1]


# -- atrous backbone -----------------------------------------------------------------------
def test_atrous_stages_trade_the_last_strides_for_dilation() -> None:
    assert atrous_stages(2, MBV2_STRIDES) == [(s, 1, 1) for s in MBV2_STRIDES]
    # OS16: the stride-32 stage runs at stride 1; its first layer keeps dilation 1 (TF
    # DeepLab), later layers and stages are dilated by 2
    assert atrous_stages(2, MBV2_STRIDES, 16)[4:] == [(1, 1, 1), (1, 1, 2), (1, 2, 2)]
    assert atrous_stages(2, MBV2_STRIDES, 8)[3:] == [(1, 1, 2), (1, 2, 2), (1, 2, 4), (1, 4, 4)]
    with pytest.raises(UserError, match="power of two"):
        atrous_stages(2, MBV2_STRIDES, 12)


def test_output_stride_16_backbone_keeps_its_state_dict_and_halves_no_more() -> None:
    spec = mobilenetv2(0.5)
    plain, atrous = Backbone(spec), Backbone(spec, with_head=False, output_stride=16)
    ref = plain.state_dict()
    assert {k: v.shape for k, v in atrous.state_dict().items()} == \
        {k: v.shape for k, v in ref.items() if not k.startswith("head.")}
    atrous.load_state_dict({k: v for k, v in ref.items() if not k.startswith("head.")})
    feats = atrous.eval()(torch.randn(1, 3, 64, 96))
    assert feats["stage6"].shape[-2:] == (4, 6)  # 64/16 x 96/16
    assert atrous.feature_strides["stage6"] == 16 and plain.feature_strides["stage6"] == 32
    assert atrous.stages[5][1].dw.conv.dilation == (2, 2)
    assert atrous.stages[5][0].dw.conv.dilation == (1, 1)
    assert atrous.stages[5][0].dw.conv.stride == (1, 1)


def test_supernet_path_at_output_stride_16_matches_the_backbone() -> None:
    import random

    from fnacli.nn.supernet import Path as NetPath
    from fnacli.nn.supernet import Supernet, op_choices, path_to_arch, subnet_state

    space = builtin_space("fna-seg")
    torch.manual_seed(0)
    net = Supernet(space, with_head=False, output_stride=16).eval()
    rng = random.Random(1)
    path = NetPath({(s, i): rng.randrange(len(c)) for s, i, c in op_choices(space)})
    arch = path_to_arch(space, path)
    ref = Backbone(arch, with_head=False, output_stride=16).eval()
    ref.load_state_dict(subnet_state(net, path))
    net.set_path(path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x)["stage6"], ref(x)["stage6"])


def test_fna_seg_space_has_the_segmentation_depths() -> None:
    space = builtin_space("fna-seg")
    assert [st.layers for st in space.stages[1:]] == [4, 4, 6, 6, 4, 1]
    assert space.stages[3].candidates == ("k3_e3", "k3_e6", "k5_e3", "k5_e6", "k7_e3",
                                          "k7_e6", "skip")
    fna = builtin_arch("fna-deeplabv3")  # FNA's result lies in the space
    assert all(a.depth <= s.layers for a, s in zip(fna.stages, space.stages, strict=True))


# -- the model and FNA Table 1 -------------------------------------------------------------
def test_head_is_torchvision_aspp_with_separable_atrous_branches() -> None:
    model = build_deeplabv3(mobilenetv2(), 19)
    aspp = model.classifier[0]
    assert isinstance(aspp, ASPP)
    assert [type(m) for m in aspp.convs[1:4]] == [SeparableAtrous] * 3
    assert [m[0].dilation for m in aspp.convs[1:4]] == [(6, 6), (12, 12), (18, 18)]
    assert isinstance(aspp.convs[4], ASPPPooling)
    assert aspp.convs[1][0].in_channels == 320  # the last stage, not the 1280 head conv
    assert model.backbone.body.head is None
    assert model.classifier[1].out_channels == 19
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 97, 130))["out"].shape == (1, 19, 97, 130)


# -- data ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("segsynth")
    generate(out, SegSynthConfig(train=4, val=2, width=96))
    return out


def test_synthetic_set_is_cityscapes_layout_and_deterministic(synth: Path,
                                                              tmp_path: Path) -> None:
    labels = sorted((synth / "gtFine" / "train" / "synth").glob("*_gtFine_labelIds.png"))
    images = sorted((synth / "leftImg8bit" / "train" / "synth").glob("*_leftImg8bit.png"))
    assert len(labels) == len(images) == 4
    ds = load_split(find_split(synth, "train"))
    assert ds.num_classes == 19 and ds.categories()[13] == {"id": 13, "name": "car"}
    _, mask = ds[0]
    values = set(mask.unique().tolist())
    assert IGNORE in values  # unlabeled patches
    assert values <= {0, 2, 8, 10, 11, 13, IGNORE}  # road building vegetation sky person car
    again = tmp_path / "again"
    generate(again, SegSynthConfig(train=4, val=2, width=96))
    for p in labels + images:
        assert (again / p.relative_to(synth)).read_bytes() == p.read_bytes()


def _copy(synth: Path, tmp_path: Path) -> Path:
    import shutil

    dst = tmp_path / "data"
    shutil.copytree(synth, dst)
    return dst


def _label(root: Path, i: int = 1) -> Path:
    return root / "gtFine" / "train" / "synth" / f"synth_{i:06d}_000019_gtFine_labelIds.png"


def test_bad_label_id_names_the_file(synth: Path, tmp_path: Path) -> None:
    root = _copy(synth, tmp_path)
    arr = np.asarray(Image.open(_label(root))).copy()
    arr[3, 3] = 40
    Image.fromarray(arr).save(_label(root))
    with pytest.raises(UserError, match=rf"{_label(root).name}: label id 40 is not a "):
        load_split(find_split(root, "train"))


def test_mask_size_mismatch_names_the_file(synth: Path, tmp_path: Path) -> None:
    root = _copy(synth, tmp_path)
    Image.open(_label(root)).resize((50, 25), Image.Resampling.NEAREST).save(_label(root))
    with pytest.raises(UserError, match=r"mask is 50x25 but its image .* is 96x48"):
        load_split(find_split(root, "train"))


def test_missing_label_file_names_the_image(synth: Path, tmp_path: Path) -> None:
    root = _copy(synth, tmp_path)
    _label(root, 2).unlink()
    with pytest.raises(UserError, match=r"synth_000002_000019_leftImg8bit.png: missing label"):
        load_split(find_split(root, "train"))


def test_coco_polygons_and_rle_become_semantic_masks(tmp_path: Path) -> None:
    from pycocotools import mask as mask_utils

    (tmp_path / "train").mkdir()
    (tmp_path / "annotations").mkdir()
    Image.new("RGB", (40, 30)).save(tmp_path / "train" / "a.png")
    square = np.zeros((30, 40), dtype=np.uint8)
    square[5:15, 20:30] = 1
    rle = mask_utils.encode(np.asfortranarray(square))
    rle["counts"] = rle["counts"].decode()
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
           "categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}],
           "annotations": [
               {"id": 1, "image_id": 1, "category_id": 7, "iscrowd": 0, "area": 200.0,
                "segmentation": [[0, 0, 20, 0, 20, 10, 0, 10]]},
               {"id": 2, "image_id": 1, "category_id": 3, "iscrowd": 0, "area": 100.0,
                "segmentation": rle},
               {"id": 3, "image_id": 1, "category_id": 3, "iscrowd": 1, "area": 4.0,
                "segmentation": [[30, 25, 34, 25, 34, 29, 30, 29]]}]}
    (tmp_path / "annotations" / "instances_train.json").write_text(json.dumps(doc))
    ds = load_split(find_split(tmp_path, "train"))
    assert ds.categories() == [{"id": 3, "name": "dog"}, {"id": 7, "name": "cat"}]
    _, mask = ds[0]
    assert mask[2, 2] == 1 and mask[8, 25] == 0  # cat (id 7) -> 1, dog (id 3) -> 0
    assert mask[27, 32] == IGNORE and mask[25, 5] == IGNORE  # crowd, and unannotated
    rle["size"] = [31, 40]
    (tmp_path / "annotations" / "instances_train.json").write_text(json.dumps(doc))
    with pytest.raises(UserError, match=r"instances_train.json .*annotation id 2.*RLE size"):
        load_split(find_split(tmp_path, "train"))


# -- transforms ----------------------------------------------------------------------------
def test_crops_pad_the_mask_with_ignore_and_keep_label_values(synth: Path) -> None:
    ds = load_split(find_split(synth, "train"), transform=train_transform("search", (64, 64)))
    image, mask = ds[(0, 0)]
    assert image.shape == (3, 64, 64) and mask.shape == (64, 64)
    assert (mask == IGNORE).any()  # the 48x24 rescaled image is padded
    raw = set(load_split(find_split(synth, "train"))[0][1].unique().tolist())
    ds.transform = train_transform("finetune", (40, 40))
    for epoch in range(3):
        _, m = ds[(epoch, 0)]
        assert set(m.unique().tolist()) <= raw | {IGNORE}  # nearest: no invented labels
    assert torch.equal(ds[(1, 0)][1], ds[(1, 0)][1])  # (epoch, idx) fixes the draw


# -- metric --------------------------------------------------------------------------------
def test_confusion_matrix_scores_by_hand() -> None:
    conf = torch.zeros(3, 3, dtype=torch.int64)
    truth = torch.tensor([[0, 0, 1, 1], [2, 2, IGNORE, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 1]])
    confusion_update(conf, truth, pred)
    assert conf.tolist() == [[1, 1, 0], [0, 3, 0], [1, 0, 1]]
    stats, iou = scores(conf)
    # IoU: class0 1/(2+2-1)=1/3, class1 3/(3+4-3)=3/4, class2 1/(2+1-1)=1/2
    assert iou == pytest.approx([1 / 3, 3 / 4, 1 / 2])
    assert stats["mIoU"] == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert stats["aAcc"] == pytest.approx(5 / 7)
    assert stats["mAcc"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    empty = torch.zeros(3, 3, dtype=torch.int64)
    confusion_update(empty, torch.tensor([1, 1]), torch.tensor([1, 1]))
    stats, iou = scores(empty)
    assert stats["mIoU"] == 1.0 and np.isnan(iou[0]) and np.isnan(iou[2])


class _Oracle(torch.nn.Module):
    """Predicts class = channel 0 quantised (the test writes the answer into the image)."""

    def forward(self, x: torch.Tensor) -> dict:
        k = torch.clamp(x[:, 0].round().long(), 0, 18)
        return {"out": torch.nn.functional.one_hot(k, 19).permute(0, 3, 1, 2).float()}


def test_evaluate_whole_and_sliding_window_agree_on_a_per_pixel_model(synth: Path) -> None:
    ds = load_split(find_split(synth, "val"))

    class Answer(torch.utils.data.Dataset):
        num_classes = 19

        def categories(self) -> list[dict]:
            return ds.categories()

        def __len__(self) -> int:
            return len(ds)

        def __getitem__(self, i: int) -> tuple:
            _, mask = ds[i]
            image = torch.zeros(3, *mask.shape)
            image[0] = torch.where(mask == IGNORE, 0, mask).float()
            return image, mask

    whole = evaluate(_Oracle(), Answer(), per_class=True)
    assert whole.stats == {"mIoU": 1.0, "aAcc": 1.0, "mAcc": 1.0}
    assert whole.per_class["car"] == 1.0 and np.isnan(whole.per_class["bicycle"])
    slide = evaluate(_Oracle(), Answer(), mode="slide", window=(40, 32))
    assert torch.equal(slide.confusion, whole.confusion)
    image = Answer()[0][0]
    torch.testing.assert_close(predict_logits(_Oracle(), image, "slide", (40, 32)),
                               predict_logits(_Oracle(), image))


def test_evaluate_runs_deeplabv3_on_eval_transform(synth: Path) -> None:
    ds = load_split(find_split(synth, "val"), transform=eval_transform())
    torch.manual_seed(0)
    model = build_deeplabv3(mobilenetv2(0.35), 19)
    res = evaluate(model, ds)
    # the same numbers computed here, pixel by pixel with numpy, from the model's own argmax
    model.eval()
    truth, pred = [], []
    with torch.no_grad():
        for i in range(len(ds)):
            image, mask = ds[i]
            pred.append(model(image[None])["out"][0].argmax(0).numpy().ravel())
            truth.append(mask.numpy().ravel())
    t, p = np.concatenate(truth), np.concatenate(pred)
    keep = t != 255
    t, p = t[keep], p[keep]
    ious, accs = [], []
    for c in range(19):
        tp = np.sum((t == c) & (p == c))
        union = np.sum(t == c) + np.sum(p == c) - tp
        if union:
            ious.append(tp / union)
        if np.sum(t == c):
            accs.append(tp / np.sum(t == c))
    assert res.stats["mIoU"] == pytest.approx(np.mean(ious), abs=1e-12)
    assert res.stats["mAcc"] == pytest.approx(np.mean(accs), abs=1e-12)
    assert res.stats["aAcc"] == pytest.approx(np.mean(t == p), abs=1e-12)
    assert int(res.confusion.sum()) == len(t)


def test_data_synth_cli_segmentation(run_cli, tmp_path: Path) -> None:
    code, out, _ = run_cli(["data", "synth", tmp_path / "d", "--task", "segmentation",
                            "--train", "2", "--val", "1", "--size", "64", "--json"])
    assert code == 0
    summary = json.loads(out)
    assert (summary["width"], summary["height"], summary["task"]) == (64, 32, "segmentation")
    assert len(load_split(find_split(tmp_path / "d", "val"))) == 1
    code, out, err = run_cli(["data", "synth", tmp_path / "e", "--task", "segmentation",
                              "--size", "63"])
    assert code == 2 and out == "" and "--size" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["data", "synth", tmp_path / "d", "--task", "segmentation"])
    assert code == 2 and "not empty" in err


def test_madds_counts_a_segmenter_checkpoint_at_its_own_settings(run_cli, tmp_path: Path) -> None:
    """A segmenter checkpoint is counted as what it is (its task, size and classes), as a
    detector checkpoint is, not as a bare backbone."""
    from fnacli.model_checkpoint import DetectorInfo, build, save_detector

    spec = builtin_arch("mobilenetv2-0.35")
    info = DetectorInfo(spec, "deeplabv3", 5, (64, 32),
                        [{"id": i, "name": f"c{i}"} for i in range(5)])
    save_detector(tmp_path / "seg.safetensors", build(info), info)
    code, out, err = run_cli(["madds", tmp_path / "seg.safetensors", "--json"])
    assert code == 0, err
    (mine,) = json.loads(out)
    code, out, err = run_cli(["madds", "mobilenetv2-0.35", "--task", "deeplabv3", "--size",
                              "64x32", "--num-classes", "5", "--json"])
    assert code == 0, err
    assert mine["madds"] == json.loads(out)[0]["madds"] and mine["task"] == "deeplabv3"
