"""Channel attention: pool -> tiny MLP or 1-D conv -> sigmoid -> scale: ``torch.ops.edgezoo.channel_attention``.

``mode`` picks the block:

* ``"se"``   (Squeeze-and-Excitation): ``g = W2 relu(W1 avg + b1) + b2``;
* ``"cbam"`` (CBAM's channel half): ``g = mlp(avg) + mlp(max)`` with that MLP;
* ``"eca"``  (ECA): ``g = conv1d(avg, w)`` across channels, zero padding ``(k - 1) / 2``, no bias
  (``w1`` is the ``(k,)`` kernel; ``b1``, ``w2``, ``b2`` are ``None``).

``out = x * sigmoid(g)[..., None, None]`` on ``(B, C, H, W)``; ``W1`` is ``(hidden, C)``, ``W2``
``(C, hidden)``. Two passes over ``x`` in three Triton launches: a pooling kernel writes the ``(B, C)``
fp32 average (and max); a gate kernel, one program per image, runs the MLP (or the 1-D conv) once
and writes the ``(B, C)`` gates; a scale kernel multiplies each channel by its gate. (An earlier
version computed the gates inside the scale kernel, each program recomputing the MLP's hidden layer
for its 16 channels: on an H200, SE-ResNet-50's 2048-channel SE blocks made the whole model 16%
slower than without kernels.) Running a large batch a few images at a time, hoping the second pass
would read ``x`` from L2, was slower on the H200 (B64 C256 56x56: 0.18 ms in rounds of 16 images,
0.098 ms in one). Pooling and gates are fp32 whatever the input dtype. The backward is the reference's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgezoo.kernels._lazy import LazyKernel
from edgezoo.kernels._mode import use_triton
from edgezoo.kernels._op import next_pow2, reference_autograd
from edgezoo.kernels._precision import KERNEL_DTYPES, no_autocast, upcast

__all__ = ["GATE_KERNEL", "MODES", "POOL_KERNEL", "SCALE_KERNEL", "channel_attention", "channel_attention_reference",
           "gate_constexprs", "mlp_channel_attention", "pool_constexprs", "scale_constexprs"]

#: mode name -> the kernels' MODE constant.
MODES = {"se": 0, "cbam": 1, "eca": 2}
BLOCK_C = 16
BLOCK_HW = 128
BLOCK_K = 32
BLOCK_GATE = 64


def _check(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor | None, w2: torch.Tensor | None,
           b2: torch.Tensor | None, mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"channel_attention mode {mode!r}: choose one of {', '.join(MODES)}")
    if x.dim() != 4:
        raise ValueError(f"channel_attention takes x (B, C, H, W), got {tuple(x.shape)}")
    c = x.shape[1]
    if mode == "eca":
        if w1.dim() != 1 or w1.shape[0] % 2 == 0:
            raise ValueError(f"channel_attention eca takes an odd (k,) kernel, got {tuple(w1.shape)}")
        return
    if w2 is None or b1 is None or b2 is None or w1.dim() != 2 or w1.shape[1] != c \
            or tuple(w2.shape) != (c, w1.shape[0]):
        raise ValueError(f"channel_attention {mode} takes w1 (hidden, {c}), b1, w2 ({c}, hidden), b2")


def _gate(pooled: list[torch.Tensor], w1: torch.Tensor, b1: torch.Tensor | None, w2: torch.Tensor | None,
          b2: torch.Tensor | None, mode: str) -> torch.Tensor:
    """``(B, C)`` pre-sigmoid gate from the pooled descriptors (fp32)."""
    if mode == "eca":
        k = w1.shape[0]
        return F.conv1d(pooled[0][:, None], upcast(w1).view(1, 1, k), padding=(k - 1) // 2)[:, 0]
    out = 0.0
    for p in pooled:
        out = out + F.linear(F.relu(F.linear(p, upcast(w1), upcast(b1))), upcast(w2), upcast(b2))
    return out


def channel_attention_reference(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor | None,
                                w2: torch.Tensor | None, b2: torch.Tensor | None, mode: str) -> torch.Tensor:
    """The op in plain torch (pooling and gate in fp32 for half inputs, autocast off)."""
    _check(x, w1, b1, w2, b2, mode)
    with no_autocast(x.device.type):
        xf = upcast(x)
        pooled = [xf.mean((2, 3))] + ([xf.amax((2, 3))] if mode == "cbam" else [])
        gate = _gate(pooled, w1, b1, w2, b2, mode).sigmoid()
        return (xf * gate[:, :, None, None]).to(x.dtype)


def _pool_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def channel_pool_kernel(X, C, HW, AVG, MAX, WITH_MAX: tl.constexpr, BC: tl.constexpr, BHW: tl.constexpr):
        b = tl.program_id(0).to(tl.int64)
        c = tl.program_id(1) * BC + tl.arange(0, BC)
        mc = c < C
        base = X + b * C * HW
        total = tl.zeros((BC,), dtype=tl.float32)
        peak = tl.full((BC,), float("-inf"), dtype=tl.float32)
        for start in range(0, HW, BHW):
            hw = start + tl.arange(0, BHW)
            m = mc[:, None] & (hw[None, :] < HW)
            t = tl.load(base + c[:, None] * HW + hw[None, :], mask=m, other=0.0).to(tl.float32)
            total += tl.sum(t, axis=1)
            if WITH_MAX:
                peak = tl.maximum(peak, tl.max(tl.where(m, t, float("-inf")), axis=1))
        tl.store(AVG + b * C + c, total / HW, mask=mc)
        if WITH_MAX:
            tl.store(MAX + b * C + c, peak, mask=mc)

    return channel_pool_kernel


def _gate_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def channel_gate_kernel(AVG, MAX, W1, B1, W2, B2, C, HID, GATE, MODE: tl.constexpr, K: tl.constexpr,
                            BC: tl.constexpr, BHID: tl.constexpr, BK: tl.constexpr):
        b = tl.program_id(0).to(tl.int64)
        if MODE == 2:  # ECA: 1-D conv across channels, zero padded
            for start in range(0, C, BC):
                c = start + tl.arange(0, BC)
                g = tl.zeros((BC,), dtype=tl.float32)
                for t in tl.static_range(K):
                    idx = c + t - (K - 1) // 2
                    p = tl.load(AVG + b * C + idx, mask=(idx >= 0) & (idx < C), other=0.0)
                    g += tl.load(W1 + t).to(tl.float32) * p
                tl.store(GATE + b * C + c, tl.sigmoid(g), mask=c < C)
        else:  # SE / CBAM: the shared MLP on the pooled descriptor(s), its hidden layer computed once
            hid = tl.arange(0, BHID)
            mh = hid < HID
            h_avg = tl.zeros((BHID,), dtype=tl.float32)
            h_max = tl.zeros((BHID,), dtype=tl.float32)
            for start in range(0, C, BK):
                kk = start + tl.arange(0, BK)
                mk = kk < C
                w = tl.load(W1 + hid[:, None] * C + kk[None, :], mask=mh[:, None] & mk[None, :], other=0.0)
                w = w.to(tl.float32)
                h_avg += tl.sum(w * tl.load(AVG + b * C + kk, mask=mk, other=0.0)[None, :], axis=1)
                if MODE == 1:
                    h_max += tl.sum(w * tl.load(MAX + b * C + kk, mask=mk, other=0.0)[None, :], axis=1)
            bias1 = tl.load(B1 + hid, mask=mh, other=0.0).to(tl.float32)
            h = tl.maximum(h_avg + bias1, 0.0)
            if MODE == 1:
                h += tl.maximum(h_max + bias1, 0.0)
            for start in range(0, C, BC):
                c = start + tl.arange(0, BC)
                mc = c < C
                w2 = tl.load(W2 + c[:, None] * HID + hid[None, :], mask=mc[:, None] & mh[None, :], other=0.0)
                g = tl.sum(w2.to(tl.float32) * h[None, :], axis=1)
                bias2 = tl.load(B2 + c, mask=mc, other=0.0).to(tl.float32)
                g += bias2 * 2.0 if MODE == 1 else bias2
                tl.store(GATE + b * C + c, tl.sigmoid(g), mask=mc)

    return channel_gate_kernel


def _scale_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def channel_scale_kernel(X, GATE, C, HW, OUT, BC: tl.constexpr, BHW: tl.constexpr):
        b = tl.program_id(0).to(tl.int64)
        c = tl.program_id(1) * BC + tl.arange(0, BC)
        mc = c < C
        gate = tl.load(GATE + b * C + c, mask=mc, other=0.0)
        base = b * C * HW
        for start in range(0, HW, BHW):
            hw = start + tl.arange(0, BHW)
            m = mc[:, None] & (hw[None, :] < HW)
            offs = base + c[:, None] * HW + hw[None, :]
            x = tl.load(X + offs, mask=m, other=0.0).to(tl.float32)
            tl.store(OUT + offs, x * gate[:, None], mask=m)

    return channel_scale_kernel


POOL_KERNEL = LazyKernel(_pool_kernel)
GATE_KERNEL = LazyKernel(_gate_kernel)
SCALE_KERNEL = LazyKernel(_scale_kernel)


def pool_constexprs(mode: str) -> dict:
    return {"WITH_MAX": mode == "cbam", "BC": BLOCK_C, "BHW": BLOCK_HW}


def gate_constexprs(mode: str, hidden: int, k: int) -> dict:
    return {"MODE": MODES[mode], "K": k, "BC": BLOCK_GATE, "BHID": next_pow2(hidden), "BK": BLOCK_K}


def scale_constexprs() -> dict:
    return {"BC": BLOCK_C, "BHW": BLOCK_HW}


def channel_attention_triton(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor | None, w2: torch.Tensor | None,
                             b2: torch.Tensor | None, mode: str) -> torch.Tensor:
    """The op through the three Triton kernels (pool, gate, scale)."""
    _check(x, w1, b1, w2, b2, mode)
    bsz, c, h, w = x.shape
    x = x.contiguous()
    out = torch.empty_like(x)
    if not out.numel():
        return out
    avg = torch.empty((bsz, c), dtype=torch.float32, device=x.device)
    peak = torch.empty_like(avg) if mode == "cbam" else avg
    gate = torch.empty_like(avg)
    w1c = w1.contiguous()
    b1c, w2c, b2c = (t.contiguous() if t is not None else w1c for t in (b1, w2, b2))
    hidden = 1 if mode == "eca" else w1.shape[0]
    grid = (bsz, -(-c // BLOCK_C))
    POOL_KERNEL[grid](x, c, h * w, avg, peak, **pool_constexprs(mode))
    GATE_KERNEL[(bsz,)](avg, peak, w1c, b1c, w2c, b2c, c, hidden, gate,
                        **gate_constexprs(mode, hidden, w1.shape[0] if mode == "eca" else 1))
    SCALE_KERNEL[grid](x, gate, c, h * w, out, **scale_constexprs())
    return out


@torch.library.custom_op("edgezoo::channel_attention", mutates_args=())
def channel_attention(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor | None, w2: torch.Tensor | None,
                      b2: torch.Tensor | None, mode: str) -> torch.Tensor:
    """Fused channel attention (module docstring): Triton on CUDA (or the interpreter), else the reference."""
    if use_triton(x) and x.dtype in KERNEL_DTYPES:
        return channel_attention_triton(x, w1, b1, w2, b2, mode)
    return channel_attention_reference(x, w1, b1, w2, b2, mode)


@channel_attention.register_fake
def _(x, w1, b1, w2, b2, mode):
    _check(x, w1, b1, w2, b2, mode)
    return torch.empty_like(x, memory_format=torch.contiguous_format)


reference_autograd(channel_attention, channel_attention_reference)


def mlp_channel_attention(x: torch.Tensor, fc1: torch.nn.Conv2d, fc2: torch.nn.Conv2d, mode: str) -> torch.Tensor:
    """:func:`channel_attention` of an SE / CBAM block whose MLP is ``fc1`` -> ReLU -> ``fc2`` (1x1 convs
    with bias)."""
    return channel_attention(x, fc1.weight.flatten(1), fc1.bias, fc2.weight.flatten(1), fc2.bias, mode)
