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
    """A random-weight ResNet-18-ECA (BN statistics calibrated) as an all-int8 QDQ graph, its images, fp32 logits.

    (MobileNetV2-CBAM, used until 2026-12-02, is so ill-conditioned with random weights that its graph with
    every activation float and int8 weights drifts further from fp32 than the all-int8 one.)
    """
    torch.manual_seed(0)
    model = calibrate_bn_(timm.create_model("ez_resnet18_eca", num_classes=10), SIZE)
    src = resolve_source(model, img_size=SIZE)
    src.trained = False  # random weights: int8 agreement reported, not gated
    out = tmp_path_factory.mktemp("q")
    res = export(src, "onnx", out, img_size=SIZE, int8=True, calib_size=8, int8_fallback=0)
    assert res.status == "verified" and "int8_fallback" not in res.notes
    fp32 = export(src, "onnx", out / "fp32", img_size=SIZE)
    model.eval()
    images = [torch.randn(1, 3, SIZE, SIZE) for _ in range(4)]
    with torch.inference_mode():
        reference = torch.cat([model(x) for x in images]).numpy()
    return {"proto": onnx.load(res.path), "fp32": onnx.load(fp32.path), "images": [x.numpy() for x in images],
            "reference": reference}


def _error(proto: onnx.ModelProto, images: list[np.ndarray], reference: np.ndarray) -> float:
    session = reference_session(proto)
    out = np.concatenate([session.run(None, {"input": x})[0] for x in images])
    return float(((out - reference) ** 2).sum() / (reference ** 2).sum())


@pytest.mark.slow  # make test's 20-minute budget: make test-all runs it
def test_the_switchboard_computes_what_the_bypassed_graph_computes(qdq: dict) -> None:
    proto, images, ref, fp32 = qdq["proto"], qdq["images"], qdq["reference"], qdq["fp32"]
    tensors = activation_tensors(proto)
    assert len(tensors) > 20
    board = _Switchboard(proto, tensors, images, ref, fp32)
    assert board.error(set()) == pytest.approx(_error(proto, images, ref), rel=1e-6)
    for chosen in ({tensors[3]}, set(tensors[5:9]), set(tensors)):
        bypassed, consumers = bypass(proto, chosen, fp32)
        onnx.checker.check_model(bypassed, full_check=True)
        assert consumers
        assert board.error(chosen) == pytest.approx(_error(bypassed, images, ref), rel=1e-6, abs=1e-10)
    # every activation float (the folded ReLUs applied again), weights int8 but the stem's: far closer to fp32
    assert board.error(set(tensors)) < 0.2 * board.error(set())


@pytest.mark.slow
def test_auto_keeps_few_tensors_and_cuts_the_error(qdq: dict) -> None:
    proto, images, ref, fp32 = qdq["proto"], qdq["images"], qdq["reference"], qdq["fp32"]
    fb = choose_fallback(proto, images, ref, fp32=fp32)
    assert 1 <= len(fb.tensors) <= max(1, int(MAX_FRACTION * fb.candidates))
    assert fb.error_after < fb.error_int8
    assert fb.ranked[0][1] >= fb.ranked[-1][1] and fb.tensors == [t for t, _ in fb.ranked[:len(fb.tensors)]]
    kept, _ = bypass(proto, set(fb.tensors), fp32)
    assert _error(kept, images, ref) == pytest.approx(fb.error_after, rel=1e-6)
    fixed = choose_fallback(proto, images, ref, count=2, fp32=fp32)
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
        floats = {*notes["tensors"], *(f"{t}_float" for t in notes["tensors"])}  # a folded ReLU applied again
        assert any(x in floats for x in readers[name].input)


def test_a_bad_fallback_value_is_one_line(tmp_path) -> None:
    from edgezoo.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="int8_fallback"):
        export("ez_resnet18_eca", "onnx", tmp_path, img_size=SIZE, int8=True, int8_fallback="most")


