"""Build ``@triton.jit`` kernels on first use, so importing edgezoo never imports Triton."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["LazyKernel"]


class LazyKernel:
    """Holds a factory returning a ``@triton.jit`` function; ``get()`` builds it once."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory, self._kernel = factory, None

    def get(self) -> Any:
        if self._kernel is None:
            self._kernel = self.factory()
        return self._kernel

    def reset(self) -> None:
        """Forget the built kernel (the next ``get()`` rebuilds it, e.g. after ``TRITON_INTERPRET`` changed)."""
        self._kernel = None

    def __getitem__(self, grid: tuple) -> Any:
        return self.get()[grid]
