"""The Triton kernels under Triton's CPU interpreter (``TRITON_INTERPRET=1``) against the references:
small, odd-sized and masked shapes, fp32 (1e-5) and bf16 (torch's default tolerances); the ops'
gradients with the Triton forward; and TensorRT's AOT calling convention (:func:`launch_plan`).

Triton reads ``TRITON_INTERPRET`` when it is first imported, so these tests run in a child pytest
started with the variable set (:func:`test_kernels_under_the_triton_interpreter`); in the parent
they are skipped. On a GPU machine, ``EDGEZOO_TEST_CUDA=1 pytest tests/test_kernels_triton.py`` runs
the same tests on CUDA tensors: the kernels compiled for the GPU, not interpreted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgezoo.kernels import OPS, op_cga, op_channel_attention, op_focal, op_linear_attention
from edgezoo.kernels.onnx_plugins import PLUGINS
from edgezoo.kernels.tensorrt_plugins import launch_plan
from tests.kernel_cases import DEVICE, ON_CUDA

pytest.importorskip("triton")

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
interpreted = pytest.mark.skipif(not (INTERPRETED or ON_CUDA),
                                 reason="runs in the TRITON_INTERPRET=1 child pytest (or on CUDA)")
DTYPES = [torch.float32, torch.bfloat16]


@pytest.mark.skipif(INTERPRETED or ON_CUDA, reason="this is the child, or the kernels run on CUDA")
def test_kernels_under_the_triton_interpreter() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")} | {"TRITON_INTERPRET": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-n", "0", "-p", "no:cacheprovider", __file__]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=Path(__file__).parents[1], timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and " failed" not in run.stdout, run.stdout[-500:]


def _close(out: torch.Tensor, ref: torch.Tensor) -> None:
    assert out.dtype == ref.dtype and out.shape == ref.shape
    if out.dtype == torch.float32:
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    else:
        torch.testing.assert_close(out, ref)


def _rand(*shape: int, dtype: torch.dtype, seed: int, positive: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(shape, generator=g) if positive else torch.randn(shape, generator=g)
    return t.to(device=DEVICE, dtype=dtype)


# (batch, heads, d, e, N): one block; d, e not powers of two; N over several masked blocks of 64
LA_SHAPES = [(1, 1, 16, 16, 64), (2, 3, 9, 5, 37), (1, 2, 17, 33, 150)]
LA_ARGS = {"litemla": (1e-5, 1.0, False, False), "flatten": (1e-6, 1.0, True, False),
           "mala": (1e-6, 0.35, True, True)}


@interpreted
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("mixer", "shape"), [("litemla", LA_SHAPES[0]), ("flatten", LA_SHAPES[1]),
                                              ("mala", LA_SHAPES[2]), ("litemla", LA_SHAPES[2])])
def test_linear_attention_kernel(mixer: str, shape: tuple, dtype: torch.dtype) -> None:
    b, h, d, e, n = shape
    qkv = _rand(b, h, 2 * d + e, n, dtype=dtype, seed=0, positive=True)
    q, k, v = qkv.split([d, d, e], dim=2)  # strided views, as LiteMLA passes them
    v = v - 0.5
    args = LA_ARGS[mixer]
    out = op_linear_attention.linear_attention_triton(q, k, v, *args)
    _close(out, op_linear_attention.linear_attention_reference(q, k, v, *args))
    _close(torch.ops.edgezoo.linear_attention(q, k, v, *args), out)  # the op dispatches to the kernel


@interpreted
@pytest.mark.parametrize(("mixer", "dtype"), [("litemla", torch.float32), ("flatten", torch.float32),
                                              ("mala", torch.float32), ("mala", torch.bfloat16)])
def test_linear_attention_triton_backward(mixer: str, dtype: torch.dtype) -> None:
    shape = (1, 2, 9, 70)  # d = 9 (masked), two token blocks, the second masked
    q, k = (_rand(*shape, dtype=dtype, seed=s, positive=True).requires_grad_(True) for s in (0, 1))
    v = (_rand(1, 2, 5, 70, dtype=dtype, seed=2) - 0.5).detach().requires_grad_(True)
    g = _rand(1, 2, 5, 70, dtype=dtype, seed=3)
    args = LA_ARGS[mixer]
    fused = torch.autograd.grad((torch.ops.edgezoo.linear_attention(q, k, v, *args) * g).sum(), (q, k, v))
    ref = torch.autograd.grad((op_linear_attention.linear_attention_reference(q, k, v, *args) * g).sum(), (q, k, v))
    for a, b in zip(fused, ref, strict=True):
        _close(a, b)


@interpreted
def test_linear_attention_kernel_does_not_overflow_in_fp16() -> None:
    """Sums over 4096 tokens of products ~100 pass fp16's 65504: the kernel accumulates in fp32."""
    q, k = (torch.full((1, 1, 16, 4096), 10.0, dtype=torch.float16, device=DEVICE) for _ in range(2))
    v = _rand(1, 1, 16, 4096, dtype=torch.float16, seed=0)
    assert torch.isinf(k.sum(-1, keepdim=True).transpose(-1, -2) @ q).all()  # the normaliser, computed in fp16
    out = op_linear_attention.linear_attention_triton(q, k, v, 1e-5, 1.0, False, False)
    assert torch.isfinite(out).all()
    _close(out, op_linear_attention.linear_attention_reference(q, k, v, 1e-5, 1.0, False, False))


