"""The edgezoo ops as ONNX plugin nodes (domain ``edgezoo``), for TensorRT's plugin path.

:func:`translation_table` is a ``custom_translation_table`` for ``torch.onnx.export(dynamo=True)``:
each ``torch.ops.edgezoo.*`` node becomes one node whose op type is the TensorRT plugin name
(:data:`PLUGINS`) in domain ``edgezoo``, with the op's plain arguments as attributes and
``plugin_namespace="edgezoo"`` (TensorRT's ONNX parser looks a plugin up by op type and that
namespace). Ops with a variable arity or mode get one plugin per case (``focal_aggregate2``,
``channel_attention_eca``...), since a TensorRT plugin has a fixed signature.

The default ONNX export does not use these: it runs the blocks' reference path (standard ONNX ops
only), so onnxruntime, CoreML and ExecuTorch keep running. For an ``ExportedProgram`` that holds the
ops, :func:`edgezoo.kernels.decompositions` gives the standard-op translation.

:func:`reference_session` runs a plugin graph in onnxruntime with each plugin node given the op's
reference semantics (onnxruntime-extensions Python custom ops calling the torch reference), which is
how the plugin graphs are checked against the decomposed graph without TensorRT.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from edgezoo.kernels.op_cga import cga_attention_reference
from edgezoo.kernels.op_channel_attention import channel_attention_reference
from edgezoo.kernels.op_focal import MAX_LEVELS, focal_aggregate_reference
from edgezoo.kernels.op_linear_attention import linear_attention_reference

__all__ = ["DOMAIN", "PLUGINS", "Plugin", "plugin_nodes", "reference_session", "register_schemas",
           "translation_table"]

DOMAIN = "edgezoo"
_FLOAT_TYPES = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"]
#: onnxruntime-extensions serves Python custom ops in this domain only.
_PYOP_DOMAIN = "ai.onnx.contrib"


@dataclass(frozen=True)
class Plugin:
    """One plugin: its inputs, attributes (name -> ``"float"`` or ``"int"``) and reference semantics
    (``reference(inputs, attrs)`` on torch tensors)."""

    name: str
    inputs: tuple[str, ...]
    attrs: dict[str, str]
    reference: Callable[[list[torch.Tensor], dict[str, Any]], torch.Tensor]


def _plugins() -> dict[str, Plugin]:
    plugins = [
        Plugin("linear_attention", ("q", "k", "v"),
               {"eps": "float", "scale": "float", "mean": "int", "magnitude": "int"},
               lambda t, a: linear_attention_reference(*t, a["eps"], a["scale"], bool(a["mean"]),
                                                       bool(a["magnitude"]))),
        Plugin("cga_attention", ("q", "k", "v", "bias"), {}, lambda t, a: cga_attention_reference(*t)),
        Plugin("channel_attention_eca", ("x", "w"), {},
               lambda t, a: channel_attention_reference(t[0], t[1], None, None, None, "eca")),
    ]
    for mode in ("se", "cbam"):
        plugins.append(Plugin(f"channel_attention_{mode}", ("x", "w1", "b1", "w2", "b2"), {},
                              lambda t, a, mode=mode: channel_attention_reference(*t, mode)))
    for n in range(1, MAX_LEVELS + 1):
        plugins.append(Plugin(f"focal_aggregate{n}", (*(f"level{i}" for i in range(n)), "gates", "ctx_global"),
                              {"scale": "float"},
                              lambda t, a: focal_aggregate_reference(list(t[:-2]), t[-2], t[-1], a["scale"])))
    return {p.name: p for p in plugins}


#: plugin name (ONNX op type, TensorRT plugin name) -> :class:`Plugin`.
PLUGINS: dict[str, Plugin] = _plugins()
_REGISTERED: set[str] = set()


def register_schemas() -> None:
    """Register an ONNX schema for every plugin (once per process): onnxscript needs one to emit the
    node, and ``onnx.checker`` then validates the nodes' inputs and attributes."""
    import onnx
    from onnx.defs import OpSchema

    kinds = {"float": OpSchema.AttrType.FLOAT, "int": OpSchema.AttrType.INT}
    for plugin in PLUGINS.values():
        if plugin.name in _REGISTERED or onnx.defs.has(plugin.name, DOMAIN):
            _REGISTERED.add(plugin.name)
            continue
        attrs = [OpSchema.Attribute(n, kinds[k], f"{plugin.name} {n}") for n, k in plugin.attrs.items()]
        attrs.append(OpSchema.Attribute("plugin_namespace", OpSchema.AttrType.STRING, "TensorRT plugin namespace"))
        schema = OpSchema(plugin.name, DOMAIN, 1, doc=f"edgezoo fused op {plugin.name} (TensorRT plugin)",
                          inputs=[OpSchema.FormalParameter(n, "T") for n in plugin.inputs],
                          outputs=[OpSchema.FormalParameter("out", "T")],
                          type_constraints=[("T", _FLOAT_TYPES, "float tensors")], attributes=attrs)
        onnx.defs.register_schema(schema)
        _REGISTERED.add(plugin.name)


