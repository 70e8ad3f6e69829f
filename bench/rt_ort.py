"""onnxruntime runtimes: ``ort`` (CPU fp32), ``ort-int8`` (the QDQ file, CPU int8 kernels) and
``ort-cuda`` (CUDA execution provider, fp32 / fp16), all on :mod:`edgezoo.export.onnx`'s files.

Sessions are :func:`edgezoo.export.onnx.ort_session` with ``item.threads`` intra-op threads and
onnxruntime's full graph optimisation (for the QDQ file this is what fuses its int8 kernels: the
``kernels`` semantics of :mod:`edgezoo.export.quantize`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgezoo.bench.runtime import BenchItem, Runner, Runtime, register_runtime

__all__ = ["OrtCudaRuntime", "OrtInt8Runtime", "OrtRuntime"]


def _runner(session: Any) -> Runner:
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {name: x})[0]

    return run


@register_runtime
class OrtRuntime(Runtime):
    name = "ort"
    precisions = ("fp32",)
    modules = ("onnxruntime", "onnx")
    description = "onnxruntime CPU, fp32 ONNX"
    precision_of_file = "fp32"

    def load(self, item: BenchItem, precision: str, batch: int) -> Runner:
        from edgezoo.export.onnx import ort_session

        path = item.artifacts.get("onnx", self.precision_of_file, batch)
        return _runner(ort_session(path, threads=item.threads))


@register_runtime
class OrtInt8Runtime(OrtRuntime):
    name = "ort-int8"
    precisions = ("int8",)
    description = "onnxruntime CPU, int8 QDQ ONNX (fused int8 kernels)"
    precision_of_file = "int8"


@register_runtime
class OrtCudaRuntime(Runtime):
    name = "ort-cuda"
    precisions = ("fp32", "fp16")
    modules = ("onnxruntime", "onnx")
    description = "onnxruntime CUDA execution provider, fp32 / fp16 ONNX"
    host_memory = False

    def absent(self) -> str | None:
        reason = super().absent()
        if reason:
            return reason
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return "onnxruntime has no CUDAExecutionProvider here (pip install onnxruntime-gpu, and a CUDA GPU)"
        return None

    def load(self, item: BenchItem, precision: str, batch: int) -> Runner:
        from edgezoo.export.onnx import ort_session

        path = item.artifacts.get("onnx", precision, batch)
        return _runner(ort_session(path, threads=item.threads, providers=["CUDAExecutionProvider"]))
