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
images the parity gate measures are never seen here. Weights stay int8 everywhere (the file keeps
its size); the consumers of a bypassed tensor compute in float from dequantised weights.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = ["MAX_FRACTION", "TARGET", "Board", "Fallback", "activation_tensors", "bypass", "choose_fallback", "rank"]

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


def bypass(proto: Any, tensors: set[str]) -> tuple[Any, list[str]]:
    """A copy of ``proto`` in which ``tensors`` reach their consumers unquantised; also the consumers' names."""
    import onnx

    out = copy.deepcopy(proto)
    graph = out.graph
    quant = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] in tensors}
    source = {n.output[0]: quant[n.input[0]] for n in graph.node
              if n.op_type == "DequantizeLinear" and n.input[0] in quant}
    outputs = {o.name for o in graph.output}
    nodes, consumers = [], []
    for node in graph.node:
        if node.output[0] in quant:
            continue
        if node.output[0] in source:
            if node.output[0] in outputs:  # a graph output keeps its name
                nodes.append(onnx.helper.make_node("Identity", [source[node.output[0]]], [node.output[0]],
                                                   name=f"{node.name}_float"))
            continue
        if any(x in source for x in node.input):
            consumers.append(node.name)
            for i, x in enumerate(node.input):
                node.input[i] = source.get(x, x)
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return out, consumers


class _Switchboard:
    """One reference-semantics session of ``proto`` in which every quantised activation can be bypassed at run
    time: each DequantizeLinear output ``d`` of a tensor ``t`` becomes ``Where(use_float_t, t, d)`` with a
    boolean graph input per tensor, so ranking needs one session, not one per candidate."""

    def __init__(self, proto: Any, tensors: list[str], images: list[np.ndarray], reference: np.ndarray) -> None:
        import onnx

        from edgezoo.export.quantize import reference_session

        self.flags = {t: f"edgezoo_use_float_{i}" for i, t in enumerate(tensors)}
        board = copy.deepcopy(proto)
        graph = board.graph
        quant = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] in tensors}
        outputs = {o.name for o in graph.output}
        switched: dict[str, str] = {}
        nodes = []
        for node in graph.node:
            for i, x in enumerate(node.input):
                node.input[i] = switched.get(x, x)
            nodes.append(node)
            if node.op_type == "DequantizeLinear" and node.input[0] in quant:
                t, d = quant[node.input[0]], node.output[0]
                if d in outputs:  # a graph output keeps its name: the int8 value is renamed instead
                    node.output[0] = f"{d}_int8"
                    nodes.append(onnx.helper.make_node("Where", [self.flags[t], t, node.output[0]], [d]))
                else:
                    switched[d] = f"{d}_switched"
                    nodes.append(onnx.helper.make_node("Where", [self.flags[t], t, d], [switched[d]]))
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


def rank(board: Board, tensors: list[str], count: int | None, images: int, log: Any = lambda msg: None) -> Fallback:
    """Rank ``tensors`` by how much bypassing each alone cuts ``board``'s error; keep float the ``count`` most
    sensitive, or (``None``) the ``auto`` choice. ``images``: how many the board's error runs on (for the notes).
    Shared by the ONNX QDQ graphs (here) and the PT2E graphs of ExecuTorch (:mod:`edgezoo.export.pt2e_fallback`)."""
    start = time.perf_counter()
    base = board.error(set())
    fb = Fallback(error_int8=base, error_after=base, candidates=len(tensors), images=images)
    if tensors and base > 0.0 and count != 0:
        log(f"int8 fallback: ranking {len(tensors)} quantised activations on {images} calibration images")
        gains = [(base - board.error({t})) / base for t in tensors]
        fb.ranked = sorted(zip(tensors, gains, strict=True), key=lambda tg: -tg[1])
        count = _auto_count(board, fb.ranked, base) if count is None else count
        fb.tensors = [t for t, _ in fb.ranked[:count]]
        fb.error_after = board.error(set(fb.tensors))
    fb.seconds = time.perf_counter() - start
    return fb


def choose_fallback(proto: Any, images: list[np.ndarray], reference: np.ndarray, count: int | None = None,
                    log: Any = lambda msg: None) -> Fallback:
    """Rank ``proto``'s quantised activations on ``images`` (batches as the graph takes them) against the fp32
    ``reference`` logits; keep float the ``count`` most sensitive ones, or (``None``) the ``auto`` choice."""
    start = time.perf_counter()
    tensors = activation_tensors(proto)
    board = _Switchboard(proto, tensors, images, reference)
    fb = rank(board, tensors, count, sum(len(x) for x in images), log)
    if fb.tensors:
        fb.nodes = bypass(proto, set(fb.tensors))[1]
    fb.seconds = time.perf_counter() - start
    return fb
