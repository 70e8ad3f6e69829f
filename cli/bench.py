"""``edgezoo bench``: latency of models on the runtimes they ship to, one protocol for all.

Exit status: 0 when every requested record was timed or its runtime is absent here, 1 when any
export or run failed (its error is in the table and the JSON), 2 for bad input (one line).
"""

from __future__ import annotations

import argparse
import sys

from edgezoo.cli.args import non_negative_int, positive_float, positive_int

__all__ = ["add_parsers", "cmd_bench"]


def _ints(text: str | None, flag: str) -> list[int]:
    from edgezoo.errors import InvalidArgumentError

    example = f"{flag} {'128,256,512' if flag == '--sizes' else '1,32'}"
    try:
        values = [int(v) for v in (text or "").split(",") if v.strip()]
    except ValueError:
        raise InvalidArgumentError(f"{flag} takes comma-separated integers, e.g. {example}; got {text!r}") from None
    if not values:
        raise InvalidArgumentError(f"{flag} is empty: give comma-separated integers, e.g. {example}")
    return values


def _list_runtimes() -> int:
    from edgezoo.bench import get_runtime, list_runtimes

    for name in list_runtimes():
        rt = get_runtime(name)
        reason = rt.absent()
        precs = [p if not (reason or rt.precision_absent(p)) else f"({p})" for p in rt.precisions]
        print(f"{name:<11} {'/'.join(precs):<18} {'available' if not reason else 'absent: ' + reason}")
        print(f"{'':<11} {rt.description}")
    return 0


def _sources(args: argparse.Namespace) -> list[str]:
    from edgezoo.bench import smallest_per_family
    from edgezoo.errors import InvalidArgumentError

    sources = list(args.models or [])
    if args.smallest:
        sources += [m for m in smallest_per_family() if m not in sources]
    if not sources:
        raise InvalidArgumentError("name models or checkpoints to benchmark (or pass --smallest: the smallest model "
                                   "of each family)")
    return sources


def _outputs(args: argparse.Namespace, report: dict) -> None:
    from edgezoo.bench.plot import cost_curve_png, pareto_png, read_accuracy
    from edgezoo.bench.report import output_path, save_report

    suffix = "-timm" if args.compare_timm else "-sizes" if args.sizes else ""
    if args.json:
        print(f"JSON: {save_report(report, output_path(args.json, report, suffix))}")
    if args.plot:
        accuracy = read_accuracy(args.accuracy) if args.accuracy else None
        print(f"Pareto chart: {pareto_png(report, args.plot, accuracy)}")
    if args.curve:
        print(f"cost curve: {cost_curve_png(report, output_path(args.curve, report, suffix, '.png'))}")


def _merge_base(args: argparse.Namespace, suffix: str, threads: int) -> dict | None:
    """``--merge``: the report ``--json`` names (a folder: this machine's), read before the run; None without
    ``--merge`` or when there is no such file yet."""
    from pathlib import Path

    from edgezoo.bench.fingerprint import fingerprint
    from edgezoo.bench.report import check_same_machine, load_report, output_path
    from edgezoo.errors import InvalidArgumentError

    if not args.merge:
        return None
    if not args.json:
        raise InvalidArgumentError("--merge adds this run's records to the report --json names: add --json FILE|FOLDER")
    here = fingerprint(threads)
    path = output_path(args.json, {"fingerprint": here}, suffix)
    if not Path(path).exists():
        return None
    try:
        old = load_report(path)
    except (ValueError, OSError) as err:
        raise InvalidArgumentError(f"--merge: {path} is not a benchmark report ({err}): name another --json") from None
    check_same_machine(old, here["id"], str(path))  # before the run, not at its first save
    return old


def _runners(specs: list[str] | None) -> dict[str, str]:
    from edgezoo.errors import InvalidArgumentError

    out = {}
    for spec in specs or []:
        tool, sep, path = spec.partition("=")
        if not sep or not path:
            raise InvalidArgumentError(f"--runner takes TOOL=PATH (e.g. --runner trtexec=target:/usr/src/tensorrt/bin/"
                                       f"trtexec), got {spec!r}")
        out[tool] = path
    return out


