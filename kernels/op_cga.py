"""Per-head attention of cascaded group attention (EfficientViT-M): ``torch.ops.edgezoo.cga_attention``.

On one head's ``q``, ``k`` ``(B, kd, N)`` (q already scaled), ``v`` ``(B, vd, N)`` and its gathered
relative-position bias ``(N, N)``::

    out = v @ softmax(q^T k + bias, dim=-1)^T          (B, vd, N)

The cascade between heads (head ``i`` adds head ``i - 1``'s output to its input, through a projection
and a depthwise conv) stays in PyTorch; what fuses is the chain inside a head: two matmuls, the bias
add and the softmax, which eager PyTorch runs as five launches and ``(B, N, N)`` round trips to
memory. One Triton program per window holds the ``N x N`` scores in registers (fp32 softmax), so the
kernel needs ``N <= MAX_TOKENS`` (EfficientViT-M's 7x7 windows: 49); larger maps run the
reference. Both compute in fp32 for half inputs; the backward is the reference's.
"""

from __future__ import annotations

import torch

from edgezoo.kernels._lazy import LazyKernel
from edgezoo.kernels._mode import use_triton
from edgezoo.kernels._op import contiguous_rows, next_pow2, reference_autograd
from edgezoo.kernels._precision import KERNEL_DTYPES, dot_precision, no_autocast, upcast

__all__ = ["KERNEL", "MAX_TOKENS", "cga_attention", "cga_attention_reference", "constexprs"]

MAX_TOKENS = 128


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> None:
    n = q.shape[-1]
    if q.dim() != 3 or q.shape != k.shape or v.dim() != 3 or v.shape[0] != q.shape[0] or v.shape[-1] != n \
            or tuple(bias.shape) != (n, n):
        raise ValueError(f"cga_attention takes q, k (B, kd, N), v (B, vd, N) and bias (N, N); got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}, {tuple(bias.shape)}")


def cga_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The op in plain torch, CascadedGroupAttention's formula (fp32 for half inputs, autocast off)."""
    _check(q, k, v, bias)
    dtype = q.dtype
    with no_autocast(q.device.type):
        attn = (upcast(q).transpose(-2, -1) @ upcast(k) + upcast(bias)).softmax(dim=-1)
        return (upcast(v) @ attn.transpose(-2, -1)).to(dtype)


def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def cga_attention_kernel(Q, K, V, BIAS, N, Q_BS, K_BS, V_BS, OUT,
                             KD: tl.constexpr, VD: tl.constexpr, BKD: tl.constexpr, BVD: tl.constexpr,
                             BN: tl.constexpr, DOT: tl.constexpr):
        b = tl.program_id(0).to(tl.int64)
        i = tl.arange(0, BN)  # query tokens (rows)
        j = tl.arange(0, BN)  # key tokens (columns)
        c = tl.arange(0, BKD)
        e = tl.arange(0, BVD)
        qt = tl.load(Q + b * Q_BS + c[None, :] * N + i[:, None], mask=(i[:, None] < N) & (c[None, :] < KD), other=0.0)
        k = tl.load(K + b * K_BS + c[:, None] * N + j[None, :], mask=(c[:, None] < KD) & (j[None, :] < N), other=0.0)
        s = tl.dot(qt.to(tl.float32), k.to(tl.float32), input_precision=DOT)
        inside = (i[:, None] < N) & (j[None, :] < N)
        s += tl.load(BIAS + i[:, None] * N + j[None, :], mask=inside, other=0.0).to(tl.float32)
        s = tl.where(j[None, :] < N, s, float("-inf"))
        p = tl.exp(s - tl.max(s, axis=1)[:, None])
        p = p / tl.sum(p, axis=1)[:, None]
        vt = tl.load(V + b * V_BS + e[None, :] * N + j[:, None], mask=(j[:, None] < N) & (e[None, :] < VD), other=0.0)
        o = tl.dot(p, vt.to(tl.float32), input_precision=DOT)  # (tokens, vd)
        tl.store(OUT + b * VD * N + e[None, :] * N + i[:, None], o, mask=(i[:, None] < N) & (e[None, :] < VD))

    return cga_attention_kernel


KERNEL = LazyKernel(_kernel)


def constexprs(kd: int, vd: int, n: int, dtype: torch.dtype) -> dict:
    """The kernel's compile-time arguments for key/value widths ``kd``/``vd`` and ``n`` tokens."""
    return {"KD": kd, "VD": vd, "BKD": next_pow2(kd), "BVD": next_pow2(vd), "BN": next_pow2(n),
            "DOT": dot_precision(dtype)}


def cga_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The op through the Triton kernel (``N <= MAX_TOKENS``)."""
    _check(q, k, v, bias)
    (bsz, kd, n), vd = q.shape, v.shape[1]
    q3, k3, v3 = contiguous_rows(q, kd, n), contiguous_rows(k, kd, n), contiguous_rows(v, vd, n)
    out = torch.empty((bsz, vd, n), dtype=q.dtype, device=q.device)
    if out.numel():
        KERNEL[(bsz,)](q3, k3, v3, bias.contiguous(), n, q3.stride(0), k3.stride(0), v3.stride(0), out,
                       **constexprs(kd, vd, n, q.dtype))
    return out


@torch.library.custom_op("edgezoo::cga_attention", mutates_args=())
def cga_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """One head's fused attention (module docstring): Triton on CUDA (or the interpreter), else the reference."""
    # the bias may differ (an fp32 parameter under autocast): the kernel reads it as it is, in fp32
    if use_triton(q) and q.shape[-1] <= MAX_TOKENS and k.dtype == v.dtype == q.dtype \
            and q.dtype in KERNEL_DTYPES and bias.dtype in KERNEL_DTYPES:
        return cga_attention_triton(q, k, v, bias)
    return cga_attention_reference(q, k, v, bias)


@cga_attention.register_fake
def _(q, k, v, bias):
    _check(q, k, v, bias)
    return q.new_empty((q.shape[0], v.shape[1], q.shape[-1]))


reference_autograd(cga_attention, cga_attention_reference)
