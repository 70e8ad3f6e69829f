"""ExecuTorch: ``torch.export`` lowered to the XNNPACK delegate, a ``.pte`` gated in the ExecuTorch runtime.

* fp32: ``torch.export.export`` at the static export shape, then
  ``executorch.exir.to_edge_transform_and_lower`` with the ``XnnpackPartitioner`` (after
  :mod:`edgezoo.export.xnnpack_rewrites`, which rewrite the ops XNNPACK refuses into ones it takes)
  and ``to_executorch()``.
* int8: the PT2E flow with ExecuTorch's ``XNNPACKQuantizer`` (symmetric, per-channel int8
  weights, per-tensor int8 activations): ``torch.export`` to an ATen graph module,
  ``prepare_pt2e``, calibration on ``job.calibration.calib`` in batches of the static export
  batch, ``convert_pt2e``, ``torch.export`` again and the same lowering. Two edgezoo rules on top
  of the stock quantizer (:func:`_quantizer`): the precision policy (the ops blocks declare in
  ``fp32_ops``, and the softmax with the element-wise ops feeding it, stay float, as in
  :mod:`edgezoo.export.fp32_policy` for ONNX; the quantizer never annotates matmul, softmax or
  LayerNorm anyway), and constant padding shares its input's quantisation parameters (without it
  the runtime refuses EfficientViT-M's padded windows). Then the sensitivity fallback (option
  ``int8_fallback``, default ``auto``, as for ONNX; :mod:`edgezoo.export.pt2e_fallback`) ranks the
  int8 activations by how much float each one buys back on 16 calibration images and quantises
  again with the few that matter most left float (SHViT-S1 on digits at 48 px: 3 residual adds of
  156 activations, logit error 0.154 -> 0.072, top-1 agreement 98.3% -> 99.2%). XNNPACK checks a
  program's quantisation only when a method is loaded, so a program with the fallback's float ops is
  loaded once before it is kept; one the runtime refuses is replaced by the all-int8 program, with a
  warning (``int8_fallback.refused`` in the notes).
* edgezoo's GELU writes itself as ``erf`` under export for onnxruntime's fusion; XNNPACK has no
  ``erf``, so the exported copy uses ``nn.GELU`` (one delegate instead of one per GELU).

Parity runs the ``forward`` method in ``executorch.runtime`` (the pybindings the ``executorch``
wheel ships, XNNPACK included), so an ExecuTorch export is ``verified`` on Linux and macOS.

Metadata: every key of the metadata is a *constant method* of the program (ExecuTorch's slot for
configuration values; strings are supported), named ``edgezoo_<key>`` and returning the value as a
string (lists JSON-encoded), plus ``edgezoo_metadata`` returning the whole metadata as one JSON
string. :func:`read_metadata` reads it back: ``Program.load_method("edgezoo_metadata").execute([])``.

``job.notes`` records the XNNPACK delegates (``delegates``), the ops they took (``delegated_ops``),
those left to ExecuTorch's portable kernels (``non_delegated_ops``; by op: ``non_delegated``), the
seconds of each stage and, for int8, the quantised tensors and the ops kept float (``float_ops``).
Static batch only (``supports_dynamic = False``).
"""

from __future__ import annotations

import json
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.fx import GraphModule

from edgezoo.export.base import ExportJob, Format, NotRunnable, Option, register_format
from edgezoo.export.int8_fallback import Fallback
from edgezoo.export.quantize import fallback_setting, parse_fallback

__all__ = ["METADATA_METHOD", "ExecutorchFormat", "build_pte", "read_metadata"]

#: The constant method that returns the whole metadata as a JSON string.
METADATA_METHOD = "edgezoo_metadata"


def _constant_methods(job: ExportJob) -> dict[str, str]:
    """The metadata as ExecuTorch constant methods (method name -> string value)."""
    methods = {f"edgezoo_{k}": v for k, v in job.metadata_strings().items()}
    methods[METADATA_METHOD] = json.dumps(job.metadata, default=str)
    return methods


