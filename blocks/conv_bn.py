"""Conv+BN and BN+Linear blocks that fold into a single conv / linear for deployment.

BatchNorm after a conv (or before a linear) is an affine map per channel, so at inference it
can be merged into the neighbouring weights (Ioffe & Szegedy, ICML 2015; the folding used by
every re-parameterised edge model since, e.g. RepVGG, CVPR 2021). ``fuse()`` on these blocks
returns the merged layer. :func:`edgezoo.fuse` and timm's ``reparameterize_model`` reach every
module the same way, by calling each child's ``fuse()``, so every conv -> BN pair of a model
must be folded by a ``fuse()`` of one of the modules holding it: a block that calls its conv and
BN by attribute folds them with :func:`fold_pair`, a ``Sequential`` with :func:`fold_sequential`
(:class:`ConvBNAct`), and a pair held by a model's root, whose own ``fuse()`` nobody calls, by a
:class:`FoldingBatchNorm2d`.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

__all__ = [
    "BNLinear",
    "ConvBN",
    "ConvBNAct",
    "FoldingBatchNorm2d",
    "fold_pair",
    "fold_sequential",
    "fuse_bn_linear",
    "fuse_conv_bn",
]


def _bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(scale, shift)`` such that ``bn(x) == x * scale + shift`` in eval mode."""
    if bn.running_var is None or bn.running_mean is None:
        raise ValueError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new ``Conv2d`` equal to ``bn(conv(x))`` in eval mode."""
    scale, shift = _bn_scale_shift(bn)
    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
        device=conv.weight.device, dtype=conv.weight.dtype,
    )
    fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
    fused.bias.copy_(bias * scale + shift)
    return fused


@torch.no_grad()
def fuse_bn_linear(bn: nn.BatchNorm1d, linear: nn.Linear) -> nn.Linear:
    """A new ``Linear`` equal to ``linear(bn(x))`` in eval mode."""
    scale, shift = _bn_scale_shift(bn)
    fused = nn.Linear(linear.in_features, linear.out_features, bias=True,
                      device=linear.weight.device, dtype=linear.weight.dtype)
    fused.weight.copy_(linear.weight * scale[None, :])
    bias = linear.bias if linear.bias is not None else torch.zeros_like(fused.bias)
    fused.bias.copy_(bias + linear.weight @ shift)
    return fused


def fold_pair(module: nn.Module, conv_name: str, bn_name: str) -> None:
    """Fold ``module.<bn_name>`` into ``module.<conv_name>`` in place; the BN becomes ``Identity``.

    For blocks whose forward calls a conv and then its BN by attribute (timm's ResNet blocks,
    :mod:`edgezoo.blocks.mobilenet`). Does nothing unless the pair is a Conv2d and an exact
    ``BatchNorm2d`` (subclasses such as timm's BatchNormAct2d carry an activation).
    """
    conv, bn = getattr(module, conv_name), getattr(module, bn_name)
    if isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d:
        setattr(module, conv_name, fuse_conv_bn(conv, bn))
        setattr(module, bn_name, nn.Identity())


def fold_sequential(seq: nn.Sequential) -> None:
    """Fold every ``Conv2d`` directly followed by a ``BatchNorm2d`` in ``seq`` (in place; a Sequential's order
    is its forward order)."""
    for first, second in itertools.pairwise(list(seq._modules)):
        fold_pair(seq, first, second)


class ConvBNAct(nn.Sequential):
    """``conv`` (no bias) -> ``bn`` -> ``act``, named so; ``fuse()`` folds the BN into the conv in place.

    ``padding`` keeps the spatial size for stride 1 (odd kernels).
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1,
                 act_layer: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, (kernel_size - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = act_layer(inplace=True)

    def fuse(self) -> ConvBNAct:
        fold_sequential(self)
        return self


class FoldingBatchNorm2d(nn.BatchNorm2d):
    """A ``BatchNorm2d`` that knows the conv it follows: ``fuse()`` folds it into that conv, returns ``Identity``.

    For a conv -> BN pair held by a model's root (timm's ResNet stem, ``conv1`` -> ``bn1``): timm's
    ``reparameterize_model`` calls ``fuse()`` on children only, so the fold lives on the BN, which then
    changes the conv in place (a bias appears). The conv is referenced, not registered, so the state dict
    and the parameters keep the parent's names.
    """

    @classmethod
    def following(cls, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> FoldingBatchNorm2d:
        """A copy of ``bn`` (state included) that folds into ``conv``."""
        w = bn.running_mean if bn.running_mean is not None else bn.weight
        new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                  device=w.device, dtype=w.dtype)
        new.load_state_dict(bn.state_dict())
        object.__setattr__(new, "_conv", conv)  # a plain reference: nn.Module.__setattr__ would register it
        return new

    @torch.no_grad()
    def fuse(self) -> nn.Identity:
        fused = fuse_conv_bn(self._conv, self)
        self._conv.weight.copy_(fused.weight)
        self._conv.bias = fused.bias
        return nn.Identity()


class ConvBN(nn.Sequential):
    """``Conv2d`` (no bias) then ``BatchNorm2d``; ``fuse()`` returns one ``Conv2d``.

    ``padding=None`` keeps the spatial size for stride 1 ("same" for odd kernels).
    ``bn_weight_init=0`` starts a residual branch as identity (Goyal et al., 2017).
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        groups: int = 1,
        bn_weight_init: float = 1.0,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        if padding is None:
            padding = (kernel_size - 1) // 2 * dilation
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, dilation, groups, bias=False, **dd)
        self.bn = nn.BatchNorm2d(out_chs, **dd)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    def fuse(self) -> nn.Conv2d:
        return fuse_conv_bn(self.conv, self.bn)


class BNLinear(nn.Sequential):
    """``BatchNorm1d`` then optional dropout then ``Linear`` (the LeViT/EfficientViT-M classifier).

    ``fuse()`` returns one ``Linear`` (dropout is the identity at inference).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        drop: float = 0.0,
        std: float = 0.02,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.bn = nn.BatchNorm1d(in_features, **dd)
        self.drop = nn.Dropout(drop)
        self.linear = nn.Linear(in_features, out_features, bias=bias, **dd)
        nn.init.trunc_normal_(self.linear.weight, std=std)
        if bias:
            nn.init.zeros_(self.linear.bias)

    def fuse(self) -> nn.Linear:
        return fuse_bn_linear(self.bn, self.linear)
