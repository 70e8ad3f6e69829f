"""Single-head self-attention (SHSA) of SHViT (Yun & Ro, "SHViT: Single-Head Vision Transformer
with Memory Efficient Macro Design", CVPR 2024).

Only the first ``pdim`` channels are attended to: they are GroupNorm(1)-normalised, projected
to one query/key of ``qk_dim`` (16) channels and a value of ``pdim`` channels, attend over all
tokens with a single head, and are concatenated with the untouched ``dim - pdim`` channels
before a ReLU and a 1x1 Conv-BN projection.

Resolution: SHSA has no positional bias, so any input size works unchanged (global attention
over however many tokens the map has).

Deploy form (``fuse()``): the GroupNorm's affine and the ``qk_dim**-0.5`` scale are folded into
the qkv conv (the norm keeps only its per-sample standardisation: a ``GroupNorm(1)`` without affine
on the flattened slice, which both torch ONNX exporters take at any input size; a LayerNorm over
``x.shape[1:]`` has a shape the TorchScript exporter cannot make constant), the qkv projection runs
token-flattened as a 1x1 Conv1d, and both Conv-BN fold.
The transposes around the two attention matmuls are left to the runtime (onnxruntime folds
them into its ``FusedMatMul``), and the softmax runs over the last axis.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgezoo.blocks.conv_bn import ConvBN
from edgezoo.kernels import use_kernels

__all__ = ["SHSA"]


class SHSA(nn.Module):
    """Single-head self-attention on a partial channel slice (SHViT).

    ``kernel_mode`` other than ``"reference"`` runs the attention as ``F.scaled_dot_product_attention``
    (fused flash / memory-efficient kernels on CUDA; no custom kernel: one head of 16 channels is what SDPA
    already fuses well). ``"auto"`` does so on CUDA only.
    """

    kernel_mode: str = "auto"

    def __init__(self, dim: int, pdim: int, qk_dim: int = 16) -> None:
        super().__init__()
        if not 0 < pdim <= dim:
            raise ValueError(f"SHSA partial dim must be in (0, dim={dim}], got pdim={pdim}")
        self.dim, self.pdim, self.qk_dim = dim, pdim, qk_dim
        self.scale = qk_dim**-0.5
        self.pre_norm = nn.GroupNorm(1, pdim)
        self.qkv: nn.Module = ConvBN(pdim, 2 * qk_dim + pdim)
        self.act = nn.ReLU()
        self.proj: nn.Module = ConvBN(dim, dim, bn_weight_init=0.0)
        self.fused = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        x1, x2 = torch.split(x, [self.pdim, self.dim - self.pdim], dim=1)
        split = [self.qk_dim, self.qk_dim, self.pdim]
        if self.fused:  # token-major from here on: one reshape, and the norm's affine is in qkv
            q, k, v = self.qkv(self.pre_norm(x1.flatten(2))).split(split, dim=1)
        else:
            q, k, v = self.qkv(self.pre_norm(x1)).flatten(2).split(split, dim=1)
            q = q * self.scale
        if use_kernels(self.kernel_mode, q):
            x1 = F.scaled_dot_product_attention(q.transpose(-2, -1)[:, None], k.transpose(-2, -1)[:, None],
                                                v.transpose(-2, -1)[:, None], scale=1.0)
            x1 = x1[:, 0].transpose(-2, -1).reshape(B, self.pdim, H, W)
        else:
            attn = (q.transpose(-2, -1) @ k).softmax(dim=-1)
            x1 = (v @ attn.transpose(-2, -1)).view(B, self.pdim, H, W)
        return self.proj(self.act(torch.cat([x1, x2], dim=1)))

    @torch.no_grad()
    def fuse(self) -> SHSA:
        """Fold BN into both convs, GroupNorm's affine and the q scale into qkv (in place): the norm keeps no affine."""
        if self.fused:
            return self
        conv = self.qkv.fuse() if isinstance(self.qkv, ConvBN) else self.qkv
        gamma, beta = self.pre_norm.weight, self.pre_norm.bias
        w = conv.weight[:, :, 0, 0]
        conv.bias.add_(w @ beta)
        conv.weight.mul_(gamma.view(1, -1, 1, 1))
        conv.weight[: self.qk_dim].mul_(self.scale)
        conv.bias[: self.qk_dim].mul_(self.scale)
        self.qkv = nn.Conv1d(self.pdim, conv.out_channels, 1, device=conv.weight.device, dtype=conv.weight.dtype)
        self.qkv.weight.copy_(conv.weight[..., 0])
        self.qkv.bias.copy_(conv.bias)
        self.pre_norm = nn.GroupNorm(1, self.pdim, eps=self.pre_norm.eps, affine=False)
        if isinstance(self.proj, ConvBN):
            self.proj = self.proj.fuse()
        self.fused = True
        return self
