"""The sensitivity fallback of ExecuTorch int8 (PT2E graphs): the switchboard computes what the converted
graph computes, a bypassed activation is what removing its quantize/dequantize pair gives, and the ops
the fallback names leave exactly those activations float when the model is quantised again."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("executorch")

import edgezoo.export.executorch as et
from edgezoo.data.calib import CalibrationSet
from edgezoo.export.base import ExportJob
from edgezoo.export.pt2e_fallback import (
    Switchboard,
    activation_dequants,
    float_node_names,
    logit_error,
    run_all,
)


class _Residual(nn.Module):
    """Conv -> ReLU -> conv with a residual add whose range a large skip stretches (int8 hurts it most)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1))
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        y = 8.0 * y + self.body(y)
        return self.head(y.mean((2, 3)))


def _job(tmp_path: Path, fallback: object = "auto") -> tuple[nn.Module, ExportJob, list[torch.Tensor]]:
    torch.manual_seed(0)
    model = _Residual().eval()
    job = ExportJob(model=model, name="res", input_size=(3, 8, 8), batch=1, dynamic=False, precision="int8",
                    options={"int8_fallback": fallback}, metadata={}, work_dir=tmp_path)
    job.calibration = CalibrationSet(torch.randn(16, 3, 8, 8), torch.randn(4, 3, 8, 8), "random")
    return model, job, [job.calibration.calib[i:i + 1] for i in range(16)]


