"""Ahead-of-time compilation of the edgezoo Triton kernels to PTX for a named GPU (no GPU needed).

``triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))`` lowers a kernel for sm_90 on
any machine; TensorRT's ``aot_impl`` (:mod:`edgezoo.kernels.tensorrt_plugins`) embeds that PTX in
the engine. Kernel parameters follow TensorRT's AOT calling convention: input pointers, then
``int32`` scalars, then output pointers; compile-time values (sizes of the head, eps, the number of
focal levels) are constexprs baked into the PTX, and unused pointer parameters are specialised
away as ``None`` constexprs.

:data:`SPECS` names each kernel with a representative configuration (the one the tests compile);
:func:`compile_kernel` takes any configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from edgezoo.kernels import op_cga as cga
from edgezoo.kernels import op_channel_attention as channel_attention
from edgezoo.kernels import op_focal as focal
from edgezoo.kernels import op_linear_attention as linear_attention
from edgezoo.kernels import op_linear_attention_backward as linear_attention_backward
from edgezoo.kernels._lazy import LazyKernel

__all__ = ["ARCHS", "SPECS", "KernelSpec", "compile_kernel", "triton_type"]

#: Compute capabilities the plugins are compiled for: Ampere (A100, Jetson Orin is sm_87) and Hopper.
ARCHS = (80, 90)

_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def triton_type(dtype: torch.dtype) -> str:
    """Triton's name of a torch dtype (``bf16``...)."""
    return _TYPES[dtype]


@dataclass(frozen=True)
class KernelSpec:
    """One kernel: its pointer parameters (name -> ``"x"`` for the op's dtype or a fixed Triton type),
    the ``None`` pointers, and a function of the dtype giving its constexprs."""

    kernel: LazyKernel
    pointers: dict[str, str]
    constexprs: Callable[[torch.dtype], dict[str, Any]]
    unused: tuple[str, ...] = field(default=())
    num_warps: int = 4


SPECS: dict[str, KernelSpec] = {
    "linear_attention": KernelSpec(linear_attention.KERNEL, dict.fromkeys(("Q", "K", "V", "OUT"), "x"),
                                   lambda dt: linear_attention.constexprs(32, 32, dt, 1e-5, 1.0, False, False),
                                   num_warps=linear_attention.NUM_WARPS),
    "linear_attention_backward": KernelSpec(
        linear_attention_backward.KERNEL, dict.fromkeys(("Q", "K", "V", "G", "DQ", "DK", "DV"), "x"),
        lambda dt: linear_attention.constexprs(32, 32, dt, 1e-6, 0.18, True, True,
                                               block_n=linear_attention.BLOCK_N_BACKWARD)),
    "focal_aggregate": KernelSpec(focal.KERNEL, dict.fromkeys(("L0", "L1", "G", "CG", "OUT"), "x"),
                                  lambda dt: focal.constexprs(2, 1.0), unused=("L2", "L3")),
    "channel_attention.pool": KernelSpec(channel_attention.POOL_KERNEL, {"X": "x", "AVG": "fp32", "MAX": "fp32"},
                                         lambda dt: channel_attention.pool_constexprs("se")),
    "channel_attention.gate": KernelSpec(
        channel_attention.GATE_KERNEL,
        {"AVG": "fp32", "MAX": "fp32", "W1": "x", "B1": "x", "W2": "x", "B2": "x", "GATE": "fp32"},
        lambda dt: channel_attention.gate_constexprs("se", 16, 1)),
    "channel_attention.scale": KernelSpec(channel_attention.SCALE_KERNEL, {"X": "x", "GATE": "fp32", "OUT": "x"},
                                          lambda dt: channel_attention.scale_constexprs()),
    "cga_attention": KernelSpec(cga.KERNEL, dict.fromkeys(("Q", "K", "V", "BIAS", "OUT"), "x"),
                                lambda dt: cga.constexprs(16, 16, 49, dt)),
}


def compile_kernel(spec: KernelSpec, arch: int, dtype: torch.dtype = torch.float16,
                   constexprs: dict[str, Any] | None = None, num_warps: int | None = None) -> Any:
    """``triton.compile`` of ``spec``'s kernel for ``sm_<arch>``: a ``CompiledKernel`` whose ``asm["ptx"]``
    is the PTX and ``metadata`` holds ``name``, ``num_warps`` and ``shared`` (the launch parameters).
    Parameters not named as pointers or constexprs are ``int32`` scalars."""
    import triton
    from triton.backends.compiler import GPUTarget

    fn = spec.kernel.factory()  # a fresh JIT function: a cached one may have been built for the interpreter
    values = dict(spec.constexprs(dtype) if constexprs is None else constexprs)
    values.update(dict.fromkeys(spec.unused))
    ty = triton_type(dtype)
    signature = {}
    for name in fn.arg_names:
        if name in values:
            signature[name] = "constexpr"
        elif name in spec.pointers:
            kind = spec.pointers[name]
            signature[name] = f"*{ty if kind == 'x' else kind}"
        else:
            signature[name] = "i32"
    source = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=values)
    options = {"num_warps": num_warps or spec.num_warps}
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
