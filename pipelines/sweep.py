"""``edgezoo sweep``: every token mixer of one size, the same recipe and data, trained, validated, exported,
benchmarked, tabled and charted (the mixer sweep, :mod:`edgezoo.mix`).

For each mixer, in its own run folder ``OUTPUT/<mixer>/``:

1. train ``ez_mix_<mixer>_<size>`` with the shared recipe (:func:`edgezoo.train.run`, ``--resume``: a
   stopped sweep continues where it stopped, a finished run is not trained again), in a child process:
   ``torchrun --nproc_per_node=N`` on a machine with N > 1 GPUs, else a plain process, one after another;
   the child records its peak memory (host RSS, and CUDA's peak allocation on a GPU);
2. validate ``best.pth`` on the held-out split (raw and EMA weights);
3. export it to ONNX (:func:`edgezoo.export.export`, with its parity gate);
4. benchmark it on the runtimes present (:func:`edgezoo.bench.bench`, batch 1, at ``bench_size``:
   224 px by default, the models' nominal input, whatever size they trained at) and write ``row.json``,
   which marks the mixer done.

Then ``OUTPUT/sweep.{json,csv,md}`` and ``OUTPUT/pareto-<runtime>-<precision>.png`` (top-1 against latency).
``--curve`` adds the cost curve: every mixer's latency on onnxruntime CPU at 128-1024 px
(``OUTPUT/cost-curve.{json,png}``; random weights, which do not change fp32 latency).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["CURVE_SIZES", "cost_curve", "main_worker", "sweep", "sweep_mixer"]

CURVE_SIZES = (128, 256, 384, 512, 768, 1024)
_EXCLUDED_BY_DEFAULT = ("compile",)  # torch.compile: minutes per model on a CPU; name it to include it


def present_runtimes() -> str:
    """Every registered runtime that can run here, as a ``--runtime`` spec (``compile`` only when named)."""
    from edgezoo.bench import get_runtime, list_runtimes

    names = [n for n in list_runtimes() if n not in _EXCLUDED_BY_DEFAULT and get_runtime(n).absent() is None]
    return ",".join(names)


def _gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _train_command(args: dict[str, Any], run_dir: Path, nproc: int) -> list[str]:
    worker = ["-m", "edgezoo.pipelines.sweep", "--model", args["model"], "--data", args["data"], "--output",
              str(run_dir)]
    for key in ("epochs", "img_size", "batch_size"):
        if args.get(key) is not None:
            worker += [f"--{key.replace('_', '-')}", str(args[key])]
    for item in args.get("set") or ():
        worker += ["--set", item]
    if nproc > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *worker]
    return [sys.executable, *worker]


def _train(args: dict[str, Any], run_dir: Path, nproc: int, log) -> dict[str, Any]:
    """Run the training child; its final metrics and peak memory."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = _train_command(args, run_dir, nproc)
    log(f"{args['model']}: training ({f'torchrun x{nproc}' if nproc > 1 else 'one process'})")
    start = time.perf_counter()
    with (run_dir / "train.log").open("a") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        from edgezoo.errors import EdgezooError

        tail = (run_dir / "train.log").read_text().strip().splitlines()[-1:] or [""]
        raise EdgezooError(f"training {args['model']} failed (exit {proc.returncode}): {tail[0]}; "
                           f"see {run_dir / 'train.log'}")
    memory = json.loads((run_dir / "memory.json").read_text()) if (run_dir / "memory.json").is_file() else {}
    memory.setdefault("host_rss_mb", round(usage.ru_maxrss / 1024, 1))  # Linux: KiB
    memory["seconds"] = round(time.perf_counter() - start, 1)
    return memory


