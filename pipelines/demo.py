"""``edgezoo demo``: the whole pipeline in minutes on the built-in digits data.

For the smallest model of each of the five families: train with the shared recipe (``edgezoo.train``,
``configs/digits.yaml``, a short schedule per family), validate (top-1, confusion matrix), fuse and
export to ONNX fp32 and int8, CoreML and ExecuTorch (TensorRT where present), each through its parity
gate (``edgezoo.export.export``), time every runtime present with one protocol
(``edgezoo.bench.bench``), then write ``report.md``, ``report.json`` and three charts.

Why it fits in a few minutes on two cores: the models are tiny at 32 px (digits are 8x8 images), so
every step is dominated by per-op overhead, not arithmetic. One thread per process is then the
fastest setting, and two processes (one per core) work side by side: the stages are independent
tasks (train, one export per format, benchmark) run by a pool of worker processes, the longest ready
task first; the benchmarks run last, one at a time, on an otherwise idle machine. ExecuTorch int8
(PT2E quantisation, then lowering: several minutes for one model) is off by default
(``--formats`` adds ``executorch-int8``).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgezoo.errors import InvalidArgumentError, lookup
from edgezoo.pipelines.demo_tasks import FORMATS, bench_one, export_group, init_worker, train

__all__ = ["DEFAULT_FORMATS", "PLAN", "QUICK", "Entry", "run_demo"]


@dataclass(frozen=True)
class Entry:
    """One family's demo model, its epochs on digits, its ONNX int8 options and how heavy its exports are."""

    family: str
    model: str
    epochs: int
    int8: dict[str, Any] = field(default_factory=dict)
    sets: tuple[str, ...] = ()  # recipe overrides on top of configs/digits.yaml
    weight: float = 1.0  # CPU cost of its exports relative to ResNet-18-ECA's (scheduling only)


#: ONNX int8 without the sensitivity fallback (its ranking costs minutes on two cores); the attention
#: families quantise the inputs of the weighted ops only (``weighted``: their residual adds and attention
#: products lose the most), the convolutional ones every op (``full``: onnxruntime's fused int8 kernels).
_FULL = {"int8_scheme": "full", "int8_fallback": 0}
_WEIGHTED = {"int8_scheme": "weighted", "int8_fallback": 0}
#: batch 64 (lr scaled from the recipe's 2e-3 per 32) where the family keeps a margin over 95% with half
#: the steps (ResNet-18-ECA 98.6%, SHViT-S1 96.7%, EfficientViT-B0 96.1%); a step costs little more than
#: at 32, per-op overhead dominating. EfficientViT-M0 and FocalNet reach only 95.0% so: they keep 32.
_B64 = "data.batch_size=64"

PLAN: dict[str, Entry] = {e.family: e for e in (
    Entry("cnn_attention", "ez_resnet18_eca", 3, _FULL, (_B64,)),
    Entry("single_head_vit", "ez_shvit_s1", 3, _WEIGHTED, (_B64,), weight=2.0),
    Entry("cascaded_group", "ez_efficientvit_m0", 3, _WEIGHTED, weight=3.5),
    Entry("focal_modulation", "ez_focalnet_edge_xs", 5, _FULL, ("sched.warmup_epochs=0",), weight=2.0),
    Entry("linear_vit", "ez_efficientvit_b0", 6, _WEIGHTED, ("sched.warmup_epochs=0", _B64), weight=1.2),
)}
IMG_SIZE = 32
#: ``--quick``: one family, two epochs, the formats without ExecuTorch's lowering (about a minute by itself)
QUICK = {"families": ["focal_modulation"], "epochs": 2, "formats": ["onnx", "onnx-int8", "coreml"]}
DEFAULT_FORMATS = ["onnx", "onnx-int8", "coreml", "executorch", "tensorrt"]
#: runtime (``parse_runtimes`` syntax) -> the demo format whose file it runs (None: the PyTorch deploy form)
RUNTIMES: dict[str, str | None] = {
    "torch": None, "ort": "onnx", "ort-int8": "onnx-int8", "executorch:fp32": "executorch",
    "executorch:int8": "executorch-int8", "openvino:fp32": "onnx", "openvino:int8": "onnx-int8",
    "coreml:fp16": "coreml", "tensorrt:fp16": "tensorrt", "ort-cuda:fp32": "onnx",
}
#: rough CPU seconds of each export of ResNet-18-ECA and of an epoch: the longest chain starts first
_COST = {"onnx": 5, "onnx-int8": 4, "coreml": 5, "executorch": 9, "executorch-int8": 60, "tensorrt": 30, "epoch": 12}
#: formats exported in one task, in this order: the later ones reuse the first one's ONNX graph (one
#: exporter run per model and process, :func:`edgezoo.export.onnx.build_onnx`)
_SHARED_GRAPH = ("onnx", "onnx-int8", "tensorrt")
#: the benchmark protocol: batch 1, one thread, short (the models run in about a millisecond)
PROTOCOL = {"warmup": 10, "runs": 200, "max_seconds": 0.5}


