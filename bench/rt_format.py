"""Runtimes that time an export format's own ``Format.run``: ``tensorrt`` (CUDA GPUs) and ``coreml``
(macOS). Their execution code lives with their exporters (:mod:`edgezoo.export.tensorrt`,
:mod:`edgezoo.export.coreml`); a timed call is host array in, host logits out (copies included).
Where the format's :meth:`~edgezoo.export.Format.runtime_reason` says it cannot run, the runtime is absent.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import ClassVar

import numpy as np

from edgezoo.bench.runtime import BenchItem, Runner, Runtime, register_runtime

__all__ = ["CoremlRuntime", "FormatRuntime", "TensorrtRuntime"]


class FormatRuntime(Runtime):
    """A runtime that runs artifacts of the export format :attr:`format` with that format's ``run``."""

    format: ClassVar[str]

    def absent(self) -> str | None:
        from edgezoo.export import get_format

        fmt = get_format(self.format)
        missing = fmt.missing()
        if missing:
            return f"{missing} is not installed (pip install \"edgezoo[{fmt.extra}]\")"
        return fmt.runtime_reason()

    def load(self, item: BenchItem, precision: str, batch: int) -> Runner:
        from edgezoo.export import ExportJob, get_format

        fmt = get_format(self.format)
        path = item.artifacts.get(self.format, precision, batch)
        src = item.src
        job = ExportJob(model=src.model, name=src.name, input_size=src.input_size, batch=batch, dynamic=False,
                        precision=precision, options={}, metadata={"mean": list(src.mean), "std": list(src.std)},
                        work_dir=Path(tempfile.gettempdir()))

        def run(x: np.ndarray) -> np.ndarray:
            return fmt.run(path, x, job)

        return run


@register_runtime
class TensorrtRuntime(FormatRuntime):
    name = "tensorrt"
    precisions = ("fp16", "int8", "fp32")
    extra = "tensorrt"
    format = "tensorrt"
    description = "TensorRT engine from the ONNX file (CUDA GPU), fp16 / int8 / fp32"
    host_memory = False


@register_runtime
class CoremlRuntime(FormatRuntime):
    name = "coreml"
    precisions = ("fp16", "fp32")
    extra = "export"
    format = "coreml"
    description = "Core ML ML Program (macOS), fp16 / fp32"
