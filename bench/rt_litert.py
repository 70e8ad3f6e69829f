"""LiteRT runtimes on the ``.tflite`` files of :mod:`edgezoo.export.litert`: ``litert`` runs them with
ai-edge-litert's XNNPACK delegate (Android's CPU path), ``litert-builtin`` with the builtin kernels only
(no delegate), both with ``item.threads`` threads. fp32, fp16 weights and int8 (full integer, calibrated on
the benchmark's ``--calib`` images; an app's quantise/dequantise of the int8 input and output is inside the
timed call, as on a phone)."""

from __future__ import annotations

from typing import ClassVar

from edgezoo.bench.runtime import BenchItem, Runner, Runtime, register_runtime

__all__ = ["LitertBuiltinRuntime", "LitertRuntime"]


@register_runtime
class LitertRuntime(Runtime):
    name = "litert"
    precisions = ("fp32", "int8", "fp16")
    extra = "litert"
    modules = ("ai_edge_litert", "litert_torch")
    description = "LiteRT interpreter with the XNNPACK delegate, .tflite fp32 / int8 (full integer) / fp16 weights"
    xnnpack: ClassVar[bool] = True

    def load(self, item: BenchItem, precision: str, batch: int) -> Runner:
        from edgezoo.export.litert import litert_runner

        path = item.artifacts.get("litert", precision, batch)
        return litert_runner(path, threads=item.threads, xnnpack=self.xnnpack)


@register_runtime
class LitertBuiltinRuntime(LitertRuntime):
    name = "litert-builtin"
    description = "LiteRT interpreter with its builtin kernels only (no delegate), the same .tflite files"
    xnnpack = False
