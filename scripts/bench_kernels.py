"""GPU benchmark of the edgezoo fused ops: each op against its eager reference and against ``torch.compile``
of the reference, at realistic shapes (batch 64-256, 224 px inputs, bf16), plus whole-model inference
throughput and an ez_efficientvit_b1 training step with kernels on and off.

Needs a CUDA GPU (and Triton); writes ``results/bench/kernels-<gpu>.json``. No figure is estimated: a
run without a GPU stops with a one-line message (``--smoke`` checks the script itself on CPU).
``scripts/gpu_kernels.sh`` runs it, after the kernel tests on CUDA, in one command.

    python scripts/bench_kernels.py                # everything (about two minutes on an H200)
    python scripts/bench_kernels.py --sweep        # also the block-size / warp sweeps
    python scripts/bench_kernels.py --quick        # fewer repeats, ops and one model only
    python scripts/bench_kernels.py --peak-gbs 3350  # another GPU's datasheet bandwidth (default: H200)

Timing: CUDA events around ``repeats`` calls after ``warmup`` calls, median of ``rounds`` rounds. Each op
is timed twice: called from Python (what an eager caller sees, CPU dispatch included) and as calls
captured in a CUDA graph and replayed (the kernels' own time). The ops rotate through fresh input sets
so that no call finds its data in L2. Each op's bandwidth is the least it must move (inputs read once,
output written once) over its GPU time, against the measured device-to-device copy rate and the
datasheet figure. Every row is written to the JSON as it lands.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

#: Where everything runs, and the factor batches shrink by: ("cuda", 1), or ("cpu", 64) under ``--smoke``.
DEV, SHRINK = "cuda", 1


def _batch(n: int) -> int:
    return max(1, n // SHRINK)


def _time_ms(fn: Callable[[], Any], warmup: int, repeats: int, rounds: int) -> float:
    """Median over ``rounds`` of the mean time of one call (ms), measured with CUDA events."""
    for _ in range(warmup):
        fn()
    if DEV != "cuda":  # --smoke: the script's own check, its times mean nothing
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
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


def copy_bandwidth_gbs(gib: float = 2.0) -> float:
    """This GPU's device-to-device copy rate (GB/s, bytes read + written): the bandwidth ceiling, measured."""
    src = torch.randn(int(gib * 2**30) // 4 // SHRINK**2, device=DEV)
    dst = torch.empty_like(src)
    ms = _time_ms(lambda: dst.copy_(src), 3, 10, 5)
    return 2 * src.numel() * 4 / ms / 1e6


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``||out - ref|| / ||ref||`` in float64; inf when ``out`` holds a NaN."""
    out, ref = out.double(), ref.double()
    return float(torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref))


def _op_cases(quick: bool) -> list[dict[str, Any]]:
    """``{name, shape, op, reference, make, bytes}`` at the blocks' realistic shapes (bf16, CUDA);
    ``make()`` draws a fresh argument tuple, ``bytes`` is the least the op must move through memory."""
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

    dev, bf = DEV, torch.bfloat16

    def r(*shape: int, positive: bool = False) -> torch.Tensor:
        t = torch.rand(shape, device=dev) if positive else torch.randn(shape, device=dev)
        return t.to(bf)

    cases = []

    def la(b: int, heads: int, n: int) -> dict[str, Any]:
        def make() -> tuple:
            return (r(b, heads, 16, n, positive=True), r(b, heads, 16, n, positive=True), r(b, heads, 16, n),
                    1e-5, 1.0, False, False)
        return {"name": "linear_attention", "shape": f"B{b} h{heads} d16 N{n}", "op": linear_attention,
                "reference": linear_attention_reference, "make": make, "bytes": 4 * b * heads * 16 * n * 2}

    # EfficientViT-B1 at 224: LiteMLA at stride 16 (14x14, 16 heads incl. the multi-scale ones) and 32 (7x7);
    # at 512 px (segmentation-sized inputs) stride 16 is 32x32; the last is the bandwidth case (~400 MB)
    la_shapes = ((128, 16, 196), (128, 32, 49), (16, 16, 1024), (64, 16, 3136)) if not quick else ((128, 16, 196),)
    cases += [la(_batch(b), heads, n) for b, heads, n in la_shapes]
    # FocalNet-T srf stage 1 at 224: 96 channels, 56x56, two levels
    b, c, s = _batch(64), 96, 56
    cases.append({"name": "focal_aggregate", "shape": f"B{b} C{c} {s}x{s} L2", "op": focal_aggregate,
                  "reference": focal_aggregate_reference,
                  "make": lambda b=b, c=c, s=s: ([r(b, c, s, s), r(b, c, s, s)], r(b, 3, s, s), r(b, c, 1, 1), 1.0),
                  "bytes": (3 * b * c * s * s + 3 * b * s * s) * 2})
    # SE-ResNet-50 stage 1 at 224: 256 channels, 56x56, hidden 16; ECA and CBAM at the same place
    b, c, s = _batch(64), 256, 56
    weights = {"se": lambda: (r(16, c), r(16), r(c, 16), r(c)), "eca": lambda: (r(5), None, None, None),
               "cbam": lambda: (r(16, c), r(16), r(c, 16), r(c))}
    for mode, w in weights.items():
        if quick and mode != "se":
            continue
        cases.append({"name": f"channel_attention[{mode}]", "shape": f"B{b} C{c} {s}x{s}", "op": channel_attention,
                      "reference": channel_attention_reference,
                      "make": lambda w=w, mode=mode, b=b, c=c, s=s: (r(b, c, s, s), *w(), mode),
                      "bytes": 2 * b * c * s * s * 2})
    # EfficientViT-M4 stage 1 at 224: 14x14 map in 7x7 windows (4 per image, batch 256), key 16, value 32 per head
    windows, n = _batch(256) * 4, 49
    cases.append({"name": "cga_attention", "shape": f"windows{windows} kd16 vd32 N{n}", "op": cga_attention,
                  "reference": cga_attention_reference,
                  "make": lambda windows=windows, n=n: (r(windows, 16, n) * 0.25, r(windows, 16, n),
                                                        r(windows, 32, n), r(n, n)),
                  "bytes": windows * n * (16 + 16 + 32 + 32) * 2})
    return cases


def _inputs_sets(case: dict[str, Any]) -> list[tuple]:
    """Enough fresh argument sets that rotating through them leaves no call's data in the 50-60 MB L2."""
    return [case["make"]() for _ in range(max(1, min(4, -(-256 * 2**20 // case["bytes"]))))]


def _timed(fn: Callable[..., Any], sets: list[tuple], args: argparse.Namespace) -> float:
    """ms per call of ``fn`` called from Python, rotating through ``sets``: what an eager caller sees, CPU
    dispatch included (for small ops the CPU, not the GPU, sets this pace)."""
    turn = itertools.count()
    return _time_ms(lambda: fn(*sets[next(turn) % len(sets)]), args.warmup, args.repeats, args.rounds)


def _graph_ms(fn: Callable[..., Any], sets: list[tuple], args: argparse.Namespace, calls: int = 20) -> float:
    """GPU ms per call of ``fn``: ``calls`` calls (rotating through ``sets``) captured in one CUDA graph and
    replayed, so no CPU dispatch is timed: the kernels' own time."""
    if DEV != "cuda":
        return _timed(fn, sets, args)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture: compilation, autotuning, allocations
        for a in sets:
            fn(*a)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(calls):
            fn(*sets[i % len(sets)])
    return _time_ms(graph.replay, 2, max(2, args.repeats // 10), args.rounds) / calls


def _interleaved(row: dict[str, Any], time_mode: Callable[[str], float]) -> None:
    """``row["<mode>_ms_runs"]``: ``time_mode(mode)`` twice for each kernel mode, the modes taking turns (the
    spread between a mode's two runs shows how far the comparison can be trusted)."""
    for mode in ("reference", "triton", "reference", "triton"):
        row.setdefault(f"{mode}_ms_runs", []).append(time_mode(mode))


def _time_both(row: dict[str, Any], fns: dict[str, Callable[..., Any]], sets: list[tuple],
               args: argparse.Namespace) -> None:
    """``<name>_ms`` (eager calls) and ``<name>_gpu_ms`` (graph replay) for each of ``fns``, and the triton
    path's speed-ups over the others in both."""
    for name, f in fns.items():
        row[f"{name}_ms"] = _timed(f, sets, args)
        try:
            row[f"{name}_gpu_ms"] = _graph_ms(f, sets, args)
        except Exception as exc:  # a function that cannot be captured keeps its eager figure
            row[f"{name}_gpu_error"] = f"{type(exc).__name__}: {exc}"[:300]
    for name in fns:
        if name != "triton":
            row[f"speedup_vs_{name}"] = row[f"{name}_ms"] / row["triton_ms"]
            if f"{name}_gpu_ms" in row and "triton_gpu_ms" in row:
                row[f"gpu_speedup_vs_{name}"] = row[f"{name}_gpu_ms"] / row["triton_gpu_ms"]


def bench_ops(args: argparse.Namespace, peak: dict[str, float], sink: Callable[[dict], None]) -> None:
    for case in _op_cases(args.quick):
        row: dict[str, Any] = {"op": case["name"], "shape": case["shape"], "dtype": "bf16", "bytes": case["bytes"]}
        try:
            ref_fn, op = case["reference"], case["op"]
            compiled = torch.compile(ref_fn)
            sets = _inputs_sets(case)
            with torch.no_grad():
                a = sets[0]
                expected = ref_fn(*a)
                got = op(*a)
                row["rel_err_vs_reference"] = _rel_err(got, expected)
                row["compile_rel_err_vs_reference"] = _rel_err(compiled(*a), expected)
                _time_both(row, {"eager": ref_fn, "compile": compiled, "triton": op}, sets, args)
            row["triton_gbs"] = case["bytes"] / row.get("triton_gpu_ms", row["triton_ms"]) / 1e6
            row.update({f"triton_share_of_{k}": row["triton_gbs"] / v for k, v in peak.items()})
        except Exception as exc:  # one op's failure must not cost the others' figures
            row["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        sink(row)


def bench_linear_attention_backward(args: argparse.Namespace, sink: Callable[[dict], None]) -> None:
    """Forward + backward of the linear-attention op (Triton kernels both ways) against the reference's
    autograd, eager and compiled, at EfficientViT-B1's stride-16 shape."""
    from edgezoo.kernels import linear_attention, linear_attention_reference

    b, heads, n = _batch(128), 16, 196
    row: dict[str, Any] = {"op": "linear_attention fwd+bwd", "shape": f"B{b} h{heads} d16 N{n}", "dtype": "bf16"}
    try:
        def make() -> list[torch.Tensor]:
            t = [torch.rand(b, heads, 16, n, device=DEV) for _ in range(2)] + [torch.randn(b, heads, 16, n,
                                                                                           device=DEV)]
            return [x.to(torch.bfloat16).requires_grad_(True) for x in t]

        grad = torch.randn(b, heads, 16, n, device=DEV).to(torch.bfloat16)

        def step(fn: Callable[..., torch.Tensor], q: torch.Tensor, k: torch.Tensor,
                 v: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return torch.autograd.grad(fn(q, k, v, 1e-5, 1.0, False, False), (q, k, v), grad)

        compiled = torch.compile(linear_attention_reference)
        sets = [tuple(make()) for _ in range(3)]
        fused, ref = step(linear_attention, *sets[0]), step(linear_attention_reference, *sets[0])
        row["grad_rel_err_vs_reference"] = max(_rel_err(x, y) for x, y in zip(fused, ref, strict=True))
        fns = {"eager": linear_attention_reference, "compile": compiled, "triton": linear_attention}
        _time_both(row, {k: (lambda q, k_, v, f=f: step(f, q, k_, v)) for k, f in fns.items()}, sets, args)
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"[:2000]
    sink(row)


def sweep_launch_parameters(args: argparse.Namespace, sink: Callable[[dict], None]) -> None:
    """Time the kernels' block sizes and warp counts at the benchmark shapes (``--sweep``): the figures the
    modules' ``BLOCK_*`` defaults are chosen from. One row per kernel and shape, every variant in it."""
    from edgezoo.kernels import op_linear_attention

    def r(*shape: int, positive: bool = False) -> torch.Tensor:
        t = torch.rand(shape, device=DEV) if positive else torch.randn(shape, device=DEV)
        return t.to(torch.bfloat16)

    def run(name: str, shape: str, nbytes: int, sets: list[tuple], variants: dict[str, Callable[..., Any]]) -> None:
        row: dict[str, Any] = {"sweep": name, "shape": shape, "ms": {},
                               "how": "ms: GPU ms per call (CUDA graph replay); call_ms: eager calls"}
        if DEV != "cuda":  # --smoke: two variants check the code path
            variants = dict(list(variants.items())[:2])
        row["call_ms"] = {}
        for key, fn in variants.items():
            try:
                row["call_ms"][key] = _timed(fn, sets, args)
                row["ms"][key] = _graph_ms(fn, sets, args)
            except Exception as exc:
                row["ms"][key] = f"{type(exc).__name__}: {exc}"[:300]
        timed = {k: v for k, v in row["ms"].items() if isinstance(v, float)}
        if timed:
            row["best"] = min(timed, key=timed.get)
            row["best_gbs"] = nbytes / timed[row["best"]] / 1e6
        sink(row)

    def linear_attention_sweep(b: int, heads: int, n: int) -> None:
        def qkv_out() -> tuple:
            q, k, v = r(b, heads, 16, n, positive=True), r(b, heads, 16, n, positive=True), r(b, heads, 16, n)
            return (*(t.reshape(-1, 16, n).contiguous() for t in (q, k, v)), torch.empty_like(v))

        sets = [qkv_out() for _ in range(4)]
        kernel = op_linear_attention.KERNEL.get()
        variants = {f"BN{bn}_w{w}": (lambda q3, k3, v3, out, bn=bn, w=w: kernel[(q3.shape[0],)](
            q3, k3, v3, n, q3.stride(0), k3.stride(0), v3.stride(0), out, num_warps=w,
            **op_linear_attention.constexprs(16, 16, q3.dtype, 1e-5, 1.0, False, False, block_n=bn)))
            for bn in (32, 64, 128) for w in (2, 4)}
        run("linear_attention", f"B{b} h{heads} d16 N{n}", 4 * b * heads * 16 * n * 2, sets, variants)

    linear_attention_sweep(_batch(128), 16, 196)
    linear_attention_sweep(_batch(64), 16, 3136)


def bench_models(args: argparse.Namespace, sink: Callable[[dict], None]) -> None:
    """Whole-model inference throughput (bf16 autocast, 224 px) with the fused ops on and off, and how far
    the two outputs differ."""
    import timm

    import edgezoo  # noqa: F401  (registers the models)
    from edgezoo.kernels import kernel_mode

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from edgezoo.weights import randomize_

    names = ["ez_efficientvit_b1"] if args.quick else ["ez_efficientvit_b1", "ez_efficientvit_b1_mala",
                                                       "ez_focalnet_tiny_srf", "ez_resnet50_se", "ez_efficientvit_m4"]
    for name in names:
        row: dict[str, Any] = {"model": name, "batch": args.batch, "dtype": "bf16 autocast", "img_size": 224}
        try:
            # random weights as the tests draw them: default inits leave M4's logits ~1e-5 and B1's nearly
            # independent of the input, so the two modes' outputs would agree whatever the kernels did
            model = randomize_(timm.create_model(name)).to(DEV).eval()
            x = torch.randn(args.batch, 3, 224, 224, device=DEV)
            logits = {}

            def forward(mode: str, model: torch.nn.Module = model, x: torch.Tensor = x) -> torch.Tensor:
                with torch.no_grad(), torch.autocast(DEV, torch.bfloat16), kernel_mode(model, mode):
                    return model(x)

            for mode in ("reference", "triton"):
                logits[mode] = forward(mode).float()
            _interleaved(row, lambda mode: _time_ms(lambda: forward(mode), args.warmup, max(args.repeats // 4, 2),
                                                    args.rounds))
            for mode in ("reference", "triton"):
                row[f"{mode}_images_per_s"] = args.batch / min(row[f"{mode}_ms_runs"]) * 1e3
                try:  # the GPU's own time: the whole forward captured in a CUDA graph
                    row[f"{mode}_gpu_ms"] = _graph_ms(lambda mode=mode: forward(mode), [()], args, calls=2)
                except Exception as exc:
                    row[f"{mode}_gpu_error"] = f"{type(exc).__name__}: {exc}"[:300]
            row["logits_rel_err"] = _rel_err(logits["triton"], logits["reference"])
            row["top1_agreement"] = float((logits["triton"].argmax(1) == logits["reference"].argmax(1)).float().mean())
            row["speedup"] = row["triton_images_per_s"] / row["reference_images_per_s"]
            if "triton_gpu_ms" in row and "reference_gpu_ms" in row:
                row["gpu_speedup"] = row["reference_gpu_ms"] / row["triton_gpu_ms"]
            del model
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        sink(row)


def bench_training_step(args: argparse.Namespace, sink: Callable[[dict], None]) -> None:
    """One SGD step of ez_efficientvit_b1 (bf16 autocast, 224 px, 1000 classes) with the fused ops on and off."""
    import timm

    import edgezoo  # noqa: F401
    from edgezoo.kernels import kernel_mode

    row: dict[str, Any] = {"model": "ez_efficientvit_b1", "batch": args.batch, "what": "training step, bf16 autocast"}
    try:
        torch.manual_seed(0)
        model = timm.create_model("ez_efficientvit_b1").to(DEV).train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        x = torch.randn(args.batch, 3, 224, 224, device=DEV)
        y = torch.randint(0, 1000, (args.batch,), device=DEV)

        def step() -> None:
            with torch.autocast(DEV, torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        def time_steps(mode: str) -> float:
            with kernel_mode(model, mode):
                return _time_ms(step, 3, max(args.repeats // 8, 2), args.rounds)

        _interleaved(row, time_steps)
        for mode in ("reference", "triton"):
            row[f"{mode}_ms"] = min(row[f"{mode}_ms_runs"])
        row["speedup"] = row["reference_ms"] / row["triton_ms"]
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"[:2000]
    sink(row)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/bench", help="folder of the JSON result")
    p.add_argument("--batch", type=int, default=128, help="batch of the whole-model runs")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--peak-gbs", type=float, default=4800.0,
                   help="the GPU's datasheet memory bandwidth in GB/s (default: the H200's 4,800)")
    p.add_argument("--quick", action="store_true", help="fewer ops, one model, fewer repeats")
    p.add_argument("--skip-models", action="store_true", help="only the ops")
    p.add_argument("--sweep", action="store_true", help="also time the kernels' block sizes and warp counts")
    p.add_argument("--smoke", action="store_true",
                   help="check this script on CPU (tiny batches; with TRITON_INTERPRET=1 the kernels run "
                        "interpreted): the JSON goes to --out, its times mean nothing")
    args = p.parse_args(argv)
    global DEV, SHRINK
    if args.smoke:
        DEV, SHRINK = "cpu", 64
        args.batch, args.warmup, args.repeats, args.rounds = 2, 1, 1, 1
    elif not torch.cuda.is_available():
        print("bench_kernels: no CUDA GPU here; these figures are measured on a GPU only", file=sys.stderr)
        return 2
    elif args.quick:
        args.repeats, args.rounds = min(args.repeats, 20), min(args.rounds, 3)
    import triton

    gpu = torch.cuda.get_device_name() if DEV == "cuda" else "smoke-cpu"
    out = Path(args.out) / f"kernels-{gpu.replace(' ', '_').lower()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    copy = copy_bandwidth_gbs()
    if DEV == "cuda":
        torch.cuda.empty_cache()
    peak = {"measured_copy_bandwidth": copy, "datasheet_bandwidth": args.peak_gbs}
    result: dict[str, Any] = {"device": gpu, "torch": torch.__version__, "triton": triton.__version__,
                              "cuda": torch.version.cuda, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "timing": {"warmup": args.warmup, "repeats": args.repeats, "rounds": args.rounds,
                                         "how": "CUDA events, median of rounds of the mean of repeats"},
                              "copy_bandwidth_gbs": copy, "datasheet_bandwidth_gbs": args.peak_gbs,
                              "ops": [], "models": [], "training": [], "sweep": []}
    print(json.dumps({"device": gpu, "copy_bandwidth_gbs": round(copy)}), flush=True)

    def sink(section: str) -> Callable[[dict], None]:
        def write(row: dict) -> None:  # every row lands on disk at once: a killed run keeps what it measured
            result[section].append(row)
            print(json.dumps(row), flush=True)
            tmp = out.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(result, indent=2))
            os.replace(tmp, out)
        return write

    bench_ops(args, peak, sink("ops"))
    bench_linear_attention_backward(args, sink("ops"))
    if not args.skip_models:
        bench_training_step(args, sink("training"))
        bench_models(args, sink("models"))
    if args.sweep:
        sweep_launch_parameters(args, sink("sweep"))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
