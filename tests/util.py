"""Helpers shared by the tests."""

from __future__ import annotations

from pathlib import Path

import torch

from edgezoo.weights import calibrate_bn_, randomize_  # noqa: F401  (the tests import them from here)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative max error ``max|a - b| / max|b|``."""
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12)).item()


def activation_zero_points(path: Path | str) -> set[tuple[int, int]]:
    """``(dtype, value)`` of every QuantizeLinear zero point in an ONNX file: the activations' (a QDQ
    graph stores its weights quantised, behind a DequantizeLinear only)."""
    import numpy as np
    import onnx

    proto = onnx.load(str(path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    types = {i.name: i.data_type for i in proto.graph.initializer}
    zps = [n.input[2] for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    return {(types[z], int(v)) for z in zps for v in np.unique(inits[z])}
