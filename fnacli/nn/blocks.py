"""MobileNetV2's inverted residual (MBConv) and its conv-BN(-ReLU6) unit."""

from __future__ import annotations

import torch
from torch import nn


class ConvBN(nn.Module):
    """Conv (no bias) + BatchNorm + optional ReLU6; padding keeps 'same' size at stride 1
    (for any dilation)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 act: bool = True, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, dilation * (kernel // 2),
                              dilation=dilation, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """1x1 expand (absent when e=1) -> kxk depthwise -> 1x1 linear projection, residual when
    stride 1 and in == out (Sandler et al. 2018). ``dilation`` dilates the depthwise conv
    (DeepLab's atrous backbone); it changes no tensor shape."""

    def __init__(self, cin: int, cout: int, kernel: int, expand: int, stride: int,
                 dilation: int = 1) -> None:
        super().__init__()
        hidden = cin * expand
        self.expand = ConvBN(cin, hidden) if expand != 1 else None
        self.dw = ConvBN(hidden, hidden, kernel, stride, groups=hidden, dilation=dilation)
        self.project = ConvBN(hidden, cout, act=False)
        self.residual = stride == 1 and cin == cout

    def forward_with_hidden(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(output, expansion output): SSDLite taps the latter without computing it twice."""
        h = self.expand(x) if self.expand is not None else x
        y = self.project(self.dw(h))
        return (x + y if self.residual else y), h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_hidden(x)[0]
