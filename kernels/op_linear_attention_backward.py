"""Triton backward of ``torch.ops.edgezoo.linear_attention``: ``torch.ops.edgezoo.linear_attention_backward``.

With ``s`` the scale, ``kv = s v k^T``, ``ks = s k 1``, per token ``num = kv q``, ``den = ks . q``,
``r = 1 / (den + eps)`` and the output gradient ``g``::

    plain:      dnum = g r,          dden = -(g . num) r^2
    magnitude:  dnum = g (1 + r),    dden = -(g . num) r^2 - g . mean(v),   dmean(v) = -sum_n g den
    dq = kv^T dnum + ks dden,   dkv = sum_n dnum q^T,   dks = sum_n dden q
    dk = s (dkv^T v + dks),     dv = s dkv k (+ dmean(v) / N)

One program per (batch, head), three loops over the tokens (recompute ``kv``; ``dq`` while summing
``dkv``/``dks``; ``dk``/``dv``), fp32 accumulation. Its own custom op, so ``torch.compile`` traces the
backward through the fake implementation.
"""

from __future__ import annotations

import torch

from edgezoo.kernels._lazy import LazyKernel
from edgezoo.kernels._op import contiguous_rows

__all__ = ["KERNEL", "linear_attention_backward"]


def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def linear_attention_backward_kernel(Q, K, V, G, N, Q_BS, K_BS, V_BS, DQ, DK, DV,
                                         D: tl.constexpr, E: tl.constexpr, BD: tl.constexpr, BE: tl.constexpr,
                                         BN: tl.constexpr, EPS: tl.constexpr, SCALE: tl.constexpr,
                                         MEAN: tl.constexpr, MAGNITUDE: tl.constexpr, DOT: tl.constexpr):
        bh = tl.program_id(0).to(tl.int64)
        d = tl.arange(0, BD)
        e = tl.arange(0, BE)
        tok = tl.arange(0, BN)
        q_ptr, k_ptr, v_ptr, g_ptr = Q + bh * Q_BS, K + bh * K_BS, V + bh * V_BS, G + bh * E * N
        s = SCALE / N if MEAN else SCALE
        kv = tl.zeros((BE, BD), dtype=tl.float32)
        ks = tl.zeros((BD,), dtype=tl.float32)
        vsum = tl.zeros((BE,), dtype=tl.float32)
        for start in range(0, N, BN):
            n = start + tok
            md, me = (d[:, None] < D) & (n[None, :] < N), (e[:, None] < E) & (n[None, :] < N)
            k = tl.load(k_ptr + d[:, None] * N + n[None, :], mask=md, other=0.0).to(tl.float32)
            v = tl.load(v_ptr + e[:, None] * N + n[None, :], mask=me, other=0.0).to(tl.float32)
            kv += tl.dot(v, tl.trans(k), input_precision=DOT)
            ks += tl.sum(k, axis=1)
            vsum += tl.sum(v, axis=1)
        kv = kv * s
        ks = ks * s
        vbar = vsum / N
        dkv = tl.zeros((BE, BD), dtype=tl.float32)
        dks = tl.zeros((BD,), dtype=tl.float32)
        dvbar = tl.zeros((BE,), dtype=tl.float32)
        for start in range(0, N, BN):
            n = start + tok
            md, me = (d[:, None] < D) & (n[None, :] < N), (e[:, None] < E) & (n[None, :] < N)
            q = tl.load(q_ptr + d[:, None] * N + n[None, :], mask=md, other=0.0).to(tl.float32)
            g = tl.load(g_ptr + e[:, None] * N + n[None, :], mask=me, other=0.0).to(tl.float32)
            num = tl.dot(kv, q, input_precision=DOT)
            den = tl.sum(ks[:, None] * q, axis=0)
            r = 1.0 / (den + EPS)
            gnum = tl.sum(g * num, axis=0)
            if MAGNITUDE:
                dnum = g * (1.0 + r)[None, :]
                dden = -gnum * r * r - tl.sum(g * vbar[:, None], axis=0)
                dvbar -= tl.sum(g * den[None, :], axis=1)
            else:
                dnum = g * r[None, :]
                dden = -gnum * r * r
            dq = tl.dot(tl.trans(kv), dnum, input_precision=DOT) + ks[:, None] * dden[None, :]
            tl.store(DQ + bh * D * N + d[:, None] * N + n[None, :], dq, mask=md)
            dkv += tl.dot(dnum, tl.trans(q), input_precision=DOT)
            dks += tl.sum(dden[None, :] * q, axis=1)
        for start in range(0, N, BN):
            n = start + tok
            md, me = (d[:, None] < D) & (n[None, :] < N), (e[:, None] < E) & (n[None, :] < N)
            k = tl.load(k_ptr + d[:, None] * N + n[None, :], mask=md, other=0.0).to(tl.float32)
            v = tl.load(v_ptr + e[:, None] * N + n[None, :], mask=me, other=0.0).to(tl.float32)
            dk = (tl.dot(tl.trans(dkv), v, input_precision=DOT) + dks[:, None]) * s
            dv = tl.dot(dkv, k, input_precision=DOT) * s
            if MAGNITUDE:
                dv += (dvbar / N)[:, None]
            tl.store(DK + bh * D * N + d[:, None] * N + n[None, :], dk, mask=md)
            tl.store(DV + bh * E * N + e[:, None] * N + n[None, :], dv, mask=me)

    return linear_attention_backward_kernel


KERNEL = LazyKernel(_kernel)


@torch.library.custom_op("edgezoo::linear_attention_backward", mutates_args=())
def linear_attention_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grad: torch.Tensor, eps: float,
                              scale: float, mean: bool, magnitude: bool) -> tuple[torch.Tensor, torch.Tensor,
                                                                                  torch.Tensor]:
    """``(dq, dk, dv)`` of :func:`edgezoo.kernels.linear_attention` through the Triton kernel."""
    from edgezoo.kernels.op_linear_attention import BLOCK_N_BACKWARD, constexprs

    d, n, e = q.shape[-2], q.shape[-1], v.shape[-2]
    q3, k3, v3 = contiguous_rows(q, d, n), contiguous_rows(k, d, n), contiguous_rows(v, e, n)
    g = grad.to(q.dtype).contiguous()
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    if q.numel() and v.numel():
        KERNEL[(q3.shape[0],)](q3, k3, v3, g, n, q3.stride(0), k3.stride(0), v3.stride(0), dq, dk, dv,
                               **constexprs(d, e, q.dtype, eps, scale, mean, magnitude, block_n=BLOCK_N_BACKWARD))
    return dq, dk, dv


@linear_attention_backward.register_fake
def _(q, k, v, grad, eps, scale, mean, magnitude):
    return q.new_empty(q.shape), q.new_empty(q.shape), v.new_empty(v.shape)
