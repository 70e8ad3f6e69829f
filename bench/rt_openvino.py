"""OpenVINO runtime (``pip install "edgezoo[openvino]"``): reads the ONNX files of
:mod:`edgezoo.export.onnx` and compiles them for the CPU.

* ``fp32``: the fp32 ONNX with ``INFERENCE_PRECISION_HINT=f32``;
* ``int8``: the int8 QDQ ONNX (OpenVINO runs the Q/DQ pairs as int8 kernels);
* ``bf16``: the fp32 ONNX with ``INFERENCE_PRECISION_HINT=bf16``, only where the CPU computes bf16
  natively (AMX or AVX512-BF16); elsewhere OpenVINO would emulate it, so the record says absent.

``INFERENCE_NUM_THREADS`` is ``item.threads`` and ``PERFORMANCE_HINT`` is ``LATENCY`` (one stream).
"""

from __future__ import annotations

import numpy as np

from edgezoo.bench.fingerprint import cpu_flags
from edgezoo.bench.runtime import BenchItem, Runner, Runtime, register_runtime

__all__ = ["OpenvinoRuntime"]


@register_runtime
class OpenvinoRuntime(Runtime):
    name = "openvino"
    precisions = ("fp32", "int8", "bf16")
    extra = "openvino"
    modules = ("openvino",)
    description = "OpenVINO CPU on the ONNX files: fp32, int8 (QDQ), bf16 (AMX / AVX512-BF16 CPUs)"

    def precision_absent(self, precision: str) -> str | None:
        if precision != "bf16":
            return None
        flags = cpu_flags()
        if not (flags.get("amx_bf16") or flags.get("avx512_bf16")):
            return "bf16 needs a CPU with AMX or AVX512-BF16 (this one would emulate it)"
        return None

    def load(self, item: BenchItem, precision: str, batch: int) -> Runner:
        import openvino as ov

        path = item.artifacts.get("onnx", "int8" if precision == "int8" else "fp32", batch)
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                  "INFERENCE_NUM_THREADS": int(item.threads), "PERFORMANCE_HINT": "LATENCY"}
        compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        request = compiled.create_infer_request()

        def run(x: np.ndarray, _keep=compiled) -> np.ndarray:
            request.infer({0: x})
            return request.get_output_tensor(0).data

        return run
