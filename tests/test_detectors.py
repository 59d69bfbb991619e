"""SSDLite and RetinaNet built from torchvision parts around a spec'ed backbone."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.models.detection.ssd import SSD

from fnacli.errors import UserError
from fnacli.nn.backbone import Backbone
from fnacli.spec import ArchSpec, Op, Stage, mobilenetv2
from fnacli.tasks import build_detector, get_task, task_names

TASKS = task_names("detection")


def _n(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_tasks_and_label_offsets() -> None:
    assert TASKS == ("ssdlite", "retinanet")
    assert get_task("ssdlite").label_offset == 1 and get_task("retinanet").label_offset == 0


def test_ssdlite_structure() -> None:
    spec = mobilenetv2()
    det = build_detector(spec, "ssdlite", num_classes=80)
    assert isinstance(det, SSD)
    # 4.3M params as published for SSDLite-MobileNetV2 (4,320,438 here, counted exactly)
    assert round(_n(det) / 1e6, 1) == 4.3
    # the backbone lives under backbone.body with exactly Backbone(spec)'s keys
    ref = Backbone(spec).state_dict()
    body = {k[len("backbone.body."):]: v for k, v in det.state_dict().items()
            if k.startswith("backbone.body.")}
    assert body.keys() == ref.keys()
    assert all(body[k].shape == ref[k].shape for k in ref)
    assert det.anchor_generator.num_anchors_per_location() == [4, 6, 6, 6, 4, 4]
    # taps: 576-channel expansion (stride 16) and the 1280 head; extras 512/256/256/128
    assert det.backbone.out_channels == [576, 1280, 512, 256, 256, 128]
    # separable heads: depthwise 3x3 then 1x1 to anchors x (80 classes + background)
    first = det.head.classification_head.module_list[0]
    assert first[0][0].groups == 576 and first[0][0].kernel_size == (3, 3)
    assert first[1].out_channels == 4 * 81
    assert det.head.regression_head.module_list[1][1].out_channels == 6 * 4
    # extra block: 1x1 to half width, depthwise 3x3 stride 2, 1x1
    e0 = det.backbone.extra[0]
    assert (e0[0].conv.out_channels, e0[1].conv.stride, e0[1].conv.groups,
            e0[2].conv.out_channels) == (256, (2, 2), 256, 512)


def test_ssdlite_size_is_width_height_and_runs() -> None:
    det = build_detector(mobilenetv2(0.35), "ssdlite", num_classes=3, size=(96, 64))
    assert det.transform.fixed_size == (96, 64)  # torchvision resizes to (H=64, W=96)
    with torch.no_grad():
        feats = det.eval().backbone(torch.zeros(1, 3, 64, 96))
    assert [tuple(f.shape[-2:]) for f in feats.values()] == [(4, 6), (2, 3), (1, 2), (1, 1),
                                                               (1, 1), (1, 1)]
    det.train()
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([2])}] * 2
    losses = det([torch.rand(3, 64, 96), torch.rand(3, 70, 80)], targets)
    assert set(losses) == {"bbox_regression", "classification"}
    assert all(torch.isfinite(v) for v in losses.values())
    det.eval()
    with torch.no_grad():
        out = det([torch.rand(3, 50, 60)])
    assert out[0]["boxes"].shape[-1] == 4


def test_retinanet_structure() -> None:
    spec = mobilenetv2()
    det = build_detector(spec, "retinanet", num_classes=80, size=(1088, 800))
    assert isinstance(det, RetinaNet)
    # FNA Table 3: 11.49M params (11,488,244 here)
    assert round(_n(det) / 1e6, 2) == 11.49
    keys = det.state_dict().keys()
    assert any(k.startswith("backbone.body.stages.") for k in keys)
    assert not any(k.startswith("backbone.body.head.") for k in keys)  # no 1280 conv
    fpn = det.backbone.fpn
    assert [b[0].in_channels for b in fpn.inner_blocks] == [32, 96, 320]
    assert det.backbone.names == ["stage2", "stage4", "stage6"]
    assert fpn.extra_blocks.p6.in_channels == 320 and not fpn.extra_blocks.use_P5
    assert det.anchor_generator.num_anchors_per_location() == [9] * 5
    assert det.head.classification_head.num_classes == 80
    assert len(det.head.classification_head.conv) == 4


def test_retinanet_p6_on_c5_even_when_c5_has_256_channels() -> None:
    # torchvision would silently switch to P5 when C5 has 256 channels; FNA uses C5
    base = mobilenetv2()
    spec = replace(base, stages=(*base.stages[:-1], Stage(256, 1, (Op(3, 6),))))
    det = build_detector(spec, "retinanet", num_classes=5, size=(160, 128)).eval()
    assert not det.backbone.fpn.extra_blocks.use_P5
    x = torch.rand(1, 3, 128, 160)
    with torch.no_grad():
        feats = det.backbone(x)
        c5 = det.backbone.body(x)["stage6"]
        expected = det.backbone.fpn.extra_blocks.p6(c5)
    assert torch.allclose(list(feats.values())[3], expected)


def test_retinanet_trains_one_step() -> None:
    det = build_detector(mobilenetv2(0.35), "retinanet", num_classes=4, size=(96, 64))
    det.train()
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([3])}]
    losses = det([torch.rand(3, 64, 96)], targets)
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total)
    assert det.backbone.body.stem.conv.weight.grad is not None


def test_custom_backbone_is_used_as_is() -> None:
    spec = mobilenetv2(0.5)
    body = Backbone(spec)
    det = build_detector(spec, "ssdlite", backbone=body)
    assert det.backbone.body is body


def test_bad_inputs() -> None:
    with pytest.raises(UserError, match="unknown detection task"):
        build_detector(mobilenetv2(), "yolo")
    shallow = ArchSpec(32, 2, (Stage(16, 1, (Op(3, 1),)), Stage(24, 2, (Op(3, 6),))), 1280)
    with pytest.raises(UserError, match="stride 32"):
        build_detector(shallow, "ssdlite")
    with pytest.raises(UserError, match="stride 8"):
        build_detector(ArchSpec(32, 2, (Stage(16, 1, (Op(3, 1),)),)), "retinanet")
    with pytest.raises(UserError, match="num_classes"):
        build_detector(mobilenetv2(), "ssdlite", num_classes=0)
