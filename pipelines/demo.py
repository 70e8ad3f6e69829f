"""``edgezoo demo``: the whole pipeline in minutes on the built-in digits data.

For the smallest model of each of the five families: train with the shared recipe (``edgezoo.train``,
``configs/digits.yaml``, a short schedule per family), validate (top-1, confusion matrix), fuse and
export to ONNX fp32 and int8, CoreML and ExecuTorch (TensorRT where present), each through its parity
gate (``edgezoo.export.export``), time every runtime present with one protocol
(``edgezoo.bench.bench``), then write ``report.md``, ``report.json`` and three charts.

Why it fits in a few minutes on two cores: the models are tiny at 32 px (digits are 8x8 images), so
every step is dominated by per-op overhead, not arithmetic. One thread per process is then the
fastest setting, and two processes (one per core) work side by side: the demo is a plan of stages
(train, one export per group of formats, benchmark) run by :mod:`edgezoo.pipelines.runner`, the longest
ready stage first, a model's stages on the worker that holds its prepared model; the benchmarks run last,
one at a time, on an otherwise idle machine. ``--resume`` reuses every stage whose settings and inputs are
unchanged (its content key), so a stopped demo continues where it stopped. ExecuTorch int8
(PT2E quantisation, then lowering: several minutes for one model) is off by default
(``--formats`` adds ``executorch-int8``).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgezoo.errors import InvalidArgumentError, lookup
from edgezoo.pipelines.demo_tasks import FORMATS, bench_stage, export_stage, init_worker, remote_stage, train_stage
from edgezoo.pipelines.runner import Plan, Stage, run

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
DEFAULT_FORMATS = ["onnx", "onnx-int8", "coreml", "executorch", "litert", "tensorrt"]
#: runtime (``parse_runtimes`` syntax) -> the demo format whose file it runs (None: the PyTorch deploy form)
RUNTIMES: dict[str, str | None] = {
    "torch": None, "ort": "onnx", "ort-int8": "onnx-int8", "executorch:fp32": "executorch",
    "executorch:int8": "executorch-int8", "openvino:fp32": "onnx", "openvino:int8": "onnx-int8",
    "coreml:fp16": "coreml", "tensorrt:fp16": "tensorrt", "ort-cuda:fp32": "onnx", "litert:fp32": "litert",
}
#: runtimes a remote target times (``edgezoo demo --remote``) -> the demo format that must be asked for
REMOTE_RUNTIMES = {"ort": "onnx", "executorch:fp32": "executorch", "litert:fp32": "litert"}
#: rough CPU seconds of each export of ResNet-18-ECA and of an epoch: the longest chain starts first
_COST = {"onnx": 5, "onnx-int8": 4, "coreml": 5, "executorch": 9, "executorch-int8": 60, "litert": 12, "tensorrt": 30,
         "epoch": 12}
#: formats exported in one task, in this order: the later ones reuse the first one's ONNX graph (one
#: exporter run per model and process, :func:`edgezoo.export.onnx.build_onnx`)
_SHARED_GRAPH = ("onnx", "onnx-int8", "tensorrt")
#: the benchmark protocol: batch 1, one thread, short (the models run in about a millisecond)
PROTOCOL = {"warmup": 10, "runs": 200, "max_seconds": 0.5}


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


def _plan(entries: list[Entry], formats: list[str], out: Path, img_size: int, sets: list[str], threads: int,
          inline: bool, runtimes: str, protocol: dict[str, Any], state: Path, fresh: bool,
          remote: str | None = None, targets: str | None = None) -> tuple[Plan, dict[str, dict[str, Any]]]:
    """The demo's plan: per model, train -> one export stage per group of formats -> bench (alone, last)."""
    import hashlib
    import json

    stages: list[Stage] = []
    results: dict[str, dict[str, Any]] = {}
    for e in entries:
        recipe = [*e.sets, *sets]
        digest = hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:8]
        run_dir = out / "runs" / f"{e.model}-{img_size}px-{e.epochs}ep-{digest}"
        model_dir = out / "models" / e.model
        if fresh:
            shutil.rmtree(run_dir, ignore_errors=True)
            shutil.rmtree(model_dir, ignore_errors=True)
        model_dir.mkdir(parents=True, exist_ok=True)
        results[e.model] = {"family": e.family, "model": e.model, "epochs": e.epochs, "img_size": img_size,
                            "run_dir": str(run_dir), "model_dir": str(model_dir), "exports": {}, "errors": {}}
        train = f"{e.model}/train"
        stages.append(Stage(train, train_stage, dict(
            model=e.model, epochs=e.epochs, img_size=img_size, run_dir=str(run_dir), model_dir=str(model_dir),
            resume=True, sets=recipe, threads=threads, inline=inline),
            cost=_COST["epoch"] * e.epochs + e.weight * sum(_COST.get(k, 20) for k in formats), affinity=e.model))
        groups = []
        for group in _groups(formats):
            name = f"{e.model}/export:{','.join(group)}"
            groups.append(name)
            stages.append(Stage(name, export_stage, dict(
                keys=group, model=e.model, out_dir=str(model_dir / "exported"), model_dir=str(model_dir),
                options={k: e.int8 if k == "onnx-int8" else {} for k in group}, inline=inline),
                needs=(train,), cost=e.weight * sum(_COST.get(k, 20) for k in group), affinity=e.model))
        stages.append(Stage(f"{e.model}/bench", bench_stage, dict(
            model=e.model, runtimes=runtimes, work_dir=str(model_dir / "exported"), model_dir=str(model_dir),
            threads=1, protocol=protocol, inline=inline), needs=(train, *groups), exclusive=True, affinity=e.model))
        if remote:
            remote_runtimes = ",".join(rt for rt, fmt in REMOTE_RUNTIMES.items() if fmt in formats) or "ort"
            stages.append(Stage(f"{e.model}/remote", remote_stage, dict(
                model=e.model, remote=remote, targets=targets, runtimes=remote_runtimes, img_size=img_size,
                protocol=protocol, model_dir=str(model_dir), inline=inline), needs=(train,), exclusive=True,
                affinity=e.model))
    return Plan(stages, state), results


