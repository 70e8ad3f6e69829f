"""Sensitivity-guided float fallback for PT2E int8 graphs (ExecuTorch): the activations int8 hurts most stay float.

The ExecuTorch counterpart of :mod:`edgezoo.export.int8_fallback` (the ONNX QDQ one), with the same
ranking, the same ``auto`` rule (:func:`edgezoo.export.int8_fallback.rank`: the shortest prefix of
the ranking that halves the logit error, at most 5% of the tensors) and the same option,
``int8_fallback``. Mixed-precision post-training quantisation ranks tensors by their effect on the
output (Wu et al., "Integer Quantization for Deep Learning Inference", 2020, section 5).

A converted PT2E graph carries each int8 activation ``t`` as ``dequantize(quantize(t))`` before its
consumers. :class:`Switchboard` replaces every such pair by a switch, so one copy of the graph
runs with any set of activations bypassed (their consumers read ``t`` in float); the error is the
relative squared logit error against the float model on a few *calibration* images (never the
held-out images the parity gate measures).

A bypass is scored as the fallback will build it: the ops around ``t`` are left unannotated, so a
conv or linear among them that then reads a float input also gets its float weight back. That is
where some of the error lives. In a stem conv on grayscale images replicated to RGB, the three
input channels are identical, so each output channel's weights over R, G and B nearly cancel, and
per-channel int8 weights lose most of what is left (digits-trained EfficientViT-B0 at 128 px: int8
weights alone flip 2.5% of the held-out digits, 0.8% with the stem conv's weights float). With the
weights switched too, the input image's activation ranks first and the stem computes in float.

The chosen activations are then made float for real: the graph is quantised again with the op that
produces each one and the ops that consume it left unannotated (:func:`float_node_names`), so
XNNPACK receives an ordinary PT2E graph in which those ops run in fp32 and everything else int8.
Each graph quantised again calibrates only the observers no earlier graph of the search had
(:func:`calibrate`), and the board runs its images in one ``vmap``: the search for digits-trained
EfficientViT-M0 at 48 px took 29 minutes before both and 4 after, and made the same graphs.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule, Node

__all__ = ["FLOAT_WEIGHTS", "WEIGHTED_OPS", "Switchboard", "activation_dequants", "calibrate", "float_node_names",
           "float_weights", "int8_fed_weighted", "logit_error", "run_all"]

#: the ATen ops of a captured graph that read a weight (and a bias) the XNNPACK quantizer quantises
WEIGHTED_OPS = frozenset({torch.ops.aten.conv1d.default, torch.ops.aten.conv2d.default,
                          torch.ops.aten.linear.default, torch.ops.aten.convolution.default})


#: ``GraphModule.meta`` key of a converted graph's float weights (:func:`float_weights`)
FLOAT_WEIGHTS = "edgezoo_float_weights"


def float_weights(graph: GraphModule) -> dict[str, torch.Tensor]:
    """``{op name: float weight}`` for the convs and linears of a captured graph, before it is prepared.

    Preparing and converting keep the ops' names, so the map finds each int8 weight's float original
    in the converted graph (stored there under ``graph.meta[FLOAT_WEIGHTS]``).
    """
    out = {}
    for node in graph.graph.nodes:
        if node.op == "call_function" and node.target in WEIGHTED_OPS and len(node.args) > 1:
            weight = node.args[1]
            if isinstance(weight, Node) and weight.op == "get_attr":
                out[node.name] = attrgetter(weight.target)(graph).detach().clone()
    return out


def _is(node: Node, name: str) -> bool:
    """Whether ``node`` calls a ``quantized_decomposed`` op called ``name`` (any overload)."""
    target = node.target
    return (node.op == "call_function" and isinstance(target, torch._ops.OpOverload)
            and target.namespace == "quantized_decomposed" and target._schema.name.split("::")[-1] == name)


def activation_dequants(graph: GraphModule) -> dict[str, list[Node]]:
    """``{activation name: its dequantize nodes}`` for every int8 activation of a converted PT2E graph.

    An activation is a quantize_per_tensor of a computed value (weights and other constants excluded);
    it may have several quantize/dequantize pairs (one per consumer).
    """
    out: dict[str, list[Node]] = {}
    for node in graph.graph.nodes:
        if not _is(node, "quantize_per_tensor"):
            continue
        value = node.args[0]
        if not isinstance(value, Node) or value.op == "get_attr":
            continue
        out.setdefault(value.name, []).extend(u for u in node.users if _is(u, "dequantize_per_tensor"))
    return {k: v for k, v in out.items() if v}


def _reads(node: Node) -> bool:
    """Whether ``node`` is a computing op (not a quantize or dequantize of the PT2E representation)."""
    quant = ("quantize_per_tensor", "dequantize_per_tensor", "quantize_per_channel", "dequantize_per_channel")
    return node.op == "call_function" and not any(_is(node, q) for q in quant)


def float_node_names(graph: GraphModule, activations: Sequence[str]) -> list[str]:
    """The ops to leave unannotated so ``activations`` stay float: each one's producer and its consumers."""
    dequants = activation_dequants(graph)
    by_name = {n.name: n for n in graph.graph.nodes}
    names: list[str] = []
    for name in activations:
        if by_name.get(name) is not None and _reads(by_name[name]):
            names.append(name)
        names += [u.name for dq in dequants.get(name, []) for u in dq.users if _reads(u)]
    return list(dict.fromkeys(names))