@interpreted
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("levels", [1, 3, 4])
def test_focal_aggregate_kernel(levels: int, dtype: torch.dtype) -> None:
    b, c, h, w = 2, 5, 7, 41  # 287 positions: two blocks of 256, the second masked
    ctx = [_rand(b, c, h, w, dtype=dtype, seed=i) for i in range(levels)]
    gates = _rand(b, 2 * c + levels + 1, h, w, dtype=dtype, seed=9)[:, 2 * c:]  # a channel slice of f(x)
    glob = _rand(b, c, 1, 1, dtype=dtype, seed=10)
    out = op_focal.focal_aggregate_triton(ctx, gates, glob, 1.0 / (levels + 1))
    _close(out, op_focal.focal_aggregate_reference(ctx, gates, glob, 1.0 / (levels + 1)))


@interpreted
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("mode", "shape"), [("se", (2, 37, 5, 7)), ("cbam", (1, 20, 13, 11)), ("eca", (2, 37, 5, 7)),
                                           ("se", (2, 150, 3, 5)), ("eca", (1, 150, 2, 3))])
def test_channel_attention_kernel(shape: tuple, mode: str, dtype: torch.dtype) -> None:
    """Channels over several of the gate kernel's blocks (64) and the MLP's column blocks (32)."""
    c = shape[1]
    x = _rand(*shape, dtype=dtype, seed=0)
    hidden = max(5, c // 4)
    if mode == "eca":
        weights = (_rand(5, dtype=dtype, seed=1), None, None, None)
    else:
        weights = (_rand(hidden, c, dtype=dtype, seed=1) * 0.3, _rand(hidden, dtype=dtype, seed=2),
                   _rand(c, hidden, dtype=dtype, seed=3) * 0.3, _rand(c, dtype=dtype, seed=4))
    out = op_channel_attention.channel_attention_triton(x, *weights, mode)
    _close(out, op_channel_attention.channel_attention_reference(x, *weights, mode))


@interpreted
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 16, 16, 49), (1, 8, 40, 100)])
def test_cga_attention_kernel(shape: tuple, dtype: torch.dtype) -> None:
    b, kd, vd, n = shape
    qkv = _rand(b, 2 * kd + vd, n, dtype=dtype, seed=0)
    q = _rand(b, kd, n, dtype=dtype, seed=1) * kd**-0.5
    k, v = qkv[:, kd:2 * kd], qkv[:, 2 * kd:]  # strided views, as the cascade passes them
    bias = _rand(n, n, dtype=dtype, seed=2)
    out = op_cga.cga_attention_triton(q, k, v, bias)
    _close(out, op_cga.cga_attention_reference(q, k, v, bias))


