"""Shared machinery of the edgezoo custom ops: autograd through the reference, and launch helpers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils import _pytree as pytree

__all__ = ["contiguous_rows", "next_pow2", "reference_autograd"]


def next_pow2(n: int, floor: int = 16) -> int:
    """The smallest power of two >= ``max(n, floor)`` (Triton block sizes; ``tl.dot`` needs >= 16)."""
    n = max(int(n), floor)
    return 1 << (n - 1).bit_length()


def contiguous_rows(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """``x`` viewed as ``(-1, rows, cols)`` with unit column and ``cols`` row stride (copied only when it
    cannot be viewed so); the batch stride is then ``result.stride(0)``, which kernels take as an argument."""
    y = x.reshape(-1, rows, cols)
    if y.stride(2) != 1 or (rows > 1 and y.stride(1) != cols):
        y = y.contiguous()
    return y


def reference_autograd(op: Any, reference: Callable[..., torch.Tensor],
                       kernel_backward: Callable[..., tuple | None] | None = None) -> None:
    """Register on the custom op ``op`` a backward that differentiates ``reference`` (``torch.func.vjp``
    of the same inputs): the op's gradients are the reference's by construction. Inputs may be tensors,
    lists of tensors, optional tensors and plain values; non-tensors get ``None`` gradients.
    ``kernel_backward(grad, *inputs)``, when given, runs first: a tuple of gradients (one per input) is
    used as it is, ``None`` falls back to the reference's."""

    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        leaves, spec = pytree.tree_flatten(list(inputs))
        index = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]
        ctx.save_for_backward(*(leaves[i] for i in index))
        ctx.plain = [None if i in index else leaf for i, leaf in enumerate(leaves)]
        ctx.index, ctx.spec = index, spec

    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        def inputs(*tensors: torch.Tensor) -> list:
            leaves = list(ctx.plain)
            for i, t in zip(ctx.index, tensors, strict=True):
                leaves[i] = t
            return pytree.tree_unflatten(leaves, ctx.spec)

        def with_tensors(*tensors: torch.Tensor) -> torch.Tensor:
            return reference(*inputs(*tensors))

        if kernel_backward is not None:
            grads = kernel_backward(grad, *inputs(*ctx.saved_tensors))
            if grads is not None:
                return grads

        _, vjp = torch.func.vjp(with_tensors, *ctx.saved_tensors)
        leaves: list[Any] = [None] * len(ctx.plain)
        for i, g in zip(ctx.index, vjp(grad.contiguous()), strict=True):
            leaves[i] = g
        return tuple(pytree.tree_unflatten(leaves, ctx.spec))

    op.register_autograd(backward, setup_context=setup_context)
