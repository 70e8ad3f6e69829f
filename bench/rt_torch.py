"""PyTorch runtimes: ``torch`` (eager) and ``compile`` (``torch.compile``, inductor), both on the deploy form.

The model is the one :func:`edgezoo.export.prepare` made (eval, :func:`edgezoo.fuse`); it runs under
``torch.inference_mode`` with ``torch.set_num_threads(item.threads)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgezoo.bench.runtime import BenchFailure, BenchItem, Runner, Runtime, register_runtime

__all__ = ["CompileRuntime", "TorchRuntime"]


def _runner(model: Any, threads: int) -> Runner:
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return run


@register_runtime
class TorchRuntime(Runtime):
    name = "torch"
    precisions = ("fp32",)
    modules = ("torch",)
    description = "PyTorch eager, deploy form (edgezoo.fuse)"

    def load(self, item: BenchItem, precision: str, batch: int) -> Runner:
        return _runner(item.src.model, item.threads)


@register_runtime
class CompileRuntime(Runtime):
    name = "compile"
    precisions = ("fp32",)
    modules = ("torch",)
    description = "torch.compile (inductor) of the deploy form; needs a C++ compiler on CPU"

    def absent(self) -> str | None:
        import shutil

        import torch

        compilers = ("c++", "g++", "clang++")
        if not torch.cuda.is_available() and not any(shutil.which(c) for c in compilers):
            return "torch.compile on CPU needs a C++ compiler (none on PATH)"
        return None

    def load(self, item: BenchItem, precision: str, batch: int) -> Runner:
        import torch

        key = ("compiled", id(item.src.model))
        if key not in item.extra:
            item.extra[key] = torch.compile(item.src.model, dynamic=False)
        run = _runner(item.extra[key], item.threads)
        try:
            run(item.example(batch))  # compiles here, not inside the timed runs
        except Exception as err:  # inductor raises many kinds; the record carries the first line
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise BenchFailure(f"torch.compile failed: {type(err).__name__}: {first[:200]}") from err
        return run