def test_switchboard_matches_the_converted_graph_and_a_removed_pair(tmp_path: Path) -> None:
    model, job, batches = _job(tmp_path)
    x = batches[0]
    converted = et._convert(job, model, x, batches)
    with torch.no_grad():
        reference = torch.cat([model(b) for b in batches])
    board = Switchboard(converted, batches, reference)
    assert set(board.tensors) == set(activation_dequants(converted)) and len(board.tensors) >= 4
    # nothing bypassed: the converted graph itself (fused fake-quant == the decomposed pair)
    assert board.error(set()) == pytest.approx(logit_error(run_all(converted, batches), reference), rel=1e-5)
    # one activation bypassed == the graph with that activation's quantize/dequantize pairs removed
    name = board.tensors[len(board.tensors) // 2]
    removed = copy.deepcopy(converted)
    for dq in activation_dequants(removed)[name]:
        dq.replace_all_uses_with(dq.args[0].args[0])
    removed.graph.eliminate_dead_code()
    removed.recompile()
    assert board.error({name}) == pytest.approx(logit_error(run_all(removed, batches), reference), rel=1e-5)
    assert board.error(set(board.tensors)) < board.error(set())  # all float (int8 weights only) is closer


def test_the_switch_is_fake_quantize_bit_for_bit_and_vmap_batches_the_board(tmp_path: Path) -> None:
    """The board's int8 round trip is ``fake_quantize_per_tensor_affine`` to the bit (ties, both clamps, an
    awkward scale), and the board runs every image in one ``vmap`` with the per-batch loop's logits."""
    from edgezoo.export.pt2e_fallback import _Switch

    for scale, (qmin, qmax, zero_point) in itertools.product([0.0371, 0.0625], [(-128, 127, -7), (0, 255, 121)]):
        t = torch.cat([torch.randn(4096) * 6, (torch.arange(-300.0, 300.0) + 0.5) * scale])  # exact ties at 1/16
        switch = _Switch(scale, zero_point, qmin, qmax)
        assert torch.equal(switch(t), torch.fake_quantize_per_tensor_affine(t, scale, zero_point, qmin, qmax))
        switch.use_float = True
        assert switch(t) is t
    model, job, batches = _job(tmp_path)
    converted = et._convert(job, model, batches[0], batches)
    with torch.no_grad():
        reference = torch.cat([model(b) for b in batches])
    board = Switchboard(converted, batches, reference)
    assert board._stacked is not None and board._stacked.shape[:2] == (16, 1)
    some = set(board.tensors[::2])
    with torch.no_grad():
        batched = board.error(some), board._logits()
        assert board._stacked is not None  # vmap ran the graph
        board._stacked = None
        looped = board.error(some), board._logits()
    torch.testing.assert_close(batched[1], looped[1], rtol=1e-4, atol=1e-4)
    assert batched[0] == pytest.approx(looped[0], rel=1e-3)


def test_a_graph_quantised_again_reuses_the_statistics_of_observers_it_shares(tmp_path: Path,
                                                                              monkeypatch) -> None:
    """Calibration runs the float model, so an observer watching the same nodes with the same settings as
    one calibrated before takes its statistics: a graph with other ops float converts to the same
    quantisation parameters and logits as when calibrated from scratch, and observes less; the same graph
    again observes nothing. Cases: a ReLU float and its conv int8 alone (the conv's output is observed
    anew), and the input float (the stem conv float: the ReLU after it, whose observer the all-int8 graph
    shares with the conv's output, is observed on its own)."""
    from torchao.quantization.pt2e.observer import HistogramObserver
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from edgezoo.export.pt2e_fallback import _observers, calibrate

    calls = []
    observe = HistogramObserver.forward
    monkeypatch.setattr(HistogramObserver, "forward", lambda self, x: (calls.append(1), observe(self, x))[1])

    def qparams(graph: torch.fx.GraphModule) -> list[tuple]:
        return [(n.name, *n.args[1:3]) for n in graph.graph.nodes if n.op == "call_function"
                and getattr(n.target, "__name__", "").startswith("quantize_per_tensor")]

    model, job, batches = _job(tmp_path)
    known: dict = {}
    plain = et._convert(job, model, batches[0], batches, known=known)
    assert known and calls
    calls.clear()
    again = et._convert(job, model, batches[0], batches, known=known)
    assert not calls and qparams(again) == qparams(plain)
    assert torch.equal(run_all(again, batches), run_all(plain, batches))
    # observers given known statistics hold exactly a calibrated one's buffers, eps too (a setting that
    # torchao's load_state_dict resets: per-channel scales of near-constant channels moved)
    fresh, given = (prepare_pt2e(torch.export.export(model, (batches[0],)).module(), et._quantizer(model, job))
                    for _ in range(2))
    calibrate(fresh, batches)
    calibrate(given, batches, known)
    for (_, a, _), (_, b, _) in zip(_observers(fresh), _observers(given), strict=True):
        for (name, x), (_, y) in zip(a.named_buffers(), b.named_buffers(), strict=True):
            assert torch.equal(x, y), name
    relu = next(n for n in plain.graph.nodes if n.target == torch.ops.aten.relu.default
                and n.args[0].target == torch.ops.aten.conv2d.default)
    conv = frozenset({relu.args[0].name})
    cases = [(frozenset(float_node_names(plain, [relu.name])) - conv, conv),
             (frozenset(float_node_names(plain, ["x"])), frozenset())]
    for floats, forced in cases:
        calls.clear()
        reused = et._convert(job, model, batches[0], batches, floats, forced, known=known)
        observed, calls[:] = len(calls), []
        fresh = et._convert(job, model, batches[0], batches, floats, forced)
        assert observed < len(calls)
        assert qparams(reused) == qparams(fresh) != qparams(plain)
        assert torch.equal(run_all(reused, batches), run_all(fresh, batches))


def test_fallback_leaves_the_chosen_activations_float_and_cuts_the_error(tmp_path: Path) -> None:
    model, job, batches = _job(tmp_path, fallback=1)
    converted, _ = et._quantize(job, model, batches[0])
    notes = job.notes["int8_fallback"]
    assert len(notes["tensors"]) == 1 and notes["candidates"] >= 4 and notes["images"] == 16
    assert notes["error_after"] < notes["error_int8"]  # measured on the graph quantised again
    chosen = notes["tensors"][0]
    assert chosen not in activation_dequants(converted)  # float in the graph that is lowered
    assert set(notes["nodes"]) >= {chosen} and set(notes["nodes"]) <= {n.name for n in converted.graph.nodes}
    # the only activations no longer int8 are outputs of the ops the fallback left float
    none = et._convert(job, model, batches[0], batches)
    lost = set(activation_dequants(none)) - set(activation_dequants(converted))
    assert chosen in lost and lost <= set(notes["nodes"])
    assert float_node_names(none, [chosen]) == notes["nodes"]


def test_fallback_off_and_a_refused_fallback_lowers_the_all_int8_graph(tmp_path: Path, monkeypatch) -> None:
    """``int8_fallback=0`` quantises everything; and when the runtime refuses the program the fallback's float
    ops make (XNNPACK checks quantisation only when a method is loaded), the all-int8 graph is lowered
    instead, with a warning and the notes saying so: the same program as with the fallback off."""
    from edgezoo.export import get_format

    _, job, _ = _job(tmp_path, fallback=0)
    off = et.build_pte(job, tmp_path / "off.pte")
    assert "int8_fallback" not in job.notes
    assert et._refused(off.read_bytes()) is None and "RuntimeError" in et._refused(b"not a program")
    checked: list[int] = []

    def refuse(buffer: bytes) -> str:
        checked.append(len(buffer))
        return "RuntimeError: Failed to load method forward, error: 0x1"

    monkeypatch.setattr(et, "_refused", refuse)
    model, job, _ = _job(tmp_path / "one", fallback=1)
    path = et.build_pte(job, tmp_path / "one.pte")
    notes = job.notes["int8_fallback"]
    assert len(checked) == 1 and "0x1" in notes["refused"] and any("refused" in w for w in job.warnings)
    assert notes["tensors"] == notes["nodes"] == [] and len(notes["refused_tensors"]) == 1
    assert notes["error_after"] == notes["error_int8"]
    x = torch.randn(1, 3, 8, 8)
    fmt = get_format("executorch")
    out = fmt.run(path, x.numpy(), job)
    np.testing.assert_array_equal(out, fmt.run(off, x.numpy(), job))
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.95


class _PadThenConvAndConvRelu(nn.Module):
    """A stem conv feeding two branches: zero pad -> conv (the pad shares its input's int8 parameters, so the
    conv reads int8), and conv -> ReLU (the stock quantizer annotates such a conv only with its ReLU)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.conv, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 1), nn.Linear(8, 10)
        self.third = nn.Conv2d(8, 8, 2, padding=1)  # 9 x 9, as the padded branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        y = self.conv(torch.nn.functional.pad(y, (0, 1, 0, 1))) + torch.relu(self.third(y))
        return self.head(y.mean((2, 3)))


def test_a_float_conv_on_an_int8_input_is_quantised_after_all(tmp_path: Path, monkeypatch) -> None:
    """A conv whose weight the fallback leaves float while its input stays int8 reaches XNNPACK as
    ``dequantize -> conv`` with a float weight, which it refuses ("Weight and Input should both be quantized",
    or "Failed to create convolution node" at load): the conv after the pad, when its output is chosen, and
    the conv before a ReLU whose output is chosen. Each is quantised like the rest (the ReLU stays float),
    the notes say so, and the program the fallback made lowers, loads and runs."""
    from edgezoo.export.pt2e_fallback import int8_fed_weighted

    torch.manual_seed(0)
    model = _PadThenConvAndConvRelu().eval()
    job = ExportJob(model=model, name="pad", input_size=(3, 8, 8), batch=1, dynamic=False, precision="int8",
                    options={"int8_fallback": 2}, metadata={}, work_dir=tmp_path)
    job.calibration = CalibrationSet(torch.randn(16, 3, 8, 8), torch.randn(4, 3, 8, 8), "random")
    batches = [job.calibration.calib[i:i + 1] for i in range(16)]
    plain = et._convert(job, model, batches[0], batches)
    convs = [n.name for n in plain.graph.nodes if n.target == torch.ops.aten.conv2d.default]
    relu = next(n.name for n in plain.graph.nodes if n.target == torch.ops.aten.relu.default)
    second, third = convs[1], convs[2]
    assert {second, relu} <= set(activation_dequants(plain))  # choosing their outputs leaves them float
    forced = et._convert(job, model, batches[0], batches, frozenset(float_node_names(plain, [second, relu])))
    assert int8_fed_weighted(forced) == {second, third}  # the refused patterns, before the fix
    assert int8_fed_weighted(plain) == set()  # quantised: their weights are int8 too, not reported

    def choose(job, model, converted, batches):  # the sensitivity ranking's choice, fixed
        from edgezoo.export.int8_fallback import Fallback

        fb = Fallback(tensors=[second, relu], ranked=[(second, 1.0), (relu, 0.5)], candidates=5, error_int8=1.0)
        with torch.no_grad():
            return fb, batches[:2], torch.cat([model(b) for b in batches[:2]])

    monkeypatch.setattr(et, "_fallback", choose)
    converted, all_int8 = et._quantize(job, model, batches[0])
    notes = job.notes["int8_fallback"]
    assert all_int8 is not None and notes["tensors"] == [second, relu]
    assert notes["int8_fed_kept_int8"] == sorted([second, third]) and second not in notes["nodes"]
    assert int8_fed_weighted(converted) == set() and relu not in activation_dequants(converted)
    path = et.build_pte(job, tmp_path / "pad_int8.pte")
    assert "refused" not in job.notes["int8_fallback"], job.notes["int8_fallback"]  # the runtime took it
    x = torch.randn(1, 3, 8, 8)
    from edgezoo.export import get_format

    out = get_format("executorch").run(path, x.numpy(), job)
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.95


def test_a_bypassed_input_scores_its_consumers_float_weights(tmp_path: Path) -> None:
    """Bypassing an activation also gives the convs that then read it in float their float weights, as the
    graph quantised again has them: the board equals the converted graph with the pair removed and the
    stem conv's dequantised weight replaced by the original."""
    from edgezoo.export.pt2e_fallback import FLOAT_WEIGHTS

    model, job, batches = _job(tmp_path)
    converted = et._convert(job, model, batches[0], batches)
    with torch.no_grad():
        reference = torch.cat([model(b) for b in batches])
    board = Switchboard(converted, batches, reference)
    stem = next(n for n in converted.graph.nodes if n.target == torch.ops.aten.conv2d.default)
    x = stem.args[0].args[0].args[0].name  # conv <- dequantize <- quantize <- the input
    assert board.float_weighted({x}) == {stem.name}
    assert torch.equal(converted.meta[FLOAT_WEIGHTS][stem.name], model.stem.weight)
    expected = copy.deepcopy(converted)
    for dq in activation_dequants(expected)[x]:
        dq.replace_all_uses_with(dq.args[0].args[0])
    conv = next(n for n in expected.graph.nodes if n.name == stem.name)
    expected.register_buffer("float_stem", model.stem.weight.detach().clone())
    with expected.graph.inserting_before(conv):
        conv.args = (conv.args[0], expected.graph.get_attr("float_stem"), *conv.args[2:])
    expected.graph.eliminate_dead_code()
    expected.recompile()
    assert board.error({x}) == pytest.approx(logit_error(run_all(expected, batches), reference), rel=1e-5)
    # the weight alone matters: int8 weights on a float input would score differently
    only_pairs = copy.deepcopy(converted)
    for dq in activation_dequants(only_pairs)[x]:
        dq.replace_all_uses_with(dq.args[0].args[0])
    only_pairs.graph.eliminate_dead_code()
    only_pairs.recompile()
    assert board.error({x}) != pytest.approx(logit_error(run_all(only_pairs, batches), reference), rel=1e-3)


def test_auto_adds_the_next_ranked_activation_while_the_graph_made_misses_the_target(tmp_path: Path,
                                                                                  monkeypatch) -> None:
    """``auto`` measures the graph it builds: a first choice that does not halve the real error is joined by
    the next ranked activation, and the notes report the graph kept."""
    from edgezoo.export.int8_fallback import TARGET, Fallback

    model, job, batches = _job(tmp_path)
    plain = et._convert(job, model, batches[0], batches)
    with torch.no_grad():
        reference = torch.cat([model(b) for b in batches])
    board = Switchboard(plain, batches, reference)
    base = board.error(set())
    gains = sorted(((base - board.error({t})) / base, t) for t in board.tensors)
    useless, best = gains[0][1], gains[-1][1]

    def real(tensors: list[str]) -> float:
        made = et._requantize(job, model, batches[0], batches, frozenset(float_node_names(plain, tensors)))[0]
        return logit_error(run_all(made, batches), reference)

    assert real([useless]) > TARGET * base >= real([useless, best])  # the case this test is about

    def ranked_badly(job, model, converted, batches):  # a ranking that puts the useless activation first
        fb = Fallback(tensors=[useless], ranked=[(useless, 0.9), (best, 0.5)], candidates=40, error_int8=base)
        return fb, batches, reference

    monkeypatch.setattr(et, "_fallback", ranked_badly)
    et._quantize(job, model, batches[0])
    notes = job.notes["int8_fallback"]
    assert notes["tensors"] == [useless, best]
    assert notes["error_after"] == pytest.approx(real([useless, best]), rel=1e-6)
