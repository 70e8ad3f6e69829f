"""Time ExecuTorch programs of one model against each other, alternately, in one process.

    git checkout OLD && edgezoo export MODEL --format executorch --img-size 128 --out before
    git checkout NEW && edgezoo export MODEL --format executorch --img-size 128 --out after
    python experiments/pte_ab.py before/MODEL.pte after/MODEL.pte [--rounds 30] [--threads 2]

The programs are timed interleaved by the bench protocol (:func:`edgezoo.bench.measure`: turns of 10 calls
after an untimed one, the order alternating each round: a fixed order biased a per-round ratio by up to 9% on
a shared machine); the report is each program's median per-call time and its speed-up over the first. The
2026-12-04 ExecuTorch lowering figures (docs/notes/2026-12-04-executorch-lowering.md) were measured this way,
30 rounds, on the Zen 4 EPYC ``-9963a7``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from edgezoo.bench import Protocol, measure


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
    fns = {str(path): (lambda m=m: m.execute([x])) for path, m in zip(args.programs, methods, strict=True)}
    stats = measure(fns, Protocol(warmup=1, runs=args.rounds * 10, block=10, max_seconds=600))
    base = stats[str(args.programs[0])].p50_ms
    for key, s in stats.items():
        print(f"{key}: {s.p50_ms:.2f} ms, {base / s.p50_ms:.2f}x the first", flush=True)

if __name__ == "__main__":
    main()