class _GrayStem(torch.nn.Module):
    """A stem conv on grayscale-as-RGB images (three equal channels), then a small body."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.body = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)).mean((2, 3)))


def test_a_bypassed_input_gives_its_conv_the_float_weight(tmp_path) -> None:
    """With the fp32 initializers, bypassing the input makes the stem conv read its float weight: the board
    scores exactly that graph, and it differs from the one that keeps the int8 weight."""
    torch.manual_seed(0)
    model = _GrayStem().eval()
    with torch.no_grad():  # R, G and B weights that nearly cancel, as a net trained on equal channels learns
        w = model.stem.weight
        w[:, 0] = torch.randn_like(w[:, 0])
        w[:, 1] = -w[:, 0] + 0.05 * torch.randn_like(w[:, 0])
        w[:, 2] = 0.05 * torch.randn_like(w[:, 0])
        model.stem.bias.zero_()
    src = resolve_source(model, img_size=16)
    src.trained = False
    fp32 = export(src, "onnx", tmp_path / "f", img_size=16)
    res = export(src, "onnx", tmp_path / "q", img_size=16, int8=True, calib_size=8, int8_fallback=0)
    assert fp32.ok and res.ok, (fp32.summary(), res.summary())
    floats = onnx.load(fp32.path)
    proto = onnx.load(res.path)
    gray = torch.rand(4, 1, 16, 16).expand(4, 3, 16, 16)
    images = [x[None].numpy().copy() for x in gray]
    with torch.inference_mode():
        reference = model(gray).numpy()
    bypassed, consumers = bypass(proto, {"input"}, floats)
    onnx.checker.check_model(bypassed, full_check=True)
    stem = next(n for n in bypassed.graph.node if n.name in consumers and n.op_type == "Conv")
    weight = next(i for i in bypassed.graph.initializer if i.name == stem.input[1])
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(weight), model.stem.weight.detach().numpy())
    board = _Switchboard(proto, activation_tensors(proto), images, reference, floats)
    assert board.error({"input"}) == pytest.approx(_error(bypassed, images, reference), rel=1e-6)
    int8_weight, _ = bypass(proto, {"input"})  # without the fp32 initializers: the int8 weight stays
    assert _error(int8_weight, images, reference) > 2 * _error(bypassed, images, reference)


def test_a_bypassed_folded_relu_is_applied_again(tmp_path) -> None:
    """With uint8 activations onnxruntime's quantizer drops a ReLU into its QuantizeLinear (the range starts at
    0); the bypass puts it back, so the float value is the ReLU's output, as the board scores it."""
    from edgezoo.export.int8_fallback import folded_activations

    torch.manual_seed(0)
    model = _GrayStem().eval()
    src = resolve_source(model, img_size=16)
    src.trained = False
    fp32 = onnx.load(export(src, "onnx", tmp_path / "f", img_size=16).path)
    proto = onnx.load(export(src, "onnx", tmp_path / "q", img_size=16, int8=True, calib_size=8,
                             int8_fallback=0).path)
    folded = folded_activations(proto, fp32)
    assert folded and not any(n.op_type == "Relu" for n in proto.graph.node)  # both ReLUs folded
    relu = next(iter(folded))
    images = [torch.randn(1, 3, 16, 16).numpy() for _ in range(4)]
    with torch.inference_mode():
        reference = torch.cat([model(torch.from_numpy(x)) for x in images]).numpy()
    fixed, _ = bypass(proto, {relu}, fp32)
    onnx.checker.check_model(fixed, full_check=True)
    assert sum(n.op_type == "Relu" for n in fixed.graph.node) == 1
    board = _Switchboard(proto, activation_tensors(proto), images, reference, fp32)
    assert board.error({relu}) == pytest.approx(_error(fixed, images, reference), rel=1e-6)
    everything = set(activation_tensors(proto))
    assert board.error(everything) < 0.5 * board.error(set())  # all float, int8 weights after the stem
    broken, _ = bypass(proto, {relu})  # without the fp32 graph the ReLU is lost: negative values get through
    assert _error(broken, images, reference) > _error(fixed, images, reference)


class _AdditiveBoard:
    """A board whose error drops by a fixed share for each bypassed tensor: ``base * (1 - sum(shares))``."""

    def __init__(self, base: float, shares: dict[str, float]) -> None:
        self.base, self.shares, self.calls = base, shares, 0

    def error(self, floats: set[str]) -> float:
        self.calls += 1
        return self.base * (1.0 - sum(self.shares[t] for t in floats))


def test_auto_ranks_nothing_below_the_floor_and_a_count_ignores_it() -> None:
    """``auto`` skips the search when the all-int8 error is already at most ``floor`` (ExecuTorch's
    ``AUTO_FLOOR``: a search of 23 min found nothing to keep float at such errors); above it, and for a
    fixed count, the ranking runs as before."""
    from edgezoo.export.executorch import AUTO_FLOOR
    from edgezoo.export.int8_fallback import rank

    shares = {f"t{i}": s for i, s in enumerate([0.02, 0.6, 0.1] + [0.001] * 37)}
    low = _AdditiveBoard(0.5 * AUTO_FLOOR, shares)
    fb = rank(low, list(shares), None, 16, floor=AUTO_FLOOR)
    assert low.calls == 1 and fb.tensors == [] and fb.ranked == [] and fb.error_after == fb.error_int8
    high = _AdditiveBoard(2.0 * AUTO_FLOOR, shares)
    fb = rank(high, list(shares), None, 16, floor=AUTO_FLOOR)
    assert fb.tensors == ["t1"] and fb.error_after == pytest.approx(0.4 * high.base)  # halved by the best one
    fixed = rank(_AdditiveBoard(0.5 * AUTO_FLOOR, shares), list(shares), 2, 16, floor=AUTO_FLOOR)
    assert fixed.tensors == ["t1", "t2"]
