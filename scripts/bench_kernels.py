"""GPU benchmark of the edgezoo fused ops: each op against its eager reference and against ``torch.compile``
of the reference, at realistic shapes (batch 64-256, 224 px inputs, bf16), plus whole-model inference
throughput and an ez_efficientvit_b1 training step with kernels on and off.

Needs a CUDA GPU (and Triton); writes ``bench/results/kernels-<gpu>.json``. Nothing here runs on CPU and
no figure is estimated: a run without a GPU stops with a one-line message.

    python scripts/bench_kernels.py                # everything (a few minutes on one GPU)
    python scripts/bench_kernels.py --quick        # fewer repeats, ops and one model only
    python scripts/bench_kernels.py --peak-gbs 4800  # also report the linear-attention kernel's share of peak

Timing: CUDA events around ``repeats`` calls after ``warmup`` calls, median of ``rounds`` rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def _time_ms(fn: Callable[[], Any], warmup: int, repeats: int, rounds: int) -> float:
    """Median over ``rounds`` of the mean time of one call (ms), measured with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    results = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            fn()
        end.record()
        torch.cuda.synchronize()
        results.append(start.elapsed_time(end) / repeats)
    return statistics.median(results)


def _op_cases(quick: bool) -> list[dict[str, Any]]:
    """``{name, op, args, bytes}`` at the blocks' realistic shapes (bf16, CUDA)."""
    from edgezoo.kernels import (
        cga_attention,
        cga_attention_reference,
        channel_attention,
        channel_attention_reference,
        focal_aggregate,
        focal_aggregate_reference,
        linear_attention,
        linear_attention_reference,
    )

    dev, bf = "cuda", torch.bfloat16

    def r(*shape: int, positive: bool = False) -> torch.Tensor:
        t = torch.rand(shape, device=dev) if positive else torch.randn(shape, device=dev)
        return t.to(bf)

    cases = []
    # EfficientViT-B1 at 224: LiteMLA at stride 16 (14x14, 16 heads incl. the multi-scale ones) and 32 (7x7)
    for b, heads, n in ((128, 16, 196), (128, 32, 49)) if not quick else ((128, 16, 196),):
        q, k, v = r(b, heads, 16, n, positive=True), r(b, heads, 16, n, positive=True), r(b, heads, 16, n)
        args = (q, k, v, 1e-5, 1.0, False, False)
        cases.append({"name": "linear_attention", "shape": f"B{b} h{heads} d16 N{n}", "op": linear_attention,
                      "reference": linear_attention_reference, "args": args,
                      "bytes": 4 * q.numel() * q.element_size()})
    # FocalNet-T srf stage 1 at 224: 96 channels, 56x56, two levels
    b, c, s = 64, 96, 56
    levels, gates, glob = [r(b, c, s, s), r(b, c, s, s)], r(b, 3, s, s), r(b, c, 1, 1)
    cases.append({"name": "focal_aggregate", "shape": f"B{b} C{c} {s}x{s} L2", "op": focal_aggregate,
                  "reference": focal_aggregate_reference, "args": (levels, gates, glob, 1.0),
                  "bytes": 3 * levels[0].numel() * 2})
    # SE-ResNet-50 stage 1 at 224: 256 channels, 56x56, hidden 16; ECA and CBAM at the same place
    b, c, s = 64, 256, 56
    x = r(b, c, s, s)
    for mode, weights in (("se", (r(16, c), r(16), r(c, 16), r(c))), ("eca", (r(5), None, None, None)),
                          ("cbam", (r(16, c), r(16), r(c, 16), r(c)))):
        if quick and mode != "se":
            continue
        cases.append({"name": f"channel_attention[{mode}]", "shape": f"B{b} C{c} {s}x{s}", "op": channel_attention,
                      "reference": channel_attention_reference, "args": (x, *weights, mode),
                      "bytes": 3 * x.numel() * 2})
    # EfficientViT-M4 stage 1 at 224: 14x14 map in 7x7 windows (4 per image), key 16, value 32 per head
    windows, n = 256 * 4, 49
    q, k, v, bias = r(windows, 16, n), r(windows, 16, n), r(windows, 32, n), r(n, n)
    cases.append({"name": "cga_attention", "shape": f"windows{windows} kd16 vd32 N{n}", "op": cga_attention,
                  "reference": cga_attention_reference, "args": (q, k, v, bias),
                  "bytes": (q.numel() * 2 + v.numel() * 2) * 2})
    return cases


