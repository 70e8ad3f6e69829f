"""fp32 compute for the references: upcast half types, autocast off, cast the result back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["HALF", "KERNEL_DTYPES", "no_autocast", "upcast"]

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