def _remote(args: argparse.Namespace, runtimes: list, batches: list[int], sizes: list, protocol, log) -> int:
    """``--remote SPEC``: the same report, measured on the target (:func:`edgezoo.bench.remote.bench_remote`)."""
    from edgezoo.bench.remote import bench_remote
    from edgezoo.bench.report import output_path, save_report, table
    from edgezoo.errors import InvalidArgumentError

    for flag, used in (("--compare-timm", args.compare_timm), ("--op-profile", args.op_profile),
                       ("--merge", args.merge), ("--repeat", args.repeat > 1)):
        if used:
            raise InvalidArgumentError(f"{flag} runs on this machine only: drop it with --remote")

    def save_so_far(partial: dict) -> None:
        if args.json:  # each record as it lands: a connection lost mid-run keeps the finished ones
            save_report(partial, output_path(args.json, partial, "-remote"))

    report = bench_remote(_sources(args), runtimes, args.remote, targets_file=args.targets, batches=batches,
                          threads=args.threads, img_sizes=sizes, protocol=protocol, agree=args.agree,
                          calib=args.calib, work_dir=args.work, model=args.model, runners=_runners(args.runner),
                          plugins=args.plugins, interleave_runtimes=args.interleave_runtimes,
                          log=log if args.verbose else (lambda m: None), on_progress=save_so_far)
    print(f"target: {report['target']}")
    print(table(report))
    if args.json:
        print(f"JSON: {save_report(report, output_path(args.json, report, '-remote'))}")
    if args.plot:
        from edgezoo.bench.plot import pareto_png, read_accuracy

        accuracy = read_accuracy(args.accuracy) if args.accuracy else None
        print(f"Pareto chart: {pareto_png(report, args.plot, accuracy)}")
    return 1 if any(r["status"] == "failed" for r in report["records"]) else 0


def _check_outputs(args: argparse.Namespace) -> None:
    """Every output the run will write can be written, checked before the first timing (a folder argument
    is the folder itself; a file argument, its parent)."""
    from pathlib import Path

    from edgezoo.paths import writable_dir

    for flag in ("json", "plot", "curve"):
        target = getattr(args, flag, None)
        if target:
            folder = Path(target) if Path(target).is_dir() or str(target).endswith("/") else Path(target).parent
            writable_dir(folder, f"--{flag}")


