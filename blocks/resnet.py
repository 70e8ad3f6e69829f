"""timm's ResNet and its residual blocks, with the deploy form reachable through ``fuse()``.

The same modules as ``timm.models.resnet`` (same forward, same parameter names, so timm's,
torchvision's and the official checkpoints load unchanged), plus what timm's
``reparameterize_model`` and :func:`edgezoo.fuse` call: each block's ``fuse()`` folds its
conv -> BN pairs and its downsample's, and the stem's BN is a
:class:`~edgezoo.blocks.conv_bn.FoldingBatchNorm2d` that folds into ``conv1``.
"""

from __future__ import annotations

from timm.models import resnet as timm_resnet
from torch import nn

from edgezoo.blocks.conv_bn import FoldingBatchNorm2d, fold_pair, fold_sequential

__all__ = ["BasicBlock", "Bottleneck", "ResNet"]


def _fold_block(block: nn.Module, pairs: int) -> None:
    for i in range(1, pairs + 1):
        fold_pair(block, f"conv{i}", f"bn{i}")
    if isinstance(block.downsample, nn.Sequential):
        fold_sequential(block.downsample)


class BasicBlock(timm_resnet.BasicBlock):
    """timm's ``BasicBlock``; ``fuse()`` folds its two conv -> BN pairs and its downsample's (in place)."""

    def fuse(self) -> BasicBlock:
        _fold_block(self, 2)
        return self


class Bottleneck(timm_resnet.Bottleneck):
    """timm's ``Bottleneck``; ``fuse()`` folds its three conv -> BN pairs and its downsample's (in place)."""

    def fuse(self) -> Bottleneck:
        _fold_block(self, 3)
        return self


class ResNet(timm_resnet.ResNet):
    """timm's ``ResNet`` whose stem BN folds into the stem conv in the deploy form (single-conv stems only)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(self.conv1, nn.Conv2d) and type(self.bn1) is nn.BatchNorm2d:
            self.bn1 = FoldingBatchNorm2d.following(self.conv1, self.bn1)
