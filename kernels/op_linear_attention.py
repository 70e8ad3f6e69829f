"""Linear-attention core shared by LiteMLA, FLatten and MALA: ``torch.ops.edgezoo.linear_attention``.

On ``(..., d, N)`` feature-mapped ``q``, ``k`` and ``(..., e, N)`` ``v`` (channel-major, one slice per
head) with ``s = scale / N`` when ``mean`` else ``scale``::

    kv  = s * v k^T            (e, d)     the ``k^T [v, 1]`` product: kv and its ones column ksum
    ksum = s * k 1             (d,)
    num = kv q,  den = ksum^T q
    out = num / (den + eps)                                   (LiteMLA: scale 1, eps 1e-5;
                                                               FLatten: mean, eps 1e-6)
    out = num * (1 + 1 / (den + eps)) - mean_N(v) den        (magnitude: MALA, scale d**-0.5, mean)

Accumulation is fp32 whatever the input dtype (fp16 sums overflow otherwise); the result has q's
dtype. The Triton kernel makes one program per (batch, head): a first loop over the tokens
accumulates ``kv``/``ksum`` (and ``sum(v)``), a second applies them, so q, k, v are read once and the
output written once. Its backward is a Triton kernel too (:mod:`edgezoo.kernels.op_linear_attention_backward`)
where the forward ran the kernel, else the reference's (``torch.func.vjp``).
"""

from __future__ import annotations

import torch

from edgezoo.kernels._lazy import LazyKernel
from edgezoo.kernels._mode import use_triton
from edgezoo.kernels._op import contiguous_rows, next_pow2, reference_autograd
from edgezoo.kernels._precision import KERNEL_DTYPES, dot_precision, no_autocast, upcast

__all__ = ["BLOCK_N", "BLOCK_N_BACKWARD", "KERNEL", "NUM_WARPS", "constexprs", "linear_attention",
           "linear_attention_reference"]

#: Tokens per step of the forward kernel's loops, and its warps: on an H200 (bf16, B128 h16 N196 and
#: B64 h16 N3136) 128 tokens with 2 warps ran 1.75x and 1.89x faster than 64 with 4 (CUDA-graph replay;
#: ``scripts/bench_kernels.py --sweep``). The backward keeps :data:`BLOCK_N_BACKWARD` and 4 warps.
BLOCK_N = 128
NUM_WARPS = 2
BLOCK_N_BACKWARD = 64


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.shape != k.shape or q.dim() < 2 or v.shape[:-2] != q.shape[:-2] or v.shape[-1] != q.shape[-1]:
        raise ValueError(f"linear_attention takes q, k (..., d, N) and v (..., e, N); got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")


def linear_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float, scale: float,
                               mean: bool, magnitude: bool) -> torch.Tensor:
    """The op in plain torch (fp32, autocast off): the ground truth and the CPU path."""
    _check(q, k, v)
    dtype = q.dtype
    with no_autocast(q.device.type):
        q, k, v = upcast(q), upcast(k), upcast(v)
        s = scale / q.shape[-1] if mean else scale
        kv = (v @ k.transpose(-1, -2)) * s
        den = (k.sum(-1, keepdim=True) * s).transpose(-1, -2) @ q
        num = kv @ q
        out = num * (1.0 + 1.0 / (den + eps)) - v.mean(-1, keepdim=True) * den if magnitude else num / (den + eps)
    return out.to(dtype)