def main_worker(argv: list[str] | None = None) -> int:
    """The training child: resolve the recipe, train with ``--resume``, write ``memory.json`` (rank 0)."""
    import resource

    import torch

    from edgezoo.train import resolve_config, run

    p = argparse.ArgumentParser(prog="python -m edgezoo.pipelines.sweep")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--epochs", type=int)
    p.add_argument("--img-size", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--set", action="append", default=[])
    a = p.parse_args(argv)
    # the mix models stay built for 224 px (their position tables and windows), whatever size they train at:
    # the sweep compares mixers at one architecture, and its cost curve times them far above the digits' size
    cfg = resolve_config(None, model=a.model, data=a.data, overrides=["model.img_size=null", *a.set],
                         sched__epochs=a.epochs,
                         data__img_size=a.img_size, data__batch_size=a.batch_size, run__output=a.output)
    result = run(cfg, resume=True)
    if result.get("finished") and (Path(a.output) / "memory.json").is_file():
        return 0  # trained before: keep the memory that training measured
    if int(os.environ.get("RANK", "0")) == 0:
        memory = {"host_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
        if torch.cuda.is_available():
            memory["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        memory["finished"] = bool(result.get("finished", False))
        (Path(a.output) / "memory.json").write_text(json.dumps(memory))
    return 0


def _validate(model: str, ckpt: Path, data: str, img_size: int | None) -> tuple[float, float | None]:
    from edgezoo.train.validate import validate_checkpoint

    raw = validate_checkpoint(model, ckpt, data, img_size=img_size, output=ckpt.parent / "val")["top1"]
    try:
        ema = validate_checkpoint(model, ckpt, data, img_size=img_size, use_ema=True,
                                  output=ckpt.parent / "val-ema")["top1"]
    except Exception:  # a run without EMA weights
        ema = None
    return raw, ema


def sweep_mixer(mixer: str, size: str, out: Path, train_args: dict[str, Any], runtimes: str, threads: int | None,
                nproc: int, log, bench_size: int = 224) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """Train, validate, export and benchmark one mixer (skipped when its ``row.json`` exists); ``(row, bench
    records, fingerprint)``."""
    from edgezoo.bench import Protocol, bench, parse_runtimes
    from edgezoo.export import export
    from edgezoo.profile import profile_model

    run_dir = out / mixer
    row_path = run_dir / "row.json"
    if row_path.is_file():
        done = json.loads(row_path.read_text())
        if done.get("args") == train_args and done["row"].get("bench_size") == bench_size:
            log(f"{done['row']['model']}: done ({row_path}), skipped")
            return done["row"], done["records"], done["fingerprint"]
    name = f"ez_mix_{mixer}_{size}"
    memory = _train({**train_args, "model": name}, run_dir, nproc, log)
    ckpt = run_dir / "best.pth"
    img = train_args.get("img_size")
    top1, top1_ema = _validate(name, ckpt, train_args["data"], img)
    log(f"{name}: top-1 {top1:.2f} (EMA {top1_ema}); exporting")
    onnx = export(ckpt, "onnx", run_dir / "export", model=name, img_size=img)
    calib = train_args["data"]
    report = bench([str(ckpt)], parse_runtimes(runtimes), img_sizes=[bench_size], threads=threads, model=name,
                   calib=calib, protocol=Protocol(warmup=5, runs=50, max_seconds=5.0), progress=False)
    records = report["records"]
    trained_at = img or profile_model(name).input_size[-1]
    row = {
        "mixer": mixer, "model": name, "params": profile_model(name).params, "macs_224": profile_model(name).macs,
        "macs": profile_model(name, (3, trained_at, trained_at)).macs, "img_size": trained_at,
        "bench_size": bench_size,
        "top1": top1, "top1_ema": top1_ema, "onnx": onnx.status,
        "latency_ms": {f"{r['runtime']} {r['precision']}": r["latency_ms"]["p50"] for r in records
                       if r["status"] == "ok"},
        "bench_status": {f"{r['runtime']} {r['precision']}": r["status"] for r in records},
        "peak_train_mb": memory.get("cuda_peak_mb", memory.get("host_rss_mb")),
        "peak_train_kind": "cuda" if "cuda_peak_mb" in memory else "host RSS",
        "train_seconds": memory.get("seconds"),
    }
    row_path.write_text(json.dumps({"args": train_args, "row": row, "records": records,
                                    "fingerprint": report["fingerprint"]}, indent=2))
    return row, records, report["fingerprint"]


def sweep(size: str = "s", mixers: list[str] | None = None, data: str = "digits", output: str | Path | None = None,
          epochs: int | None = None, img_size: int | None = None, batch_size: int | None = None,
          overrides: list[str] | None = None, runtimes: str | None = None, threads: int | None = None,
          nproc: int | None = None, bench_size: int = 224, log=print) -> dict[str, Any]:
    """Run the sweep (see the module docstring); returns ``{"rows", "paths"}``."""
    from edgezoo.blocks.mixers import MIXERS
    from edgezoo.errors import InvalidArgumentError, lookup
    from edgezoo.mix import SIZES

    if size not in SIZES:
        raise InvalidArgumentError(f"unknown size {size!r}: pass --size {' or '.join(SIZES)}")
    mixers = [m.strip().lower() for m in mixers] if mixers else list(MIXERS)
    for m in mixers:
        lookup(dict.fromkeys(MIXERS), m, "sweep mixer")  # unknown: one line with the close names
    out = Path(output or f"runs/sweep-{size}-{Path(data).name or 'data'}")
    train_args = {"data": data, "epochs": epochs, "img_size": img_size or (64 if data == "digits" else None),
                  "batch_size": batch_size, "set": list(overrides or [])}
    runtimes = runtimes or present_runtimes()
    nproc = _gpus() if nproc is None else nproc
    for mixer in mixers:
        sweep_mixer(mixer, size, out, train_args, runtimes, threads, nproc, log, bench_size)
    return write_sweep(out, mixers, size, data, train_args, runtimes, bench_size, log)


def _epoch_seconds(run_dir: Path) -> float | None:
    """Training time: the sum of the epochs' times in ``metrics.jsonl`` (validation included)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return round(sum(r.get("epoch_time", 0.0) for r in rows), 1) or None


def write_sweep(out: Path, mixers: list[str], size: str, data: str, train_args: dict[str, Any], runtimes: str,
                bench_size: int, log=print) -> dict[str, Any]:
    """Tables and charts from the ``row.json`` of every mixer of ``mixers`` done so far (in that order)."""
    from edgezoo.pipelines.sweep_report import pareto_charts, write_tables

    rows, records, fingerprint = [], [], None
    for mixer in mixers:
        path = out / mixer / "row.json"
        if not path.is_file():
            continue
        done = json.loads(path.read_text())
        row = {**done["row"], "train_seconds": _epoch_seconds(out / mixer) or done["row"].get("train_seconds")}
        rows.append(row)
        records.extend(done["records"])
        fingerprint = fingerprint or done["fingerprint"]
    if not rows:
        from edgezoo.errors import InvalidArgumentError

        raise InvalidArgumentError(f"no finished mixer in {out}: run the sweep first")
    meta = {"schema": "edgezoo.sweep/1", "size": size, "data": data, "img_size": rows[0]["img_size"],
            "bench_size": bench_size, "train": train_args, "runtimes": runtimes, "fingerprint": fingerprint,
            "note": f"Top-1: held-out split of {data} at {rows[0]['img_size']} px. Latency: batch 1, p50 at "
                    f"{bench_size} px. Accuracy differences on digits are not evidence about ImageNet; the latency "
                    "columns are."}
    paths = write_tables(rows, out, meta)
    charts = pareto_charts(records, fingerprint, rows, out) if fingerprint else []
    log(f"sweep: {len(rows)} mixers; {paths['md']}; charts: {', '.join(str(c) for c in charts)}")
    return {"rows": rows, "paths": {**{k: str(v) for k, v in paths.items()}, "charts": [str(c) for c in charts]}}


def _ort_session(model: Any, size: int, threads: int, work: Path) -> tuple[Any, dict[str, Any]]:
    """An onnxruntime CPU session of ``model`` at ``size`` px (TorchScript-based export, no gate) and its feed."""
    import torch

    from edgezoo.export.onnx import ort_session

    path = work / f"{id(model)}-{size}.onnx"
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"])
    session = ort_session(path, threads=threads)
    path.unlink()
    return session, {"input": x.numpy()}


def cost_curve(size: str = "s", mixers: list[str] | None = None, sizes: tuple[int, ...] = CURVE_SIZES,
               output: str | Path = "runs/sweep-curve", threads: int | None = None, log=print) -> dict[str, Any]:
    """Latency on onnxruntime CPU against input size for every mixer; ``cost-curve.{json,png}`` in ``output``.

    Each mixer's deploy form (:func:`edgezoo.fuse`, random weights: fp32 latency does not depend on them) is
    exported once per size with torch's TorchScript-based exporter (not parity-gated: the sweep's own ONNX
    files are), and at each size all mixers are timed *interleaved* by the bench protocol
    (:func:`edgezoo.bench.measure`: round-robin rounds), so a loaded machine slows them alike and
    their ratios hold. The JSON is saved after every size.
    """
    import tempfile

    import torch

    import edgezoo
    from edgezoo.bench import Protocol, measure
    from edgezoo.bench.ceiling import measured_fingerprint as fingerprint
    from edgezoo.bench.plot import cost_curve_png, fit_exponents
    from edgezoo.bench.report import save_report
    from edgezoo.bench.run import check_threads
    from edgezoo.blocks.mixers import MIXERS
    from edgezoo.pipelines.sweep_report import curve_markdown

    out = Path(output)
    threads = check_threads(threads)
    protocol = Protocol(warmup=3, runs=20, max_seconds=60.0)
    report: dict[str, Any] = {"schema": "edgezoo.sweep-curve/1", "fingerprint": fingerprint(threads),
                              "protocol": protocol.to_dict(), "exporter": "torch.onnx (TorchScript), opset 17",
                              "timing": "all mixers interleaved at each size", "records": []}
    path = out / "cost-curve.json"
    torch.set_num_threads(threads)
    models = {m: edgezoo.fuse(edgezoo.create_model(f"ez_mix_{m}_{size}").eval()) for m in (mixers or MIXERS)}
    with tempfile.TemporaryDirectory() as work:
        for px in sizes:
            fns, failed = {}, {}
            for mixer, model in models.items():
                try:
                    session, feed = _ort_session(model, px, threads, Path(work))
                    fns[mixer] = lambda s=session, f=feed: s.run(None, f)
                except Exception as err:  # one failed point is a record, never the end of the curve
                    failed[mixer] = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"
            stats = measure(fns, protocol) if fns else {}
            for mixer in models:
                rec = {"model": f"ez_mix_{mixer}_{size}", "mixer": mixer, "img_size": px, "runtime": "ort",
                       "precision": "fp32", "batch": 1, "threads": threads}
                if mixer in stats:
                    st = stats[mixer]
                    rec.update(status="ok", runs=st.runs, latency_ms={"p50": round(st.p50_ms, 4),
                                                                      "p90": round(st.p90_ms, 4),
                                                                      "min": round(st.min_ms, 4)})
                else:
                    rec.update(status="failed", error=failed.get(mixer, "not timed"))
                report["records"].append(rec)
            log(f"{px}px: " + ", ".join(f"{m} {stats[m].p50_ms:.1f}" for m in stats))
            fns.clear()
            save_report(report, path)
    report["exponents"] = fit_exponents(report)
    save_report(report, path)
    png = cost_curve_png(report, out / "cost-curve.png") if len(set(sizes)) > 1 else None  # a curve needs 2 sizes
    (out / "cost-curve.md").write_text(curve_markdown(report) + "\n")
    log(f"cost curve: {path}, {out / 'cost-curve.md'}{f', {png}' if png else ''}")
    return {"report": str(path), "png": str(png) if png else None}


if __name__ == "__main__":
    raise SystemExit(main_worker())