def _native_gelu(model: nn.Module, job: ExportJob) -> nn.Module:
    """A copy of ``model`` whose edgezoo GELUs are :class:`torch.nn.GELU` (``model`` is left as it is).

    edgezoo's GELU (:class:`edgezoo.blocks.focal.GELU`) writes itself as ``x * (erf(x / sqrt 2) + 1) * 0.5``
    under ``torch.export`` so that onnxruntime fuses it; XNNPACK has no ``erf`` but a native GELU, and
    every ``erf`` would split the graph into another delegate. Same function, so parity is unchanged.
    """
    from edgezoo.export.xnnpack_rewrites import swap_modules

    names = [name for name, m in model.named_modules()
             if isinstance(m, nn.GELU) and type(m) is not nn.GELU and type(m).__module__.startswith("edgezoo.")]
    if names:
        job.notes["native_gelu"] = len(names)
    return swap_modules(model, names, lambda _, m: nn.GELU(approximate=m.approximate))


def _xnnpack_modules(model: nn.Module, job: ExportJob) -> nn.Module:
    """``model`` with the modules XNNPACK cannot take swapped for equivalents it can (a copy if any are): edgezoo's
    GELU for torch's, LayerNorm over channels for :class:`~edgezoo.export.xnnpack_rewrites.ChannelLayerNorm`,
    FocalNet's split projection for :class:`~edgezoo.export.xnnpack_rewrites.SplitPointwise`."""
    from edgezoo.export.xnnpack_rewrites import channel_layer_norms, split_focal_projections

    model = _native_gelu(model, job)
    for swap, note in ((channel_layer_norms, "channel_layer_norms"), (split_focal_projections, "split_projections")):
        model, count = swap(model)
        if count:
            job.notes[note] = count
    return model


#: ``auto`` ranks nothing when the all-int8 logit error is at most this. Its search (a forward pass per
#: activation, then a graph quantised and calibrated again per try) found nothing to keep float at such
#: errors: digits-trained EfficientViT-M0 at 128 px, error 0.0017, 23 min on 2 cores for no float op (the
#: all-int8 program agreed on 100% of 360 held-out digits); FocalNet edge-XS, 5e-4, 4% cut. The errors
#: it did halve were 0.015 (B0 at 128 px) to 0.15 (SHViT-S1 at 48 px).
AUTO_FLOOR = 5e-3

#: ``GraphModule.meta`` key of a converted graph's float ops by kind (``job.notes["float_ops"]``)
_FLOAT_OPS = "edgezoo_float_ops"

#: ``auto`` keeps a fallback only if the graph it makes has at most ``1 - MIN_CUT`` of the all-int8 error
MIN_CUT = 0.25

#: aten ops -> the names blocks use in ``fp32_ops`` (:mod:`edgezoo.blocks.linear_attention`).
_POLICY_OPS = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "matmul": "matmul", "bmm": "matmul",
               "mm": "matmul", "sum": "sum", "mean": "mean", "softmax": "softmax", "_softmax": "softmax",
               "pow": "pow", "linalg_vector_norm": "norm", "norm": "norm", "softplus": "softplus", "elu": "elu",
               "layer_norm": "layer_norm", "native_layer_norm": "layer_norm", "reciprocal": "div"}
#: ops between a softmax and the matmul producing its input (bias, scale) that the quantizer would annotate
_SOFTMAX_FEEDERS = ("add", "sub", "mul", "div")


def _op(node: Any) -> str:
    """``aten.add.Tensor`` -> ``add``."""
    name = getattr(node.target, "__name__", "")
    return name.split(".")[0] if node.op == "call_function" else ""


def _float_nodes(graph: torch.fx.GraphModule, model: nn.Module) -> list[Any]:
    """Nodes of ``graph`` the precision policy keeps float in int8, as in ONNX's
    (:func:`edgezoo.export.fp32_policy.int8_float_nodes`): the ops a block declares in
    ``fp32_ops``, inside that block, and the softmax with the chain of element-wise ops feeding it; and every op
    of a :class:`~edgezoo.export.xnnpack_rewrites.ChannelLayerNorm`, as the native layer norm it replaces."""
    from edgezoo.blocks.linear_attention import fp32_regions
    from edgezoo.export.xnnpack_rewrites import ChannelLayerNorm

    regions = fp32_regions(model)
    norms = {name for name, m in model.named_modules() if isinstance(m, ChannelLayerNorm)}
    keep: list[Any] = []
    for node in graph.graph.nodes:
        scopes = [path for path, _ in node.meta.get("nn_module_stack", {}).values()]
        if node.op == "call_function" and norms.intersection(scopes):  # a layer norm stays float, as the native one
            keep.append(node)
            continue
        op = _POLICY_OPS.get(_op(node))
        if op is None:
            continue
        if any(op in regions.get(scope, ()) for scope in scopes):
            keep.append(node)
        if op == "softmax":
            todo = [node.args[0]]
            while todo:
                feeder = todo.pop()
                if isinstance(feeder, torch.fx.Node) and _op(feeder) in _SOFTMAX_FEEDERS:
                    keep.append(feeder)
                    todo.extend(feeder.args)
    return list(dict.fromkeys(keep))


