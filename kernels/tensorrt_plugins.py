"""TensorRT quickly-deployable plugins (``tensorrt.plugin``) for the edgezoo ops.

:func:`register_plugins` defines, for every plugin of :data:`edgezoo.kernels.onnx_plugins.PLUGINS`
(namespace ``edgezoo``, the op type of its ONNX node):

* ``@trtp.register``: output shape and dtype from the inputs;
* ``@trtp.autotune``: fp32, fp16 and bf16, linear layout;
* ``@trtp.aot_impl`` (linear_attention, focal_aggregate<L>, cga_attention): the Triton kernel compiled
  to PTX for the build GPU's compute capability (:mod:`edgezoo.kernels.aot`), its launch grid and
  ``int32`` scalars as symbolic expressions of the input shapes (:func:`launch_plan`), so a serialised
  engine runs without Python and for any shape of its optimisation profile;
* ``@trtp.impl`` for channel_attention_*: that op is three kernels (pool, gate, scale) and an AOT
  plugin launches one, so it runs the Triton op from Python at engine run time (the engine then needs
  Python and this package).

TensorRT is imported only inside :func:`register_plugins`. :func:`launch_plan` is plain Python: with
integer shapes it gives the same grid and scalars the engine uses, which is how the calling
convention (input pointers, ``int32`` scalars, output pointers) is tested without TensorRT.
Triton >= 3.3 appends two scratch pointers to every kernel's PTX parameters; their sizes are 0 for
these kernels (checked in :func:`aot_compile`), so the values TensorRT leaves there are never read.
The Triton kernels have run on an H200 (``scripts/gpu_kernels.sh``); no TensorRT engine has been built
(TensorRT cannot be installed where this was written): the engine path stays unverified until a GPU
machine with TensorRT runs ``edgezoo export --format tensorrt --plugins``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, List, Tuple  # noqa: UP035  (tensorrt.plugin checks typing.Tuple/List annotations)

import torch

from edgezoo.kernels import op_cga, op_focal, op_linear_attention
from edgezoo.kernels.aot import KernelSpec, compile_kernel
from edgezoo.kernels.onnx_plugins import DOMAIN, PLUGINS, Plugin
from edgezoo.kernels.op_channel_attention import channel_attention

__all__ = ["AOT_PLUGINS", "Launch", "aot_compile", "launch_plan", "register_plugins"]


@dataclass(frozen=True)
class Launch:
    """How TensorRT launches one plugin's kernel: the kernel, its constexprs, grid and ``int32`` scalars
    (ints, or TensorRT symbolic expressions when the shapes are)."""

    spec: KernelSpec
    constexprs: dict[str, Any]
    grid: tuple[Any, Any]
    scalars: tuple[Any, ...]


def _cdiv(a: Any, b: int) -> Any:
    return -(-a // b)


def _const(x: Any) -> int:
    """An int from a dimension that must be known when the engine is built (head sizes)."""
    if isinstance(x, int):
        return x
    if getattr(x, "is_constant", False):
        return int(x.constant_value)
    raise ValueError("edgezoo plugins need static head/channel sizes (only batch and spatial sizes may vary)")


def _prod(dims: Sequence[Any]) -> Any:
    out = dims[0]
    for d in dims[1:]:
        out = out * d
    return out


def _linear_attention(shapes, dtype, attrs, cdiv) -> Launch:
    q, _, v = shapes
    d, e, n = _const(q[-2]), _const(v[-2]), q[-1]
    values = op_linear_attention.constexprs(d, e, dtype, attrs["eps"], attrs["scale"], bool(attrs["mean"]),
                                            bool(attrs["magnitude"]))
    spec = KernelSpec(op_linear_attention.KERNEL, dict.fromkeys(("Q", "K", "V", "OUT"), "x"), lambda dt: values)
    return Launch(spec, values, (_prod(q[:-2]), 1), (n, n * d, n * d, n * e))


def _focal(levels: int) -> Callable[..., Launch]:
    def plan(shapes, dtype, attrs, cdiv) -> Launch:
        b, c, h, w = shapes[0]
        hw = h * w
        values = op_focal.constexprs(levels, attrs["scale"])
        pointers = dict.fromkeys((*(f"L{i}" for i in range(levels)), "G", "CG", "OUT"), "x")
        unused = tuple(f"L{i}" for i in range(levels, op_focal.MAX_LEVELS))
        spec = KernelSpec(op_focal.KERNEL, pointers, lambda dt: values, unused)
        return Launch(spec, values, (b * c, cdiv(hw, op_focal.BLOCK)), (c, hw, hw * (levels + 1)))

    return plan


def _cga(shapes, dtype, attrs, cdiv) -> Launch:
    q, _, v, _ = shapes
    kd, vd, n = _const(q[1]), _const(v[1]), _const(q[2])
    if n > op_cga.MAX_TOKENS:
        raise ValueError(f"cga_attention plugin: {n} tokens per window; the kernel holds {op_cga.MAX_TOKENS} at most")
    values = op_cga.constexprs(kd, vd, n, dtype)
    spec = KernelSpec(op_cga.KERNEL, dict.fromkeys(("Q", "K", "V", "BIAS", "OUT"), "x"), lambda dt: values)
    return Launch(spec, values, (q[0], 1), (n, kd * n, kd * n, vd * n))


#: plugin name -> ``plan(input shapes, dtype, attributes, cdiv) -> Launch`` of its single kernel.
AOT_PLUGINS: dict[str, Callable[..., Launch]] = {
    "linear_attention": _linear_attention,
    "cga_attention": _cga,
    **{f"focal_aggregate{n}": _focal(n) for n in range(1, op_focal.MAX_LEVELS + 1)},
}


def launch_plan(name: str, shapes: Sequence[Sequence[Any]], dtype: torch.dtype, attrs: dict[str, Any],
                cdiv: Callable[[Any, int], Any] = _cdiv) -> Launch:
    """The :class:`Launch` of AOT plugin ``name`` for inputs of ``shapes`` (contiguous, as TensorRT passes them)."""
    return AOT_PLUGINS[name](shapes, dtype, attrs, cdiv)


def aot_compile(launch: Launch, arch: int, dtype: torch.dtype) -> Any:
    """The compiled kernel of ``launch`` for ``sm_<arch>`` (PTX in ``asm["ptx"]``); it must need no scratch buffer."""
    kernel = compile_kernel(launch.spec, arch, dtype, launch.constexprs)
    for field in ("global_scratch_size", "profile_scratch_size"):
        if getattr(kernel.metadata, field, 0):
            raise RuntimeError(f"{kernel.metadata.name} needs a {field} buffer, which TensorRT's AOT launch lacks")
    return kernel


# ---------------------------------------------------------------------------------------------
# TensorRT registration (needs tensorrt)
# ---------------------------------------------------------------------------------------------

_REGISTERED: set[str] = set()
#: the plugins without an AOT kernel -> their op (Triton on CUDA), run from Python by ``trtp.impl``.
_JIT: dict[str, Callable[[list[torch.Tensor], dict[str, Any]], torch.Tensor]] = {
    "channel_attention_eca": lambda t, a: channel_attention(t[0], t[1], None, None, None, "eca"),
    "channel_attention_se": lambda t, a: channel_attention(*t, "se"),
    "channel_attention_cbam": lambda t, a: channel_attention(*t, "cbam"),
}


def _import_trt() -> tuple[Any, Any]:
    try:
        import tensorrt as trt
        import tensorrt.plugin as trtp
    except Exception as err:  # a stub or a CUDA mismatch raises more than ImportError
        raise ImportError("edgezoo's TensorRT plugins need TensorRT >= 10.9 with tensorrt.plugin "
                          '(pip install "edgezoo[tensorrt]" on a machine with an NVIDIA GPU)') from err
    return trt, trtp


def _signed(fn: Callable, params: list[tuple[str, Any]], ret: Any) -> Callable:
    """``fn`` (taking ``*args``) given an explicit signature: ``tensorrt.plugin`` reads the parameters' names
    and annotations to learn the plugin's inputs and attributes."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    fn.__signature__ = inspect.Signature([inspect.Parameter(n, kind, annotation=t) for n, t in params],
                                         return_annotation=ret)
    fn.__annotations__ = {n: t for n, t in params} | {"return": ret}
    return fn