def int8_fed_weighted(graph: GraphModule, names: Sequence[str] | frozenset[str] | None = None) -> set[str]:
    """The convs and linears (among ``names``; ``None``: all) that read a dequantised int8 input with a float
    weight, a pattern XNNPACK takes for an int8 op and then refuses ("Weight and Input should both be
    quantized", or "Failed to create convolution node" when the program is loaded).

    Leaving an op unannotated keeps its weight float, but its input stays int8 when the producer's
    output is quantised for another reason (a pad, and the views after it, share its input's
    parameters: CGA's window partition). And the stock quantizer annotates a conv whose only user is a
    ReLU only together with the ReLU, so a float ReLU leaves its conv float too, whatever its input.
    """
    def dequantized(arg: Any) -> bool:
        return isinstance(arg, Node) and any(_is(arg, d) for d in ("dequantize_per_tensor", "dequantize_per_channel"))

    return {n.name for n in graph.graph.nodes
            if (names is None or n.name in names) and n.op == "call_function" and n.target in WEIGHTED_OPS
            and len(n.args) > 1 and dequantized(n.args[0]) and not dequantized(n.args[1])}


def logit_error(out: torch.Tensor, reference: torch.Tensor) -> float:
    """Relative squared logit error ``sum((out - ref)^2) / sum(ref^2)`` (as the ONNX fallback measures it)."""
    return float(((out - reference) ** 2).sum() / (reference ** 2).sum().clamp_min(1e-30))


@torch.no_grad()
def _fold_constant_dequants(graph: GraphModule) -> int:
    """Dequantise the int8 weights once: each dequantize of a constant becomes a float buffer.

    The values are the same; the ranking's many forward passes then skip re-dequantising every
    weight every time (most of a forward at digits' sizes). Returns how many were folded.
    """
    count = 0
    for node in list(graph.graph.nodes):
        if not (_is(node, "dequantize_per_channel") or _is(node, "dequantize_per_tensor")):
            continue
        if not (isinstance(node.args[0], Node) and node.args[0].op == "get_attr"):
            continue
        if any(isinstance(a, Node) and a.op != "get_attr" for a in node.args):
            continue
        args = [attrgetter(a.target)(graph) if isinstance(a, Node) else a for a in node.args]
        name = f"edgezoo_float_weight_{count}"
        graph.register_buffer(name, node.target(*args, **node.kwargs))
        with graph.graph.inserting_before(node):
            folded = graph.graph.get_attr(name)
        node.replace_all_uses_with(folded)
        graph.graph.erase_node(node)
        count += 1
    graph.graph.eliminate_dead_code()
    graph.graph.lint()
    graph.recompile()
    return count


class _Switch(nn.Module):
    """``t`` when ``use_float`` is set, else ``t``'s int8 round trip (``quantize`` then ``dequantize``).

    The round trip is ``fake_quantize_per_tensor_affine``'s arithmetic written out,
    ``(clamp(round(t * inv) + zero_point, qmin, qmax) - zero_point) * scale`` with ``inv = 1 / scale``
    in float32 and ties to even: bit for bit that op (the same rounding as the graph's decomposed pair
    up to ``t * inv`` against ``t / scale``), and unlike it every piece has a ``vmap`` batching rule.
    """

    def __init__(self, scale: float, zero_point: int, qmin: int, qmax: int) -> None:
        super().__init__()
        self.scale, self.zero_point, self.qmin, self.qmax = float(scale), int(zero_point), int(qmin), int(qmax)
        self.inverse = float(torch.tensor(1.0) / torch.tensor(self.scale))  # float32, as the fused op takes it
        self.use_float = False

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        if self.use_float:
            return t
        q = torch.clamp(torch.round(t * self.inverse) + self.zero_point, self.qmin, self.qmax)
        return (q - self.zero_point) * self.scale


