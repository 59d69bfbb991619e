"""A MobileNetV2-family backbone built from an ``ArchSpec``.

State-dict keys are ``stem.*``, ``stages.S.L.{expand,dw,project}.*``, ``head.*``; the remapper
and the checkpoint readers rely on them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from fnacli.errors import UserError
from fnacli.nn.blocks import ConvBN, MBConv
from fnacli.spec import ArchSpec

SSD_TAP = "ssd_tap"  # expansion output of the first stride-32 layer (MobileNetV2 SSDLite)


def atrous_stages(stem_stride: int, strides: Sequence[int], output_stride: int | None = None
                  ) -> list[tuple[int, int, int]]:
    """Per stage: (stride, dilation of its first layer, dilation of its other layers).

    Without ``output_stride`` every stage keeps its stride and no conv is dilated. With it
    (DeepLab's atrous backbone), a stage that would take the network past ``output_stride``
    runs at stride 1 instead and every later depthwise conv is dilated by the stride given
    up; the first layer of such a stage keeps the dilation before it (TF DeepLab's rule).
    Shapes of weights never change, so remapped and seed checkpoints load either way.
    """
    if output_stride is not None and (output_stride < stem_stride
                                      or output_stride & (output_stride - 1)):
        raise UserError(f"output stride must be a power of two ≥ the stem stride "
                        f"({stem_stride}), got {output_stride}")
    rows, current, rate = [], stem_stride, 1
    for stride in strides:
        if output_stride is not None and current * stride > output_stride:
            rows.append((1, rate, rate * stride))
            rate *= stride
        else:
            rows.append((stride, rate, rate))
            current *= stride
    return rows


def ssd_tap_layer(spec: ArchSpec, output_stride: int | None = None) -> tuple[int, int] | None:
    """(stage, layer) whose expansion output SSDLite taps: the first layer reaching stride 32."""
    stride = spec.stem_stride
    rows = atrous_stages(spec.stem_stride, [st.stride for st in spec.stages], output_stride)
    for s, (st_stride, _, _) in enumerate(rows):
        if stride < 32 <= stride * st_stride:
            return s, 0
        stride *= st_stride
    return None


def feature_channels(spec: ArchSpec, with_head: bool = True,
                     output_stride: int | None = None) -> dict[str, int]:
    """Channels of every feature map a backbone of ``spec`` returns, in forward order."""
    out: dict[str, int] = {}
    tap = ssd_tap_layer(spec, output_stride)
    for s, st in enumerate(spec.stages):
        if tap and tap[0] == s:
            cin = spec.stages[s - 1].out if s else spec.stem_out
            out[SSD_TAP] = cin * st.ops[0].expand
        out[f"stage{s}"] = st.out
    if spec.head_out and with_head:
        out["head"] = spec.head_out
    return out


def feature_strides(spec: ArchSpec, with_head: bool = True,
                    output_stride: int | None = None) -> dict[str, int]:
    """Output stride of every feature map (the SSD tap sits before the stride-32 conv)."""
    rows = atrous_stages(spec.stem_stride, [st.stride for st in spec.stages], output_stride)
    strides, total = [], spec.stem_stride
    for stride, _, _ in rows:
        total *= stride
        strides.append(total)
    tap = ssd_tap_layer(spec, output_stride)
    out: dict[str, int] = {}
    for s in range(len(spec.stages)):
        if tap == (s, 0):
            out[SSD_TAP] = strides[s] // rows[s][0]
        out[f"stage{s}"] = strides[s]
    if spec.head_out and with_head:
        out["head"] = strides[-1]
    return out


class Backbone(nn.Module):
    """Returns an ordered dict of feature maps: ``stage{i}`` for every stage, ``ssd_tap`` when
    the network reaches stride 32, and ``head`` when the spec has a head conv.

    ``with_head=False`` drops the 1x1 head conv (RetinaNet does not use it).
    ``output_stride`` (e.g. 16 for DeepLabv3) trades the last strides for dilation
    (:func:`atrous_stages`); the state dict is the same.
    """

    def __init__(self, spec: ArchSpec, with_head: bool = True,
                 output_stride: int | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.output_stride = output_stride
        self.stem = ConvBN(3, spec.stem_out, 3, spec.stem_stride)
        rows = atrous_stages(spec.stem_stride, [st.stride for st in spec.stages], output_stride)
        self.stages = nn.ModuleList(
            nn.Sequential(*[MBConv(cin, cout, op.kernel, op.expand, rows[s][0] if i == 0 else 1,
                                   rows[s][1] if i == 0 else rows[s][2])
                            for (s2, i, cin, cout, op, _) in spec.layers() if s2 == s])
            for s in range(len(spec.stages)))
        self.head = (ConvBN(spec.stages[-1].out, spec.head_out)
                     if spec.head_out and with_head else None)
        self.tap = ssd_tap_layer(spec, output_stride)
        self.feature_channels = feature_channels(spec, with_head, output_stride)
        self.feature_strides = feature_strides(spec, with_head, output_stride)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats: OrderedDict[str, torch.Tensor] = OrderedDict()
        x = self.stem(x)
        for s, stage in enumerate(self.stages):
            for i, block in enumerate(stage):
                if (s, i) == self.tap:
                    x, feats[SSD_TAP] = block.forward_with_hidden(x)
                else:
                    x = block(x)
            feats[f"stage{s}"] = x
        if self.head is not None:
            feats["head"] = self.head(x)
        return feats


class Classifier(nn.Module):
    """Backbone + global pooling + dropout + linear: MobileNetV2's ImageNet classifier."""

    def __init__(self, spec: ArchSpec, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self.backbone = Backbone(spec)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(spec.out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = next(reversed(self.backbone(x).values()))  # the head output, else the last stage
        return self.fc(self.dropout(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)))
