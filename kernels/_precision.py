"""fp32 compute for the references: upcast half types, autocast off, cast the result back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["HALF", "KERNEL_DTYPES", "dot_precision", "no_autocast", "upcast"]

HALF = (torch.float16, torch.bfloat16)
#: dtypes the Triton kernels take (fp64 and others run the reference).
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def upcast(t: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 -> fp32; other dtypes (fp32, fp64) unchanged."""
    return t.float() if t.dtype in HALF else t


@contextmanager
def no_autocast(device: str) -> Iterator[None]:
    """Autocast off on ``device`` (where autocast exists) for the block."""
    if device in ("cpu", "cuda", "xpu", "mps") and torch.is_autocast_enabled(device):
        with torch.autocast(device, enabled=False):
            yield
    else:
        yield


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot``'s input precision: IEEE fp32 for fp32 inputs (the op's 1e-5 contract); for half inputs
    ``tf32x3`` (three tf32 tensor-core products, about fp32's accuracy). Plain tf32 rounds the fp32 ``kv``
    state to 10 mantissa bits, and on an H200 bf16 outputs near cancellation then missed the reference
    by several times their size (MALA's ``num * (1 + 1/den) - mean(v) * den``); IEEE dots on half inputs
    made the linear-attention kernel 2.4x slower (B64 h16 N3136: 0.31 -> 0.75 ms), the dots running on CUDA cores."""
    return "ieee" if dtype == torch.float32 else "tf32x3"
