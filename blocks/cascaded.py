"""Cascaded group attention (CGA) of EfficientViT-M (Liu et al., "EfficientViT: Memory Efficient
Vision Transformer with Cascaded Group Attention", CVPR 2023).

The input's channels are split into ``num_heads`` groups. Head ``i`` projects its group plus the
previous head's output (the cascade) to a query and key of ``key_dim`` channels and a value of
``dim / num_heads`` channels, refines the query with a per-head depthwise conv, and attends
inside a ``window_size`` window with a learned bias per head and per relative offset
(``|dy|, |dx|``, LeViT-style). The heads' outputs are concatenated and projected by
ReLU -> 1x1 Conv-BN.

Resolution: the window is ``min(window_size, feature size at the training resolution)``
(that fixes the bias table, as in the paper and timm). A map of exactly one window attends
directly; any other size is zero-padded to a multiple of the window and partitioned, so every
window keeps the trained bias table and nothing is interpolated (the padded tokens take part as
keys, exactly as in the official code and timm). The projection is pointwise, so it runs after
the windows are merged and cropped.

Deploy form (``fuse()``): Conv-BN pairs fold, the ``key_dim**-0.5`` scale folds into the query's
depthwise conv, the gathered ``(heads, N, N)`` bias is stored once as a buffer (``attn_bias``),
and the heads' query/key/value projections of their input groups run as one grouped 1x1 conv
before the cascade (by linearity, head ``i`` then only adds ``W_i @ out_{i-1}``, a bias-free
conv). The head loop stays token-flattened (``(B, C, N)``): only the query is reshaped for its
depthwise conv, and the runtime folds the transposes into its matmuls. Eval mode without
fusing caches the gathered bias, keyed on the table's version so an in-place load refreshes it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgezoo.blocks.conv_bn import ConvBN
from edgezoo.kernels import cga_attention, use_kernels

__all__ = ["CascadedGroupAttention", "relative_offset_index"]


def relative_offset_index(window: int) -> torch.Tensor:
    """``(N, N)`` index of the bias of token pair (p, q) in a ``window x window`` grid: ``|dy| * window + |dx|``.

    The order equals the LeViT/EfficientViT enumeration of offsets by first appearance.
    """
    coords = torch.arange(window)
    ys = coords.repeat_interleave(window)
    xs = coords.repeat(window)
    return (ys[:, None] - ys[None, :]).abs() * window + (xs[:, None] - xs[None, :]).abs()


class CascadedGroupAttention(nn.Module):
    """Cascaded group attention with per-head query DW conv and relative-position biases (EfficientViT-M).

    ``kernel_mode`` (``"auto" | "triton" | "reference"``): whether each head's attention (scores, bias,
    softmax, values) runs as ``torch.ops.edgezoo.cga_attention``.
    """

    kernel_mode: str = "auto"

    def __init__(
        self,
        dim: int,
        key_dim: int = 16,
        num_heads: int = 4,
        window_size: int = 7,
        kernels: tuple[int, ...] = (5, 5, 5, 5),
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"CGA dim={dim} must be divisible by num_heads={num_heads}")
        if len(kernels) < num_heads:
            raise ValueError(f"CGA needs one query kernel per head: got {len(kernels)} kernels for {num_heads} heads")
        self.dim, self.num_heads, self.key_dim = dim, num_heads, key_dim
        self.val_dim = dim // num_heads
        self.window_size = window_size
        self.scale = key_dim**-0.5
        self.qkvs = nn.ModuleList([ConvBN(self.val_dim, 2 * key_dim + self.val_dim) for _ in range(num_heads)])
        self.dws = nn.ModuleList([ConvBN(key_dim, key_dim, k, groups=key_dim) for k in kernels[:num_heads]])
        self.act = nn.ReLU()
        self.proj: nn.Module = ConvBN(self.val_dim * num_heads, dim, bn_weight_init=0.0)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window_size * window_size))
        self.register_buffer("attention_bias_idxs", relative_offset_index(window_size), persistent=False)
        self.fused = False
        self._bias_cache: tuple[tuple, torch.Tensor] | None = None

    # --- biases --------------------------------------------------------------------------
    def attention_bias(self) -> torch.Tensor:
        """The ``(heads, N, N)`` bias; cached in eval mode (keyed on the table's version and device)."""
        if self.fused:
            return self.attn_bias
        p = self.attention_biases
        if self.training or p.is_meta or torch.jit.is_tracing() or torch.compiler.is_compiling():
            return p[:, self.attention_bias_idxs]
        key = (p._version, p.data_ptr(), p.device, p.dtype)
        if self._bias_cache is None or self._bias_cache[0] != key:
            with torch.no_grad():
                self._bias_cache = (key, p[:, self.attention_bias_idxs])
        return self._bias_cache[1]

    def _apply(self, fn, *args, **kwargs):
        self._bias_cache = None
        return super()._apply(fn, *args, **kwargs)

    # --- forward -------------------------------------------------------------------------
    def _heads_train(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        kd, vd = self.key_dim, self.val_dim
        groups = x.chunk(self.num_heads, dim=1)
        outs: list[torch.Tensor] = []
        feat = groups[0]
        for i, (qkv, dw) in enumerate(zip(self.qkvs, self.dws, strict=True)):
            if i > 0:
                feat = feat + groups[i]
            q, k, v = qkv(feat).split([kd, kd, vd], dim=1)
            q = dw(q).flatten(2) * self.scale
            feat = self._attend(q, k.flatten(2), v.flatten(2), bias[i]).view(B, vd, H, W)
            outs.append(feat)
        return torch.cat(outs, dim=1)

    def _heads_fused(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        kd, vd = self.key_dim, self.val_dim
        pre = self.qkv_in(x.flatten(2)).split(2 * kd + vd, dim=1)  # every head's projection of its own group
        outs: list[torch.Tensor] = []
        for i in range(self.num_heads):
            qkv = pre[i] if i == 0 else pre[i] + self.qkv_prev[i - 1](outs[-1])
            q, k, v = qkv.split([kd, kd, vd], dim=1)
            q = self.dws[i](q.reshape(B, kd, H, W)).flatten(2)
            outs.append(self._attend(q, k, v, bias[i]))
        return torch.cat(outs, dim=1).view(B, -1, H, W)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """One head: ``v @ softmax(q^T k + bias)^T`` on ``(B, C, N)`` tensors (the fused op or plain torch)."""
        if use_kernels(self.kernel_mode, q):
            return cga_attention(q, k, v, bias)
        attn = (q.transpose(-2, -1) @ k + bias).softmax(dim=-1)
        return v @ attn.transpose(-2, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        ws = self.window_size
        bias = self.attention_bias()
        heads = self._heads_fused if self.fused else self._heads_train
        concrete = isinstance(H, int) and isinstance(W, int)
        if ws == H and ws == W and (concrete or not torch.compiler.is_exporting()):
            y = heads(x, bias)  # one window: an export with static sizes carries no partition either
        else:
            # Branch-free windowing when the size is symbolic (an export with dynamic height and width
            # stays valid for every size: zero padding is a no-op); with concrete sizes the no-op pad
            # and crop are skipped (they become `alias` nodes that coremltools cannot convert).
            pad_b, pad_r = (ws - H % ws) % ws, (ws - W % ws) % ws
            symbolic = not (isinstance(pad_b, int) and isinstance(pad_r, int))
            padded = symbolic or pad_b > 0 or pad_r > 0
            if padded:
                x = F.pad(x, (0, pad_r, 0, pad_b))
            nh, nw = (H + pad_b) // ws, (W + pad_r) // ws
            x = x.view(B, C, nh, ws, nw, ws).permute(0, 2, 4, 1, 3, 5).reshape(B * nh * nw, C, ws, ws)
            y = heads(x, bias)
            cv = y.shape[1]
            y = y.view(B, nh, nw, cv, ws, ws).permute(0, 3, 1, 4, 2, 5).reshape(B, cv, nh * ws, nw * ws)
            if padded:
                y = y[:, :, :H, :W]
        return self.proj(self.act(y))

    # --- deploy form ---------------------------------------------------------------------
    @torch.no_grad()
    def fuse(self) -> CascadedGroupAttention:
        """Fold BN, scale and the input-group projections (in place; see the module docstring)."""
        if self.fused:
            return self
        qkvs = [m.fuse() for m in self.qkvs]
        h, cin, cout = self.num_heads, self.val_dim, qkvs[0].out_channels
        p = qkvs[0].weight
        self.qkv_in = nn.Conv1d(h * cin, h * cout, 1, groups=h, device=p.device, dtype=p.dtype)
        self.qkv_in.weight.copy_(torch.cat([m.weight[..., 0] for m in qkvs]))
        self.qkv_in.bias.copy_(torch.cat([m.bias for m in qkvs]))
        prev = []
        for m in qkvs[1:]:
            conv = nn.Conv1d(cin, cout, 1, bias=False, device=p.device, dtype=p.dtype)
            conv.weight.copy_(m.weight[..., 0])
            prev.append(conv)
        self.qkv_prev = nn.ModuleList(prev)
        dws = []
        for m in self.dws:
            conv = m.fuse()
            conv.weight.mul_(self.scale)
            conv.bias.mul_(self.scale)
            dws.append(conv)
        self.dws = nn.ModuleList(dws)
        del self.qkvs
        if isinstance(self.proj, ConvBN):
            self.proj = self.proj.fuse()
        self.register_buffer("attn_bias", self.attention_biases[:, self.attention_bias_idxs].detach().clone())
        del self.attention_biases
        self._bias_cache = None
        self.fused = True
        return self
