"""The fastest faithful CPU path of each family: digits-trained models on every CPU runtime, agreement-gated.

    python -m edgezoo.pipelines.fastest_path --json results/bench/          # make bench-digits
    python -m edgezoo.pipelines.fastest_path --train-only                    # just train (cached) checkpoints
    python -m edgezoo.pipelines.fastest_path --checkpoints demo-out/runs/*/best.pth   # time checkpoints you have
    python -m edgezoo.pipelines.fastest_path --img-size 128 --models ez_shvit_s1     # train and time at 128 px

One model of each family is trained briefly on digits at the small sizes digits suit (the same rows
and cached checkpoints as :mod:`edgezoo.pipelines.int8`: `edgezoo.train.train_digits`, seeded, under
``--work``), then benchmarked with :func:`edgezoo.bench.bench`, one plan for the runner
(:mod:`edgezoo.pipelines.runner`: the trainings, then the benchmark alone on the machine), on
onnxruntime fp32 / int8, OpenVINO fp32 / int8 / bf16 and ExecuTorch fp32 / int8, each batch-1 record
with its top-1 agreement with PyTorch on every held-out digits image. The report is
``<fingerprint>-digits.json`` (``-digits-<S>px.json`` with ``--img-size S``); the runtime tables page
(:mod:`edgezoo.pipelines.table_bench`) names, per family, the fastest record whose agreement is at least 99% and
its speed-up over onnxruntime fp32.

A model's runtimes are timed *interleaved* (``bench(interleave_runtimes=True)``: turns of 10 calls,
each after an untimed one), so every speed-up is a ratio from one stretch of time. Timed one runtime
after another, a runtime's figure at 32 px moved by up to 2x between two runs 20 minutes apart, with
whatever else the machine did in its minute; ``--sequential`` times them that way. Even interleaved, a
ratio at 48 px moved between 1.30x and 2.20x in nine runs within an hour (2026-12-04): ``--repeat R``
runs everything R times and reports the median per-pass ratio with its range.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

RUNTIMES = "torch,ort,ort-int8,openvino,executorch,litert"


def bench_stage(checkpoints: list[str], runtimes: str, threads: int, runs: int, repeat: int, target: str,
                suffix: str, merge: bool, work: str, interleave: bool, started: str,
                inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Time ``checkpoints`` and the trained ones of ``inputs`` (the training stages' results, in row order) on
    every runtime, with top-1 agreement on every held-out digit; write the report as it grows.

    ``started`` (the invocation's time) is in the settings so that each run of the pipeline times again: the
    trainings are reused, a measurement is not. Returns the report's path and its record count.
    """
    from edgezoo.bench import Protocol, bench, parse_runtimes
    from edgezoo.bench.fingerprint import fingerprint
    from edgezoo.bench.report import check_same_machine, load_report, merge_reports, output_path, save_report

    ckpts = [*checkpoints, *(r["checkpoint"] for r in (inputs or {}).values())]
    base = None
    if merge:
        machine = fingerprint(threads)
        here = output_path(target, {"fingerprint": machine}, suffix)
        base = load_report(here) if here.exists() else None
        if base is not None:
            check_same_machine(base, machine["id"], str(here))
    note = f"python -m edgezoo.pipelines.fastest_path (started {started})"

    def save(report: dict[str, Any]) -> Path:
        report = merge_reports(base, report, note=note) if base else report
        path = output_path(target, report, suffix)
        save_report(report, path)
        return path

    report = bench(ckpts, parse_runtimes(runtimes), threads=threads, protocol=Protocol(runs=runs, repeat=repeat),
                   agree=360, calib="digits", on_progress=save,  # every held-out digit
                   work_dir=Path(work) / "bench-artifacts", interleave_runtimes=interleave, progress=False)
    return {"json": str(save(report)), "records": len(report.get("records", []))}


def main() -> int:
    from edgezoo.pipelines.int8 import ROWS, train_stages
    from edgezoo.pipelines.runner import Plan, Stage, run

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default="results/bench/", help="report file or folder (default results/bench/)")
    parser.add_argument("--work", type=Path, default=Path("runs/int8-table"),
                        help="trained checkpoints and exported artifacts, reused later (default runs/int8-table)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=1,
                        help="passes of the whole run; speed-ups are the median of the per-pass ratios (default 1)")
    parser.add_argument("--runtime", default=RUNTIMES, help=f"runtimes (default {RUNTIMES})")
    parser.add_argument("--models", help="comma-separated subset of the rows' models")
    parser.add_argument("--img-size", type=int, help="train and time every row at this size instead of its own "
                                                     "(writes <fingerprint>-digits-<S>px.json)")
    parser.add_argument("--sequential", action="store_true",
                        help="time the runtimes one after another instead of interleaved")
    parser.add_argument("--merge", action="store_true",
                        help="add this run's records to this machine's report instead of replacing it "
                             "(a record measured again replaces the old one: edgezoo bench --merge)")
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument("--checkpoints", nargs="+", help="digits-trained checkpoints to time instead of the rows' "
                                                         "(e.g. edgezoo demo's demo-out/runs/*/best.pth)")
    args = parser.parse_args()
    rows = [(m, e, args.img_size or size) for m, e, size in ROWS if not args.models or m in args.models.split(",")]
    # the rows' trainings are the int8 table's stages (same names, settings and records: a model trained for one
    # is reused by the other); the benchmark runs after them, alone on the machine
    trains = [] if args.checkpoints else train_stages(rows, args.work)
    suffix = f"-digits-{args.img_size}px" if args.img_size else "-digits"
    stages = list(trains)
    if not args.train_only:
        stages.append(Stage(f"bench{suffix}", bench_stage, dict(
            checkpoints=list(args.checkpoints or []), runtimes=args.runtime, threads=args.threads, runs=args.runs,
            repeat=args.repeat, target=str(args.json), suffix=suffix, merge=args.merge, work=str(args.work),
            interleave=not args.sequential, started=time.strftime("%Y-%m-%dT%H:%M:%S")),
            needs=tuple(s.name for s in trains), exclusive=True))
    outcomes = run(Plan(stages, args.work / ".plan-int8"), desc="fastest path")
    for (name, epochs, size), stage in zip(rows, trains, strict=False):
        result = outcomes[stage.name].result
        if result is None:
            raise SystemExit(f"{name}: training failed: {outcomes[stage.name].error}")
        print(f"{name}: {epochs} epochs at {size} px, top-1 {result['top1']:.1f}% ({result['checkpoint']})",
              flush=True)
    if args.train_only:
        return 0
    timed = outcomes[f"bench{suffix}"]
    if timed.result is None:
        raise SystemExit(f"benchmark failed: {timed.error}")
    from edgezoo.bench.report import load_report, table

    print(table(load_report(Path(timed.result["json"]))))
    print(f"JSON: {timed.result['json']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
