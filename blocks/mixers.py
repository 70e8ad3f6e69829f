"""Every token mixer of edgezoo behind one constructor, for the mixer sweep (:mod:`edgezoo.mix`).

:func:`create_mixer` builds ``(B, C, H, W) -> (B, C, H, W)`` token mixers by name. The parameter-free
and channel-attention mixers run at the block's full width; every attention mixer runs at its own width
``w`` between a 1x1 conv ``C -> w`` and a 1x1 conv ``w -> C`` (:class:`NarrowMixer`), and ``w`` is the knob
that sets its cost (the macro-architecture around it never changes).

=========== ===================================================================================
``none``    identity (IdentityFormer, the MetaFormer baseline: Yu et al., "MetaFormer Baselines
            for Vision", TPAMI 2024)
``pool``    average pooling minus the input (PoolFormer: Yu et al., "MetaFormer Is Actually What
            You Need for Vision", CVPR 2022)
``eca``     3x3 depthwise conv then ECA channel attention (Wang et al., CVPR 2020)
``cbam``    3x3 depthwise conv then CBAM channel + spatial attention (Woo et al., ECCV 2018)
``shvit``   single-head attention on a partial channel slice (SHViT, Yun & Ro, CVPR 2024)
``cga``     cascaded group attention (EfficientViT-M, Liu et al., CVPR 2023)
``focal``   focal modulation (FocalNet, Yang et al., NeurIPS 2022)
``mhsa``    softmax multi-head self-attention via ``scaled_dot_product_attention`` (Vaswani et al.,
            NeurIPS 2017; ViT, Dosovitskiy et al., ICLR 2021)
``litemla`` multi-scale ReLU linear attention (EfficientViT, Cai et al., ICCV 2023)
``flatten`` focused linear attention (FLatten, Han et al., ICCV 2023)
``agent``   agent attention (Han et al., ECCV 2024)
``mala``    magnitude-aware linear attention (Fan et al., ICCV 2025)
``inline``  injective linear attention with a local residual (Han et al., NeurIPS 2024)
=========== ===================================================================================
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from edgezoo.blocks.cascaded import CascadedGroupAttention
from edgezoo.blocks.cnn_attention import CBAM, ECA
from edgezoo.blocks.focal import FocalModulation
from edgezoo.blocks.inline_attention import InLineAttention
from edgezoo.blocks.linear_attention import (
    AgentAttention,
    FocusedLinearAttention,
    LiteMLA,
    MagnitudeAwareLinearAttention,
)
from edgezoo.blocks.mbconv import ConvNormAct
from edgezoo.blocks.single_head import SHSA

__all__ = ["MIXERS", "NARROW", "ConvAttnMixer", "NarrowMixer", "PoolMixer", "SoftmaxAttention", "create_mixer"]

#: Channels per head of the multi-head attention mixers.
HEAD_DIM = 16


class PoolMixer(nn.Module):
    """PoolFormer's token mixer: ``avgpool_kxk(x) - x`` (stride 1, padding not counted)."""

    def __init__(self, pool_size: int = 3) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(pool_size, 1, pool_size // 2, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) - x


class ConvAttnMixer(nn.Module):
    """A conv block's token mixing with CNN attention: 3x3 depthwise Conv-BN, then ECA or CBAM."""

    def __init__(self, dim: int, attn: str) -> None:
        super().__init__()
        self.dw = ConvNormAct(dim, dim, 3, groups=dim, act_layer=None)
        self.attn = ECA(dim) if attn == "eca" else CBAM(dim, reduction=16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.dw(x))


class SoftmaxAttention(nn.Module):
    """Multi-head softmax self-attention over all tokens (``F.scaled_dot_product_attention``)."""

    def __init__(self, dim: int, head_dim: int = HEAD_DIM) -> None:
        super().__init__()
        if dim % head_dim:
            raise ValueError(f"softmax attention: dim {dim} must be a multiple of head_dim {head_dim}")
        self.num_heads, self.head_dim = dim // head_dim, head_dim
        self.qkv = nn.Conv2d(dim, 3 * dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(x).reshape(B, 3, self.num_heads, self.head_dim, H * W).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, d)
        return self.proj(out.transpose(-1, -2).reshape(B, C, H, W))


class NarrowMixer(nn.Module):
    """``out(mixer(inp(x)))``: a token mixer at its own width ``w`` between 1x1 convs ``C -> w -> C``."""

    def __init__(self, dim: int, width: int, mixer: nn.Module) -> None:
        super().__init__()
        self.inp = nn.Conv2d(dim, width, 1)
        self.mixer = mixer
        self.out = nn.Conv2d(width, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.mixer(self.inp(x)))


def _cga(w: int, size: int) -> nn.Module:
    return CascadedGroupAttention(w, key_dim=16, num_heads=4, window_size=min(7, size), kernels=(5, 5, 5, 5))


#: Attention mixers at width ``w`` for a ``size x size`` map at the model's default input size.
NARROW: dict[str, Callable[[int, int], nn.Module]] = {
    "shvit": lambda w, size: SHSA(w, pdim=w // 2, qk_dim=16),
    "cga": _cga,
    "focal": lambda w, size: FocalModulation(w, focal_level=2, focal_window=3),
    "mhsa": lambda w, size: SoftmaxAttention(w),
    "litemla": lambda w, size: LiteMLA(w, head_dim=HEAD_DIM),
    "flatten": lambda w, size: FocusedLinearAttention(w, head_dim=HEAD_DIM, pos_size=size),
    "agent": lambda w, size: AgentAttention(w, head_dim=HEAD_DIM, agent_size=min(7, size), feature_size=size),
    "mala": lambda w, size: MagnitudeAwareLinearAttention(w, head_dim=HEAD_DIM),
    "inline": lambda w, size: InLineAttention(w, head_dim=HEAD_DIM),
}

#: Every mixer name, in the order the sweep reports them.
MIXERS: tuple[str, ...] = ("none", "pool", "eca", "cbam", *NARROW)


def create_mixer(name: str, dim: int, width: int | None = None, size: int = 14) -> nn.Module:
    """The token mixer ``name`` for ``dim`` channels; attention mixers need their ``width``. ``size`` is the
    map's side at the model's default input size (position tables, windows and agents follow it)."""
    if name == "none":
        return nn.Identity()
    if name == "pool":
        return PoolMixer()
    if name in ("eca", "cbam"):
        return ConvAttnMixer(dim, name)
    if name not in NARROW:
        close = difflib.get_close_matches(name, MIXERS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown mixer {name!r}{hint} (choose from {', '.join(MIXERS)})")
    if not width:
        raise ValueError(f"mixer {name!r} needs its width (channels of its attention)")
    return NarrowMixer(dim, width, NARROW[name](width, size))
