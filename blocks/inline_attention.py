"""InLine attention: injective linear attention with a local residual (Han et al., "Bridging the Divide:
Reconsidering Softmax and Linear Attention", NeurIPS 2024).

Plain linear attention normalises ``phi(q_i) . phi(k_j)`` by its sum over ``j``; that map is not injective
(queries that differ by a scale get the same attention), which the paper names as one cause of its gap to
softmax attention. InLine attention subtracts the mean instead of dividing by the sum::

    w_ij = 1/N + s * (phi(q_i) . phi(k_j) - mean_t phi(q_i) . phi(k_t))        (sum_j w_ij = 1)
    out_i = sum_j w_ij v_j = s * (sum_j v_j phi(k_j)^T) phi(q_i) + (1 - s N phi(q_i) . mean phi(k)) mean v

linear in the number of tokens ``N``; ``s = 1/N`` (``scale=None``: the centred similarity is averaged over
the keys, so the output stays bounded as ``N`` grows). The second cause the paper names is weak local
modelling; InLine adds a *local attention residual*: each token also takes ``sum_o r_o v_{i+o}`` over its
3x3 neighbourhood, with the nine weights ``r`` per head predicted by a small MLP from the globally pooled
input. ``local_residual=False`` is the residual-free simplification.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from edgezoo.blocks.linear_attention import TokenMixer, run_fp32
from edgezoo.blocks.mbconv import ConvNormAct

__all__ = ["InLineAttention", "neighbourhood"]

_KERNELS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": lambda t: t,
    "relu": F.relu,
    "elu": lambda t: F.elu(t) + 1.0,
}


def neighbourhood(x: torch.Tensor, kernel_size: int) -> list[torch.Tensor]:
    """The ``kernel_size**2`` shifted copies of ``x`` (``(B, C, H, W)``, zero padded), row-major offsets."""
    r = kernel_size // 2
    H, W = x.shape[-2:]
    padded = F.pad(x, (r, r, r, r))
    return [padded[..., dy:dy + H, dx:dx + W] for dy in range(kernel_size) for dx in range(kernel_size)]


class InLineAttention(TokenMixer):
    """InLine attention (Han et al., NeurIPS 2024) on ``(B, C, H, W)`` maps; see the module docstring.

    ``kernel`` is ``phi``: ``"identity"`` (the default: injectivity does not need a positive kernel),
    ``"relu"`` or ``"elu"`` (``elu + 1``).
    """

    paper = "Bridging the Divide: Reconsidering Softmax and Linear Attention, Han et al., NeurIPS 2024"
    fp32_ops = ("matmul", "mean", "sub", "mul", "add")

    def __init__(self, dim: int, head_dim: int = 32, kernel: str = "identity", local_residual: bool = True,
                 local_kernel: int = 3, scale: float | None = None,
                 norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__(dim, head_dim)
        if kernel not in _KERNELS:
            raise ValueError(f"InLine kernel must be one of {', '.join(_KERNELS)}, got {kernel!r}")
        self.kernel, self.scale, self.local_kernel = kernel, scale, local_kernel
        self.qkv = ConvNormAct(dim, 3 * dim, 1, norm_layer=None, act_layer=None)
        self.residual = nn.Sequential(
            nn.Conv2d(dim, max(dim // 4, 8), 1), nn.GELU(),
            nn.Conv2d(max(dim // 4, 8), self.num_heads * local_kernel**2, 1),
        ) if local_residual else None
        self.proj = ConvNormAct(dim, dim, 1, norm_layer=norm_layer, act_layer=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(x).reshape(B, 3, C, H, W).unbind(1)
        out = run_fp32(self.attend, *(self._split_heads(t) for t in (q, k, v))).reshape(B, C, H, W)
        if self.residual is not None:
            out = out + self.local(x, v)
        return self.proj(out)

    def local(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The local attention residual: ``sum_o r_o(x) v_{i+o}`` over the kxk neighbourhood, per head."""
        B, C, H, W = v.shape
        # one weight per head and offset, broadcast over the head's channels (an expand would be a portable op
        # in ExecuTorch's XNNPACK programs)
        r = self.residual(x.mean((2, 3), keepdim=True)).reshape(B, self.num_heads, -1, 1, 1)  # 5-D at most: CoreML
        out = None
        for o, shifted in enumerate(neighbourhood(v, self.local_kernel)):
            term = shifted.reshape(B, self.num_heads, self.head_dim, H, W) * r[:, :, o:o + 1]
            out = term if out is None else out + term
        return out.reshape(B, C, H, W)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Injective linear attention on ``(B, heads, d, N)`` tensors."""
        phi = _KERNELS[self.kernel]
        q, k = phi(q), phi(k)
        n = q.shape[-1]
        s = 1.0 / n if self.scale is None else self.scale
        kv = (v @ k.transpose(-1, -2)) * s  # (B, h, d, d)
        qk_mean = k.mean(-1, keepdim=True).transpose(-1, -2) @ q  # (B, h, 1, N)
        return kv @ q + (1.0 - (s * n) * qk_mean) * v.mean(-1, keepdim=True)
