"""Which implementation a block runs: ``kernel_mode="auto" | "triton" | "reference"``.

* ``reference``: the block's own plain-torch code (no custom op in the graph).
* ``triton``: the block calls the ``torch.ops.edgezoo.*`` custom op. On CUDA the op runs its Triton
  kernel; on CPU it runs the reference, or the Triton kernel under Triton's interpreter when
  ``TRITON_INTERPRET=1`` is set (how the kernels are tested without a GPU). ``torch.export`` and
  ``torch.compile`` keep the op as one node.
* ``auto`` (the default): ``triton`` for CUDA tensors when Triton imports, ``reference`` elsewhere.

Blocks that take part declare a class attribute ``kernel_mode``; :func:`set_kernels` sets it on
every such module of a model.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["MODES", "check_mode", "interpreting", "kernel_mode", "set_kernels", "triton_available", "use_kernels"]

#: The accepted values of ``kernel_mode=``.
MODES: tuple[str, ...] = ("auto", "triton", "reference")


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`MODES`, else ``ValueError`` listing them."""
    if mode not in MODES:
        raise ValueError(f"kernel_mode={mode!r} is not a kernel mode; choose one of {', '.join(MODES)}")
    return mode


@functools.cache
def triton_available() -> bool:
    """Whether ``import triton`` works (a CUDA build of torch ships it)."""
    try:
        import triton  # noqa: F401
    except Exception:  # a broken install raises more than ImportError
        return False
    return True


def interpreting() -> bool:
    """Whether Triton's CPU interpreter is on (``TRITON_INTERPRET=1``, set before Triton is imported)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0") and triton_available()


def use_kernels(mode: str, x: torch.Tensor) -> bool:
    """Whether a block in ``mode`` routes ``x`` through the edgezoo custom ops."""
    if mode == "reference":
        return False
    if mode == "triton":
        return True
    return x.is_cuda and triton_available()


def use_triton(x: torch.Tensor) -> bool:
    """Whether a custom op given ``x`` runs its Triton kernel (CUDA, or CPU under the interpreter)."""
    return (x.is_cuda or interpreting()) and triton_available()


def _takes_part(module: nn.Module) -> bool:
    return isinstance(getattr(type(module), "kernel_mode", None), str)


def set_kernels(model: nn.Module, mode: str) -> nn.Module:
    """Set ``kernel_mode`` on every block of ``model`` that has fused ops; returns ``model``."""
    check_mode(mode)
    for module in model.modules():
        if _takes_part(module):
            module.kernel_mode = mode
    return model


@contextmanager
def kernel_mode(model: nn.Module, mode: str) -> Iterator[nn.Module]:
    """Run ``model`` with ``kernels=mode`` inside the block, then restore each block's own mode."""
    check_mode(mode)
    saved = [(m, m.__dict__.get("kernel_mode")) for m in model.modules() if _takes_part(m)]
    set_kernels(model, mode)
    try:
        yield model
    finally:
        for module, old in saved:
            if old is None:
                module.__dict__.pop("kernel_mode", None)
            else:
                module.kernel_mode = old
