"""Convolutional blocks of EfficientViT-B/L (Cai et al., ICCV 2023): DSConv, MBConv, FusedMBConv, ResBlock.

They are the MobileNet family's blocks in EfficientViT's parameterisation: each convolution is a
:class:`ConvNormAct` whose norm and bias are switched per position (``fewer_norm`` stages drop the
BatchNorm of the expansion convs and give them a bias instead). Layer names follow timm's and the
official repository's (``depth_conv``, ``point_conv``, ``inverted_conv``, ``spatial_conv``, ``conv1``,
``conv2``, each holding ``conv``/``norm``), so their checkpoints map by prefix alone.

* DSConv: depthwise-separable conv (MobileNetV1, Howard et al., 2017).
* MBConv: inverted residual (MobileNetV2, Sandler et al., CVPR 2018).
* FusedMBConv: expansion and depthwise conv fused into one full 3x3 conv (EfficientNetV2, Tan & Le, ICML 2021).
* ResBlock: two full 3x3 convs (ResNet basic block, He et al., CVPR 2016), EfficientViT-L's stem.

Every block folds its BatchNorms in ``fuse()`` (see :func:`edgezoo.fuse`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from timm.layers import DropPath
from torch import nn

from edgezoo.blocks.conv_bn import fold_pair

__all__ = ["ConvNormAct", "DSConv", "FusedMBConv", "MBConv", "ResBlock", "Residual"]

Layer = Callable[..., nn.Module] | None
T = TypeVar("T")


def per_conv(value: T | Sequence[T], n: int) -> tuple[T, ...]:
    """One setting per conv of a block: a scalar is repeated, a sequence must have ``n`` entries."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"expected {n} per-conv settings, got {len(value)}: {value!r}")
        return tuple(value)
    return (value,) * n


class ConvNormAct(nn.Module):
    """``Conv2d`` -> optional norm -> optional activation; ``fuse()`` folds a BatchNorm into the conv.

    Padding keeps the spatial size at stride 1 (odd kernels).
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
        norm_layer: Layer = nn.BatchNorm2d,
        act_layer: Layer = nn.ReLU,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=bias)
        self.norm = norm_layer(out_chs) if norm_layer is not None else nn.Identity()
        self.act = act_layer() if act_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))

    def fuse(self) -> nn.Module:
        fold_pair(self, "conv", "norm")
        return self


class _ConvChain(nn.Module):
    """A block that applies its :class:`ConvNormAct` children in registration order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.children():
            x = layer(x)
        return x


class DSConv(_ConvChain):
    """Depthwise kxk conv -> pointwise 1x1 conv (MobileNetV1's depthwise-separable conv)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1,
                 bias: bool | Sequence[bool] = False, norm_layer: Layer | Sequence[Layer] = nn.BatchNorm2d,
                 act_layer: Layer | Sequence[Layer] = (nn.ReLU6, None)) -> None:
        super().__init__()
        bias, norm, act = per_conv(bias, 2), per_conv(norm_layer, 2), per_conv(act_layer, 2)
        self.depth_conv = ConvNormAct(in_chs, in_chs, kernel_size, stride, in_chs, bias[0], norm[0], act[0])
        self.point_conv = ConvNormAct(in_chs, out_chs, 1, 1, 1, bias[1], norm[1], act[1])


class MBConv(_ConvChain):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 project (MobileNetV2)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, expand_ratio: float = 6.0,
                 bias: bool | Sequence[bool] = False, norm_layer: Layer | Sequence[Layer] = nn.BatchNorm2d,
                 act_layer: Layer | Sequence[Layer] = (nn.ReLU6, nn.ReLU6, None)) -> None:
        super().__init__()
        bias, norm, act = per_conv(bias, 3), per_conv(norm_layer, 3), per_conv(act_layer, 3)
        mid = round(in_chs * expand_ratio)
        self.inverted_conv = ConvNormAct(in_chs, mid, 1, 1, 1, bias[0], norm[0], act[0])
        self.depth_conv = ConvNormAct(mid, mid, kernel_size, stride, mid, bias[1], norm[1], act[1])
        self.point_conv = ConvNormAct(mid, out_chs, 1, 1, 1, bias[2], norm[2], act[2])


class FusedMBConv(_ConvChain):
    """Fused inverted residual: full kxk expand conv -> 1x1 project (EfficientNetV2)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, expand_ratio: float = 6.0,
                 bias: bool | Sequence[bool] = False, norm_layer: Layer | Sequence[Layer] = nn.BatchNorm2d,
                 act_layer: Layer | Sequence[Layer] = (nn.ReLU6, None)) -> None:
        super().__init__()
        bias, norm, act = per_conv(bias, 2), per_conv(norm_layer, 2), per_conv(act_layer, 2)
        mid = round(in_chs * expand_ratio)
        self.spatial_conv = ConvNormAct(in_chs, mid, kernel_size, stride, 1, bias[0], norm[0], act[0])
        self.point_conv = ConvNormAct(mid, out_chs, 1, 1, 1, bias[1], norm[1], act[1])


class ResBlock(_ConvChain):
    """Two full kxk convs (a ResNet basic block's body); the residual add is :class:`Residual`'s."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, expand_ratio: float = 1.0,
                 bias: bool | Sequence[bool] = False, norm_layer: Layer | Sequence[Layer] = nn.BatchNorm2d,
                 act_layer: Layer | Sequence[Layer] = (nn.ReLU6, None)) -> None:
        super().__init__()
        bias, norm, act = per_conv(bias, 2), per_conv(norm_layer, 2), per_conv(act_layer, 2)
        mid = round(in_chs * expand_ratio)
        self.conv1 = ConvNormAct(in_chs, mid, kernel_size, stride, 1, bias[0], norm[0], act[0])
        self.conv2 = ConvNormAct(mid, out_chs, kernel_size, 1, 1, bias[1], norm[1], act[1])


class Residual(nn.Module):
    """``x + drop_path(main(x))``, or ``main(x)`` alone when ``shortcut`` is False (a downsampling block).

    Stochastic depth (Huang et al., ECCV 2016) applies to the residual branch only.
    """

    def __init__(self, main: nn.Module, shortcut: bool = True, drop_path: float = 0.0) -> None:
        super().__init__()
        self.main = main
        self.shortcut = shortcut
        self.drop_path = DropPath(drop_path) if shortcut and drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.main(x)
        return x + self.drop_path(y) if self.shortcut else y
