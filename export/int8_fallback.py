"""Sensitivity-guided float fallback for int8 QDQ graphs: the few activations int8 hurts most stay float.

A post-training int8 graph loses most of its accuracy at a handful of tensors: in a digits-trained
EfficientViT-M0, leaving 4 of its 213 quantised activations in float (residual-stream adds and the
convs after them, whose ranges folded BatchNorm stretches) removes 63% of the logit error. Mixed-precision
post-training quantisation therefore ranks the tensors by their effect on the output and leaves the
worst in float (the "sensitivity analysis" of TensorRT's and OpenVINO's accuracy-aware flows; Wu et
al., "Integer Quantization for Deep Learning Inference", 2020, section 5).

Here every quantised activation tensor ``t`` of the QDQ graph is *bypassed* in turn (its
QuantizeLinear/DequantizeLinear pair removed, the consumers reading ``t`` in float; every other
pair, and every calibrated range, unchanged), the graph is run with reference semantics on a few
calibration images, and the drop in logit error against fp32 PyTorch is that tensor's gain. The
fallback set is then the shortest prefix of the ranking whose bypass halves the whole graph's
error, at most :data:`MAX_FRACTION` of the tensors. Only calibration images are used: the held-out
images the parity gate measures are never seen here. Given the fp32 graph (2026-12-03), a bypass
re-applies a ReLU the quantizer folded into the tensor's QuantizeLinear (:func:`folded_activations`),
and a bypassed model input gives the stem conv its float weight (:func:`float_weight_map`): fed
grayscale images replicated to RGB, its int8 weights are most of the error, because the three
input channels are equal and each output channel's weights over them nearly cancel. Every other
weight stays int8, so the file keeps about its size.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = ["MAX_FRACTION", "TARGET", "WEIGHTED_OPS", "Board", "Fallback", "activation_tensors", "bypass",
           "choose_fallback", "float_weight_map", "folded_activations", "rank"]

#: The fallback may keep float at most this fraction of the quantised activation tensors.
MAX_FRACTION = 0.05
#: ``auto`` stops at the shortest prefix whose error is at most this fraction of the all-int8 error.
TARGET = 0.5


@dataclass
class Fallback:
    """The tensors left float, the consumer nodes that now read float, and the figures behind the choice."""

    tensors: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    error_int8: float = 0.0  # relative squared logit error of the all-int8 graph on the sensitivity images
    error_after: float = 0.0
    ranked: list[tuple[str, float]] = field(default_factory=list)  # (tensor, gain / error_int8), best first
    candidates: int = 0
    images: int = 0
    seconds: float = 0.0

    def as_notes(self) -> dict[str, Any]:
        return {"tensors": self.tensors, "nodes": self.nodes, "error_int8": self.error_int8,
                "error_after": self.error_after, "candidates": self.candidates, "images": self.images,
                "seconds": round(self.seconds, 1), "ranked": [[t, round(g, 4)] for t, g in self.ranked[:10]]}


def activation_tensors(proto: Any) -> list[str]:
    """The float tensors a QuantizeLinear quantises (weights and other initializers excluded), in graph order."""
    inits = {i.name for i in proto.graph.initializer}
    return [n.input[0] for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]


#: ops whose second input is a weight: given a float data input by the fallback, they get their float weight back
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def float_weight_map(proto: Any, fp32: Any | None) -> dict[str, str]:
    """``{weight DequantizeLinear output: float initializer name}`` for the int8 weights of the convs, Gemms and
    MatMuls of ``proto`` that read a graph input (the stem), whose float original is in ``fp32`` (the graph
    ``proto`` was quantised from; onnxruntime's quantizer names the int8 weight ``<name>_quantized``).

    Only the stem's: that is where int8 weights are the error (inputs with equal channels), and switching
    every weight in the ranking's session costs a ``Where`` over each weight per image, 7x the session's time
    (EfficientViT-M0 at 48 px). ExecuTorch's ranking switches every weight (a Python attribute there).
    """
    suffix = "_quantized"
    floats = {i.name for i in fp32.graph.initializer} if fp32 is not None else set()
    dq_of = {n.output[0]: n for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    q_of = {n.output[0]: n for n in proto.graph.node if n.op_type == "QuantizeLinear"}
    inputs = {i.name for i in proto.graph.input}
    out = {}
    for node in proto.graph.node:
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2 or node.input[1] not in dq_of:
            continue
        data = dq_of.get(node.input[0])
        quant = q_of.get(data.input[0]) if data is not None else None
        weight = dq_of[node.input[1]].input[0].removesuffix(suffix)
        if quant is not None and quant.input[0] in inputs and weight in floats:
            out[node.input[1]] = weight
    return out


def folded_activations(proto: Any, fp32: Any | None) -> dict[str, Any]:
    """``{tensor: the fp32 graph's Relu/Clip node}`` for the activations onnxruntime's quantizer folded into
    the QuantizeLinear of their output (with uint8 activations a Relu is the range's lower end, so the node
    is dropped and its producer writes the tensor). A bypass of such a tensor applies the node again:
    without it the float value skips the ReLU (ResNet-18-ECA, random weights: the logit error of the
    graph with every activation float went from 0.08 to 1.8e4 of the logits' energy)."""
    if fp32 is None:
        return {}
    kept = {o for n in proto.graph.node if n.op_type in ("Relu", "Clip") for o in n.output}
    quantised = {n.input[0] for n in proto.graph.node if n.op_type == "QuantizeLinear"}
    return {n.output[0]: n for n in fp32.graph.node
            if n.op_type in ("Relu", "Clip") and n.output[0] not in kept and n.output[0] in quantised}


def _copy_initializer(graph: Any, fp32: Any, name: str, present: set[str]) -> None:
    """Add ``fp32``'s initializer ``name`` to ``graph`` unless ``present`` (``graph``'s names) holds it."""
    if name and name not in present:
        graph.initializer.extend(i for i in fp32.graph.initializer if i.name == name)
        present.add(name)


def _float_value(graph: Any, t: str, folded: dict[str, Any], fp32: Any | None, present: set[str]) -> tuple[str, list]:
    """``t``'s float value: ``(t, [])``, or for a folded activation the node re-applied to it and its output
    (Clip's bounds are copied into ``graph``'s initializers where missing)."""
    import onnx

    node = folded.get(t)
    if node is None:
        return t, []
    for name in node.input[1:]:  # Clip's bounds
        _copy_initializer(graph, fp32, name, present)
    again = onnx.helper.make_node(node.op_type, [t, *node.input[1:]], [f"{t}_float"], name=f"{node.name}_float")
    return f"{t}_float", [again]


def bypass(proto: Any, tensors: set[str], fp32: Any | None = None) -> tuple[Any, list[str]]:
    """A copy of ``proto`` in which ``tensors`` reach their consumers unquantised; also the consumers' names.

    With ``fp32`` (the graph ``proto`` was quantised from), a conv, Gemm or MatMul whose data input is one of
    ``tensors`` also reads its float weight instead of the dequantised int8 one (a float op, as ExecuTorch's
    fallback makes it: :mod:`edgezoo.export.pt2e_fallback`), and a Relu or Clip the quantizer folded into a
    bypassed tensor's QuantizeLinear is applied again (:func:`folded_activations`).
    """
    import onnx

    out = copy.deepcopy(proto)
    graph = out.graph
    present = {i.name for i in graph.initializer}
    folded = folded_activations(proto, fp32)
    quant = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] in tensors}
    nodes = list(graph.node)
    values = {t: _float_value(graph, t, folded, fp32, present) for t in set(quant.values())}
    added = [n for _, again in values.values() for n in again]
    source = {n.output[0]: values[quant[n.input[0]]][0] for n in nodes
              if n.op_type == "DequantizeLinear" and n.input[0] in quant}
    weights = float_weight_map(proto, fp32)
    outputs = {o.name for o in graph.output}
    kept, consumers = [], []
    for node in nodes:
        if node.output[0] in quant:
            continue
        if node.output[0] in source:
            if node.output[0] in outputs:  # a graph output keeps its name
                kept.append(onnx.helper.make_node("Identity", [source[node.output[0]]], [node.output[0]],
                                                  name=f"{node.name}_float"))
            continue
        if any(x in source for x in node.input):
            consumers.append(node.name)
            if node.op_type in WEIGHTED_OPS and node.input[0] in source and len(node.input) > 1 \
                    and node.input[1] in weights:
                node.input[1] = weights[node.input[1]]
                _copy_initializer(graph, fp32, node.input[1], present)
            for i, x in enumerate(node.input):
                node.input[i] = source.get(x, x)
        kept.append(node)
        produced = set(node.output)
        kept.extend(a for a in added if a.input[0] in produced)  # a re-applied activation right after its input
    kept[:0] = [a for a in added if a.input[0] not in {o for n in nodes for o in n.output}]  # on a graph input
    del graph.node[:]
    graph.node.extend(kept)
    return out, consumers


class _Switchboard:
    """One reference-semantics session of ``proto`` in which every quantised activation can be bypassed at run
    time: each DequantizeLinear output ``d`` of a tensor ``t`` becomes ``Where(use_float_t, t, d)`` with a
    boolean graph input per tensor, so ranking needs one session, not one per candidate."""

    def __init__(self, proto: Any, tensors: list[str], images: list[np.ndarray], reference: np.ndarray,
                 fp32: Any | None = None) -> None:
        import onnx

        from edgezoo.export.quantize import reference_session

        self.flags = {t: f"edgezoo_use_float_{i}" for i, t in enumerate(tensors)}
        board = copy.deepcopy(proto)
        graph = board.graph
        quant = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] in tensors}
        dequantized = {n.output[0]: quant[n.input[0]] for n in graph.node
                       if n.op_type == "DequantizeLinear" and n.input[0] in quant}
        weights = float_weight_map(proto, fp32)
        folded = folded_activations(proto, fp32)
        present = {i.name for i in graph.initializer}
        outputs = {o.name for o in graph.output}
        switched: dict[str, str] = {}
        nodes, applied = [], {}
        for node in graph.node:
            t = dequantized.get(node.input[0]) if node.input else None
            if t is not None and node.op_type in WEIGHTED_OPS and len(node.input) > 1 and node.input[1] in weights:
                # the weight follows its data input: float when the fallback leaves that input float, as bypass() does
                w = weights[node.input[1]]
                _copy_initializer(graph, fp32, w, present)
                nodes.append(onnx.helper.make_node("Where", [self.flags[t], w, node.input[1]], [f"{node.name}_w_sw"]))
                node.input[1] = f"{node.name}_w_sw"
            for i, x in enumerate(node.input):
                node.input[i] = switched.get(x, x)
            nodes.append(node)
            if node.op_type == "DequantizeLinear" and node.input[0] in quant:
                t, d = quant[node.input[0]], node.output[0]
                if t not in applied:  # the float value, with a folded ReLU applied again (once per tensor)
                    applied[t], again = _float_value(graph, t, folded, fp32, present)
                    nodes.extend(again)
                if d in outputs:  # a graph output keeps its name: the int8 value is renamed instead
                    node.output[0] = f"{d}_int8"
                    nodes.append(onnx.helper.make_node("Where", [self.flags[t], applied[t], node.output[0]], [d]))
                else:
                    switched[d] = f"{d}_switched"
                    nodes.append(onnx.helper.make_node("Where", [self.flags[t], applied[t], d], [switched[d]]))
        del graph.node[:]
        graph.node.extend(nodes)
        flag = onnx.TensorProto.BOOL
        graph.input.extend(onnx.helper.make_tensor_value_info(f, flag, []) for f in self.flags.values())
        self.session = reference_session(board)
        self.images, self.reference = images, reference

    def error(self, floats: set[str]) -> float:
        """The relative squared logit error against fp32 with ``floats`` bypassed and the rest int8."""
        feed = {f: np.array(t in floats) for t, f in self.flags.items()}
        out = np.concatenate([self.session.run(None, {"input": x, **feed})[0] for x in self.images])
        return float(((out - self.reference) ** 2).sum() / max(float((self.reference ** 2).sum()), 1e-30))


