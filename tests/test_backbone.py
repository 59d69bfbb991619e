"""The backbone built from a spec: structure, parameter counts, feature maps."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch

from fnacli.nn.backbone import SSD_TAP, Backbone, Classifier, ssd_tap_layer
from fnacli.nn.blocks import MBConv
from fnacli.spec import ArchSpec, Op, Stage, builtin_arch, mobilenetv2


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("width", [1.0, 0.5, 1.4])
def test_parameter_count_matches_torchvision(width: float) -> None:
    from torchvision.models import mobilenet_v2

    with torch.device("meta"):  # shapes only: skip the weight initialisation
        ref = mobilenet_v2(width_mult=width)
        assert _params(Backbone(mobilenetv2(width))) == _params(ref.features)
        assert _params(Classifier(mobilenetv2(width))) == _params(ref)
    if width == 1.0:
        # torchvision's count (3.50M); the MobileNetV2 paper's table quotes 3.4M for 1.0
        assert _params(ref) == 3_504_872


def test_state_dict_keys_follow_the_documented_pattern() -> None:
    keys = list(Backbone(mobilenetv2()).state_dict())
    pattern = re.compile(r"^(stem|head)\.(conv|bn)\.\w+$|"
                         r"^stages\.\d+\.\d+\.(expand|dw|project)\.(conv|bn)\.\w+$")
    assert all(pattern.match(k) for k in keys), [k for k in keys if not pattern.match(k)]
    assert "stages.0.0.expand.conv.weight" not in keys  # e=1: no expansion conv
    assert "stages.1.0.expand.conv.weight" in keys
    assert keys[0] == "stem.conv.weight" and keys[-1] == "head.bn.num_batches_tracked"


def test_feature_maps_channels_and_strides() -> None:
    spec = mobilenetv2()
    net = Backbone(spec).eval()
    with torch.no_grad():
        feats = net(torch.randn(1, 3, 128, 96))
    assert list(feats) == ["stage0", "stage1", "stage2", "stage3", "stage4", SSD_TAP, "stage5",
                           "stage6", "head"]
    assert net.feature_channels == {k: v.shape[1] for k, v in feats.items()}
    assert net.feature_channels[SSD_TAP] == 96 * 6 and net.feature_channels["head"] == 1280
    for k, v in feats.items():
        s = net.feature_strides[k]
        assert v.shape[2:] == (128 // s, 96 // s), k
    assert [net.feature_strides[f"stage{i}"] for i in range(7)] == [2, 4, 8, 16, 16, 32, 32]
    assert net.feature_strides[SSD_TAP] == 16


def test_blocks_follow_the_spec() -> None:
    spec = builtin_arch("fna-ssdlite")
    net = Backbone(spec)
    for s, i, cin, cout, op, stride in spec.layers():
        blk = net.stages[s][i]
        assert isinstance(blk, MBConv)
        assert blk.dw.conv.kernel_size == (op.kernel, op.kernel)
        assert blk.dw.conv.stride == (stride, stride)
        assert blk.dw.conv.out_channels == cin * op.expand
        assert blk.project.conv.out_channels == cout
        assert blk.residual == (stride == 1 and cin == cout)


def test_residual_block_adds_its_input() -> None:
    torch.manual_seed(0)
    blk = MBConv(8, 8, 5, 3, 1).eval()
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        assert torch.allclose(blk(x), x + blk.project(blk.dw(blk.expand(x))))
        assert not MBConv(8, 8, 3, 6, 2).residual and not MBConv(8, 16, 3, 6, 1).residual


def test_without_head_and_without_stride_32() -> None:
    spec = mobilenetv2(0.35)
    net = Backbone(spec, with_head=False)
    assert net.head is None and "head" not in net.feature_channels
    assert not any(k.startswith("head.") for k in net.state_dict())
    shallow = ArchSpec(8, 2, (Stage(8, 1, (Op(3, 1),)), Stage(16, 2, (Op(3, 6),))), None)
    assert ssd_tap_layer(shallow) is None
    with torch.no_grad():
        feats = Backbone(shallow)(torch.randn(1, 3, 32, 32))
    assert list(feats) == ["stage0", "stage1"]
    headless = replace(spec, head_out=None)
    assert "head" not in Backbone(headless).feature_channels


def test_classifier_output() -> None:
    net = Classifier(mobilenetv2(0.35), num_classes=10).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, 64, 64)).shape == (2, 10)