def _node(name: str, inputs: list[Any], **attrs: Any) -> Any:
    from onnxscript.values import Op, Opset

    return Op(Opset(DOMAIN, 1), name)(*inputs, plugin_namespace=DOMAIN, **attrs)


def _linear_attention(q, k, v, eps: float, scale: float, mean: bool, magnitude: bool):
    return _node("linear_attention", [q, k, v], eps=float(eps), scale=float(scale), mean=int(mean),
                 magnitude=int(magnitude))


def _focal_aggregate(levels, gates, ctx_global, scale: float):
    return _node(f"focal_aggregate{len(levels)}", [*levels, gates, ctx_global], scale=float(scale))


def _channel_attention(x, w1, b1, w2, b2, mode: str):
    if mode == "eca":
        return _node("channel_attention_eca", [x, w1])
    return _node(f"channel_attention_{mode}", [x, w1, b1, w2, b2])


def _cga_attention(q, k, v, bias):
    return _node("cga_attention", [q, k, v, bias])


def translation_table() -> dict:
    """``custom_translation_table`` for ``torch.onnx.export``: every edgezoo op -> its plugin node."""
    register_schemas()
    ops = torch.ops.edgezoo
    return {ops.linear_attention.default: _linear_attention, ops.focal_aggregate.default: _focal_aggregate,
            ops.channel_attention.default: _channel_attention, ops.cga_attention.default: _cga_attention}


def plugin_nodes(proto: Any) -> list[Any]:
    """The plugin nodes (domain ``edgezoo``) of an ONNX ``ModelProto``."""
    return [n for n in proto.graph.node if n.domain == DOMAIN]


_PYOPS: set[str] = set()


def _define_pyop(plugin: Plugin) -> None:
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    types = {"float": PyCustomOpDef.dt_float, "int": PyCustomOpDef.dt_int64}
    attrs = {n: types[k] for n, k in plugin.attrs.items()} | {"plugin_namespace": PyCustomOpDef.dt_string}

    def run(*arrays: np.ndarray, **values: Any) -> np.ndarray:
        values.pop("plugin_namespace", None)
        with torch.no_grad():
            out = plugin.reference([torch.from_numpy(np.ascontiguousarray(a)) for a in arrays], values)
        return out.numpy()

    onnx_op(op_type=plugin.name, inputs=[PyCustomOpDef.dt_float] * len(plugin.inputs),
            outputs=[PyCustomOpDef.dt_float], attrs=attrs)(run)
    _PYOPS.add(plugin.name)


def reference_session(proto: Any) -> Any:
    """An onnxruntime CPU session of a plugin graph (fp32) where each plugin node runs the op's torch
    reference: the nodes move to onnxruntime-extensions' Python custom-op domain (a copy of ``proto``)."""
    import onnx
    import onnxruntime as ort
    from onnxruntime_extensions import get_library_path

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    for node in plugin_nodes(model):
        if node.op_type not in _PYOPS:
            _define_pyop(PLUGINS[node.op_type])
        node.domain = _PYOP_DOMAIN
    for opset in model.opset_import:
        if opset.domain == DOMAIN:
            opset.domain = _PYOP_DOMAIN
    opts = ort.SessionOptions()
    opts.register_custom_ops_library(get_library_path())
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