def cmd_bench(args: argparse.Namespace) -> int:
    from edgezoo.bench import Protocol, bench, parse_runtimes
    from edgezoo.bench.plot import read_accuracy
    from edgezoo.bench.protocol import ProtocolError
    from edgezoo.bench.report import merge_reports, output_path, save_report, table
    from edgezoo.bench.run import check_threads
    from edgezoo.errors import InvalidArgumentError

    if args.list_runtimes:
        return _list_runtimes()
    runtimes = parse_runtimes(args.runtime or ("ort" if args.remote else "torch,ort"))
    batches = _ints(args.batch, "--batch")
    threads = check_threads(args.threads)
    _check_outputs(args)
    if args.img_size is not None and args.sizes:
        raise InvalidArgumentError("choose one of --img-size S and --sizes S1,S2,...")
    sizes = _ints(args.sizes, "--sizes") if args.sizes else [args.img_size]
    if args.accuracy and not args.plot:
        raise InvalidArgumentError("--accuracy is the x axis of --plot: add --plot FILE.png")
    if args.accuracy:
        read_accuracy(args.accuracy)  # a bad file fails before the benchmark, not after it
    if args.agree < 0:
        raise InvalidArgumentError(f"--agree must be >= 0, got {args.agree}")
    try:
        protocol = Protocol(warmup=args.warmup, runs=args.runs, max_seconds=args.seconds, block=args.block,
                            repeat=args.repeat)
    except ProtocolError as err:
        raise InvalidArgumentError(str(err)) from None
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    suffix = "-timm" if args.compare_timm else "-sizes" if args.sizes else ""

    if args.remote:
        return _remote(args, runtimes, batches, sizes, protocol, log)
    base = _merge_base(args, suffix, threads)

    def merged(partial: dict) -> dict:
        return merge_reports(base, partial, note=getattr(args, "command_line", "")) if base else partial

    def save_so_far(partial: dict) -> None:
        if args.json:  # with --merge the old records stay in the file at every save
            save_report(merged(partial), output_path(args.json, partial, suffix))
    report = bench(_sources(args), runtimes, batches=batches, threads=threads, img_sizes=sizes, protocol=protocol,
                   compare_timm=args.compare_timm, agree=args.agree, calib=args.calib, work_dir=args.work,
                   model=args.model, progress=not args.quiet, log=log if args.verbose else (lambda m: None),
                   on_progress=save_so_far, op_profile=args.op_profile, interleave_runtimes=args.interleave_runtimes,
                   interleave_sizes=bool(args.sizes) and not args.compare_timm)
    print(table(report))
    if args.op_profile:
        from edgezoo.bench.op_profile import op_profile_table

        print("\n" + (op_profile_table(report) or "--op-profile: no ort / ort-int8 records were timed"))
    _outputs(args, merged(report))
    return 1 if any(r["status"] == "failed" for r in report["records"]) else 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="latency and throughput of models on torch, onnxruntime, ExecuTorch, OpenVINO, ...",
        description="Export each model with edgezoo's exporters, load it in each runtime and time it with one "
                    "protocol: warm-up, then timed runs until --runs runs or --seconds seconds; p50/p90/min latency, "
                    "throughput, peak memory and the device fingerprint. Runtimes missing here are reported absent.",
    )
    p.add_argument("models", nargs="*", metavar="MODEL|CHECKPOINT|ARTIFACT",
                   help="model names or checkpoints (with --remote also .onnx/.pte/.tflite files)")
    p.add_argument("--model", help="the model a checkpoint holds, if it does not record it")
    p.add_argument("--smallest", action="store_true", help="add the smallest model (MACs) of each family")
    p.add_argument("--runtime", "-r",
                   help="comma-separated runtimes, optionally RUNTIME:PRECISION (e.g. openvino:bf16), or all "
                        "(see --list-runtimes; default torch,ort; with --remote: ort)")
    p.add_argument("--batch", "-b", default="1", help="comma-separated batch sizes, e.g. 1,32 (default 1)")
    p.add_argument("--threads", type=positive_int, help="intra-op threads (default: the usable cores)")
    p.add_argument("--img-size", type=positive_int,
                   help="input resolution (default: the checkpoint's, else the model's)")
    p.add_argument("--sizes", help="several input resolutions, e.g. 128,256,384,512, timed interleaved (a cost "
                                   "curve: see --curve)")
    p.add_argument("--runs", type=positive_int, default=100, help="timed runs per record (default 100)")
    p.add_argument("--seconds", type=positive_float, default=10.0,
                   help="at most this long timing one record (default 10)")
    p.add_argument("--warmup", type=non_negative_int, default=10, help="untimed warm-up runs (default 10)")
    p.add_argument("--repeat", type=positive_int, default=1, metavar="R",
                   help="run the whole benchmark R times, every runtime loaded again each time; a record's latency "
                        "is the median of its passes and a ratio the median of the per-pass ratios, with its range "
                        "(default 1; on a shared machine a single run's ratio is one draw)")
    p.add_argument("--compare-timm", action="store_true",
                   help="also time timm's same-architecture model with the same weights, interleaved; report ratios")
    p.add_argument("--interleave-runtimes", action="store_true",
                   help="time all the runtimes of a model together, in turns of --block calls, so their ratios come "
                        "from one stretch of time (on a shared machine, the only comparable figures)")
    p.add_argument("--block", type=positive_int, default=1,
                   help="timed calls per turn when interleaving, after one untimed call when > 1 (default 1; "
                        "--interleave-runtimes makes it 10)")
    p.add_argument("--agree", type=non_negative_int, default=0, metavar="N",
                   help="top-1 agreement with PyTorch on N held-out --calib images, batch-1 records (default 0: off)")
    p.add_argument("--calib", default="digits", help="int8 calibration and --agree images: digits or a folder")
    p.add_argument("--json", help="write the report here (a folder: <folder>/<fingerprint>[-timm|-sizes].json)")
    p.add_argument("--merge", action="store_true",
                   help="add this run's records to the existing --json report of this machine (a record measured "
                        "again replaces the old one) instead of overwriting it")
    p.add_argument("--plot", help="draw the Pareto chart (latency against MACs, or --accuracy) as PNG here")
    p.add_argument("--accuracy", help="results CSV/JSON with model and top1 (e.g. edgezoo validate --json)")
    p.add_argument("--curve", help="with --sizes: draw latency against input pixels as PNG here "
                                    "(a folder: <fingerprint>-sizes.png)")
    p.add_argument("--op-profile", action="store_true",
                   help="ort / ort-int8: onnxruntime's profiler per op type (with --compare-timm, timm's beside)")
    p.add_argument("--work", help="keep the exported artifacts in this folder and reuse them in later runs with "
                                   "the same model and settings (default: a temporary folder)")
    p.add_argument("--remote", metavar="SPEC",
                   help="time on a target: ssh://[user@]host[:port], adb[://serial], or a target name from --targets "
                        "(models are exported here, the artifacts and a runner copied there; see docs/bench/remote.md)")
    p.add_argument("--targets", metavar="FILE",
                   help="targets file (YAML; default $EDGEZOO_TARGETS or ~/.config/edgezoo/targets.yaml)")
    p.add_argument("--runner", action="append", metavar="TOOL=PATH",
                   help="with --remote: a native runner (onnxruntime_perf_test, executor_runner, benchmark_model, "
                        "trtexec) at a host PATH (pushed) or target:PATH; repeatable")
    p.add_argument("--plugins", metavar="LIB.so", help="with --remote and tensorrt: a TensorRT plugin library to ship "
                                                        "and load in trtexec")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument("--verbose", "-v", action="store_true", help="print the exporters' progress lines")
    p.add_argument("--list-runtimes", action="store_true", help="list runtimes, precisions and what is available")
    p.set_defaults(func=cmd_bench)
