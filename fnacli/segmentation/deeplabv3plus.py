"""DeepLabv3+ around a spec'd MobileNetV2-family backbone (FNA Table 1, third row).

The encoder is DeepLabv3's: the atrous backbone (output stride 16, or 8) and torchvision's
``ASPP`` on the last stage (320 channels for MobileNetV2; the 1280-channel head conv is not
used). The decoder is DeepLabv3+'s: a 1x1 projection of the last stride-4 map (MobileNetV2's
24-channel stage) to 48 channels, concatenated with the ASPP output upsampled to stride 4,
two 3x3 convs of 256 (each + BN + ReLU), a 1x1 classifier with bias, and bilinear upsampling
of the logits to the input.

The configuration is the one that reproduces FNA Table 1's DeepLabv3+ row (docs/madds.md):
torchvision's ASPP as it is — a 1x1 branch, three DENSE 3x3 atrous branches (rates 6/12/18
at output stride 16, doubled at 8), image pooling, all 256 wide, the 1x1 projection
1280->256 (+ dropout 0.5) — and a dense decoder. (FNA's DeepLabv3 row has a separable ASPP;
this row's figures rule one out: see docs/madds.md.)
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP

from fnacli.errors import UserError
from fnacli.nn.backbone import Backbone, feature_strides
from fnacli.segmentation.model import NUM_CLASSES
from fnacli.spec import ArchSpec

ASPP_RATES = (6, 12, 18)  # at output stride 16 (doubled at 8, as in DeepLabv3)
ASPP_CHANNELS = 256
LOW_LEVEL_STRIDE = 4
LOW_LEVEL_CHANNELS = 48  # the decoder's 1x1 projection of the stride-4 map
DECODER_CHANNELS = 256


def low_level_name(spec: ArchSpec) -> str:
    """The backbone map the decoder reads: the last stage output at stride 4 (MobileNetV2's
    24-channel ``stage1``). Taken from the spec, not the body, so stand-in bodies of the cost
    and latency tables get the same name."""
    names = [n for n, s in feature_strides(spec, with_head=False).items()
             if n.startswith("stage") and s == LOW_LEVEL_STRIDE]
    if not names:
        raise UserError("deeplabv3plus needs a backbone stage at stride 4 for its decoder; "
                        "this architecture has none")
    return names[-1]


class Taps(nn.Module):
    """The backbone (``body``) returning the two maps DeepLabv3+ reads: ``out`` (the last
    stage, for ASPP) and ``low_level`` (the stride-4 map, for the decoder)."""

    def __init__(self, body: nn.Module, tap: str, low: str) -> None:
        super().__init__()
        self.body = body
        self.tap, self.low = tap, low

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.body(x)
        return OrderedDict(out=feats[self.tap], low_level=feats[self.low])


class Decoder(nn.Module):
    """DeepLabv3+'s decoder: project the low-level map, concatenate it with the upsampled
    encoder output, two 3x3 convs, then the classifier (logits at stride 4)."""

    def __init__(self, low_channels: int, num_classes: int, encoder_channels: int = ASPP_CHANNELS,
                 low_out: int = LOW_LEVEL_CHANNELS, channels: int = DECODER_CHANNELS) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Conv2d(low_channels, low_out, 1, bias=False),
                                     nn.BatchNorm2d(low_out), nn.ReLU())
        self.fuse = nn.Sequential(
            nn.Conv2d(encoder_channels + low_out, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels), nn.ReLU())
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor, low_level: torch.Tensor) -> torch.Tensor:
        low = self.project(low_level)
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.fuse(torch.cat([x, low], dim=1)))


class DeepLabV3Plus(nn.Module):
    """``model(images)["out"]``: logits [N, num_classes, H, W] at the input size (the dict
    output of torchvision's segmentation models)."""

    def __init__(self, backbone: Taps, aspp: ASPP, decoder: Decoder) -> None:
        super().__init__()
        self.backbone, self.aspp, self.decoder = backbone, aspp, decoder

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at stride 4 (what the cost counts; the final upsampling costs no MAdds)."""
        feats = self.backbone(x)
        return self.decoder(self.aspp(feats["out"]), feats["low_level"])

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        y = F.interpolate(self.logits(x), size=x.shape[-2:], mode="bilinear",
                          align_corners=False)
        return OrderedDict(out=y)


def build_deeplabv3plus(spec: ArchSpec, num_classes: int = NUM_CLASSES,
                        backbone: nn.Module | None = None, output_stride: int = 16
                        ) -> DeepLabV3Plus:
    """DeepLabv3+ around ``Backbone(spec, with_head=False, output_stride=output_stride)`` (or
    around ``backbone``, e.g. a supernet built with that output stride)."""
    if num_classes < 1:
        raise UserError(f"num_classes must be at least 1, got {num_classes}")
    low = low_level_name(spec)
    body = backbone if backbone is not None else Backbone(spec, with_head=False,
                                                          output_stride=output_stride)
    tap = f"stage{len(spec.stages) - 1}"  # from the spec, like ``low`` (stand-in bodies)
    rates = [r * 16 // output_stride for r in ASPP_RATES]
    aspp = ASPP(body.feature_channels[tap], rates, ASPP_CHANNELS)
    decoder = Decoder(body.feature_channels[low], num_classes)
    return DeepLabV3Plus(Taps(body, tap, low), aspp, decoder)


class PlusCore(nn.Module):
    """What the cost counts: backbone -> ASPP -> decoder on one image tensor."""

    def __init__(self, model: DeepLabV3Plus) -> None:
        super().__init__()
        self.backbone, self.aspp, self.decoder = model.backbone, model.aspp, model.decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        return self.decoder(self.aspp(feats["out"]), feats["low_level"])


# cost split: backbone = the spec'd network, neck = ASPP, head = the decoder (its projection,
# 3x3 convs and classifier)
COST_PARTS = {"backbone": ("backbone.body",), "neck": ("aspp",), "head": ("decoder",)}
