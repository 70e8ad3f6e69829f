"""ATen decompositions that let XNNPACK take ops it has no kernel for, applied to fp32 programs before lowering.

Every op the XNNPACK partitioner refuses runs in ExecuTorch's portable kernels (unoptimised, single-threaded
C++ on a phone) and cuts the program into delegates with a copy at each boundary. These are the refusals the
zoo's blocks meet, each written in ops the partitioner takes, with the same values to float rounding:

* **Reductions.** XNNPACK reduces only with a mean over H, W of a 4-D map and with pools. A sum, mean or max
  over a contiguous run of dims becomes a pool on the map (over H and/or W), a global pool over a
  ``(rows, 1, n, 1)`` view (a trailing run) or a 1x1 conv of weight ``1 / n`` (over channels), a sum being
  ``n`` times the mean (:func:`_reduce`): LiteMLA's ``k.sum(-1)``, MALA's key and value means, CBAM's global
  max and channel mean, coordinate attention's and ELA's strip means, FLatten's norms. A max over channels
  (CBAM, triplet attention) stays portable: faster than the alternative measured.
* **Norms.** ``layer_norm`` over trailing dims (SHViT's norm over ``(C, N)``, EfficientViT-B's head) and
  ``group_norm`` (ELA's gates): the mean, then the variance of the centred values (the two passes of
  PyTorch's kernels), ``rsqrt``, the affine.
* **A wrong lowering.** ``gelu(approximate="tanh")`` (EfficientViT-L) is written out: the partitioner gives it
  to XNNPACK's exact GELU (:func:`corrections`; fp32 programs only, :func:`int8_decompositions` says why).
* **Constant operands.** A matrix times a batch (``matmul``) as ``bmm`` with the matrix expanded, so that
  :func:`fold_constants` computes a constant one's expand (Agent attention's pooling matrices).
* **Elementwise.** ``elu`` (MALA's feature map; ExecuTorch 1.5's partitioner has its ELU config switched off)
  as ``relu(x) + exp(min(x, 0)) - 1``; ``reciprocal`` as a division of a constant one; ``pow`` by 2, 3, 4
  (a float exponent, as FLatten's focusing factor, is refused even for 2) as products, by 0.5 as ``sqrt``.

Measured (fp32, one XNNPACK delegate each afterwards): SHViT-S1 at 48 px 10 -> 1 delegates, EfficientViT-B0
6 -> 1, ResNet-18-ECA 9 -> 1 (2026-12-04). On 2026-12-04, 128 px, programs before and after timed alternately:
EfficientViT-B1-MALA 22 -> 1 delegates, 1.22x faster; B1-Agent 9 -> 1, 1.23x; coordinate attention (ResNet-18)
9 -> 1, 1.12x; FLatten, InLine 1 delegate; CBAM and triplet attention keep their channel max portable
(:func:`_reduce`), 1.09-1.20x. The ELA models lower at all only since then (4-D strips in the block).

fp32 programs only: in int8 ones the float islands they make inside the delegate were slower than the
portable ops (48 px, digits weights, alternating runs on an idle Zen 4 EPYC: SHViT-S1 p50 0.42 vs 0.38-0.39
ms, EfficientViT-B0 0.48 vs 0.42 ms), while fp32 ones were no slower (B0 0.58 vs 0.63 ms, SHViT-S1 1.15 vs
1.16 ms).

They run in ``ExportedProgram.run_decompositions``, not as edge passes
(:mod:`edgezoo.export.xnnpack_rewrites`): they need scalars (``eps``, ``n``), which the lowering turns into
constants before the edge passes run. An int scalar becomes an int64 constant with a portable cast, so every
scalar here is a float.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["corrections", "decompositions", "fold_constants", "int8_decompositions"]


def _axes(x: torch.Tensor, dims: list[int] | None) -> list[int] | None:
    """The sorted dims a reduction of ``x`` runs over (all of them for ``None`` or ``[]``), or ``None`` when
    they are not one contiguous run or ``x`` is not a float tensor."""
    if not x.dtype.is_floating_point or x.dim() == 0:
        return None
    axes = sorted({d % x.dim() for d in dims}) if dims else list(range(x.dim()))
    return axes if axes == list(range(axes[0], axes[-1] + 1)) else None


def _reduce(x: torch.Tensor, axes: list[int], keepdim: bool, how: str) -> Any:
    """``x`` reduced (``how``: ``"mean"``, ``"sum"`` or ``"max"``) over the contiguous ``axes``, in the form
    XNNPACK runs best for where they lie (it keeps 4-D maps channels-last and vectorises over channels):

    * H and/or W of a 4-D map: a pool on the map, its window the reduced size;
    * a trailing run of ``n`` elements: a global pool over a ``(rows, 1, n, 1)`` view (one channel: its
      channels-last form is the same memory);
    * a leading or middle run (a map's channels): a 1x1 conv with weights ``1 / n`` (or 1) over a
      ``(a, n, b, 1)`` view, as :class:`edgezoo.export.xnnpack_rewrites.ChannelLayerNorm`. A max there has no
      such form and is left to the portable kernel: as a one-channel max pool over a ``(a, 1, n, b)`` view it
      made ResNet-18-CBAM's program 13% slower than the portable ``amax`` (128 px, fp32).
    """
    first, last = axes[0], axes[-1] + 1
    n = math.prod(x.shape[first:last])
    if x.dim() == 4 and first >= 2:
        kernel = [x.shape[2] if 2 in axes else 1, x.shape[3] if 3 in axes else 1]
        pool = torch.ops.aten.max_pool2d.default if how == "max" else torch.ops.aten.avg_pool2d.default
        out = pool(x, kernel, kernel)
    elif last == x.dim():
        rows = x.reshape(-1, 1, n, 1)
        out = torch.ops.aten.max_pool2d.default(rows, [n, 1], [n, 1]) if how == "max" else rows.mean((2, 3), True)
    elif how != "max":
        weight = torch.full((1, n, 1, 1), 1.0 / n if how == "mean" else 1.0, dtype=x.dtype)
        return _shaped(F.conv2d(x.reshape(math.prod(x.shape[:first]), n, -1, 1), weight), x, axes, keepdim)
    else:
        return NotImplemented
    return _shaped(out * float(n) if how == "sum" else out, x, axes, keepdim)


def _shaped(out: torch.Tensor, x: torch.Tensor, axes: list[int], keepdim: bool) -> torch.Tensor:
    """``out`` (a reduction of ``x`` over ``axes``) in the shape ``keepdim`` asks for."""
    if keepdim:
        return out.reshape([1 if i in axes else s for i, s in enumerate(x.shape)])
    return out.reshape([s for i, s in enumerate(x.shape) if i not in axes])


def _mean(x: torch.Tensor, dims: list[int] | None, keepdim: bool = False, *, dtype: Any = None) -> Any:
    """``mean.dim``; the global mean over H, W of a 4-D map, which XNNPACK takes, is kept."""
    axes = _axes(x, dims)
    if dtype is not None or axes is None or (x.dim() == 4 and axes == [2, 3]):
        return NotImplemented
    return _reduce(x, axes, keepdim, "mean")


def _sum(x: torch.Tensor, dims: list[int] | None, keepdim: bool = False, *, dtype: Any = None) -> Any:
    """``sum.dim_IntList``."""
    axes = _axes(x, dims)
    return NotImplemented if dtype is not None or axes is None else _reduce(x, axes, keepdim, "sum")


def _amax(x: torch.Tensor, dims: list[int] | None = None, keepdim: bool = False) -> Any:
    """``amax`` (CBAM's maxima)."""
    axes = _axes(x, dims)
    return NotImplemented if axes is None else _reduce(x, axes, keepdim, "max")


def _normalise(rows: torch.Tensor, n: int, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``rows`` (``(r, 1, n, 1)``) normalised along ``n``: ``(centred * rstd, mean, rstd)``, the means as global
    pools (the two passes of PyTorch's norm kernels)."""
    mean = rows.mean((2, 3), keepdim=True)
    centred = rows - mean
    rstd = torch.rsqrt((centred * centred).mean((2, 3), keepdim=True) + float(eps))
    return centred * rstd, mean, rstd


def _layer_norm(x: torch.Tensor, shape: list[int], weight: torch.Tensor | None, bias: torch.Tensor | None,
                eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``native_layer_norm`` over the trailing ``shape``."""
    n = math.prod(shape)
    y, mean, rstd = _normalise(x.reshape(-1, 1, n, 1), n, eps)
    y = y.reshape(x.shape)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    stats = [*x.shape[: x.dim() - len(shape)], *([1] * len(shape))]
    return y, mean.reshape(stats), rstd.reshape(stats)


def _layer_norm_out(x: torch.Tensor, shape: list[int], weight: torch.Tensor | None = None,
                    bias: torch.Tensor | None = None, eps: float = 1e-5, cudnn_enable: bool = True) -> torch.Tensor:
    """``aten.layer_norm`` (what ``torch.export`` writes for ``F.layer_norm``)."""
    return _layer_norm(x, shape, weight, bias, eps)[0]


def _group_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, batch: int, chans: int,
                spatial: int, groups: int, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``native_group_norm``: each sample's ``groups`` runs of ``chans / groups`` channels normalised together."""
    n = chans // groups * spatial
    y, mean, rstd = _normalise(x.reshape(batch * groups, 1, n, 1), n, eps)
    y = y.reshape(batch, chans, spatial)
    if weight is not None:
        y = y * weight.reshape(chans, 1)
    if bias is not None:
        y = y + bias.reshape(chans, 1)
    return y.reshape(x.shape), mean.reshape(batch, groups), rstd.reshape(batch, groups)


def _group_norm_out(x: torch.Tensor, groups: int, weight: torch.Tensor | None = None,
                    bias: torch.Tensor | None = None, eps: float = 1e-5, cudnn_enabled: bool = True) -> torch.Tensor:
    """``aten.group_norm`` (``nn.GroupNorm``)."""
    spatial = math.prod(x.shape[2:])
    return _group_norm(x, weight, bias, x.shape[0], x.shape[1], spatial, groups, eps)[0]


def _vector_norm(x: torch.Tensor, order: float = 2, dims: list[int] | None = None, keepdim: bool = False, *,
                 dtype: Any = None) -> Any:
    """``linalg_vector_norm`` of order 2 (``Tensor.norm``, FLatten's focusing function) as ``sqrt`` of a pooled
    sum of squares (PyTorch's own decomposition of it leaves a float ``pow`` and a cast to XNNPACK)."""
    if order != 2 or dtype is not None:
        return NotImplemented
    total = _sum(x * x, dims, keepdim)
    return total if total is NotImplemented else torch.sqrt(total)


def _gelu(x: torch.Tensor, *, approximate: str = "none") -> Any:
    """``gelu(approximate="tanh")`` written out, ``0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))``: ExecuTorch
    1.5's XNNPACK partitioner lowers every ``gelu`` to XNNPACK's exact (erf) GELU, ignoring ``approximate``, which
    is up to 4.7e-4 away from the tanh form on standard-normal inputs (EfficientViT-L's activation: its programs
    failed the export's 1e-4 parity check). The exact GELU is left to XNNPACK."""
    if approximate != "tanh" or not x.dtype.is_floating_point:
        return NotImplemented
    inner = (x + x * x * x * 0.044715) * math.sqrt(2.0 / math.pi)
    return x * 0.5 * (torch.tanh(inner) + 1.0)


def _elu(x: torch.Tensor, alpha: float = 1.0, scale: float = 1.0, input_scale: float = 1.0) -> Any:
    """``elu`` as ``scale * (relu(x) + alpha * (exp(min(x * input_scale, 0)) - 1))``: exactly ``x`` above zero."""
    if not x.dtype.is_floating_point:
        return NotImplemented
    inner = x * float(input_scale) if input_scale != 1 else x
    negative = torch.exp(torch.clamp(inner, max=0.0)) - 1.0
    y = torch.relu(x) + (negative * float(alpha) if alpha != 1 else negative)
    return y * float(scale) if scale != 1 else y


def _reciprocal(x: torch.Tensor) -> Any:
    """``reciprocal`` as one divided by ``x`` (the one is folded into a constant, :func:`fold_constants`)."""
    return torch.ones((), dtype=x.dtype) / x if x.dtype.is_floating_point else NotImplemented


def _pow(x: torch.Tensor, exponent: float) -> Any:
    """``pow.Tensor_Scalar`` by 2, 3 or 4 as products (XNNPACK takes only an int 2), by 0.5 as ``sqrt``."""
    if not x.dtype.is_floating_point:
        return NotImplemented
    if exponent == 0.5:
        return torch.sqrt(x)
    if exponent not in (2, 3, 4):
        return NotImplemented
    square = x * x
    return square if exponent == 2 else square * x if exponent == 3 else square * square


def _matmul(a: torch.Tensor, b: torch.Tensor) -> Any:
    """``matmul`` of a matrix by a batch (Agent attention's pooling ``P @ q``) as ``bmm`` of the matrix expanded to
    the batch: the same ops ExecuTorch's own decomposition writes, but before :func:`fold_constants`, so a constant
    matrix's expand is computed at export (after it, the expand was a portable op on every call)."""
    if a.dim() != 2 or b.dim() < 3:
        return NotImplemented
    batch, (m, k), n = b.shape[:-2], a.shape, b.shape[-1]
    out = torch.bmm(a.expand(*batch, m, k).reshape(-1, m, k), b.reshape(-1, k, n))
    return out.reshape(*batch, m, n)


def int8_decompositions() -> dict[Any, Callable[..., Any]]:
    """The decompositions run on int8 programs: none. The float islands the others make inside an int8 delegate
    were slower than the portable ops (module docstring), and the tanh GELU written out between a dequantise and
    a quantise lowers but fails XNNPACK's shape propagation on the first call (``xnn_status_invalid_parameter``:
    EfficientViT-L1's and -L2's int8 programs, and a conv + tanh GELU + conv of 16 channels; 2026-12-07,
    ExecuTorch 1.5). Left a ``gelu``, XNNPACK computes the exact GELU, within 4.7e-4 of the tanh form: under
    1/50 of an int8 step for activations spanning [-0.2, 6]."""
    return {}


def corrections() -> dict[Any, Callable[..., Any]]:
    """The ops XNNPACK would take but compute a different function for (fp32 programs: :func:`decompositions`)."""
    return {torch.ops.aten.gelu.default: _gelu}


def decompositions() -> dict[Any, Callable[..., Any]]:
    """The table for ``ExportedProgram.run_decompositions`` of an fp32 program: each op XNNPACK refuses, in ops it
    takes, and the :func:`corrections`."""
    aten = torch.ops.aten
    return {**corrections(), aten.layer_norm.default: _layer_norm_out, aten.native_layer_norm.default: _layer_norm,
            aten.group_norm.default: _group_norm_out, aten.native_group_norm.default: _group_norm,
            aten.sum.dim_IntList: _sum, aten.mean.dim: _mean, aten.amax.default: _amax,
            aten.linalg_vector_norm.default: _vector_norm, aten.elu.default: _elu,
            aten.reciprocal.default: _reciprocal, aten.pow.Tensor_Scalar: _pow, aten.matmul.default: _matmul}


def fold_constants(program: Any) -> Any:
    """``program`` with every op whose inputs are all constants computed once, at export (ExecuTorch's
    ``constant_prop_pass``): what a block derives from its input's static size, such as MALA's rotary tables
    (``arange``, ``repeat_interleave``, ``cos``) and Agent attention's resized bias maps, which XNNPACK
    would otherwise leave to portable kernels run on every call, and the constants of the decompositions."""
    from executorch.exir.passes.constant_prop_pass import constant_prop_pass

    return constant_prop_pass(program)