def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def linear_attention_kernel(Q, K, V, N, Q_BS, K_BS, V_BS, OUT,
                                D: tl.constexpr, E: tl.constexpr, BD: tl.constexpr, BE: tl.constexpr,
                                BN: tl.constexpr, EPS: tl.constexpr, SCALE: tl.constexpr, MEAN: tl.constexpr,
                                MAGNITUDE: tl.constexpr, DOT: tl.constexpr):
        bh = tl.program_id(0).to(tl.int64)
        d = tl.arange(0, BD)
        e = tl.arange(0, BE)
        tok = tl.arange(0, BN)
        q_ptr, k_ptr, v_ptr = Q + bh * Q_BS, K + bh * K_BS, V + bh * V_BS
        kv = tl.zeros((BE, BD), dtype=tl.float32)
        ksum = tl.zeros((BD,), dtype=tl.float32)
        vsum = tl.zeros((BE,), dtype=tl.float32)
        for start in range(0, N, BN):
            n = start + tok
            k = tl.load(k_ptr + d[:, None] * N + n[None, :], mask=(d[:, None] < D) & (n[None, :] < N), other=0.0)
            v = tl.load(v_ptr + e[:, None] * N + n[None, :], mask=(e[:, None] < E) & (n[None, :] < N), other=0.0)
            k = k.to(tl.float32)
            v = v.to(tl.float32)
            kv += tl.dot(v, tl.trans(k), input_precision=DOT)
            ksum += tl.sum(k, axis=1)
            vsum += tl.sum(v, axis=1)
        s = SCALE / N if MEAN else SCALE
        kv = kv * s
        ksum = ksum * s
        o_ptr = OUT + bh * E * N
        for start in range(0, N, BN):
            n = start + tok
            q = tl.load(q_ptr + d[:, None] * N + n[None, :], mask=(d[:, None] < D) & (n[None, :] < N), other=0.0)
            q = q.to(tl.float32)
            num = tl.dot(kv, q, input_precision=DOT)
            den = tl.sum(ksum[:, None] * q, axis=0)
            if MAGNITUDE:
                out = num * (1.0 + 1.0 / (den + EPS))[None, :] - (vsum / N)[:, None] * den[None, :]
            else:
                out = num / (den + EPS)[None, :]
            tl.store(o_ptr + e[:, None] * N + n[None, :], out, mask=(e[:, None] < E) & (n[None, :] < N))

    return linear_attention_kernel


#: The ``@triton.jit`` kernel, built on first use (Triton is imported lazily).
KERNEL = LazyKernel(_kernel)


def constexprs(d: int, e: int, dtype: torch.dtype, eps: float, scale: float, mean: bool, magnitude: bool,
               block_n: int = BLOCK_N) -> dict:
    """The kernel's compile-time arguments for head sizes ``d``/``e`` and input ``dtype``."""
    return {"D": d, "E": e, "BD": next_pow2(d), "BE": next_pow2(e), "BN": block_n, "EPS": float(eps),
            "SCALE": float(scale), "MEAN": bool(mean), "MAGNITUDE": bool(magnitude),
            "DOT": dot_precision(dtype)}


def linear_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float, scale: float,
                            mean: bool, magnitude: bool) -> torch.Tensor:
    """The op through the Triton kernel (CUDA tensors, or CPU under ``TRITON_INTERPRET=1``)."""
    _check(q, k, v)
    d, n, e = q.shape[-2], q.shape[-1], v.shape[-2]
    q3, k3, v3 = contiguous_rows(q, d, n), contiguous_rows(k, d, n), contiguous_rows(v, e, n)
    out = torch.empty((*q.shape[:-2], e, n), dtype=q.dtype, device=q.device)
    if out.numel():
        KERNEL[(q3.shape[0],)](q3, k3, v3, n, q3.stride(0), k3.stride(0), v3.stride(0), out, num_warps=NUM_WARPS,
                               **constexprs(d, e, q.dtype, eps, scale, mean, magnitude))
    return out


@torch.library.custom_op("edgezoo::linear_attention", mutates_args=())
def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float, scale: float, mean: bool,
                     magnitude: bool) -> torch.Tensor:
    """Fused linear-attention core (module docstring): Triton on CUDA (or under the interpreter), else the
    reference."""
    if use_triton(q) and q.dtype in KERNEL_DTYPES and k.dtype == q.dtype and v.dtype == q.dtype:
        return linear_attention_triton(q, k, v, eps, scale, mean, magnitude)
    return linear_attention_reference(q, k, v, eps, scale, mean, magnitude)


@linear_attention.register_fake
def _(q, k, v, eps, scale, mean, magnitude):
    _check(q, k, v)
    return q.new_empty((*q.shape[:-2], v.shape[-2], q.shape[-1]))


def _kernel_backward(grad: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float, scale: float,
                     mean: bool, magnitude: bool) -> tuple | None:
    """The Triton backward where the forward ran the kernel (else ``None``: the reference's backward)."""
    if not (use_triton(q) and q.dtype in KERNEL_DTYPES and k.dtype == q.dtype and v.dtype == q.dtype):
        return None
    from edgezoo.kernels.op_linear_attention_backward import linear_attention_backward

    dq, dk, dv = linear_attention_backward(q, k, v, grad, eps, scale, mean, magnitude)
    return dq, dk, dv, None, None, None, None


reference_autograd(linear_attention, linear_attention_reference, _kernel_backward)