def _torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    return {trt.float32: torch.float32, trt.float16: torch.float16, trt.bfloat16: torch.bfloat16}[dtype]


def _output_desc(name: str, inputs: list[Any], trtp: Any) -> Any:
    out = inputs[0].like()
    if name in ("linear_attention", "cga_attention"):  # (..., e, N) / (B, vd, N): the value's width
        q, v = inputs[0], inputs[2]
        axis = q.ndim - 2
        dims = [v.shape_expr[axis] if i == axis else q.shape_expr[i] for i in range(q.ndim)]
        out.shape_expr = trtp.ShapeExprs.from_tuple(tuple(dims))
    return out


def _register_one(plugin: Plugin, trt: Any, trtp: Any) -> None:
    key = f"{DOMAIN}::{plugin.name}"
    n_in = len(plugin.inputs)
    attr_params = [(n, float if k == "float" else int) for n, k in plugin.attrs.items()]

    def desc(*args: Any) -> Any:
        return _output_desc(plugin.name, list(args[:n_in]), trtp)

    trtp.register(key)(_signed(desc, [(n, trtp.TensorDesc) for n in plugin.inputs] + attr_params, trtp.TensorDesc))

    def autotune(*args: Any) -> list:
        return [trtp.AutoTuneCombination(", ".join(["FP32|FP16|BF16"] * (n_in + 1)), "LINEAR")]

    trtp.autotune(key)(_signed(autotune, [(n, trtp.TensorDesc) for n in plugin.inputs]
                               + [("outputs", Tuple[trtp.TensorDesc])], List[trtp.AutoTuneCombination]))  # noqa: UP006

    if plugin.name in AOT_PLUGINS:
        def aot(*args: Any) -> tuple:
            descs = args[:n_in]
            attrs = dict(zip(plugin.attrs, args[n_in:n_in + len(plugin.attrs)], strict=True))
            dtype = _torch_dtype(trt, descs[0].dtype)
            shapes = [tuple(d.shape_expr[i] for i in range(d.ndim)) for d in descs]
            launch = launch_plan(plugin.name, shapes, dtype, attrs, cdiv=trtp.cdiv)
            major, minor = torch.cuda.get_device_capability()
            kernel = aot_compile(launch, 10 * major + minor, dtype)
            params = trtp.KernelLaunchParams()
            params.grid_x, params.grid_y = launch.grid
            params.block_x = kernel.metadata.num_warps * 32
            params.shared_mem = kernel.metadata.shared
            scalars = trtp.SymIntExprs(len(launch.scalars))
            for i, value in enumerate(launch.scalars):
                scalars[i] = trtp.SymInt32(value)
            return kernel.metadata.name, kernel.asm["ptx"], params, scalars

        trtp.aot_impl(key)(_signed(aot, [(n, trtp.TensorDesc) for n in plugin.inputs] + attr_params
                                   + [("outputs", Tuple[trtp.TensorDesc]), ("tactic", int)], tuple))  # noqa: UP006
    else:
        def impl(*args: Any) -> None:
            tensors = [torch.as_tensor(t, device="cuda") for t in args[:n_in]]
            outputs, stream = args[n_in + len(plugin.attrs)], args[-1]
            attrs = dict(zip(plugin.attrs, args[n_in:n_in + len(plugin.attrs)], strict=True))
            with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
                torch.as_tensor(outputs[0], device="cuda").copy_(_JIT[plugin.name](tensors, attrs))

        trtp.impl(key)(_signed(impl, [(n, trtp.Tensor) for n in plugin.inputs] + attr_params
                               + [("outputs", Tuple[trtp.Tensor]), ("stream", int)], None))  # noqa: UP006


def register_plugins() -> list[str]:
    """Register every edgezoo plugin with TensorRT (once per process); returns their ``namespace::name``."""
    trt, trtp = _import_trt()
    for plugin in PLUGINS.values():
        if plugin.name not in _REGISTERED:
            _register_one(plugin, trt, trtp)
            _REGISTERED.add(plugin.name)
    return [f"{DOMAIN}::{name}" for name in sorted(_REGISTERED)]