@interpreted
def test_cga_attention_kernel_takes_an_fp32_bias_with_half_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under autocast the gathered bias stays an fp32 parameter while q, k, v are bf16: the op still runs
    the kernel (it used to fall back to the reference for mixed dtypes)."""
    q, k, v = (_rand(4, 16, 49, dtype=torch.bfloat16, seed=i) for i in range(3))
    bias = _rand(49, 49, dtype=torch.float32, seed=3)
    calls = []
    kernel = op_cga.cga_attention_triton
    monkeypatch.setattr(op_cga, "cga_attention_triton", lambda *a: calls.append(a) or kernel(*a))
    out = torch.ops.edgezoo.cga_attention(q, k, v, bias)
    assert len(calls) == 1
    _close(out, op_cga.cga_attention_reference(q, k, v, bias))


def _inputs(name: str) -> list:
    if name == "linear_attention":
        return [_rand(1, 2, 8, 21, dtype=torch.float32, seed=i, positive=True) for i in range(3)] + \
            [1e-6, 0.35, True, True]
    if name == "focal_aggregate":
        return [[_rand(1, 3, 4, 5, dtype=torch.float32, seed=i) for i in range(2)],
                _rand(1, 3, 4, 5, dtype=torch.float32, seed=3), _rand(1, 3, 1, 1, dtype=torch.float32, seed=4), 0.5]
    if name == "channel_attention":
        return [_rand(2, 6, 3, 4, dtype=torch.float32, seed=0), _rand(3, dtype=torch.float32, seed=1), None, None,
                None, "eca"]
    return [_rand(2, 8, 13, dtype=torch.float32, seed=i) for i in range(3)] + [_rand(13, 13, dtype=torch.float32,
                                                                                     seed=4)]


def _leaves(args: list) -> list[torch.Tensor]:
    return [t for a in args for t in (a if isinstance(a, list) else [a]) if isinstance(t, torch.Tensor)]


@interpreted
@pytest.mark.parametrize("name", list(OPS))
def test_gradients_with_the_triton_forward(name: str) -> None:
    args = _inputs(name)
    for t in _leaves(args):
        t.requires_grad_(True)
    grads = []
    for fn in (getattr(torch.ops.edgezoo, name), OPS[name]):
        out = fn(*args)
        weight = torch.linspace(-1, 2, out.numel(), device=DEVICE).view(out.shape)
        grads.append(torch.autograd.grad((out * weight).sum(), _leaves(args)))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


#: AOT plugin -> (input shapes, attributes): contiguous tensors, as TensorRT passes them.
PLANS = {
    "linear_attention": ([(2, 3, 16, 37), (2, 3, 16, 37), (2, 3, 24, 37)],
                         {"eps": 1e-6, "scale": 0.25, "mean": 1, "magnitude": 1}),
    "cga_attention": ([(3, 16, 49), (3, 16, 49), (3, 20, 49), (49, 49)], {}),
    "focal_aggregate2": ([(2, 5, 7, 9), (2, 5, 7, 9), (2, 3, 7, 9), (2, 5, 1, 1)], {"scale": 1 / 3}),
}


@interpreted
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(PLANS))
def test_tensorrt_launch_plan_runs_the_kernel_as_the_engine_would(name: str, dtype: torch.dtype) -> None:
    """The PTX parameters are the kernel's non-constexpr parameters in order; TensorRT fills them with the
    plugin's inputs, the plan's int32 scalars, then the output, and launches the plan's grid."""
    shapes, attrs = PLANS[name]
    inputs = [_rand(*s, dtype=dtype, seed=i, positive=True) for i, s in enumerate(shapes)]
    ref = PLUGINS[name].reference(inputs, attrs)
    plan = launch_plan(name, shapes, dtype, attrs)
    fn = plan.spec.kernel.get()
    params = [n for n in fn.arg_names if n not in plan.constexprs and n not in plan.spec.unused]
    out = torch.empty(ref.shape, dtype=dtype, device=DEVICE)
    values = dict(zip(params, [*inputs, *plan.scalars, out], strict=True))
    fn[plan.grid](**values, **plan.constexprs, **dict.fromkeys(plan.spec.unused))
    _close(out, ref)
