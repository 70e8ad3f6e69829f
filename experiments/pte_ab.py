"""Time ExecuTorch programs of one model against each other, alternately, in one process.

    git checkout OLD && edgezoo export MODEL --format executorch --img-size 128 --out before
    git checkout NEW && edgezoo export MODEL --format executorch --img-size 128 --out after
    python experiments/pte_ab.py before/MODEL.pte after/MODEL.pte [--rounds 30] [--threads 2]

Each round runs every program 10 times after an untimed call, in alternating order (a fixed order biased
a per-round ratio by up to 9% on this shared machine); the report is each program's median per-call time
and its median per-round speed-up over the first program. The 2026-12-04 lowering figures in the README
("ExecuTorch lowering") were measured this way, 30 rounds, on the Zen 4 EPYC ``-9963a7``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("programs", nargs="+", type=Path, help=".pte files of one model, the first the baseline")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--img-size", type=int, default=128)
    args = parser.parse_args()
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    portable_lib._unsafe_reset_threadpool(args.threads)  # before any method runs: later, it deadlocks
    x = torch.rand(1, 3, args.img_size, args.img_size)
    loaded = [Runtime.get().load_program(path) for path in args.programs]
    methods = [program.load_method("forward") for program in loaded]
    times: list[list[float]] = [[] for _ in methods]
    for round_ in range(args.rounds):
        order = list(range(len(methods)))
        for i in order if round_ % 2 else order[::-1]:
            methods[i].execute([x])
            calls = []
            for _ in range(10):
                start = time.perf_counter()
                methods[i].execute([x])
                calls.append(time.perf_counter() - start)
            times[i].append(float(np.median(calls)))
    base = np.array(times[0])
    for path, t in zip(args.programs, times, strict=True):
        print(f"{path}: {np.median(t) * 1e3:.2f} ms, {np.median(base / np.array(t)):.2f}x the first", flush=True)


if __name__ == "__main__":
    main()
