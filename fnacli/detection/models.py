"""The parts of SSDLite and RetinaNet around a spec'ed MobileNetV2-family backbone.

Both detectors are torchvision's own ``SSD`` / ``RetinaNet`` classes, composed by their task
modules (``fnacli.tasks.ssdlite`` / ``fnacli.tasks.retinanet``); only the feature
extractors that sit between our ``Backbone`` and torchvision's heads are ours (here). The backbone
is always the attribute ``backbone.body`` of the detector, so its tensors live under
``backbone.body.`` in a detector state dict (the checkpoint reader strips that prefix).

Defaults follow the configurations behind the published MAdds figures (see docs/madds.md):
- ssdlite: taps = the expansion output of the first stride-32 layer and the 1x1 head conv,
  extra blocks to 512/256/256/128, separable prediction heads, 4/6/6/6/4/4 anchors per
  location, ``num_classes + 1`` outputs (background is label 0).
- retinanet: FPN (256 channels) on the last stage outputs at strides 8/16/32, P6 a 3x3
  stride-2 conv on C5 (not P5), P7 from P6, 9 anchors, 4-conv heads, sigmoid focal loss
  over ``num_classes`` (labels 0..num_classes-1).

``size`` is (width, height) everywhere, like torchvision's SSD ``size`` and the CLI's ``WxH``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

from fnacli.errors import UserError
from fnacli.nn.backbone import SSD_TAP, feature_strides
from fnacli.nn.blocks import ConvBN
from fnacli.spec import ArchSpec

SSDLITE_EXTRA = (512, 256, 256, 128)
SSDLITE_ASPECTS = ([2], [2, 3], [2, 3], [2, 3], [2], [2])  # 4/6/6/6/4/4 boxes per location
FPN_CHANNELS = 256
FPN_STRIDES = (8, 16, 32)
# The torchvision MobileNetV2 seeds were trained on ImageNet-normalised inputs.
IMAGE_MEAN = [0.485, 0.456, 0.406]
IMAGE_STD = [0.229, 0.224, 0.225]


def _extra_block(cin: int, cout: int) -> nn.Sequential:
    """SSDLite extra layer: 1x1 to half width, depthwise 3x3 stride 2, 1x1 (BN + ReLU6 each)."""
    mid = cout // 2
    return nn.Sequential(ConvBN(cin, mid), ConvBN(mid, mid, 3, 2, groups=mid), ConvBN(mid, cout))


def ssdlite_tap_names(channels: dict[str, int]) -> tuple[str, str]:
    """The two backbone maps SSDLite uses: the stride-16 tap and the last map (head conv, or
    the last stage when the spec has no head)."""
    if SSD_TAP not in channels:
        raise UserError("ssdlite: the backbone never reaches stride 32, so it has no SSDLite "
                        "tap (needs stem and stage strides multiplying to at least 32)")
    return SSD_TAP, next(reversed(channels))


class SSDLiteFeatures(nn.Module):
    """Our backbone's two SSDLite taps followed by the four extra blocks (six maps)."""

    def __init__(self, body: nn.Module, extra: tuple[int, ...] = SSDLITE_EXTRA) -> None:
        super().__init__()
        self.body = body
        self.taps = ssdlite_tap_names(dict(body.feature_channels))
        cin = body.feature_channels[self.taps[1]]
        blocks = []
        for cout in extra:
            blocks.append(_extra_block(cin, cout))
            cin = cout
        self.extra = nn.ModuleList(blocks)
        self.out_channels = [body.feature_channels[t] for t in self.taps] + list(extra)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.body(x)
        out = OrderedDict((t, feats[t]) for t in self.taps)
        x = out[self.taps[1]]
        for i, block in enumerate(self.extra):
            x = block(x)
            out[f"extra{i}"] = x
        return out


def fpn_input_names(spec: ArchSpec) -> list[str]:
    """The last stage output at each FPN stride (stage2/4/6 for MobileNetV2)."""
    strides = feature_strides(spec, with_head=False)
    names = []
    for target in FPN_STRIDES:
        found = [k for k, v in strides.items() if k.startswith("stage") and v == target]
        if not found:
            raise UserError(f"retinanet: the backbone has no stage output at stride {target} "
                            f"(stage strides: {spec.stage_strides()})")
        names.append(found[-1])
    return names


class FPNFeatures(nn.Module):
    """Backbone (``body``) + torchvision's FPN with P6 on C5 and P7 on P6."""

    def __init__(self, body: nn.Module, names: list[str], channels: int = FPN_CHANNELS) -> None:
        super().__init__()
        self.body = body
        self.names = names
        in_channels = [body.feature_channels[n] for n in names]
        extra = LastLevelP6P7(in_channels[-1], channels)
        # torchvision picks P5 when C5 happens to have `channels` channels; FNA always uses C5.
        extra.use_P5 = False
        self.fpn = FeaturePyramidNetwork(in_channels, channels, extra_blocks=extra)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.body(x)
        return self.fpn(OrderedDict((n, feats[n]) for n in self.names))


def anchor_generator() -> AnchorGenerator:
    # 3 octave scales x 3 aspect ratios on P3..P7 (base sizes 32..512), as in RetinaNet.
    sizes = tuple((s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3)))
                  for s in (32, 64, 128, 256, 512))
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
