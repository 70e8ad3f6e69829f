"""Random streams that make the data pipeline resumable at any batch.

Augmentations draw from Python's ``random``, NumPy's global generator and torch's CPU
generator. If they shared those generators with the training loop (dropout, mixup), the data
would depend on how many loader workers ran and on where a run was resumed. Here every sample of
a map-style dataset gets its own seed, derived from (seed, epoch, index), and a streaming
dataset gets one private stream per (seed, epoch, rank, worker); both leave the caller's
generators exactly as they were.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = ["CpuRngState", "derive_seed", "isolated_rng", "seeded", "seeded_state"]

#: Python, NumPy and torch-CPU generator states, in that order.
CpuRngState = tuple[Any, Any, torch.Tensor]


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (NumPy's SeedSequence), equal on every machine."""
    words = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def _get() -> CpuRngState:
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def _set(state: CpuRngState) -> None:
    random.setstate(state[0])
    np.random.set_state(state[1])
    torch.set_rng_state(state[2])


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)  # CPU only: the GPU generators belong to the training loop


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with the three generators seeded by ``seed``; the caller's states come back on exit."""
    outer = _get()
    try:
        _seed(seed)
        yield
    finally:
        _set(outer)


def seeded_state(seed: int) -> CpuRngState:
    """The three generator states right after seeding each with ``seed``."""
    with seeded(seed):
        return _get()


@contextlib.contextmanager
def isolated_rng(inner: CpuRngState) -> Iterator[list[CpuRngState]]:
    """Run the block on the generator states ``inner``; yield a one-item list that holds them afterwards.

    The caller's states are restored on exit, whatever the block drew.
    """
    outer = _get()
    box = [inner]
    _set(inner)
    try:
        yield box
    finally:
        box[0] = _get()
        _set(outer)