def _quantizer(model: nn.Module, job: ExportJob, fallback: frozenset[str] = frozenset(),
               forced: frozenset[str] = frozenset()) -> Any:
    """ExecuTorch's ``XNNPACKQuantizer`` (symmetric int8, per-channel weights) plus two edgezoo rules.

    * The precision policy: the nodes of :func:`_float_nodes` are marked annotated-and-empty before
      the quantizer runs, so they stay float (the quantizer skips annotated nodes). The stock
      quantizer annotates ``add``/``mul``, so the attention logits (``q @ k + bias``) would reach the
      softmax as int8 (EfficientViT-M0 on digits: 95.7% top-1 agreement that way, 96.1% without).
    * Constant padding shares its input's quantisation parameters. The stock quantizer leaves
      ``pad`` unannotated, so a pad whose input is quantised but whose output reaches the next
      quantised op through views (CGA's window partition: pad, 6-D view, permute, reshape) is
      claimed by XNNPACK with a quantised input and a float output, and the runtime refuses the
      program ("Failed to create StaticConstantPad node ... xnn_status_invalid_parameter"). With
      shared parameters (exact: the pad value 0 is representable) it is an int8 pad XNNPACK runs,
      and the views after it share them too.

    ``fallback``: names of further nodes to keep float (the sensitivity fallback's choice,
    :mod:`edgezoo.export.pt2e_fallback`). ``forced``: convs and linears to annotate int8 on their own when
    the stock rules leave them alone (:func:`_requantize`).
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils import propagate_annotation
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec
    from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

    pads = (torch.ops.aten.pad.default, torch.ops.aten.constant_pad_nd.default)

    def constant_zero_pad(node: Any) -> bool:
        if node.target == torch.ops.aten.constant_pad_nd.default:
            return (node.args[2] if len(node.args) > 2 else 0.0) == 0
        mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
        value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value")
        return mode == "constant" and value in (None, 0)

    class EdgezooXnnpackQuantizer(XNNPACKQuantizer):
        def annotate(self, graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
            floats = _float_nodes(graph, model)
            floats += [n for n in graph.graph.nodes if n.name in fallback and n not in floats]
            for node in floats:
                node.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(_annotated=True)
            job.notes["float_ops"] = dict(sorted(Counter(_op(n) for n in floats).items()))
            graph = super().annotate(graph)
            for node in graph.graph.nodes:
                if node.op != "call_function" or node.target not in pads or Q_ANNOTATION_KEY in node.meta:
                    continue
                prev = node.args[0]
                annotation = prev.meta.get(Q_ANNOTATION_KEY) if isinstance(prev, torch.fx.Node) else None
                if annotation is None or annotation.output_qspec is None or not constant_zero_pad(node):
                    continue
                shared = SharedQuantizationSpec(prev)
                node.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(input_qspec_map={prev: shared},
                                                                     output_qspec=shared, _annotated=True)
            for node in graph.graph.nodes:
                if node.name in forced and Q_ANNOTATION_KEY not in node.meta:
                    _annotate_weighted(node, self.global_config)
            propagate_annotation(graph)  # views after an annotated pad share its parameters too
            return graph

    return EdgezooXnnpackQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))


def _annotate_weighted(node: Any, config: Any) -> None:
    """Annotate a conv or linear int8 on its own, as the stock quantizer does: its input, its per-channel
    weight, its bias and its output."""
    from torchao.quantization.pt2e.quantizer import (
        QuantizationAnnotation,
        get_bias_qspec,
        get_input_act_qspec,
        get_output_act_qspec,
        get_weight_qspec,
    )
    from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

    qspecs = {node.args[0]: get_input_act_qspec(config), node.args[1]: get_weight_qspec(config)}
    if len(node.args) > 2 and isinstance(node.args[2], torch.fx.Node):
        qspecs[node.args[2]] = get_bias_qspec(config)
    node.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(input_qspec_map=qspecs,
                                                         output_qspec=get_output_act_qspec(config), _annotated=True)


def _untie_weights(graph: torch.fx.GraphModule) -> int:
    """Give every conv/linear call its own copy of a weight or bias it shares with another call.

    A module applied twice (CBAM's channel MLP runs on the mean- and the max-pooled map) is one
    weight and bias read by two convs; the XNNPACK quantizer marks them annotated with the first
    conv and skips the second, which stays a float conv between int8 tensors that XNNPACK claims
    and then refuses at load time ("Failed to create convolution node ... xnn_status_invalid_parameter").
    With its own copies each conv is int8. Returns the number of copies made.
    """
    from edgezoo.export.pt2e_fallback import WEIGHTED_OPS

    params = dict(graph.named_parameters())
    count = 0
    for node in list(graph.graph.nodes):
        if node.op != "get_attr":
            continue
        uses = [(u, i) for u in node.users if u.op == "call_function" and u.target in WEIGHTED_OPS
                for i in (1, 2) if len(u.args) > i and u.args[i] is node]
        for user, index in uses[1:]:
            count += 1
            name = f"_edgezoo_untied_{count}"
            tensor = params[node.target] if node.target in params else graph.get_buffer(node.target)
            graph.register_buffer(name, tensor.detach().clone())
            with graph.graph.inserting_before(user):
                twin = graph.graph.get_attr(name)
            twin.meta = dict(node.meta)
            args = list(user.args)
            args[index] = twin
            user.args = tuple(args)
    if count:
        graph.graph.lint()
        graph.recompile()
    return count


def _convert(job: ExportJob, model: nn.Module, x: torch.Tensor, batches: list[torch.Tensor],
             fallback: frozenset[str] = frozenset(), forced: frozenset[str] = frozenset(),
             known: dict[tuple, dict] | None = None) -> GraphModule:
    """PT2E int8: annotate with the XNNPACK quantizer (``fallback`` nodes float, ``forced`` convs and linears
    int8), calibrate on ``batches``, convert (the converted graph keeps its convs' and linears' float weights
    in ``meta``, for the fallback's ranking). ``known``: observer statistics of earlier graphs of ``model``
    (:func:`edgezoo.export.pt2e_fallback.calibrate`), added to."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edgezoo.export.pt2e_fallback import FLOAT_WEIGHTS, calibrate, float_weights

    quantizer = _quantizer(model, job, fallback, forced)
    start = time.perf_counter()
    graph = torch.export.export(model, (x,)).module()
    job.notes["untied_tensors"] = _untie_weights(graph)
    originals = float_weights(graph)  # the fallback's ranking scores float weights too
    prepared = prepare_pt2e(graph, quantizer)
    job.notes["prepare_s"] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    calibrate(prepared, batches, known)
    job.notes["calibrate_s"] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    converted = convert_pt2e(prepared)
    converted.meta[FLOAT_WEIGHTS] = originals
    converted.meta[_FLOAT_OPS] = job.notes["float_ops"]
    job.notes["convert_s"] = round(time.perf_counter() - start, 2)
    return converted


def _fallback(job: ExportJob, model: nn.Module, converted: GraphModule, batches: list[torch.Tensor],
              ) -> tuple[Fallback | None, list[torch.Tensor], torch.Tensor | None]:
    """The ``int8_fallback`` option: rank ``converted``'s activations on the first calibration ``batches``;
    the ranking (``None`` when the option is 0), and the batches and float logits it ran on."""
    from edgezoo.export.int8_fallback import rank
    from edgezoo.export.pt2e_fallback import Switchboard
    from edgezoo.export.quantize import FALLBACK_IMAGES

    setting = fallback_setting(job)
    if setting == 0:
        return None, [], None
    batches = batches[:max(FALLBACK_IMAGES, job.batch) // job.batch]
    with torch.no_grad():
        reference = torch.cat([model(b) for b in batches])
    board = Switchboard(converted, batches, reference)
    fb = rank(board, board.tensors, None if setting == "auto" else setting, len(batches) * job.batch, job.log,
              floor=AUTO_FLOOR)
    return fb, batches, reference


def _requantize(job: ExportJob, model: nn.Module, x: torch.Tensor, batches: list[torch.Tensor],
                nodes: frozenset[str], known: dict[tuple, dict] | None = None,
                ) -> tuple[GraphModule, frozenset[str], set[str]]:
    """Quantise again with ``nodes`` float; the graph, the nodes left float, and the convs and linears
    quantised after all.

    XNNPACK refuses a float weight on an int8 input (it takes ``dequantize -> conv`` for an int8 conv), so a
    conv or linear whose input stays int8 while its weight is float
    (:func:`edgezoo.export.pt2e_fallback.int8_fed_weighted`) is quantised like the rest, each only once.
    One of ``nodes`` leaves ``nodes``. One outside them is float because the stock quantizer annotates a
    conv whose only user is a ReLU together with it, and that ReLU is float: it is annotated int8 on its
    own, its ReLU staying float (digits-trained EfficientViT-M0 at 128 px: the fallback chose a ReLU after
    a stem conv, and the runtime refused the program: "Failed to create convolution node").
    """
    from edgezoo.export.pt2e_fallback import int8_fed_weighted

    converted, forced, handled = _convert(job, model, x, batches, nodes, known=known), frozenset(), set()
    while (stuck := int8_fed_weighted(converted)) - handled:
        handled |= stuck
        nodes, forced = nodes - stuck, forced | (stuck - nodes)
        converted = _convert(job, model, x, batches, nodes, forced, known)
    return converted, nodes, handled


def _quantize(job: ExportJob, model: nn.Module, x: torch.Tensor) -> tuple[GraphModule, GraphModule | None]:
    """PT2E int8 with the sensitivity fallback: quantise, rank, and quantise again with the chosen ops float.
    Returns the graph to lower and, when the fallback left ops float, the all-int8 one (:func:`build_pte`
    lowers it instead if the runtime refuses the first).

    ``auto`` checks the graph it builds: the ranking scores each activation with the others int8 as
    first calibrated, but quantising again moves ranges and unannotates the ops around a choice, so
    the real error can differ (digits-trained EfficientViT-B0 at 128 px: the top activation promised
    0.20 of the all-int8 error and gave 0.79). While the graph made misses :data:`TARGET`, the next
    ranked activation joins, up to :data:`MAX_FRACTION` of them. The best graph made is kept if it cuts the
    error by at least :data:`MIN_CUT`, else none: float ops cost time, and FocalNet edge-XS at 128 px, whose
    int8 error is 5e-4 of the logits' energy, gained 4% from 7 float activations.
    """
    from edgezoo.export.int8_fallback import MAX_FRACTION, TARGET
    from edgezoo.export.pt2e_fallback import float_node_names, logit_error, run_all

    if job.calibration is None:
        raise ValueError("int8 export needs calibration data")
    images = job.calibration.calib
    batches = [images[i:i + job.batch].float() for i in range(0, len(images) - job.batch + 1, job.batch)]
    if not batches:
        raise ValueError(f"int8 export needs at least {job.batch} calibration images (the static batch)")
    known: dict[tuple, dict] = {}  # observer statistics: every graph tried calibrates only what is new
    plain = _convert(job, model, x, batches, known=known)
    start = time.perf_counter()
    fb, ranked, reference = _fallback(job, model, plain, batches)
    converted = plain
    if fb is not None and fb.tensors:
        auto = parse_fallback(job.options.get("int8_fallback", "auto")) == "auto"
        limit = max(len(fb.tensors), int(MAX_FRACTION * fb.candidates)) if auto else len(fb.tensors)
        best: tuple[float, int, Any] | None = None
        tried: list[list[float]] = []  # [activations float, logit error of the graph made]
        for count in range(len(fb.tensors), limit + 1):
            if count > len(fb.tensors) and fb.ranked[count - 1][1] <= 0:
                break  # no activation left that helps on its own
            tensors = [t for t, _ in fb.ranked[:count]]
            made = _requantize(job, model, x, batches, frozenset(float_node_names(plain, tensors)), known)
            error = logit_error(run_all(made[0], ranked), reference)  # measured on the graph made
            tried.append([count, error])
            if best is None or error < best[0]:
                best = (error, count, made)
            if error <= TARGET * fb.error_int8:
                break
        if best[0] > (1.0 - MIN_CUT) * fb.error_int8:  # no graph made pays for its float ops
            best = (fb.error_int8, 0, (plain, frozenset(), set()))
        error, count, (converted, floats, kept) = best
        fb.tensors, fb.error_after = [t for t, _ in fb.ranked[:count]], error
        fb.seconds = time.perf_counter() - start  # the ranking and the graphs made
        fb.nodes = [n for n in float_node_names(plain, fb.tensors) if n not in kept]
        job.notes["int8_fallback"] = notes = fb.as_notes()
        if kept:
            notes["int8_fed_kept_int8"] = sorted(kept)
        notes["tried"] = tried
        job.log(f"{job.name}: int8 fallback kept {len(fb.tensors)} of {fb.candidates} activations "
                f"float ({len(floats)} ops; logit error {fb.error_int8:.3g} -> {error:.3g}, "
                f"{fb.seconds:.0f} s)")
    elif fb is not None:
        job.notes["int8_fallback"] = fb.as_notes()
    _graph_notes(job, converted)
    job.notes["calibration_batches"] = len(batches)
    return converted, None if converted is plain else plain


def _graph_notes(job: ExportJob, graph: GraphModule) -> None:
    """The notes of the graph that is lowered (the search quantises several): its float ops and int8 tensors."""
    job.notes["float_ops"] = graph.meta[_FLOAT_OPS]
    quant = {"quantize_per_tensor", "quantize_per_channel"}
    job.notes["quantized_tensors"] = sum(
        1 for n in graph.graph.nodes
        if n.op == "call_function" and getattr(n.target, "__name__", "").split(".")[0] in quant
    )


def _refused(buffer: bytes) -> str | None:
    """Why the ExecuTorch runtime here refuses to load ``buffer``'s ``forward`` (``None``: it loads, or there
    is no runtime to ask). XNNPACK checks each node's quantisation only when the method is initialised."""
    try:
        runtime = _runtime()
    except NotRunnable:
        return None
    try:
        runtime.load_program(buffer).load_method("forward")
    except Exception as err:  # the pybindings raise RuntimeError with the runtime's error code
        return f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}"
    return None


def _drop_fallback(job: ExportJob, plain: GraphModule, why: str) -> None:
    """Notes for the all-int8 graph lowered instead of the fallback's, which the runtime refused (``why``)."""
    notes = job.notes.get("int8_fallback", {})
    job.warn(f"the runtime refused the program with the int8 fallback's {len(notes.get('nodes', []))} float ops "
             f"({why}); exported all-int8 instead")
    notes.update(refused=why, refused_tensors=notes.get("tensors", []), tensors=[], nodes=[],
                 error_after=notes.get("error_int8"))
    notes.pop("int8_fed_kept_int8", None)
    _graph_notes(job, plain)


def _delegation(edge: Any, job: ExportJob) -> None:
    """Record in ``job.notes`` how much of the graph XNNPACK took."""
    graph = edge.exported_program().graph_module
    delegates = sum(1 for n in graph.graph.nodes
                    if n.op == "call_function" and "executorch_call_delegate" in str(n.target))
    left: Counter[str] = Counter()
    for n in graph.graph.nodes:
        if n.op != "call_function":
            continue
        target = str(getattr(n.target, "__name__", n.target))
        if "executorch_call_delegate" in target or target == "getitem":
            continue
        left[target] += 1
    job.notes["delegates"] = delegates
    try:
        from executorch.devtools.backend_debug import get_delegation_info

        job.notes["delegated_ops"] = int(get_delegation_info(graph).num_delegated_nodes)
    except Exception:  # the devtools helper is optional; the counts below still hold
        pass
    job.notes["non_delegated_ops"] = sum(left.values())
    job.notes["non_delegated"] = dict(sorted(left.items()))
    if left:
        job.warn(f"{sum(left.values())} op(s) not delegated to XNNPACK (portable kernels): "
                 f"{', '.join(sorted(left))}")


def build_pte(job: ExportJob, path: Path) -> Path:
    """Export, (int8: quantise,) lower to XNNPACK and write the ``.pte`` of ``job`` at ``path``.

    int8 with float ops from the fallback: if the runtime refuses the program (:func:`_refused`), the
    all-int8 graph is lowered instead and the notes (``int8_fallback.refused``) and a warning say so.
    """
    x = job.example_input()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, plain = _xnnpack_modules(job.model, job), None
        if job.precision == "int8":
            job.log(f"{job.name}: PT2E int8 calibration")
            model, plain = _quantize(job, model, x)
        buffer = _lower(job, model, x, start)
        why = _refused(buffer) if plain is not None else None
        if why:  # a safety net for what _requantize's checks miss: XNNPACK checks quantisation only at load
            _drop_fallback(job, plain, why)
            buffer = _lower(job, plain, x, time.perf_counter())
    path.write_bytes(buffer)
    return path


def _lower(job: ExportJob, model: nn.Module, x: torch.Tensor, start: float) -> bytes:
    """``model`` exported, lowered to XNNPACK and serialised (stage seconds in ``job.notes``, from ``start``)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from edgezoo.export.xnnpack_decompositions import decompositions, fold_constants, int8_decompositions
    from edgezoo.export.xnnpack_rewrites import rewrite_passes

    program = torch.export.export(model, (x,))
    if job.precision != "int8":
        program = fold_constants(program.run_decompositions(decompositions()))
    else:  # folding might dequantise weights (the pass skips only edge-dialect quantise ops)
        program = program.run_decompositions(int8_decompositions())
    job.notes["export_s"] = round(time.perf_counter() - start, 2)
    job.log(f"{job.name}: lowering to XNNPACK")
    start = time.perf_counter()
    edge = to_edge_transform_and_lower(program, transform_passes=rewrite_passes(),
                                       partitioner=[XnnpackPartitioner()], constant_methods=_constant_methods(job))
    job.notes["lower_s"] = round(time.perf_counter() - start, 2)
    _delegation(edge, job)
    start = time.perf_counter()
    buffer = edge.to_executorch().buffer
    job.notes["to_executorch_s"] = round(time.perf_counter() - start, 2)
    return buffer


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata embedded in a ``.pte`` written by :class:`ExecutorchFormat` (``{}`` if it has none)."""
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(Path(path))
    if METADATA_METHOD not in program.method_names:
        return {}
    return json.loads(program.load_method(METADATA_METHOD).execute([])[0])


_METHODS: dict[str, Any] = {}


def _runtime() -> Any:
    try:
        from executorch.runtime import Runtime

        return Runtime.get()
    except Exception as err:  # ImportError, or the pybindings failing to load
        raise NotRunnable(f"the ExecuTorch runtime cannot be loaded here ({type(err).__name__}: {err})") from err


@register_format
class ExecutorchFormat(Format):
    name = "executorch"
    suffix = ".pte"
    extra = "executorch"
    modules = ("executorch",)
    precisions = ("fp32", "int8")
    supports_dynamic = False
    options: ClassVar[dict[str, Option]] = {
        "int8_fallback": Option("auto", "int8: activations left float by sensitivity on the calibration images "
                                        "(their producing and consuming ops run fp32): auto (shortest set that "
                                        "halves the logit error, <= 5% of them; none when that error is "
                                        f"<= {AUTO_FLOOR:g} or the weights are random), a count, or 0",
                                type=parse_fallback),
    }
    parity = "ExecuTorch runtime (XNNPACK) against PyTorch"
    description = "ExecuTorch .pte lowered to XNNPACK, fp32 / int8 (PT2E, XNNPACK quantizer)"

    def convert(self, job: ExportJob) -> Path:
        return build_pte(job, job.work_dir / f"{job.stem}{self.suffix}")

    def run(self, path: Path, inputs: np.ndarray, job: ExportJob) -> np.ndarray:
        key = f"{path}:{Path(path).stat().st_mtime_ns}"
        if key not in _METHODS:
            runtime = _runtime()
            _METHODS.clear()
            program = runtime.load_program(Path(path))
            _METHODS[key] = (program, program.load_method("forward"))  # the program must outlive its method
        _, method = _METHODS[key]
        x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
        out = method.execute([x])[0]
        return out.detach().float().numpy().copy()