class _WeightSwitch(nn.Module):
    """A conv's or linear's weight: the float original when ``use_float`` is set, else its dequantised int8."""

    def __init__(self, int8: torch.Tensor, float_: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("int8", int8)
        self.register_buffer("float_", float_)
        self.use_float = False

    def forward(self) -> torch.Tensor:
        return self.float_ if self.use_float else self.int8


def _input_activation(node: Node) -> str | None:
    """The activation a weighted op reads through a dequantize, or ``None`` when its input is float."""
    dq = node.args[0]
    if isinstance(dq, Node) and _is(dq, "dequantize_per_tensor"):
        quant = dq.args[0]
        if isinstance(quant, Node) and _is(quant, "quantize_per_tensor") and isinstance(quant.args[0], Node):
            return quant.args[0].name
    return None


class Switchboard:
    """A copy of a converted PT2E graph in which every int8 activation can be bypassed at run time.

    ``error(floats)`` runs ``images`` (batches the graph takes) with the activations named in ``floats``
    bypassed and returns the logit error against ``reference`` (the float model's logits). Weights are
    dequantised once (:func:`_fold_constant_dequants`), each activation's quantize/dequantize pair is a
    :class:`_Switch`. Where the graph carries its float weights (``meta[FLOAT_WEIGHTS]``), each conv's
    and linear's weight is a :class:`_WeightSwitch` too: float when the fallback of ``floats`` leaves the
    op unannotated (:func:`float_node_names`) and its input is float, as the quantised-again graph has it.
    """

    def __init__(self, graph: GraphModule, images: Sequence[torch.Tensor], reference: torch.Tensor) -> None:
        originals = graph.meta.get(FLOAT_WEIGHTS, {})
        self._around = {name: set(float_node_names(graph, [name])) for name in activation_dequants(graph)}
        self._reads = {n.name: _input_activation(n) for n in graph.graph.nodes
                       if n.op == "call_function" and n.target in WEIGHTED_OPS and n.name in originals}
        board = copy.deepcopy(graph)
        _fold_constant_dequants(board)
        self.switches: dict[str, list[_Switch]] = {}
        for name, dequants in activation_dequants(board).items():
            for dq in dequants:
                quant = dq.args[0]
                value, scale, zero_point, qmin, qmax = (
                    attrgetter(a.target)(board) if isinstance(a, Node) and a.op == "get_attr" else a
                    for a in quant.args[:5])
                switch = _Switch(scale, zero_point, qmin, qmax)
                self.switches.setdefault(name, []).append(switch)
                module = f"edgezoo_switch_{sum(len(v) for v in self.switches.values())}"
                board.add_submodule(module, switch)
                with board.graph.inserting_after(dq):
                    node = board.graph.call_module(module, (value,))
                dq.replace_all_uses_with(node)
        self.weights: dict[str, _WeightSwitch] = {}
        for node in list(board.graph.nodes):
            weight = node.args[1] if node.name in self._reads else None
            if not (isinstance(weight, Node) and weight.op == "get_attr"):
                continue
            int8 = attrgetter(weight.target)(board)
            if int8.shape != originals[node.name].shape:
                continue
            self.weights[node.name] = _WeightSwitch(int8, originals[node.name].to(int8.dtype))
            module = f"edgezoo_weight_{len(self.weights)}"
            board.add_submodule(module, self.weights[node.name])
            with board.graph.inserting_before(node):
                node.args = (node.args[0], board.graph.call_module(module, ()), *node.args[2:])
        board.graph.eliminate_dead_code()
        board.graph.lint()
        board.recompile()
        self.board, self.images, self.reference = board, list(images), reference
        same = len({tuple(x.shape) for x in self.images}) == 1
        self._stacked = torch.stack(self.images) if same and len(self.images) > 1 else None

    @property
    def tensors(self) -> list[str]:
        return list(self.switches)

    def float_weighted(self, floats: set[str]) -> set[str]:
        """The convs and linears that compute with their float weights when ``floats`` are bypassed."""
        around = set().union(*(self._around.get(t, set()) for t in floats))
        return {op for op in self.weights if op in around and (self._reads[op] is None or self._reads[op] in floats)}

    @torch.no_grad()
    def error(self, floats: set[str]) -> float:
        for name, switches in self.switches.items():
            for switch in switches:
                switch.use_float = name in floats
        weighted = self.float_weighted(floats)
        for op, switch in self.weights.items():
            switch.use_float = op in weighted
        return logit_error(self._logits(), self.reference)

    def _logits(self) -> torch.Tensor:
        """The board's logits on every image: one ``vmap`` over the stacked batches, else batch by batch.

        The graph's shapes are static (one batch), so ``vmap`` is what runs all the images in one pass:
        3-4x faster than a loop (digits-trained EfficientViT-M0 at 48 px, 16 images). Its convs may sum in
        another order than a batch's own, so a rounding or two can land elsewhere (that M0's all-int8
        error: 0.1660 against the loop's 0.1656); the graphs the fallback makes are measured by the loop.
        """
        if self._stacked is not None:
            try:
                return torch.func.vmap(self.board)(self._stacked).flatten(0, 1)
            except (RuntimeError, NotImplementedError):  # an op vmap cannot batch: the loop from now on
                self._stacked = None
        return torch.cat([self.board(x) for x in self.images])


def _settings(observer: nn.Module) -> tuple[tuple[str, str], ...]:
    """What decides an observer's statistics and parameters beside the values it sees: its class, its plain
    attributes (dtype, scheme, range, bins, ...) and ``eps`` (a buffer, and not the same in every config)."""
    plain = (bool, int, float, str, torch.dtype, torch.qscheme)
    found = [(k, str(v)) for k, v in vars(observer).items() if not k.startswith("_") and isinstance(v, plain)]
    eps = getattr(observer, "eps", None)
    return (("class", type(observer).__qualname__), *sorted(found),
            ("eps", str(eps.tolist() if isinstance(eps, torch.Tensor) else eps)))


def _observers(prepared: GraphModule) -> list[tuple[tuple[Any, ...], nn.Module, list[str]]]:
    """The observers of a prepared graph: each one's key (how it measures, :func:`_settings`, and what: the
    names of the nodes whose values it observes), the module, and the attributes it sits in. An observer
    shared by several tensors (a quantisation spec shared between an op's input and output) is one module
    under several attributes; two observers of one tensor with one config have one key."""
    from torchao.quantization.pt2e.observer import ObserverBase

    found: dict[int, tuple[nn.Module, list[str], list[str]]] = {}
    for node in prepared.graph.nodes:
        module = prepared.get_submodule(node.target) if node.op == "call_module" else None
        if isinstance(module, ObserverBase):
            _, targets, names = found.setdefault(id(module), (module, [], []))
            targets.append(node.target)
            names.extend(a.name for a in node.args if isinstance(a, Node))
    return [((_settings(module), tuple(sorted(names))), module, sorted(set(targets)))
            for module, targets, names in found.values()]


@torch.no_grad()
def calibrate(prepared: GraphModule, batches: Sequence[torch.Tensor], known: dict[tuple, dict] | None = None,
              ) -> None:
    """Run ``batches`` through a prepared PT2E graph, its observers recording, except those ``known`` already.

    Calibration runs the float model (observers only watch), so an observer that watches the same nodes
    with the same settings as one of an earlier graph of the same model records the same statistics,
    whatever else either graph quantises. The fallback quantises its model again for every set of float
    ops it tries: such observers take the statistics ``known`` holds (filled by the earlier calibrations)
    and sit out the forward passes (HistogramObservers were 80% of a try's time: EfficientViT-M0 at
    48 px). With nothing new to observe, nothing runs.
    """
    known = {} if known is None else known
    observers = _observers(prepared)
    idle = [(key, module, targets) for key, module, targets in observers if key in known]
    for key, module, _ in idle:
        for name, value in known[key].items():  # not load_state_dict: torchao's resets eps to its default
            setattr(module, name, value.clone())
    if len(idle) < len(observers):
        try:
            for _, _, targets in idle:
                for target in targets:
                    setattr(prepared, target, nn.Identity())
            for batch in batches:
                prepared(batch)
        finally:
            for _, module, targets in idle:
                for target in targets:
                    setattr(prepared, target, module)
    for key, module, _ in observers:
        known.setdefault(key, {k: v.clone() for k, v in module.named_buffers(recurse=False)})


def run_all(graph: Any, images: Sequence[torch.Tensor]) -> torch.Tensor:
    """``graph``'s logits on ``images`` (batches), concatenated."""
    with torch.no_grad():
        return torch.cat([graph(x) for x in images])