def bench_ops(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for case in _op_cases(args.quick):
        ref_fn, op, a = case["reference"], case["op"], case["args"]
        compiled = torch.compile(ref_fn)
        with torch.no_grad():
            expected = ref_fn(*a)
            err = (op(*a).float() - expected.float()).abs().max().item()
            timing = {key: _time_ms(lambda f=f, a=a: f(*a), args.warmup, args.repeats, args.rounds)
                      for key, f in (("eager_ms", ref_fn), ("compile_ms", compiled), ("triton_ms", op))}
        row = {"op": case["name"], "shape": case["shape"], "dtype": "bf16", **timing, "max_abs_err_vs_reference": err,
               "speedup_vs_eager": timing["eager_ms"] / timing["triton_ms"],
               "speedup_vs_compile": timing["compile_ms"] / timing["triton_ms"],
               "triton_gbs": case["bytes"] / timing["triton_ms"] / 1e6}
        if args.peak_gbs and case["name"] == "linear_attention":
            row["triton_share_of_peak_bandwidth"] = row["triton_gbs"] / args.peak_gbs
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def bench_models(args: argparse.Namespace) -> list[dict[str, Any]]:
    import timm

    import edgezoo  # noqa: F401  (registers the models)
    from edgezoo.kernels import kernel_mode

    names = ["ez_efficientvit_b1"] if args.quick else ["ez_efficientvit_b1", "ez_efficientvit_b1_mala",
                                                       "ez_focalnet_tiny_srf", "ez_resnet50_se", "ez_efficientvit_m4"]
    rows = []
    for name in names:
        model = timm.create_model(name).cuda().eval()
        x = torch.randn(args.batch, 3, 224, 224, device="cuda")
        row: dict[str, Any] = {"model": name, "batch": args.batch, "dtype": "bf16 autocast"}
        for mode in ("reference", "triton"):
            with torch.no_grad(), torch.autocast("cuda", torch.bfloat16), kernel_mode(model, mode):
                ms = _time_ms(lambda m=model, x=x: m(x), args.warmup, max(args.repeats // 4, 2), args.rounds)
            row[f"{mode}_images_per_s"] = args.batch / ms * 1e3
        row["speedup"] = row["triton_images_per_s"] / row["reference_images_per_s"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def bench_training_step(args: argparse.Namespace) -> dict[str, Any]:
    import timm

    import edgezoo  # noqa: F401
    from edgezoo.kernels import kernel_mode

    model = timm.create_model("ez_efficientvit_b1").cuda().train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(args.batch, 3, 224, 224, device="cuda")
    y = torch.randint(0, 1000, (args.batch,), device="cuda")

    def step() -> None:
        with torch.autocast("cuda", torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    row: dict[str, Any] = {"model": "ez_efficientvit_b1", "batch": args.batch, "what": "training step, bf16 autocast"}
    for mode in ("reference", "triton"):
        with kernel_mode(model, mode):
            row[f"{mode}_ms"] = _time_ms(step, 3, max(args.repeats // 8, 2), args.rounds)
    row["speedup"] = row["reference_ms"] / row["triton_ms"]
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench/results", help="folder of the JSON result")
    p.add_argument("--batch", type=int, default=128, help="batch of the whole-model runs")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--peak-gbs", type=float, help="the GPU's peak memory bandwidth in GB/s (from its datasheet)")
    p.add_argument("--quick", action="store_true", help="fewer ops, one model, fewer repeats")
    p.add_argument("--skip-models", action="store_true", help="only the ops")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_kernels: no CUDA GPU here; these figures are measured on a GPU only", file=sys.stderr)
        return 2
    if args.quick:
        args.repeats, args.rounds = min(args.repeats, 20), min(args.rounds, 3)
    import triton

    gpu = torch.cuda.get_device_name()
    result: dict[str, Any] = {"device": gpu, "torch": torch.__version__, "triton": triton.__version__,
                              "cuda": torch.version.cuda, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "timing": {"warmup": args.warmup, "repeats": args.repeats, "rounds": args.rounds},
                              "ops": bench_ops(args)}
    if not args.skip_models:
        result["models"] = bench_models(args)
        result["training"] = bench_training_step(args)
    out = Path(args.out) / f"kernels-{gpu.replace(' ', '_').lower()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
