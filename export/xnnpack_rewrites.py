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
  vs 0.55 ms; 2026-12-02, a variant written by hand and not kept), so the model keeps its splits;
* ``select_copy`` (``x[:, i]``): ``slice_copy`` of width 1, then ``view_copy`` without the dim;
* ``mean.dim`` over H, W of a 4-D tensor without ``keepdim``: with ``keepdim``, then ``view_copy``;
* ``unsqueeze_copy`` / ``squeeze_copy`` (ECA's gate): ``view_copy`` to the same shape;
* reductions (layer and group norms, sums, means and maxima along any dims), ``elu``, ``reciprocal`` and
  small integer powers: decomposed before lowering into ops it takes
  (:mod:`edgezoo.export.xnnpack_decompositions`).

Measured at 32 px, 1 thread (EPYC): EfficientViT-M0 73 -> 1 delegates, 0.86 -> 0.72 ms, lowering
40 -> 29 s; EfficientViT-B0 14 -> 6 delegates, 0.87 -> 0.71 ms; SHViT-S1 46 -> 10, FocalNet edge-XS
31 -> 23 (both within noise of their latency). Outputs are unchanged (the same kernels on the same
values; tests/test_export_executorch.py compares them).

The passes run in ``to_edge_transform_and_lower(transform_passes=...)``, before partitioning.

Two more refusals are fixed at module level, before ``torch.export`` (constants such as a conv's
weights can be made there, not in an edge pass), by :func:`edgezoo.export.executorch._xnnpack_modules`:

* LayerNorm over channels (timm's ``LayerNorm2d``: FocalNet, MALA) has no XNNPACK op, and its
  portable kernel was 27% of FocalNet edge-XS at 128 px (21 norms: 0.34 of 1.27 ms int8, 0.35 of
  1.41 ms fp32; ExecuTorch's profiler, 2026-12-03). :class:`ChannelLayerNorm` is the same function
  with its two channel means as 1x1 convs of weight ``1/C``. An earlier form, with the means as
  ``mean.dim`` over a ``(rows, 1, C, 1)`` view, measured slower (0.40 -> 0.56 ms at 32 px); the conv
  form is faster at both sizes (2026-12-03, digits weights, one run: 128 px fp32 1.83 -> 1.25 ms,
  32 px 0.285 -> 0.251 ms);
* FocalNet's int8 split of its projection (above): :class:`SplitPointwise`.

With both, FocalNet edge-XS lowers to one delegate with no portable op, fp32 and int8.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import GraphModule, Node

__all__ = ["ChannelLayerNorm", "SplitPointwise", "channel_layer_norms", "rewrite_passes", "split_focal_projections",
           "swap_modules"]


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of ``(B, C, H, W)`` (Ba et al., 2016) in ops XNNPACK delegates.

    ``mean`` and the variance are 1x1 convs with weights ``1/C`` (one output channel), then
    ``(x - mean) * rsqrt(var + eps) * weight + bias``: the two-pass variance of ``F.layer_norm``, so the
    values agree to float rounding. The int8 export keeps every op inside it float, as it keeps a
    native layer norm (:func:`edgezoo.export.executorch._float_nodes`).
    """

    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__()
        (chans,) = norm.normalized_shape
        self.eps = float(norm.eps)
        self.register_buffer("average", torch.full((1, chans, 1, 1), 1.0 / chans))
        affine = norm.weight is not None
        self.register_buffer("weight", norm.weight.detach().reshape(1, -1, 1, 1).clone() if affine else None)
        self.register_buffer("bias", norm.bias.detach().reshape(1, -1, 1, 1).clone()
                             if getattr(norm, "bias", None) is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - F.conv2d(x, self.average)
        y = centred * torch.rsqrt(F.conv2d(centred * centred, self.average) + self.eps)
        if self.weight is not None:
            y = y * self.weight
        return y + self.bias if self.bias is not None else y


def channel_layer_norms(model: nn.Module) -> tuple[nn.Module, int]:
    """``model`` with every timm ``LayerNorm2d`` as a :class:`ChannelLayerNorm`: a copy if there are any, else
    ``model`` itself; and how many were swapped."""
    from timm.layers import LayerNorm2d

    names = [name for name, m in model.named_modules() if isinstance(m, LayerNorm2d)]
    return swap_modules(model, names, lambda _, norm: ChannelLayerNorm(norm)), len(names)


class SplitPointwise(nn.Module):
    """A 1x1 conv whose output a block splits along channels, as one conv per piece (the same weights).

    FocalNet's ``f`` projects to query, context and one gate per focal level in one conv; its int8
    output cannot be split inside XNNPACK (see ``split_with_sizes_copy`` above), so each block cut the
    program at a portable split, and query, context and gates shared one int8 scale. As pieces, every
    output is a conv of its own in the delegate with its own scale (FocalNet edge-XS at 128 px,
    digits weights: int8 agreement 99.7 -> 100%). :meth:`edgezoo.blocks.focal.FocalModulation._project`
    takes the tuple.
    """

    def __init__(self, conv: nn.Conv2d, sizes: list[int]) -> None:
        super().__init__()
        if conv.kernel_size != (1, 1) or conv.groups != 1 or sum(sizes) != conv.out_channels:
            raise ValueError(f"SplitPointwise splits an ungrouped 1x1 conv into pieces summing to its "
                             f"{conv.out_channels} output channels, got {conv} and {sizes}")
        self.pieces = nn.ModuleList()
        start = 0
        for size in sizes:
            piece = nn.Conv2d(conv.in_channels, size, 1, bias=conv.bias is not None)
            piece.weight.data.copy_(conv.weight.data[start:start + size])
            if conv.bias is not None:
                piece.bias.data.copy_(conv.bias.data[start:start + size])
            self.pieces.append(piece)
            start += size

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(piece(x) for piece in self.pieces)


def split_focal_projections(model: nn.Module) -> tuple[nn.Module, int]:
    """``model`` with each FocalModulation's ``f`` as a :class:`SplitPointwise` (query, context, one gate
    per level): a copy if there are any, else ``model``; and how many were split."""
    from edgezoo.blocks.focal import FocalModulation

    sizes = {f"{name}.f" if name else "f": [m.dim, m.dim] + [1] * (m.focal_level + 1)
             for name, m in model.named_modules() if isinstance(m, FocalModulation) and isinstance(m.f, nn.Conv2d)}
    return swap_modules(model, list(sizes), lambda name, conv: SplitPointwise(conv, sizes[name])), len(sizes)


def swap_modules(model: nn.Module, names: list[str], make: Callable[[str, nn.Module], nn.Module]) -> nn.Module:
    """A copy of ``model`` with each submodule in ``names`` replaced by ``make(name, it)`` (``model`` if none)."""
    if not names:
        return model
    model = copy.deepcopy(model)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, make(name, getattr(parent, child)))
    return model


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


def _reshape(graph: Any, node: Node, aten: Any) -> bool:
    """``unsqueeze_copy`` / ``squeeze_copy``: a ``view_copy`` to the same shape (ECA's gate); float graphs only,
    as for a split: XNNPACK refuses such a view of an int8 tensor when the program loads."""
    x, out = node.args[0], _val(node)
    if _val(x) is None or out is None or _dequantized(x):
        return False
    with graph.inserting_before(node):
        view = _call(graph, aten.view_copy.default, (x, list(out.shape)), _val(x))
    node.replace_all_uses_with(view)
    return True


def _rewrite(gm: GraphModule) -> Any:
    from torch.fx.passes.infra.pass_base import PassResult

    aten = _ops()
    rules: dict[Any, Callable[..., bool]] = {
        aten.split_with_sizes_copy.default: _split, aten.select_copy.int: _select, aten.mean.dim: _mean,
        aten.unsqueeze_copy.default: _reshape, aten.squeeze_copy.dims: _reshape, aten.squeeze_copy.dim: _reshape,
        aten.squeeze_copy.default: _reshape,
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
