"""The int8 float fallback: the switchboard ranks exactly what a bypassed graph computes, and the export keeps
float only what it reports, with the logit error it promises."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import timm
import torch

from edgezoo.export import export
from edgezoo.export.int8_fallback import MAX_FRACTION, _Switchboard, activation_tensors, bypass, choose_fallback
from edgezoo.export.quantize import reference_session
from edgezoo.export.source import resolve_source
from tests.util import calibrate_bn_

SIZE = 32


@pytest.fixture(scope="module")
def qdq(tmp_path_factory) -> dict:
    """A random-weight MobileNetV2-CBAM (BN statistics calibrated) as an all-int8 QDQ graph, its images, fp32 logits."""
    torch.manual_seed(0)
    model = calibrate_bn_(timm.create_model("ez_mobilenetv2_cbam", num_classes=10), SIZE)
    src = resolve_source(model, img_size=SIZE)
    src.trained = False  # random weights: int8 agreement reported, not gated
    res = export(src, "onnx", tmp_path_factory.mktemp("q"), img_size=SIZE, int8=True, calib_size=8,
                 int8_fallback=0)
    assert res.status == "verified" and "int8_fallback" not in res.notes
    model.eval()
    images = [torch.randn(1, 3, SIZE, SIZE) for _ in range(4)]
    with torch.inference_mode():
        reference = torch.cat([model(x) for x in images]).numpy()
    return {"proto": onnx.load(res.path), "images": [x.numpy() for x in images], "reference": reference}


def _error(proto: onnx.ModelProto, images: list[np.ndarray], reference: np.ndarray) -> float:
    session = reference_session(proto)
    out = np.concatenate([session.run(None, {"input": x})[0] for x in images])
    return float(((out - reference) ** 2).sum() / (reference ** 2).sum())


@pytest.mark.slow  # make test's 20-minute budget: make test-all runs it
def test_the_switchboard_computes_what_the_bypassed_graph_computes(qdq: dict) -> None:
    proto, images, ref = qdq["proto"], qdq["images"], qdq["reference"]
    tensors = activation_tensors(proto)
    assert len(tensors) > 20
    board = _Switchboard(proto, tensors, images, ref)
    assert board.error(set()) == pytest.approx(_error(proto, images, ref), rel=1e-6)
    for chosen in ({tensors[3]}, set(tensors[5:9]), set(tensors)):
        bypassed, consumers = bypass(proto, chosen)
        onnx.checker.check_model(bypassed, full_check=True)
        assert consumers
        assert board.error(chosen) == pytest.approx(_error(bypassed, images, ref), rel=1e-6)
    # every activation float and the weights still int8: far closer to fp32 than the all-int8 graph
    assert board.error(set(tensors)) < 0.8 * board.error(set())


@pytest.mark.slow
def test_auto_keeps_few_tensors_and_cuts_the_error(qdq: dict) -> None:
    proto, images, ref = qdq["proto"], qdq["images"], qdq["reference"]
    fb = choose_fallback(proto, images, ref)
    assert 1 <= len(fb.tensors) <= max(1, int(MAX_FRACTION * fb.candidates))
    assert fb.error_after < fb.error_int8
    assert fb.ranked[0][1] >= fb.ranked[-1][1] and fb.tensors == [t for t, _ in fb.ranked[:len(fb.tensors)]]
    kept, _ = bypass(proto, set(fb.tensors))
    assert _error(kept, images, ref) == pytest.approx(fb.error_after, rel=1e-6)
    fixed = choose_fallback(proto, images, ref, count=2)
    assert fixed.tensors == [t for t, _ in fixed.ranked[:2]]


@pytest.mark.slow
def test_export_reports_the_tensors_it_left_float(tmp_path) -> None:
    res = export("ez_resnet18_eca", "onnx", tmp_path, img_size=SIZE, int8=True, calib_size=16, int8_fallback=3)
    assert res.status == "verified", res.summary()
    notes = res.notes["int8_fallback"]
    assert len(notes["tensors"]) == 3 and notes["error_after"] <= notes["error_int8"]
    proto = onnx.load(res.path)
    quantised = set(activation_tensors(proto))
    assert not quantised & set(notes["tensors"])  # none of them is quantised any more
    readers = {n.name: n for n in proto.graph.node}
    for name in notes["nodes"]:
        assert name in set(res.notes["float_nodes"])
        assert any(x in notes["tensors"] for x in readers[name].input)


def test_a_bad_fallback_value_is_one_line(tmp_path) -> None:
    from edgezoo.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="int8_fallback"):
        export("ez_resnet18_eca", "onnx", tmp_path, img_size=SIZE, int8=True, int8_fallback="most")
