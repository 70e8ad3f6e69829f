"""onnxruntime CPU latency of edgezoo's SHViT / EfficientViT-M (deploy form) against timm's model.

Both models carry the same (random) weights and are exported to ONNX (opset 18); timm's model is
exported in eval mode as timm ships it, edgezoo's after ``edgezoo.fuse``. The two sessions run
interleaved in one process (batch 1, ``--threads`` intra-op threads), so load on a shared
machine hits both alike; the report is the median of many runs and the ratio of medians, plus
the 10th percentile (closer to the unloaded latency when other processes share the cores).

    python scripts/speed_vs_timm.py efficientvit_m0 shvit_s1 --runs 300 --json speed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch


def _session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _export(model: torch.nn.Module, x: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), opset_version=18, dynamo=True, verbose=False)


def compare(name: str, runs: int, threads: int, size: int | None) -> dict:
    import timm

    import edgezoo

    ref = timm.create_model(name).eval()
    ez = edgezoo.create_model(f"ez_{name}").eval()
    ez.load_state_dict(edgezoo.get_spec(f"ez_{name}").filter_fn(ref.state_dict(), ez))
    ez = edgezoo.fuse(ez)
    res = size or ez.pretrained_cfg["input_size"][-1]
    x = torch.randn(1, 3, res, res)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"edgezoo": Path(tmp) / "ez.onnx", "timm": Path(tmp) / "timm.onnx"}
        _export(ez, x, paths["edgezoo"])
        _export(ref, x, paths["timm"])
        sessions = {k: _session(p, threads) for k, p in paths.items()}
    feeds = {k: {s.get_inputs()[0].name: x.numpy()} for k, s in sessions.items()}
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for i in range(runs + 20):
        order = list(sessions) if i % 2 == 0 else list(sessions)[::-1]
        for k in order:
            start = time.perf_counter()
            sessions[k].run(None, feeds[k])
            if i >= 20:
                times[k].append(time.perf_counter() - start)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    p10 = {k: statistics.quantiles(v, n=10)[0] * 1e3 for k, v in times.items()}
    return {"model": name, "input": res, "threads": threads, "runs": runs, "median_ms": med, "p10_ms": p10,
            "ratio_edgezoo_over_timm": med["edgezoo"] / med["timm"],
            "ratio_p10": p10["edgezoo"] / p10["timm"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="timm names, e.g. efficientvit_m0 shvit_s1")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=None, help="input resolution (default: the model's)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = []
    for name in args.models:
        r = compare(name, args.runs, args.threads, args.size)
        results.append(r)
        med, p10 = r["median_ms"], r["p10_ms"]
        print(f"{name} @{r['input']}: median edgezoo {med['edgezoo']:.3f} ms, timm {med['timm']:.3f} ms, ratio "
              f"{r['ratio_edgezoo_over_timm']:.3f}; p10 {p10['edgezoo']:.3f} vs {p10['timm']:.3f} ms, ratio "
              f"{r['ratio_p10']:.3f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