@dataclass
class _Task:
    model: str
    stage: str  # "train", "export:<key>", "bench"
    fn: Callable[..., dict[str, Any]]
    kwargs: dict[str, Any]
    cost: float
    caches: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # export key -> (file, inputs)


def _check_out(out: Path) -> Path:
    out = out.expanduser()
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(f"--out {out} is a file: give a folder (it is created if missing)")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise InvalidArgumentError(f"--out {out}: {probe} is not writable; choose another folder")
    return out


def _entries(families: Sequence[str] | None, epochs: int | None) -> list[Entry]:
    chosen = [lookup(PLAN, f, "demo family name") for f in families] if families else list(PLAN.values())
    if epochs is not None and epochs < 1:
        raise InvalidArgumentError(f"--epochs must be >= 1, got {epochs}")
    unique = {e.family: e for e in chosen}.values()
    return [Entry(e.family, e.model, epochs or e.epochs, e.int8, e.sets) for e in unique]


def _groups(keys: Sequence[str]) -> list[list[str]]:
    """The export tasks of one model: the formats that share the ONNX graph together, the others alone."""
    shared = [k for k in _SHARED_GRAPH if k in keys]
    return ([shared] if shared else []) + [[k] for k in keys if k not in shared]


def _formats(formats: Sequence[str]) -> list[str]:
    for key in formats:
        lookup(dict.fromkeys(FORMATS), key, "demo format")
    return list(dict.fromkeys(formats))


class _Progress:
    """One bar per model (tqdm), advanced by epochs (read from ``metrics.jsonl``) and finished stages."""

    def __init__(self, entries: list[Entry], formats: list[str], enabled: bool) -> None:
        from tqdm import tqdm

        width = max(len(e.model) for e in entries)
        self.bars = {e.model: tqdm(total=e.epochs + 1 + len(formats) + 1, desc=e.model.ljust(width), position=i,
                                   disable=not enabled, dynamic_ncols=True, leave=True, file=sys.stderr,
                                   bar_format="{desc} {bar:24} {n_fmt}/{total_fmt} {elapsed} {postfix}")
                     for i, e in enumerate(entries)}
        self.epochs = {e.model: 0 for e in entries}

    def stage(self, model: str, text: str, steps: int = 0) -> None:
        bar = self.bars[model]
        bar.update(steps)
        bar.set_postfix_str(text)

    def epochs_done(self, model: str, run_dir: Path) -> None:
        path = run_dir / "metrics.jsonl"
        n = sum(1 for line in path.read_text().splitlines() if line.strip()) if path.exists() else 0
        if n > self.epochs[model]:
            self.stage(model, f"training: epoch {n} done", n - self.epochs[model])
            self.epochs[model] = n

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _executor(jobs: int, threads: int) -> Executor:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    if jobs == 0:
        return ThreadPoolExecutor(max_workers=1)
    return ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=init_worker, initargs=(threads,))


