"""The gates' rules (export/parity.py) and the two ways of running an int8 QDQ file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgezoo.export.parity import DECISIVE_PROB, compare, fp32_instability


def _logits(probs: list[list[float]]) -> np.ndarray:
    return np.log(np.asarray(probs, dtype=np.float64))


def test_fp32_gate_fails_on_error_and_ignores_near_ties() -> None:
    ref = _logits([[0.7, 0.2, 0.1], [0.4, 0.4 + 1e-9, 0.2]])
    same = compare(ref, ref + 1e-7, "fp32")
    assert same["passed"] and same["near_ties"] == 1 and same["top1_flips"] == 0
    swapped = ref.copy()
    swapped[1] = swapped[1][[1, 0, 2]]  # the near-tie changes class within tolerance
    assert compare(ref, swapped, "fp32")["passed"]
    off = compare(ref, ref * 1.01, "fp32")
    assert not off["passed"] and "relative max error" in off["reason"]


def test_int8_gate_counts_decisive_flips_and_gates_agreement_for_trained_weights() -> None:
    confident, unsure = [0.8, 0.1, 0.1], [DECISIVE_PROB - 0.05, 0.35, 0.2]
    ref = _logits([confident] * 18 + [unsure] * 2)
    out = ref.copy()
    out[18:] = out[18:][:, [1, 0, 2]]  # the two unsure images flip
    figures = compare(ref, out, "int8", trained=True)
    assert figures["top1_agreement"] == pytest.approx(0.9) and figures["top1_flips"] == 2
    assert figures["decisive_flips"] == 0 and not figures["passed"]  # 90% < 95%: gated on all flips
    out[0] = out[0][[1, 0, 2]]
    assert compare(ref, out, "int8", trained=True)["decisive_flips"] == 1
    random = compare(ref, out, "int8", trained=False)
    assert random["passed"] and "not gated" in random["reason"]


def test_int8_reference_and_kernel_semantics_run_the_same_file(tmp_path) -> None:
    """A hand-built QDQ conv: the reference session computes exactly the Q/DQ arithmetic written in
    the file (checked against numpy), and so do the fused kernels on a VNNI CPU."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from edgezoo.export.onnx import cpu_has_vnni
    from edgezoo.export.quantize import int8_session

    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 1, 1)).astype(np.float32)
    w_scale = np.abs(w).reshape(4, -1).max(1) / 127
    w_q = np.round(w / w_scale[:, None, None, None]).astype(np.int8)
    x_scale = np.float32(0.05)
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["y"]),
        helper.make_node("QuantizeLinear", ["y", "ys", "xz"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "ys", "xz"], ["logits"]),
    ]
    inits = [numpy_helper.from_array(np.array(x_scale), "xs"), numpy_helper.from_array(np.array(0, np.int8), "xz"),
             numpy_helper.from_array(w_q, "wq"), numpy_helper.from_array(w_scale.astype(np.float32), "ws"),
             numpy_helper.from_array(np.zeros(4, np.int8), "wz"),
             numpy_helper.from_array(np.array(0.1, np.float32), "ys")]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 2, 2])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4, 2, 2])], inits)
    path = tmp_path / "qdq.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    x = rng.uniform(-3, 3, (1, 3, 2, 2)).astype(np.float32)

    xd = np.clip(np.round(x / x_scale), -128, 127) * x_scale
    wd = w_q.astype(np.float32) * w_scale[:, None, None, None]
    y = np.einsum("oi,nihw->nohw", wd[:, :, 0, 0], xd)
    expected = np.clip(np.round(y / 0.1), -128, 127) * 0.1
    np.testing.assert_allclose(int8_session(path, "reference").run(None, {"input": x})[0], expected, atol=1e-5)
    fused = int8_session(path, "kernels").run(None, {"input": x})[0]
    if cpu_has_vnni():  # without VNNI the fused u8 x s8 products saturate (this input makes them)
        np.testing.assert_allclose(fused, expected, atol=0.1 + 1e-6)
    with pytest.raises(ValueError, match="reference"):
        int8_session(path, "fast")


class _Cancels(nn.Module):
    """Logits ``(big * mean + w) - big * mean``: exactly ``w`` in float64; in fp32 with ``big`` = 1e6 the
    rounding of the large term swamps ``w`` (a stand-in for a model that amplifies rounding error)."""

    def __init__(self, big: float) -> None:
        super().__init__()
        self.big = big
        self.w = nn.Parameter(torch.linspace(-1.0, 1.0, 5) + 0.01)
        self.num_classes = 5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = x.mean((1, 2, 3))[:, None] * self.big
        return (p + self.w) - p


def test_fp32_instability_measures_the_models_own_rounding() -> None:
    x = [torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) + 1.0]
    assert fp32_instability(_Cancels(1.0), x) < 1e-6
    assert fp32_instability(_Cancels(1e6), x) > 1e-3


@pytest.mark.parametrize("big", [1.0, 1e6])
def test_fp32_gate_failure_names_a_numerically_unstable_model(big: float, tmp_path, monkeypatch) -> None:
    """A failed fp32 gate says when PyTorch's own fp32 output is as far from float64 as the artifact is
    from PyTorch (e.g. EfficientViT-M0 with BatchNorm statistics from 64 px, exported at 128 px: the
    graph is right, the model's logits are rounding noise), and only then."""
    pytest.importorskip("onnxruntime")
    from edgezoo.export import export
    from edgezoo.export.onnx import OnnxFormat

    run = OnnxFormat.run
    monkeypatch.setattr(OnnxFormat, "run", lambda self, path, x, job: run(self, path, x, job) * (1 + 1e-3))
    res = export(_Cancels(big), "onnx", tmp_path, img_size=8)
    assert res.status == "failed" and "relative max error" in res.parity["reason"], res.summary()
    assert res.parity["torch_fp32_vs_fp64"] is not None
    assert ("numerically unstable" in res.parity["reason"]) == (big > 1.0), res.parity
