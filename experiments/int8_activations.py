"""onnxruntime int8 speed by activation type: the same QDQ graph with uint8 or symmetric int8 activations.

    python experiments/int8_activations.py                                  # smallest model of each family, 128 px
    python experiments/int8_activations.py ez_resnet18_eca --img-size 224 --json results/bench/int8-act.json

Each model is exported by edgezoo's ONNX exporter three times: fp32, int8 with ``int8_activations=u8``
(the default) and with ``s8`` (what TensorRT needs; the default before 2026-12-02). The int8 exports
calibrate on digits with the sensitivity fallback off (``int8_fallback=0``: it changes a few float
nodes, not the kernels this compares). The three sessions run on onnxruntime's CPU provider with
edgezoo's session options and are timed interleaved (:func:`edgezoo.bench.measure`, turns of
10 calls), so each speed-up over fp32 is a ratio from one stretch of time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def _time(paths: dict[str, Path], size: int, threads: int, runs: int) -> dict[str, float]:
    import numpy as np
    import onnxruntime as ort

    from edgezoo.bench import Protocol, measure
    from edgezoo.export.onnx import session_options

    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    sessions = {k: ort.InferenceSession(str(p), session_options(threads), providers=["CPUExecutionProvider"])
                for k, p in paths.items()}
    fns = {k: (lambda s=s: s.run(None, {s.get_inputs()[0].name: x})) for k, s in sessions.items()}
    stats = measure(fns, Protocol(runs=runs, max_seconds=30, block=10))
    return {k: s.p50_ms for k, s in stats.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="models (default: ez_resnet18_eca and the smallest of each family)")
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    from edgezoo.bench import smallest_per_family
    from edgezoo.bench.ceiling import measured_fingerprint as fingerprint
    from edgezoo.export import export
    from edgezoo.export.api import prepare

    models = args.models or ["ez_resnet18_eca", *smallest_per_family()]
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgezoo-int8-act-") as tmp:
        for name in models:
            src = prepare(name, img_size=args.img_size)
            paths = {"fp32": Path(export(src, "onnx", Path(tmp) / name / "fp32").path)}
            for act in ("u8", "s8"):
                res = export(src, "onnx", Path(tmp) / name / act, int8=True, calib="digits", int8_fallback=0,
                             int8_activations=act)
                paths[act] = Path(res.path)  # random weights: the gate reports agreement without judging it
            p50 = _time(paths, args.img_size, args.threads, args.runs)
            row = {"model": name, "img_size": args.img_size, "p50_ms": p50,
                   "speedup_vs_fp32": {k: p50["fp32"] / p50[k] for k in ("u8", "s8")}}
            rows.append(row)
            print(f"{name:24s} fp32 {p50['fp32']:7.2f} ms   int8 u8 {p50['u8']:7.2f} ms "
                  f"({row['speedup_vs_fp32']['u8']:.2f}x)   int8 s8 {p50['s8']:7.2f} ms "
                  f"({row['speedup_vs_fp32']['s8']:.2f}x)", flush=True)
    if args.json:
        fp = fingerprint(args.threads)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"fingerprint": fp, "threads": args.threads, "rows": rows}, indent=1) + "\n")
        print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