def _cached_export(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """A previous run's export result when made from the same checkpoint with the same settings."""
    import json

    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if saved.get("key") == key and saved.get("status") in ("verified", "converted") and Path(saved["path"]).exists():
        return {**saved, "reused": True}
    return None


def run_demo(out: str | os.PathLike = "demo-out", families: Sequence[str] | None = None, quick: bool = False,
             resume: bool = False, epochs: int | None = None, img_size: int = IMG_SIZE,
             formats: Sequence[str] | None = None, jobs: int | None = None, sets: Sequence[str] = (),
             progress: bool = True, protocol: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the demo into ``out``; return what :func:`edgezoo.pipelines.demo_report.write_report` wrote (``report_md``,
    ``report_json``, ``charts``, ``failed``). Bad input raises :class:`edgezoo.EdgezooError` before any work.

    ``protocol`` replaces :data:`PROTOCOL` (the benchmark's warm-up, runs and seconds).
    """
    import json

    out = _check_out(Path(out))
    if quick:
        families = families or QUICK["families"]
        epochs = epochs or QUICK["epochs"]
        formats = formats if formats is not None else QUICK["formats"]
    entries = _entries(families, epochs)
    formats = _formats(DEFAULT_FORMATS if formats is None else formats)
    if img_size < 16:
        raise InvalidArgumentError(f"--img-size must be >= 16, got {img_size}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    jobs = min(cores, 2 * len(entries)) if jobs is None else jobs
    if jobs < 0:
        raise InvalidArgumentError(f"--jobs must be >= 0, got {jobs}")
    threads = max(1, cores // jobs) if jobs else 1
    inline = jobs == 0
    protocol = {**PROTOCOL, **(protocol or {})}
    runtimes = ",".join(rt for rt, fmt in RUNTIMES.items() if fmt is None or fmt in formats)

    t_wall, t_cpu = time.perf_counter(), _cpu_seconds()
    results: dict[str, dict[str, Any]] = {}
    for e in entries:
        run_dir = out / "runs" / f"{e.model}-{img_size}px-{e.epochs}ep"
        model_dir = out / "models" / e.model
        if not resume:
            shutil.rmtree(run_dir, ignore_errors=True)
            shutil.rmtree(model_dir, ignore_errors=True)
        model_dir.mkdir(parents=True, exist_ok=True)
        results[e.model] = {"family": e.family, "model": e.model, "epochs": e.epochs, "img_size": img_size,
                            "run_dir": str(run_dir), "model_dir": str(model_dir), "exports": {}, "errors": {}}

    bars = _Progress(entries, formats, progress)
    ready = [_Task(e.model, "train", train, dict(
        model=e.model, epochs=e.epochs, img_size=img_size, run_dir=results[e.model]["run_dir"],
        model_dir=results[e.model]["model_dir"], resume=resume, sets=[*e.sets, *sets], threads=threads, inline=inline),
        cost=_COST["epoch"] * e.epochs + e.weight * sum(_COST.get(k, 20) for k in formats)) for e in entries]
    by_model = {e.model: e for e in entries}
    running: dict[Future, _Task] = {}
    pending_exports = {e.model: set(formats) for e in entries}
    pool = _executor(jobs, threads)

    def start(task: _Task) -> None:
        verb = {"train": "training", "bench": "benchmarking"}.get(task.stage, f"exporting {task.stage[7:]}")
        bars.stage(task.model, verb)
        running[pool.submit(task.fn, **task.kwargs)] = task

    def trained(model: str, res: dict[str, Any]) -> None:
        r = results[model]
        r["train"] = {k: v for k, v in res.items() if k not in ("val", "params", "macs", "input_size")}
        r.update(val=res["val"], params=res["params"], macs=res["macs"])
        bars.stage(model, f"validated: top-1 {res['val']['top1']:.2f}%", 1 + max(0, by_model[model].epochs -
                                                                              bars.epochs[model]))
        todo: dict[str, tuple[str, dict[str, Any]]] = {}
        for key in formats:
            options = by_model[model].int8 if key == "onnx-int8" else {}
            cache_key = {"checkpoint": res["checkpoint"], "mtime_ns": Path(res["checkpoint"]).stat().st_mtime_ns,
                         "use_ema": res["use_ema"], "options": options}
            cache = Path(r["model_dir"]) / f"export-{key}.json"
            hit = _cached_export(cache, cache_key) if resume else None
            if hit is not None:
                exported(model, key, hit)
            else:
                todo[key] = (str(cache), cache_key)
        for group in _groups(list(todo)):
            ready.append(_Task(model, "export:" + ",".join(group), export_group, dict(
                keys=group, ckpt=res["checkpoint"], model=model, use_ema=res["use_ema"],
                out_dir=str(Path(r["model_dir"]) / "exported"), model_dir=r["model_dir"],
                options={k: todo[k][1]["options"] for k in group}, inline=inline),
                cost=by_model[model].weight * sum(_COST.get(k, 20) for k in group), caches={k: todo[k] for k in group}))
        if not formats:
            benchmark(model)

    def exported(model: str, key: str, res: dict[str, Any]) -> None:
        results[model]["exports"][key] = res
        pending_exports[model].discard(key)
        bars.stage(model, f"{key}: {res['status']}", 1)
        if not pending_exports[model]:
            benchmark(model)

    def benchmark(model: str) -> None:
        r = results[model]
        ready.append(_Task(model, "bench", bench_one, dict(
            ckpt=r["checkpoint"], model=model, use_ema=r["use_ema"], exports=r["exports"], runtimes=runtimes,
            work_dir=str(Path(r["model_dir"]) / "exported"), model_dir=r["model_dir"], threads=1,
            protocol=protocol, inline=inline), cost=0.0))

    def finished(task: _Task, fut: Future) -> None:
        try:
            res = fut.result()
        except Exception as err:  # a crashed stage is reported; the other models go on
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            results[task.model]["errors"][task.stage] = f"{type(err).__name__}: {first[:300]}"
            bars.stage(task.model, f"{task.stage} crashed")
            for key in task.caches:
                exported(task.model, key, {"status": "failed", "error": first[:300]})
            return
        if task.stage == "train":
            results[task.model].update(checkpoint=res["checkpoint"], use_ema=res["use_ema"])
            trained(task.model, res)
        elif task.stage == "bench":
            results[task.model]["bench"] = res
            bars.stage(task.model, "done")
            bars.bars[task.model].update(1)
        else:
            for key, row in res.items():
                path, inputs = task.caches[key]
                Path(path).write_text(json.dumps({**row, "key": inputs}, default=str))
                exported(task.model, key, row)

    try:
        while ready or running:
            for task in sorted(ready, key=lambda t: -t.cost):
                if len(running) >= max(jobs, 1):
                    break
                if task.stage == "bench" and (running or any(t.stage != "bench" for t in ready)):
                    continue  # benchmarks run last, one at a time, on an otherwise idle machine
                ready.remove(task)
                start(task)
            done, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
            for t in running.values():
                if t.stage == "train":
                    bars.epochs_done(t.model, Path(t.kwargs["run_dir"]))
            for fut in done:
                finished(running.pop(fut), fut)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bars.close()

    from edgezoo.pipelines.demo_report import machine_summary, write_report

    meta = machine_summary(wall_s=time.perf_counter() - t_wall, cpu_s=_cpu_seconds() - t_cpu, jobs=jobs,
                           threads=threads, formats=formats, runtimes=runtimes, quick=quick, resume=resume,
                           protocol=protocol)
    return write_report(out, [results[e.model] for e in entries], meta)


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished (reaped) child processes so far."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime
