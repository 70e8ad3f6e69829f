"""Channel and spatial attention modules for CNNs, and one factory for all of them.

Every module maps ``(B, C, H, W) -> (B, C, H, W)`` and re-weights its input, so it can be
dropped into any residual branch. Conv+BN parts are :class:`ConvBN` and fold away in
:func:`edgezoo.fuse`.

=========  ===========================================================================
name       paper
=========  ===========================================================================
se         Squeeze-and-Excitation Networks, Hu et al., CVPR 2018
cbam       CBAM: Convolutional Block Attention Module, Woo et al., ECCV 2018
eca        ECA-Net: Efficient Channel Attention, Wang et al., CVPR 2020
triplet    Rotate to Attend: Convolutional Triplet Attention, Misra et al., WACV 2021
ela_*      ELA: Efficient Local Attention for Deep CNNs, Xu & Wan, 2024 (T/B/S/L)
ca         Coordinate Attention for Efficient Mobile Network Design, Hou et al., CVPR 2021
=========  ===========================================================================
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from functools import partial
from typing import ClassVar

import torch
import torch.nn.functional as F
from timm.layers import make_divisible
from torch import nn

from edgezoo.blocks.conv_bn import ConvBN
from edgezoo.errors import InvalidArgumentError
from edgezoo.kernels import channel_attention, use_kernels
from edgezoo.kernels.op_channel_attention import mlp_channel_attention

__all__ = ["ATTENTIONS", "CBAM", "ECA", "ELA", "CoordAttention", "SqueezeExcite", "TripletAttention", "create_attn"]

def _reduced(channels: int, reduction: float, divisor: int | None) -> int:
    """Hidden width of a bottleneck MLP.

    ``divisor=None``: ``channels // reduction``, the papers' width (SENet, CBAM and their
    official code). ``divisor=8``: ``channels / reduction`` rounded to a multiple of 8, timm's
    ``seresnet*`` width, used only to load checkpoints of timm's layouts.
    """
    if divisor is None:
        return max(1, int(channels // reduction))
    return make_divisible(channels / reduction, divisor, round_limit=0.0)


class SqueezeExcite(nn.Module):
    """SE (Hu et al., CVPR 2018): global average pool -> FC-ReLU-FC -> sigmoid channel gate.

    FCs are 1x1 convs with bias; the hidden width is the paper's ``channels // reduction``
    (``divisor=8``: timm's rounding to a multiple of 8, for timm's ``seresnet*`` layouts).
    """

    def __init__(self, channels: int, reduction: float = 16, divisor: int | None = None, **dd) -> None:
        super().__init__()
        hidden = _reduced(channels, reduction, divisor)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=True, **dd)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=True, **dd)

    kernel_mode: str = "auto"  # "triton": torch.ops.edgezoo.channel_attention; "reference": plain torch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_kernels(self.kernel_mode, x):
            return mlp_channel_attention(x, self.fc1, self.fc2, "se")
        gate = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * gate.sigmoid()


class ZPool(nn.Module):
    """Channel-max and channel-mean maps stacked: ``(B, C, H, W) -> (B, 2, H, W)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)


class SpatialGate(nn.Module):
    """ZPool -> k x k Conv-BN (2 -> 1 channel) -> sigmoid: a one-channel spatial attention map.

    The BN uses momentum 0.01 as the CBAM and triplet-attention official code (``BasicConv``);
    ``zero_gamma`` starts its scale at 0, as their ResNets initialise every ``SpatialGate``.
    """

    def __init__(self, kernel_size: int = 7, zero_gamma: bool = False, **dd) -> None:
        super().__init__()
        self.pool = ZPool()
        self.conv = ConvBN(2, 1, kernel_size, bn_weight_init=0.0 if zero_gamma else 1.0, **dd)
        self.conv.bn.momentum = 0.01

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv(self.pool(x)).sigmoid()


