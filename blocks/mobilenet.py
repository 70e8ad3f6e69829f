"""MobileNetV2 blocks with an attention slot (Sandler et al., CVPR 2018).

Attention modules sit where their papers put them: ``"mid"`` after the depthwise conv on the
expanded channels (SE, CBAM and Coordinate attention as in the CA paper's MobileNetV2; ELA),
or ``"out"`` after the linear projection, before the residual add (ECA-Net's and
triplet-attention's official MobileNetV2). Which blocks get one is the model's choice
(``attn_layer=None`` leaves a block without).
Layer names follow timm's ``mobilenetv2_*`` so timm checkpoints load as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from edgezoo.blocks.conv_bn import fold_pair

__all__ = ["DepthwiseSeparable", "InvertedResidual"]

AttnFactory = Callable[[int], nn.Module] | None
Position = Literal["mid", "out"]


def _attn(factory: AttnFactory, channels: int) -> nn.Module:
    return nn.Identity() if factory is None else factory(channels)


class DepthwiseSeparable(nn.Module):
    """MobileNetV2's first block (expansion 1): depthwise 3x3 -> ReLU6 -> linear 1x1."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, attn_layer: AttnFactory = None,
                 attn_position: Position = "out") -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(in_chs, in_chs, 3, stride, 1, groups=in_chs, bias=False)
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.act = nn.ReLU6(inplace=True)
        self.se = _attn(attn_layer if attn_position == "mid" else None, in_chs)
        self.conv_pw = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.attn = _attn(attn_layer if attn_position == "out" else None, out_chs)
        self.has_skip = stride == 1 and in_chs == out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.act(self.bn1(self.conv_dw(x))))
        y = self.attn(self.bn2(self.conv_pw(y)))
        return x + y if self.has_skip else y

    def fuse(self) -> nn.Module:
        fold_pair(self, "conv_dw", "bn1")
        fold_pair(self, "conv_pw", "bn2")
        return self


class InvertedResidual(nn.Module):
    """Inverted residual: 1x1 expand -> ReLU6 -> 3x3 depthwise -> ReLU6 -> 1x1 linear project."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, expand: float = 6.0,
                 attn_layer: AttnFactory = None, attn_position: Position = "out",
                 drop_path: nn.Module | None = None) -> None:
        super().__init__()
        mid = round(in_chs * expand)
        self.conv_pw = nn.Conv2d(in_chs, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.act1 = nn.ReLU6(inplace=True)
        self.conv_dw = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.act2 = nn.ReLU6(inplace=True)
        self.se = _attn(attn_layer if attn_position == "mid" else None, mid)
        self.conv_pwl = nn.Conv2d(mid, out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.attn = _attn(attn_layer if attn_position == "out" else None, out_chs)
        self.has_skip = stride == 1 and in_chs == out_chs
        self.drop_path = drop_path if (drop_path is not None and self.has_skip) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv_pw(x)))
        y = self.se(self.act2(self.bn2(self.conv_dw(y))))
        y = self.attn(self.bn3(self.conv_pwl(y)))
        return x + self.drop_path(y) if self.has_skip else y

    def fuse(self) -> nn.Module:
        for conv, bn in (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")):
            fold_pair(self, conv, bn)
        return self
