"""How fast is each LiteRT int8 mode against fp32 with the XNNPACK delegate, per family?

Question: a full-integer file of EfficientViT-B0 ran several times slower than its fp32 file on this x86
CPU while EfficientViT-M0's ran faster. Which ops does XNNPACK not run in int8, and which int8 mode
(``full``, ``weighted``, ``dynamic``) is fastest for each family?

Method: each model, with randomised weights (a model name given to ``edgezoo.export.export``), exported to
LiteRT fp32 and to each int8 mode at ``--img-size``; the files are timed interleaved with the bench's
protocol (:func:`edgezoo.bench.protocol.measure`, turns of 10 calls after an untimed one), XNNPACK, one
thread, batch 1. The JSON holds p50 and minimum per file, the machine's fingerprint and its load.

    python experiments/litert_int8_speed.py --json results/bench/2026-12-07-litert-int8-modes.json

Answer: see ``experiments/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS = ["ez_mobilenetv2_eca", "ez_shvit_s1", "ez_efficientvit_m0", "ez_focalnet_edge_xs", "ez_efficientvit_b0",
          "ez_mix_none_s"]
MODES = ("full", "weighted", "dynamic")


def main() -> None:
    from edgezoo.bench.fingerprint import fingerprint
    from edgezoo.bench.protocol import Protocol, measure
    from edgezoo.export import export
    from edgezoo.export.litert import litert_runner

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=MODELS)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    x = np.random.default_rng(0).random((1, 3, args.img_size, args.img_size), dtype=np.float32)
    records = []
    for name in args.models:
        out = Path(tempfile.mkdtemp())
        files = {"fp32": export(name, "litert", out, img_size=args.img_size).path}
        for mode in MODES:
            res = export(name, "litert", out / mode, img_size=args.img_size, int8=True, int8_mode=mode)
            files[mode] = res.path
        runners = {k: litert_runner(p, threads=1, xnnpack=True) for k, p in files.items() if p}
        load = os.getloadavg()[0]
        stats = measure({k: (lambda r=r: r(x)) for k, r in runners.items()},
                        Protocol(warmup=5, runs=60, min_runs=20, max_seconds=30, block=10))
        fp32 = stats["fp32"].p50_ms
        row = {"model": name, "img_size": args.img_size, "load_1min": load,
               "files": {k: {"p50_ms": round(s.p50_ms, 3), "min_ms": round(s.min_ms, 3),
                             "p50_over_fp32": round(s.p50_ms / fp32, 2),
                             "size_bytes": Path(files[k]).stat().st_size} for k, s in stats.items()}}
        records.append(row)
        print(name, {k: (v["p50_ms"], v["p50_over_fp32"]) for k, v in row["files"].items()}, flush=True)
    if args.json:
        fp = fingerprint(1)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"fingerprint": fp["id"], "date": time.strftime("%Y-%m-%d %H:%M"),
                                         "threads": 1, "delegate": "xnnpack", "records": records}, indent=1))


if __name__ == "__main__":
    main()
