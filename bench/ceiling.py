"""The machine's measured fp32 matmul rate: the ceiling a benchmark's figures are read against."""

from __future__ import annotations

import time
from typing import Any

from edgezoo.bench.fingerprint import fingerprint

__all__ = ["matmul_gflops", "measured_fingerprint"]


def matmul_gflops(threads: int, n: int = 1024, seconds: float = 0.3) -> float:
    """fp32 GFLOP/s of an ``n x n`` matmul in torch at ``threads`` threads."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or runs < 2:
            a @ b
            runs += 1
        return round(2 * n ** 3 * runs / (time.perf_counter() - start) / 1e9, 1)
    finally:
        torch.set_num_threads(old)


def measured_fingerprint(threads: int) -> dict[str, Any]:
    """:func:`~edgezoo.bench.fingerprint.fingerprint` with ``matmul_gflops_fp32`` measured at ``threads``."""
    return {**fingerprint(threads), "matmul_gflops_fp32": matmul_gflops(threads)}
