"""The stages of ``edgezoo demo``, one function each, run in worker processes (:mod:`edgezoo.pipelines.demo`).

Each takes and returns plain JSON-able values, measures its own wall and CPU seconds, and writes its
console output to a log file, so two of them can run side by side, one per core:

* :func:`train` - the shared recipe on digits (``edgezoo.train``), resumable; then validation of
  the better of the weights and their EMA at the best epoch (top-1, confusion matrix) and
  params/MACs of the deploy form;
* :func:`export_one` - one format/precision through :func:`edgezoo.export.export` and its parity gate
  (:func:`export_group`: several in turn, sharing the ONNX graph);
* :func:`bench_one` - :func:`edgezoo.bench.bench` on every runtime given, timing the files
  the export stage made (:class:`Exported`) instead of exporting them again.

Heavy imports (torch, ``edgezoo.train``, ``edgezoo.export``) happen inside the functions.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "FORMATS",
    "bench_one",
    "bench_stage",
    "export_group",
    "export_one",
    "export_stage",
    "init_worker",
    "remote_stage",
    "train",
    "train_stage",
]

#: The demo's export targets: key -> (format, precision). ONNX int8 options are per family (see demo.PLAN).
FORMATS: dict[str, tuple[str, str]] = {
    "onnx": ("onnx", "fp32"),
    "onnx-int8": ("onnx", "int8"),
    "coreml": ("coreml", "fp16"),
    "executorch": ("executorch", "fp32"),
    "executorch-int8": ("executorch", "int8"),
    "litert": ("litert", "fp32"),
    "tensorrt": ("tensorrt", "fp16"),
}


def init_worker(threads: int) -> None:
    """Worker-process set-up: ``threads`` intra-op threads for torch and OpenMP."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


@contextlib.contextmanager
def _logged(path: Path, inline: bool) -> Iterator[None]:
    """Send this stage's console output to ``path``: file descriptors 1 and 2 in a worker process (C++
    libraries print there too), ``sys.stdout``/``sys.stderr`` when running inline (in a thread)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as log:
        if inline:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield
            return
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


@contextlib.contextmanager
def _clock(into: dict[str, Any]) -> Iterator[None]:
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        into["wall_s"] = round(time.perf_counter() - wall, 2)
        into["cpu_s"] = round(time.process_time() - cpu, 2)


def _history(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def train(model: str, epochs: int, img_size: int, run_dir: str, model_dir: str, resume: bool, sets: list[str],
          threads: int, inline: bool = False) -> dict[str, Any]:
    """Train ``model`` on digits into ``run_dir`` (reused when ``resume`` and finished), validate the better weights.

    Returns ``checkpoint``, ``history`` (metrics.jsonl), ``reused``, ``use_ema`` (the better weights),
    ``val`` (:func:`edgezoo.train.validate_checkpoint` of those), ``params``/``macs`` (deploy form, batch 1).
    """
    out: dict[str, Any] = {}
    run, mdir = Path(run_dir), Path(model_dir)
    with _clock(out), _logged(mdir / "train.log", inline):
        from edgezoo.train import resolve_config, validate_checkpoint
        from edgezoo.train import run as run_recipe

        cfg = resolve_config(model=model, data="digits", overrides=list(sets), sched__epochs=epochs,
                             data__img_size=img_size, run__output=str(run), run__threads=threads,
                             run__progress=False)
        final = run_recipe(cfg, resume=resume)
        out["reused"] = bool(final.get("finished"))
        print(f"demo: {'reused the finished run in' if out['reused'] else 'trained'} {run}", flush=True)
        ckpt, history = str(run / "best.pth"), _history(run)
        # best.pth's epoch was validated with both weight sets during training: validate the better one only
        row = next((h for h in history if h["epoch"] == final.get("best_epoch")), history[-1] if history else {})
        use_ema = row.get("ema_val_top1", -1.0) > row.get("val_top1", 0.0)
        best = validate_checkpoint(model, ckpt, "digits", use_ema=use_ema, output=mdir / "val")
        confusion = mdir / "confusion.png"
        os.replace(best["confusion_png"], confusion)
        shutil.rmtree(mdir / "val", ignore_errors=True)
        other = row.get("val_top1" if use_ema else "ema_val_top1")
        out.update(checkpoint=ckpt, history=history, use_ema=use_ema,
                   val={"top1": best["top1"], "top5": best["top5"], "loss": best["loss"], "count": best["count"],
                        "weights": "EMA" if use_ema else "raw", "other_top1": other,
                        "confusion_png": str(confusion), "per_class": best["per_class"]})
        out.update(_profile(ckpt, model, use_ema))
    return out


def _profile(ckpt: str, model: str, use_ema: bool) -> dict[str, Any]:
    from edgezoo.pipelines.cache import prepared
    from edgezoo.profile import count_macs, count_params

    src = prepared(ckpt, model=model, use_ema=use_ema)
    return {"params": count_params(src.model), "macs": int(count_macs(src.model, src.input_size)),
            "input_size": list(src.input_size)}


def export_one(key: str, ckpt: str, model: str, use_ema: bool, out_dir: str, model_dir: str,
               options: dict[str, Any], inline: bool = False) -> dict[str, Any]:
    """Export the checkpoint to demo format ``key`` (:data:`FORMATS`); the :class:`ExportResult` as a dict."""
    fmt, precision = FORMATS[key]
    timing: dict[str, Any] = {}
    with _clock(timing), _logged(Path(model_dir) / f"export-{key}.log", inline):
        from edgezoo.export import export, get_format
        from edgezoo.pipelines.cache import prepared

        missing = get_format(fmt).missing()
        if missing or (fmt == "tensorrt" and get_format(fmt).runtime_reason()):
            why = f"{missing} is not installed" if missing else get_format(fmt).runtime_reason()
            return {"format": fmt, "precision": precision, "status": "absent", "error": why, **timing}
        res = export(prepared(ckpt, model=model, use_ema=use_ema), fmt, out_dir, precision=precision,
                     calib="digits", **options)
        print(res.summary(), flush=True)
    row = res.to_dict()
    row.pop("metadata", None)
    row.get("notes", {}).pop("traceback", None)
    return {**row, **timing}


def export_group(keys: list[str], ckpt: str, model: str, use_ema: bool, out_dir: str, model_dir: str,
                 options: dict[str, dict[str, Any]], inline: bool = False) -> dict[str, dict[str, Any]]:
    """:func:`export_one` for each of ``keys`` in turn, in this process (``options``: per key): formats
    built from the ONNX graph reuse the first one's (:func:`edgezoo.export.onnx.build_onnx`)."""
    return {key: export_one(key, ckpt, model, use_ema, out_dir, model_dir, options.get(key, {}), inline)
            for key in keys}