def run_demo(out: str | os.PathLike = "demo-out", families: Sequence[str] | None = None, quick: bool = False,
             resume: bool = False, epochs: int | None = None, img_size: int = IMG_SIZE,
             formats: Sequence[str] | None = None, jobs: int | None = None, sets: Sequence[str] = (),
             progress: bool = True, protocol: dict[str, Any] | None = None, remote: str | None = None,
             targets: str | None = None) -> dict[str, Any]:
    """Run the demo into ``out``; return what :func:`edgezoo.pipelines.demo_report.write_report` wrote (``report_md``,
    ``report_json``, ``charts``, ``failed``). Bad input raises :class:`edgezoo.EdgezooError` before any work.

    ``protocol`` replaces :data:`PROTOCOL` (the benchmark's warm-up, runs and seconds). ``remote`` (a target
    SPEC or name, :mod:`edgezoo.bench.targets`) times each model's files there too: the report gains the
    target's columns.
    """

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

    if remote:  # a bad SPEC, an unreachable host or a refused key: one line before any training
        from edgezoo.bench.targets import parse_target
        from edgezoo.bench.transport import connect

        connect(parse_target(remote, targets)).run("true", "connecting")
    t_wall, t_cpu = time.perf_counter(), _cpu_seconds()
    state = out / ".plan"
    if not resume:
        shutil.rmtree(state, ignore_errors=True)
    plan, results = _plan(entries, formats, out, img_size, [*sets], threads, inline, runtimes, protocol, state,
                          fresh=not resume, remote=remote, targets=targets)
    outcomes = run(plan, jobs=jobs, progress=progress, desc="demo", initializer=None if inline else init_worker,
                   initargs=(threads,))
    for name, outcome in outcomes.items():
        model, _, stage = name.partition("/")
        r = results[model]
        if outcome.status in ("failed", "skipped"):
            r["errors"][stage] = outcome.error
            for key in (stage.removeprefix("export:").split(",") if stage.startswith("export:") else []):
                r["exports"][key] = {"status": "failed", "error": outcome.error}
            continue
        res = dict(outcome.result or {})
        if stage == "train":
            r["train"] = {k: v for k, v in res.items() if k not in ("val", "params", "macs", "input_size")}
            r.update(checkpoint=res["checkpoint"], use_ema=res["use_ema"], val=res["val"], params=res["params"],
                     macs=res["macs"])
            r["train"]["reused"] = r["train"].get("reused") or outcome.status == "reused"
        elif stage == "bench":
            r["bench"] = res
        elif stage == "remote":
            r["remote"] = res
        else:
            for key, row in res.items():
                r["exports"][key] = {**row, "reused": True} if outcome.status == "reused" else row

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
