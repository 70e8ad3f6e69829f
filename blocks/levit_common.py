"""Macro parts shared by SHViT (Yun & Ro, CVPR 2024) and EfficientViT-M (Liu et al., CVPR 2023).

Both papers build on LeViT's conv-BN design (Graham et al., ICCV 2021): a 16x stem of four
stride-2 3x3 Conv-BN, residual 3x3 depthwise Conv-BN ("DW"), a 1x1 Conv-BN FFN with ratio 2,
and PatchMerging (1x1 expand 4x, 3x3 depthwise stride 2, SE 0.25, 1x1 project). A stage
transition is DW -> FFN -> PatchMerging -> DW -> FFN; EfficientViT-M's block is the sandwich
DW -> FFN -> attention -> DW -> FFN, SHViT's the half sandwich DW -> attention -> FFN.

Everything here folds with :func:`edgezoo.fuse`: Conv-BN into one conv and a residual 3x3
depthwise Conv-BN into one depthwise conv (the identity is added to its centre tap).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from timm.layers import DropPath, SqueezeExcite
from torch import nn

from edgezoo.blocks.conv_bn import ConvBN

__all__ = ["DWFFN", "ConvFFN", "PatchMerging", "Residual", "SandwichBlock", "StageDownsample", "Stem16"]


class Residual(nn.Module):
    """``x + drop_path(m(x))``; a residual depthwise 3x3 Conv-BN fuses into one depthwise conv."""

    def __init__(self, m: nn.Module, drop_path: float = 0.0) -> None:
        super().__init__()
        self.m = m
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.m(x))

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        if not isinstance(self.m, ConvBN):
            return self
        conv = self.m.fuse()
        k = conv.kernel_size
        if conv.groups != conv.in_channels or conv.in_channels != conv.out_channels or conv.stride != (1, 1):
            return self
        # identity = a depthwise kernel with 1 at the centre tap ("same" padding keeps alignment)
        conv.weight[:, 0, k[0] // 2, k[1] // 2] += 1.0
        return conv


class ConvFFN(nn.Module):
    """Pointwise FFN: 1x1 Conv-BN -> ReLU -> 1x1 Conv-BN (last BN zero-initialised)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.pw1 = ConvBN(dim, hidden)
        self.act = nn.ReLU()
        self.pw2 = ConvBN(hidden, dim, bn_weight_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw2(self.act(self.pw1(x)))


def dw_conv(dim: int, bn_weight_init: float = 1.0) -> ConvBN:
    """3x3 depthwise Conv-BN (the local mixer of both papers)."""
    return ConvBN(dim, dim, 3, groups=dim, bn_weight_init=bn_weight_init)


class DWFFN(nn.Sequential):
    """Residual depthwise conv then residual FFN: the half of a stage transition either side of PatchMerging."""

    def __init__(self, dim: int, ffn_ratio: float = 2.0, drop_path: float = 0.0) -> None:
        super().__init__(
            Residual(dw_conv(dim), drop_path),
            Residual(ConvFFN(dim, int(dim * ffn_ratio)), drop_path),
        )


class PatchMerging(nn.Module):
    """Stride-2 downsampling: 1x1 expand 4x -> ReLU -> 3x3 DW stride 2 -> ReLU -> SE 0.25 -> 1x1 project."""

    def __init__(self, dim: int, out_dim: int, expand: int = 4) -> None:
        super().__init__()
        hidden = dim * expand
        self.conv1 = ConvBN(dim, hidden)
        self.act1 = nn.ReLU()
        self.conv2 = ConvBN(hidden, hidden, 3, stride=2, groups=hidden)
        self.act2 = nn.ReLU()
        self.se = SqueezeExcite(hidden, 0.25)
        self.conv3 = ConvBN(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.se(self.act2(self.conv2(self.act1(self.conv1(x))))))


class StageDownsample(nn.Sequential):
    """Stage transition of both papers: DW -> FFN -> PatchMerging -> DW -> FFN."""

    def __init__(self, dim: int, out_dim: int, ffn_ratio: float = 2.0, drop_path: float = 0.0) -> None:
        super().__init__(OrderedDict(
            res1=DWFFN(dim, ffn_ratio, drop_path),
            patchmerge=PatchMerging(dim, out_dim),
            res2=DWFFN(out_dim, ffn_ratio, drop_path),
        ))


class Stem16(nn.Sequential):
    """16x patch embedding: four stride-2 3x3 Conv-BN (dim/8, dim/4, dim/2, dim) with ReLU between."""

    def __init__(self, in_chans: int, dim: int) -> None:
        chs = [in_chans, dim // 8, dim // 4, dim // 2, dim]
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i in range(4):
            layers[f"conv{i + 1}"] = ConvBN(chs[i], chs[i + 1], 3, stride=2)
            if i < 3:
                layers[f"act{i + 1}"] = nn.ReLU()
        super().__init__(layers)


class SandwichBlock(nn.Module):
    """LeViT-style block around a token mixer, every part residual.

    ``sandwich=True`` (EfficientViT-M): DW -> FFN -> mixer -> DW -> FFN.
    ``sandwich=False`` (SHViT): DW -> mixer -> FFN (``ffn0`` and ``dw1`` are absent).
    ``mixer=None`` leaves the mixer out (SHViT's conv-only first stage).
    """

    def __init__(
        self,
        dim: int,
        mixer: nn.Module | None,
        sandwich: bool = True,
        ffn_ratio: float = 2.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        hidden = int(dim * ffn_ratio)
        self.dw0 = Residual(dw_conv(dim, bn_weight_init=0.0), drop_path)
        self.ffn0 = Residual(ConvFFN(dim, hidden), drop_path) if sandwich else nn.Identity()
        self.mixer = Residual(mixer, drop_path) if mixer is not None else nn.Identity()
        self.dw1 = Residual(dw_conv(dim, bn_weight_init=0.0), drop_path) if sandwich else nn.Identity()
        self.ffn1 = Residual(ConvFFN(dim, hidden), drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn1(self.dw1(self.mixer(self.ffn0(self.dw0(x)))))
