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
Each mixer is two stages of a plan (:mod:`edgezoo.pipelines.runner`, records in ``OUTPUT/.plan``): its
training, then its evaluation (validate, export, benchmark: alone on the machine). A stopped sweep continues
where it stopped; a changed setting redoes what it changes. The cost curve across input sizes is
``edgezoo bench ez_mix_<mixer>_<size> ... --sizes 256,512,1024 --interleave-sizes --curve curve.png``: the
same benchmark, every file through its export gate.
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

__all__ = ["evaluate_stage", "main_worker", "sweep", "train_stage"]

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


def train_stage(mixer: str, size: str, out: str, train_args: dict[str, Any], nproc: int) -> dict[str, Any]:
    """Train ``ez_mix_<mixer>_<size>`` in a child process (torchrun on several GPUs); its memory and time."""
    name = f"ez_mix_{mixer}_{size}"
    memory = _train({**train_args, "model": name}, Path(out) / mixer, nproc, lambda m: None)
    return {**memory, "checkpoint": str(Path(out) / mixer / "best.pth")}


def evaluate_stage(mixer: str, size: str, out: str, train_args: dict[str, Any], runtimes: str, threads: int | None,
                   bench_size: int, inputs: dict[str, Any]) -> dict[str, Any]:
    """Validate, export and benchmark a trained mixer; write its ``row.json`` (what :func:`write_sweep` reads)."""
    from edgezoo.bench import Protocol, bench, parse_runtimes
    from edgezoo.export import export
    from edgezoo.profile import profile_model

    (memory,) = inputs.values()
    run_dir, name = Path(out) / mixer, f"ez_mix_{mixer}_{size}"
    ckpt = Path(memory["checkpoint"])
    img = train_args.get("img_size")
    top1, top1_ema = _validate(name, ckpt, train_args["data"], img)
    onnx = export(ckpt, "onnx", run_dir / "export", model=name, img_size=img)
    report = bench([str(ckpt)], parse_runtimes(runtimes), img_sizes=[bench_size], threads=threads, model=name,
                   calib=train_args["data"], protocol=Protocol(warmup=5, runs=50, max_seconds=5.0), progress=False)
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
    (run_dir / "row.json").write_text(json.dumps({"args": train_args, "row": row, "records": records,
                                                 "fingerprint": report["fingerprint"]}, indent=2))
    return {"row": row}


def sweep(size: str = "s", mixers: list[str] | None = None, data: str = "digits", output: str | Path | None = None,
          epochs: int | None = None, img_size: int | None = None, batch_size: int | None = None,
          overrides: list[str] | None = None, runtimes: str | None = None, threads: int | None = None,
          nproc: int | None = None, bench_size: int = 224, log=print, progress: bool = False) -> dict[str, Any]:
    """Run the sweep (see the module docstring); returns ``{"rows", "paths", "stages"}`` (``stages``: each stage's
    status, ``done`` or ``reused``)."""
    from edgezoo.blocks.mixers import MIXERS
    from edgezoo.errors import InvalidArgumentError, lookup
    from edgezoo.mix import SIZES
    from edgezoo.pipelines.runner import Plan, Stage, run

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
    common = {"size": size, "out": str(out), "train_args": train_args}
    stages = []
    for mixer in mixers:
        stages += [Stage(f"{mixer}/train", train_stage, {"mixer": mixer, "nproc": nproc, **common}, affinity=mixer),
                   Stage(f"{mixer}/evaluate", evaluate_stage, {"mixer": mixer, "runtimes": runtimes, "threads": threads,
                                                               "bench_size": bench_size, **common},
                         needs=(f"{mixer}/train",), exclusive=True, affinity=mixer)]

    def landed(name: str, outcome: Any) -> None:
        log(f"{name}: {outcome.status}" + (f" ({outcome.error})" if outcome.error else ""))

    # one stage at a time in this process: a training child takes every core (or every GPU)
    outcomes = run(Plan(stages, out / ".plan"), jobs=0, progress=progress, desc="sweep", on_outcome=landed)
    result = write_sweep(out, mixers, size, data, train_args, runtimes, bench_size, log)
    return {**result, "stages": {n: o.status for n, o in outcomes.items()}}


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


if __name__ == "__main__":
    raise SystemExit(main_worker())