class Board(Protocol):
    """What the ranking needs of a graph: its logit error with a set of tensors left float."""

    def error(self, floats: set[str]) -> float: ...


def _auto_count(board: Board, ranked: list[tuple[str, float]], base: float) -> int:
    """The shortest prefix of ``ranked`` whose bypass brings the error to ``TARGET * base``, else the best prefix."""
    best = (base, 0)
    for k in range(1, max(1, int(MAX_FRACTION * len(ranked))) + 1):
        if ranked[k - 1][1] <= 0:
            break  # no tensor left that helps on its own
        err = board.error({t for t, _ in ranked[:k]})
        best = min(best, (err, k))
        if err <= TARGET * base:
            break
    return best[1]


def rank(board: Board, tensors: list[str], count: int | None, images: int, log: Any = lambda msg: None,
         floor: float = 0.0) -> Fallback:
    """Rank ``tensors`` by how much bypassing each alone cuts ``board``'s error; keep float the ``count`` most
    sensitive, or (``None``) the ``auto`` choice. ``images``: how many the board's error runs on (for the notes).
    ``floor``: ``auto`` ranks nothing when the all-int8 error is at most this.
    Shared by the ONNX QDQ graphs (here) and the PT2E graphs of ExecuTorch (:mod:`edgezoo.export.pt2e_fallback`)."""
    start = time.perf_counter()
    base = board.error(set())
    fb = Fallback(error_int8=base, error_after=base, candidates=len(tensors), images=images)
    if count is None and 0.0 < base <= floor:
        log(f"int8 fallback: all-int8 logit error {base:.3g} <= {floor:g}: nothing to rank")
    elif tensors and base > 0.0 and count != 0:
        log(f"int8 fallback: ranking {len(tensors)} quantised activations on {images} calibration images")
        gains = [(base - board.error({t})) / base for t in tensors]
        fb.ranked = sorted(zip(tensors, gains, strict=True), key=lambda tg: -tg[1])
        count = _auto_count(board, fb.ranked, base) if count is None else count
        fb.tensors = [t for t, _ in fb.ranked[:count]]
        fb.error_after = board.error(set(fb.tensors))
    fb.seconds = time.perf_counter() - start
    return fb


def choose_fallback(proto: Any, images: list[np.ndarray], reference: np.ndarray, count: int | None = None,
                    log: Any = lambda msg: None, fp32: Any | None = None) -> Fallback:
    """Rank ``proto``'s quantised activations on ``images`` (batches as the graph takes them) against the fp32
    ``reference`` logits; keep float the ``count`` most sensitive ones, or (``None``) the ``auto`` choice.
    ``fp32``: the graph ``proto`` was quantised from, so a bypass is scored as :func:`bypass` makes it."""
    start = time.perf_counter()
    tensors = activation_tensors(proto)
    board = _Switchboard(proto, tensors, images, reference, fp32)
    fb = rank(board, tensors, count, sum(len(x) for x in images), log)
    if fb.tensors:
        fb.nodes = bypass(proto, set(fb.tensors), fp32)[1]
    fb.seconds = time.perf_counter() - start
    return fb
