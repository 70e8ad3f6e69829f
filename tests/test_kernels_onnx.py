"""Plugin graphs: ``edgezoo export --format onnx --plugins`` writes each fused op as a TensorRT plugin node
(domain ``edgezoo``) that is valid ONNX, and the graph with each node given its op's reference semantics
(onnxruntime-extensions Python ops) computes what the default, decomposed graph computes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch

from edgezoo.errors import InvalidArgumentError
from edgezoo.export import export
from edgezoo.export.onnx import ort_session, wants_plugins
from edgezoo.kernels.onnx_plugins import DOMAIN, plugin_nodes, reference_session
from tests.kernel_cases import all_ops

pytest.importorskip("onnxruntime_extensions")


def test_plugin_export_is_valid_onnx_and_verified_with_reference_semantics(tmp_path: Path) -> None:
    model = all_ops()
    plugged = export(model, "onnx", tmp_path, img_size=24, plugins=True)
    assert plugged.status == "verified", plugged.error  # its gate ran the plugin nodes' reference semantics
    proto = onnx.load(str(plugged.path))
    onnx.checker.check_model(proto, full_check=True)
    nodes = plugin_nodes(proto)
    assert sorted({n.op_type for n in nodes}) == ["cga_attention", "channel_attention_cbam", "channel_attention_eca",
                                                 "channel_attention_se", "focal_aggregate2", "linear_attention"]
    assert len([n for n in nodes if n.op_type == "cga_attention"]) == 2  # one per head
    assert all({a.name: a.s for a in n.attribute}["plugin_namespace"] == DOMAIN.encode() for n in nodes)
    x = torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(reference_session(proto).run(None, {"input": x.numpy()})[0]),
                                   model(x), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_plugin_graph_matches_the_decomposed_graph(tmp_path: Path) -> None:
    model = all_ops(seed=1)
    plugged = export(model, "onnx", tmp_path / "plugins", img_size=24, plugins=True)
    default = export(model, "onnx", tmp_path / "default", img_size=24)
    assert plugged.status == default.status == "verified", (plugged.error, default.error)
    plain = onnx.load(str(default.path))
    assert plugin_nodes(plain) == [] and {o.domain for o in plain.opset_import} <= {"", "ai.onnx"}
    plugged_session, default_session = reference_session(onnx.load(str(plugged.path))), ort_session(default.path)
    for seed in range(3):
        x = torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(seed)).numpy()
        np.testing.assert_allclose(plugged_session.run(None, {"input": x})[0],
                                   default_session.run(None, {"input": x})[0], atol=1e-4, rtol=1e-4)


def test_plugins_refuse_int8() -> None:
    job = SimpleNamespace(options={"plugins": "true"}, precision="int8")
    with pytest.raises(InvalidArgumentError, match="plugins=true takes fp32 or fp16"):
        wants_plugins(job)
    assert wants_plugins(SimpleNamespace(options={"plugins": "true"}, precision="fp16"))
    assert not wants_plugins(SimpleNamespace(options={}, precision="fp32"))