def train_stage(**settings: Any) -> dict[str, Any]:
    """The demo's training stage (:func:`train`), as the runner calls it."""
    return train(**settings)


def export_stage(keys: list[str], model: str, out_dir: str, model_dir: str, options: dict[str, dict[str, Any]],
                 inline: bool, inputs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The demo's export stage: :func:`export_group` of the checkpoint the training stage made."""
    (trained,) = inputs.values()
    return export_group(keys, trained["checkpoint"], model, trained["use_ema"], out_dir, model_dir, options, inline)


def bench_stage(model: str, runtimes: str, work_dir: str, model_dir: str, threads: int, protocol: dict[str, Any],
                inline: bool, inputs: dict[str, Any]) -> dict[str, Any]:
    """The demo's benchmark stage: :func:`bench_one` of the trained model and every file its exports made."""
    trained = next(v for k, v in inputs.items() if k.endswith("/train"))
    exports = {key: row for k, v in inputs.items() if not k.endswith("/train") for key, row in v.items()}
    return bench_one(trained["checkpoint"], model, trained["use_ema"], exports, runtimes, work_dir, model_dir,
                     threads, protocol, inline)


def remote_stage(model: str, remote: str, targets: str | None, runtimes: str, img_size: int,
                 protocol: dict[str, Any], model_dir: str, inline: bool, inputs: dict[str, Any]) -> dict[str, Any]:
    """The demo's remote stage: the trained checkpoint's files timed on ``remote`` (``edgezoo bench --remote``'s
    protocol and runner), with top-1 agreement on held-out digits there."""
    timing: dict[str, Any] = {}
    (trained,) = inputs.values()
    with _clock(timing), _logged(Path(model_dir) / "remote.log", inline):
        from edgezoo.bench import Protocol, parse_runtimes
        from edgezoo.bench.remote import bench_remote

        report = bench_remote([trained["checkpoint"]], parse_runtimes(runtimes), remote, targets_file=targets,
                              img_sizes=[img_size], protocol=Protocol(**protocol), agree=100, model=model,
                              work_dir=str(Path(model_dir) / "remote"), interleave_runtimes=True,
                              log=lambda m: print(m, flush=True))
    report["timing"] = timing
    return report


def bench_one(ckpt: str, model: str, use_ema: bool, exports: dict[str, dict[str, Any]], runtimes: str,
              work_dir: str, model_dir: str, threads: int, protocol: dict[str, Any], inline: bool = False,
              ) -> dict[str, Any]:
    """Time the deploy form and the exported files on ``runtimes`` (``parse_runtimes`` syntax); the bench report."""
    timing: dict[str, Any] = {}
    with _clock(timing), _logged(Path(model_dir) / "bench.log", inline):
        from edgezoo.bench import BenchItem, Protocol, bench, parse_runtimes
        from edgezoo.pipelines.cache import prepared
        from edgezoo.pipelines.demo_artifacts import Exported
        from edgezoo.profile import count_macs, count_params

        src = prepared(ckpt, model=model, use_ema=use_ema)
        item = BenchItem(src=src, artifacts=Exported(src, Path(work_dir), exports), threads=threads)
        item.extra.update(params=count_params(src.model), macs=int(count_macs(src.model, src.input_size)))
        report = bench([item], parse_runtimes(runtimes), threads=threads, protocol=Protocol(**protocol),
                       work_dir=work_dir, progress=False, interleave_runtimes=True)
    report["timing"] = timing
    return report
