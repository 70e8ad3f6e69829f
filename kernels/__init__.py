"""edgezoo.kernels: fused ops for the hot blocks, as ``torch.library`` custom ops.

Each op (``torch.ops.edgezoo.<name>``) has a plain-torch reference (the ground truth and the CPU
path), a Triton kernel for CUDA (run on CPU under ``TRITON_INTERPRET=1`` for tests), a fake
implementation (``torch.compile`` / ``torch.export`` keep the op as one node), a backward (a Triton
kernel for linear attention; the reference's, through ``torch.func.vjp``, for the others), a
decomposition into standard ops for export
(:func:`decompositions`), an ONNX plugin node (:mod:`edgezoo.kernels.onnx_plugins`) and a TensorRT
plugin definition (:mod:`edgezoo.kernels.tensorrt_plugins`).

=================== ===========================================================================
op                  blocks
=================== ===========================================================================
linear_attention    LiteMLA, FLatten (focused linear attention), MALA
focal_aggregate     FocalModulation's gated aggregation
channel_attention   SE, ECA, CBAM's channel half
cga_attention       the per-head attention of EfficientViT-M's cascaded group attention
=================== ===========================================================================

Models choose with ``timm.create_model(name, kernel_mode="auto" | "triton" | "reference")`` (see
:mod:`edgezoo.kernels._mode`); SHViT's single head uses SDPA outside ``"reference"``.
Triton is imported only when a kernel first runs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from edgezoo.kernels._mode import (
    MODES,
    check_mode,
    interpreting,
    kernel_mode,
    set_kernels,
    triton_available,
    use_kernels,
)
from edgezoo.kernels.op_cga import cga_attention, cga_attention_reference
from edgezoo.kernels.op_channel_attention import channel_attention, channel_attention_reference
from edgezoo.kernels.op_focal import focal_aggregate, focal_aggregate_reference
from edgezoo.kernels.op_linear_attention import linear_attention, linear_attention_reference

__all__ = [
    "MODES",
    "OPS",
    "cga_attention",
    "channel_attention",
    "check_mode",
    "decompositions",
    "focal_aggregate",
    "interpreting",
    "kernel_mode",
    "linear_attention",
    "set_kernels",
    "triton_available",
    "use_kernels",
]

#: op name -> its plain-torch reference.
OPS: dict[str, Callable[..., torch.Tensor]] = {
    "linear_attention": linear_attention_reference,
    "focal_aggregate": focal_aggregate_reference,
    "channel_attention": channel_attention_reference,
    "cga_attention": cga_attention_reference,
}


def decompositions() -> dict:
    """``{OpOverload: reference}`` for ``ExportedProgram.run_decompositions``: replaces every edgezoo op of
    an exported graph by its reference in standard aten ops (what the default ONNX export needs)."""
    return {getattr(torch.ops.edgezoo, name).default: ref for name, ref in OPS.items()}