class CBAM(nn.Module):
    """CBAM (Woo et al., ECCV 2018): channel attention, then spatial attention.

    Channel: one MLP shared by the average- and max-pooled descriptors, outputs summed, sigmoid.
    Spatial: a 7x7 conv (+BN) over the channel-max and channel-mean maps, sigmoid.
    The MLP's hidden width is ``channels // reduction`` with biases, as in the official code.
    Initialisation as the official code: the spatial gate's BN has momentum 0.01 and gamma 0
    (the gate starts at a uniform 0.5).
    """

    def __init__(self, channels: int, reduction: float = 16, spatial_kernel: int = 7, divisor: int | None = None,
                 **dd) -> None:
        super().__init__()
        hidden = _reduced(channels, reduction, divisor)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=True, **dd)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=True, **dd)
        self.spatial = SpatialGate(spatial_kernel, zero_gamma=True, **dd)

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))

    kernel_mode: str = "auto"  # "triton": torch.ops.edgezoo.channel_attention; "reference": plain torch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_kernels(self.kernel_mode, x):
            return self.spatial(mlp_channel_attention(x, self.fc1, self.fc2, "cbam"))
        gate = self._mlp(x.mean((2, 3), keepdim=True)) + self._mlp(x.amax((2, 3), keepdim=True))
        return self.spatial(x * gate.sigmoid())


