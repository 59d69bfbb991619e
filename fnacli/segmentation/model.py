"""DeepLabv3 around a spec'd MobileNetV2-family backbone (FNA §4.1, Table 1).

The network is torchvision's ``DeepLabV3`` with torchvision's ``ASPP``; only two things are
ours: the adapter that hands the backbone's last map to it as ``"out"``, and the atrous
branches, which FNA (like DeepLab's mobile models) makes depthwise-separable — a dilated
depthwise 3x3 + BN + ReLU, then a 1x1 to the ASPP width + BN + ReLU — where torchvision's
are dense 3x3 convs.

The configuration is the one that reproduces FNA Table 1 (docs/madds.md;
benchmarks/deeplabv3_head_search.py searched it): output stride 16 (the last strides traded
for dilation), ASPP on the last stage (320 channels for MobileNetV2; the 1280-channel head
conv is not used) with a 1x1 branch, three separable atrous branches at rates 6/12/18 and
image pooling, all 256 wide, torchvision's 1x1 projection (+ dropout 0.5), and a 1x1
classifier with bias. The logits are upsampled bilinearly to the input size.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabV3

from fnacli.errors import UserError
from fnacli.nn.backbone import Backbone
from fnacli.spec import ArchSpec

OUTPUT_STRIDE = 16
ASPP_RATES = (6, 12, 18)  # at output stride 16 (DeepLabv3 doubles them at 8)
ASPP_CHANNELS = 256
NUM_CLASSES = 19  # Cityscapes train ids
IGNORE_INDEX = 255


class SeparableAtrous(nn.Sequential):
    """An ASPP branch as a depthwise-separable conv: dilated depthwise 3x3 + BN + ReLU, then a
    1x1 conv + BN + ReLU (drop-in for torchvision's ``ASPPConv``)."""

    def __init__(self, cin: int, cout: int, dilation: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cin, 3, padding=dilation, dilation=dilation, groups=cin, bias=False),
            nn.BatchNorm2d(cin), nn.ReLU(),
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def separable_aspp(cin: int, rates: tuple[int, ...] = ASPP_RATES,
                   channels: int = ASPP_CHANNELS) -> ASPP:
    """torchvision's ASPP (1x1 branch, atrous branches, image pooling, 1x1 projection) with
    its atrous branches made depthwise-separable."""
    aspp = ASPP(cin, rates, channels)
    for i, rate in enumerate(rates, start=1):
        aspp.convs[i] = SeparableAtrous(cin, channels, rate)
    return aspp


class LastMap(nn.Module):
    """The backbone (``body``) seen the way torchvision's segmentation models want it: a dict
    whose ``"out"`` is the map the head reads (the last stage output)."""

    def __init__(self, body: nn.Module, tap: str) -> None:
        super().__init__()
        self.body = body
        self.tap = tap

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict(out=self.body(x)[self.tap])


def last_stage_name(body: nn.Module) -> str:
    names = [k for k in body.feature_channels if k.startswith("stage")]
    return names[-1]


def build_deeplabv3(spec: ArchSpec, num_classes: int = NUM_CLASSES,
                    backbone: nn.Module | None = None, output_stride: int = OUTPUT_STRIDE,
                    rates: tuple[int, ...] | None = None) -> DeepLabV3:
    """torchvision's DeepLabV3 around ``Backbone(spec, with_head=False, output_stride=16)``
    (or around ``backbone``, e.g. a supernet built with that output stride).

    ``model(images)["out"]`` are logits of shape [N, num_classes, H, W] at the input size.
    """
    if num_classes < 1:
        raise UserError(f"num_classes must be at least 1, got {num_classes}")
    body = backbone if backbone is not None else Backbone(spec, with_head=False,
                                                          output_stride=output_stride)
    tap = last_stage_name(body)
    if rates is None:  # DeepLabv3: rates scale inversely with the output stride
        rates = tuple(r * OUTPUT_STRIDE // output_stride for r in ASPP_RATES)
    head = nn.Sequential(separable_aspp(body.feature_channels[tap], rates),
                         nn.Conv2d(ASPP_CHANNELS, num_classes, 1))
    return DeepLabV3(LastMap(body, tap), head)


def is_segmenter(model: nn.Module) -> bool:
    return isinstance(model, DeepLabV3)


class SegmenterCore(nn.Module):
    """What the cost counts: backbone -> ASPP -> classifier on one image tensor (the final
    bilinear upsampling costs no MAdds anyway)."""

    def __init__(self, model: DeepLabV3) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.classifier = model.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x)["out"])


# cost split: backbone = the spec'd network, neck = ASPP, head = the classifier
COST_PARTS = {"backbone": ("backbone.body",), "neck": ("classifier.0",),
              "head": ("classifier.1",)}
