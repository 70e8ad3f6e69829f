"""The precision policy in exported graphs: which nodes stay fp32 in fp16 and float in int8.

Blocks declare it (``TokenMixer.fp32_ops``, :func:`edgezoo.blocks.linear_attention.fp32_regions`);
this module finds the matching nodes of an ONNX graph from the module scopes torch's dynamo
exporter records on every node (``pkg.torch.onnx.name_scopes``), before onnxslim drops that
metadata. Node names survive simplification, so the lists are node names. Every exporter reads
them: the fp16 converter's block list, the int8 quantiser's exclusions, TensorRT's per-layer
precision constraints (TensorRT names layers after ONNX nodes).

Beyond the blocks' own declarations, LayerNormalization nodes (their statistics) stay fp32
everywhere, and in int8 the softmax and the node feeding it stay float.
"""

from __future__ import annotations

import ast
from typing import Any

from torch import nn

__all__ = ["ONNX_OPS", "fp32_nodes", "int8_float_nodes"]

#: ``fp32_ops`` names (torch op names) -> the ONNX op types they export to.
ONNX_OPS: dict[str, tuple[str, ...]] = {
    "matmul": ("MatMul", "Einsum", "Gemm"),
    "sum": ("ReduceSum",),
    "add": ("Add",),
    "sub": ("Sub",),
    "mul": ("Mul",),
    "div": ("Div", "Reciprocal"),
    "pow": ("Pow",),
    "norm": ("ReduceL2", "Pow", "ReduceSum", "Sqrt"),
    "mean": ("ReduceMean",),
    "softplus": ("Softplus",),
    "elu": ("Elu",),
    "softmax": ("Softmax",),
    "layer_norm": ("LayerNormalization", "ReduceMean", "Sub", "Pow", "Sqrt", "Div"),
}

_SCOPES_KEY = "pkg.torch.onnx.name_scopes"


def _scopes(node: Any) -> list[str]:
    for prop in node.metadata_props:
        if prop.key == _SCOPES_KEY:
            try:
                return list(ast.literal_eval(prop.value))
            except (ValueError, SyntaxError):
                return []
    return []


def fp32_nodes(graph_model: Any, model: nn.Module) -> list[str]:
    """Names of the nodes of ``graph_model`` (an ``onnx.ModelProto`` straight from the dynamo
    exporter) that the precision policy keeps in fp32."""
    from edgezoo.blocks.linear_attention import fp32_regions

    regions = {name: {t for op in ops for t in ONNX_OPS.get(op, ())} for name, ops in fp32_regions(model).items()}
    keep = []
    for node in graph_model.graph.node:
        if node.op_type == "LayerNormalization":
            keep.append(node.name)
            continue
        scopes = _scopes(node)
        if any(node.op_type in regions.get(scope, ()) for scope in scopes):
            keep.append(node.name)
    return keep


def int8_float_nodes(graph_model: Any, fp32: list[str]) -> list[str]:
    """Nodes the int8 quantiser leaves float: the fp32 policy's, every Softmax and its producer."""
    producers = {out: node.name for node in graph_model.graph.node for out in node.output}
    keep = list(fp32)
    for node in graph_model.graph.node:
        if node.op_type == "Softmax":
            keep.append(node.name)
            keep.extend(producers[i] for i in node.input if i in producers)
    return sorted(set(keep), key=keep.index)
