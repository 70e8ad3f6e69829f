"""Edge-dialect rewrites that let XNNPACK take the whole graph: each replaces an op its partitioner
refuses by ops it takes, with the same values.

Every op the XNNPACK partitioner refuses runs in ExecuTorch's portable kernels and cuts the graph:
the EfficientViT-M0 deploy form went to 73 delegates with 150 portable ops between them (the
lowering cost 70 s on two cores, and each boundary costs a copy at run time). What was left out,
and its rewrite (``torch.export`` writes these ops for plain PyTorch code):

* ``expand_copy`` that keeps its input's shape (``matmul``'s decomposition broadcasts even when
  the batch dims already agree): removed (ExecuTorch's own ``RemoveNoopExpandCopyPass``);
* ``split_with_sizes_copy`` (``Tensor.split``): one ``slice_copy`` per piece, in float graphs only:
  on an int8 tensor the slices are delegated and the program then fails at run time ("Failed to
  resize output tensor for XNNExecutor"; SHViT-S1 and FocalNet edge-XS, ExecuTorch 1.5.1; on
  EfficientViT-M0 it runs but returns constant logits), so a quantised split stays a portable op.
  EfficientViT-M0's int8 program keeps 21 of them between 22 delegates; computing each head's q, k
  and v with its own conv instead (zero-padded weights over the input and the previous head's
  output) made it one delegate, but no faster (128 px, digits weights: p50 0.97 vs 0.96 ms, min 0.65
  vs 0.55 ms; session 11, a variant written by hand and not kept), so the model keeps its splits;
* ``select_copy`` (``x[:, i]``): ``slice_copy`` of width 1, then ``view_copy`` without the dim;
* ``mean.dim`` over H, W of a 4-D tensor without ``keepdim``: with ``keepdim``, then ``view_copy``;

LayerNorm stays in the portable kernels: written in XNNPACK's ops (its means as ``mean.dim`` over a
``(rows, 1, C, 1)`` view) it measured slower, FocalNet edge-XS 0.40 -> 0.56 ms at 32 px.
Measured at 32 px, 1 thread (EPYC): EfficientViT-M0 73 -> 1 delegates, 0.86 -> 0.72 ms, lowering
40 -> 29 s; EfficientViT-B0 14 -> 6 delegates, 0.87 -> 0.71 ms; SHViT-S1 46 -> 10, FocalNet edge-XS
31 -> 23 (both within noise of their latency). Outputs are unchanged (the same kernels on the same
values; tests/test_export_executorch.py compares them).

The passes run in ``to_edge_transform_and_lower(transform_passes=...)``, before partitioning.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
from torch.fx import GraphModule, Node

__all__ = ["rewrite_passes"]


def _ops() -> Any:
    from executorch.exir.dialects._ops import ops as exir_ops

    return exir_ops.edge.aten


def _val(node: Any) -> torch.Tensor | None:
    return node.meta.get("val") if isinstance(node, Node) else None


def _call(graph: Any, target: Any, args: tuple, like: torch.Tensor) -> Node:
    """A new node calling ``target``, with a fake value of ``target`` on the args' fake values."""
    node = graph.call_function(target, args)
    fake = tuple(_val(a) if isinstance(a, Node) else a for a in args)
    with like.fake_mode:
        node.meta["val"] = target(*fake)
    return node


def _dequantized(node: Any) -> bool:
    """``node`` is a ``dequantize_*`` op: its consumer works on an int8 tensor in the delegate."""
    return isinstance(node, Node) and "dequantize" in str(getattr(node.target, "__name__", node.target))


def _split(graph: Any, node: Node, aten: Any) -> bool:
    x, sizes = node.args[0], node.args[1]
    if _dequantized(x):  # int8: XNNPACK's slices of a quantised split break the program at run time
        return False
    dim = node.args[2] if len(node.args) > 2 else 0
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    for user in list(node.users):
        if user.target is not operator.getitem:
            return False
    with graph.inserting_before(node):
        for user in list(node.users):
            i = user.args[1]
            piece = _call(graph, aten.slice_copy.Tensor, (x, dim, starts[i], starts[i] + sizes[i]), _val(x))
            user.replace_all_uses_with(piece)
            graph.erase_node(user)
    return True


def _select(graph: Any, node: Node, aten: Any) -> bool:
    x, dim, index = node.args
    shape = list(_val(node).shape)
    size = _val(x).shape[dim]
    index = index % size
    with graph.inserting_before(node):
        piece = _call(graph, aten.slice_copy.Tensor, (x, dim, index, index + 1), _val(x))
        out = _call(graph, aten.view_copy.default, (piece, shape), _val(x))
    node.replace_all_uses_with(out)
    return True


def _mean(graph: Any, node: Node, aten: Any) -> bool:
    x_val, dims = _val(node.args[0]), node.args[1] if len(node.args) > 1 else None
    keepdim = len(node.args) > 2 and bool(node.args[2])
    if keepdim or x_val is None or x_val.dim() != 4 or dims is None or node.kwargs.get("dtype") is not None:
        return False
    if sorted(d % 4 for d in dims) != [2, 3]:  # only the global pool over H, W
        return False
    x = node.args[0]
    with graph.inserting_before(node):
        kept = _call(graph, aten.mean.dim, (x, [2, 3], True), _val(x))
        out = _call(graph, aten.view_copy.default, (kept, list(_val(node).shape)), _val(x))
    node.replace_all_uses_with(out)
    return True


def _rewrite(gm: GraphModule) -> Any:
    from torch.fx.passes.infra.pass_base import PassResult

    aten = _ops()
    rules: dict[Any, Callable[..., bool]] = {
        aten.split_with_sizes_copy.default: _split, aten.select_copy.int: _select, aten.mean.dim: _mean,
    }
    graph, changed = gm.graph, False
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        if node.target in rules and rules[node.target](graph, node, aten):
            graph.erase_node(node)
            changed = True
    graph.eliminate_dead_code()
    graph.lint()
    gm.recompile()
    return PassResult(gm, changed)


def rewrite_passes() -> list[Any]:
    """The passes for ``to_edge_transform_and_lower(transform_passes=...)``."""
    from executorch.backends.xnnpack._passes.remove_noop_expand_copy_pass import RemoveNoopExpandCopyPass

    return [RemoveNoopExpandCopyPass(), _rewrite]