def eca_kernel_size(channels: int, gamma: float = 2, b: float = 1) -> int:
    """ECA's adaptive kernel ``|log2(C)/gamma + b/gamma|_odd`` (as the paper's code rounds it)."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class ECA(nn.Module):
    """ECA (Wang et al., CVPR 2020): global average pool -> 1-D conv across channels -> sigmoid.

    No dimensionality reduction; the 1-D kernel ``k`` grows with ``log2(C)`` (gamma 2, b 1)
    unless given. ``k`` parameters in all.
    """

    def __init__(self, channels: int, kernel_size: int | None = None, gamma: float = 2, b: float = 1,
                 **dd) -> None:
        super().__init__()
        k = kernel_size or eca_kernel_size(channels, gamma, b)
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False, **dd)

    kernel_mode: str = "auto"  # "triton": torch.ops.edgezoo.channel_attention; "reference": plain torch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_kernels(self.kernel_mode, x):
            return channel_attention(x, self.conv.weight.view(-1), None, None, None, "eca")
        y = self.conv(x.mean((2, 3)).unsqueeze(1))  # (B, 1, C): convolve along channels
        return x * y.transpose(1, 2).unsqueeze(-1).sigmoid()


class TripletAttention(nn.Module):
    """Triplet attention (Misra et al., WACV 2021): three spatial gates on rotated views.

    Branches see the tensor as (C, W) planes pooled over H, (H, C) planes pooled over W, and
    the usual (H, W) plane pooled over C; each applies :class:`SpatialGate`; the three
    re-weighted tensors are averaged. ``3 * (2k^2 + 2)`` parameters. Initialisation as the
    official code: the H-W gate (its ``SpatialGate``) starts with BN gamma 0, the two rotated
    gates with 1.
    """

    def __init__(self, channels: int | None = None, kernel_size: int = 7, **dd) -> None:
        super().__init__()
        self.gate_cw = SpatialGate(kernel_size, **dd)  # C-W interaction (pool over H)
        self.gate_hc = SpatialGate(kernel_size, **dd)  # H-C interaction (pool over W)
        self.gate_hw = SpatialGate(kernel_size, zero_gamma=True, **dd)  # H-W interaction (pool over C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cw = self.gate_cw(x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
        hc = self.gate_hc(x.permute(0, 3, 2, 1)).permute(0, 3, 2, 1)
        return (cw + hc + self.gate_hw(x)) * (1.0 / 3.0)


class ELA(nn.Module):
    """ELA (Xu & Wan, 2024): strip-pooled 1-D conv + GroupNorm gates along H and along W.

    Average over W gives a (C, H) strip and over H a (C, W) strip; one shared 1-D conv and
    GroupNorm turn each into a sigmoid gate; output ``x * a_h * a_w``. Variants (paper):
    T: k 5, depthwise, GN 32; B: k 7, depthwise, GN 16; S: k 5, C/8 groups, GN 16;
    L: k 7, C/8 groups, GN 16. The variant must be named. ``gn_groups`` overrides the
    variant's GroupNorm groups (a model picks a divisor of ``C`` where the paper's count does
    not divide it); a group count that does not divide ``C`` is an error, as in the paper's code.
    """

    #: variant -> (kernel, channels per conv group, GroupNorm groups)
    VARIANTS: ClassVar[dict[str, tuple[int, int, int]]] = {
        "t": (5, 1, 32), "b": (7, 1, 16), "s": (5, 8, 16), "l": (7, 8, 16),
    }

    def __init__(self, channels: int, variant: str | None = None, gn_groups: int | None = None, **dd) -> None:
        super().__init__()
        if variant is None or variant.lower() not in self.VARIANTS:
            raise InvalidArgumentError(f"ELA needs variant= one of t, b, s, l (ELA-T/B/S/L), got {variant!r}; "
                             f"or use the attention names ela_t, ela_b, ela_s, ela_l")
        kernel, chans_per_group, paper_groups = self.VARIANTS[variant.lower()]
        gn_groups = gn_groups or paper_groups
        for what, size in (("channels per conv group", chans_per_group), ("GroupNorm groups", gn_groups)):
            if channels % size:
                raise InvalidArgumentError(
                    f"ELA-{variant.upper()} on {channels} channels: {what} {size} does not divide {channels}; "
                    f"pass gn_groups= a divisor of {channels} or use another variant")
        self.conv = nn.Conv1d(channels, channels, kernel, padding=kernel // 2, groups=channels // chans_per_group,
                              bias=False, **dd)
        self.norm = nn.GroupNorm(gn_groups, channels, **dd)

    def _gate(self, strip: torch.Tensor, axis: int) -> torch.Tensor:
        """The gate of a ``(B, C, H, 1)`` (``axis=2``) or ``(B, C, 1, W)`` (``axis=3``) strip: the 1-D conv as a
        ``(k, 1)`` or ``(1, k)`` 2-D conv with its weights, so the strips stay 4-D maps (a 3-D strip made
        ExecuTorch's XNNPACK lowering fail: "Attempting to convert non-NHWC compatible node to NHWC")."""
        pad = self.conv.padding[0]
        weight = self.conv.weight.unsqueeze(5 - axis)
        strip = F.conv2d(strip, weight, None, padding=(pad, 0) if axis == 2 else (0, pad), groups=self.conv.groups)
        return self.norm(strip).sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a_h = self._gate(x.mean(3, keepdim=True), 2)  # (B, C, H, 1)
        a_w = self._gate(x.mean(2, keepdim=True), 3)  # (B, C, 1, W)
        return x * a_h * a_w


class CoordAttention(nn.Module):
    """Coordinate attention (Hou et al., CVPR 2021): direction-aware gates from strip pooling.

    Pool over W and over H, concatenate the two strips, shared 1x1 Conv-BN-hardswish to
    ``max(8, C // reduction)`` channels, split, and one 1x1 conv + sigmoid per direction.
    The official code gives the first 1x1 conv a bias; before BatchNorm it only shifts the
    BN's mean, so it is left out here and folded into ``running_mean`` when an official
    checkpoint is loaded (same outputs in eval and training mode).
    """

    def __init__(self, channels: int, reduction: float = 32, min_hidden: int = 8, **dd) -> None:
        super().__init__()
        hidden = max(min_hidden, int(channels // reduction))
        self.reduce = ConvBN(channels, hidden, 1, **dd)
        self.act = nn.Hardswish(inplace=True)
        self.conv_h = nn.Conv2d(hidden, channels, 1, **dd)
        self.conv_w = nn.Conv2d(hidden, channels, 1, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[2]
        strips = torch.cat([x.mean(3, keepdim=True), x.mean(2, keepdim=True).transpose(2, 3)], dim=2)
        y = self.act(self.reduce(strips))  # (B, hidden, H + W, 1)
        y_h, y_w = y[:, :, :h], y[:, :, h:]
        return x * self.conv_h(y_h).sigmoid() * self.conv_w(y_w.transpose(2, 3)).sigmoid()


#: Name -> constructor ``(channels, **kw)``; what :func:`create_attn` and the model names use.
ATTENTIONS: dict[str, Callable[..., nn.Module]] = {
    "se": SqueezeExcite,
    "cbam": CBAM,
    "eca": ECA,
    "triplet": TripletAttention,
    "ela": ELA,  # variant= required (t, b, s, l)
    "ela_t": partial(ELA, variant="t"),
    "ela_b": partial(ELA, variant="b"),
    "ela_s": partial(ELA, variant="s"),
    "ela_l": partial(ELA, variant="l"),
    "ca": CoordAttention,
}


def create_attn(name: str, channels: int, **kwargs) -> nn.Module:
    """Build the attention module ``name`` for ``channels`` channels (see :data:`ATTENTIONS`)."""
    key = name.lower()
    if key not in ATTENTIONS:
        close = difflib.get_close_matches(key, list(ATTENTIONS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InvalidArgumentError(f"unknown attention {name!r}{hint} (choose from {', '.join(ATTENTIONS)})")
    return ATTENTIONS[key](channels, **kwargs)
