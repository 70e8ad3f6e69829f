"""ExecuTorch runtime: the ``.pte`` files of :mod:`edgezoo.export.executorch` (XNNPACK, fp32 / int8)
run by the ``executorch.runtime`` pybindings, with XNNPACK's thread pool set to ``item.threads``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgezoo.bench.runtime import BenchItem, Runner, Runtime, register_runtime

__all__ = ["ExecutorchRuntime"]


def _set_threads(threads: int) -> None:
    try:
        from executorch.extension.pybindings import portable_lib

        portable_lib._unsafe_reset_threadpool(threads)
    except (ImportError, AttributeError):  # older wheels: the pool keeps its default size
        pass


@register_runtime
class ExecutorchRuntime(Runtime):
    name = "executorch"
    precisions = ("fp32", "int8")
    extra = "executorch"
    modules = ("executorch",)
    description = "ExecuTorch .pte lowered to XNNPACK, fp32 / int8 (PT2E)"

    def load(self, item: BenchItem, precision: str, batch: int) -> Runner:
        import torch
        from executorch.runtime import Runtime as EtRuntime

        path = item.artifacts.get("executorch", precision, batch)
        _set_threads(item.threads)
        program = EtRuntime.get().load_program(Path(path))
        method = program.load_method("forward")

        def run(x: np.ndarray, _keep=program) -> np.ndarray:  # the program must outlive its method
            return method.execute([torch.from_numpy(x)])[0].numpy()

        return run
