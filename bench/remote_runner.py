"""The benchmark runner that runs on a target: ``python3 remote_runner.py JOB.json`` in its work folder.

Shipped per run by :mod:`edgezoo.bench.remote` together with ``protocol.py``, ``fingerprint.py`` and
``memory.py``; it needs the standard library, numpy and the runtime's own package (onnxruntime,
executorch, openvino, ai-edge-litert), never edgezoo. It times the job's artifacts with the same
:func:`protocol.measure` as the local benchmark: warm-up, then interleaved timed runs (the artifacts of
one group share one stretch of time), p50/p90/p99/min/mean/std, the load time and the peak-RSS rise of
loading and warming up each artifact, and with ``agree`` the top-1 class of each held-out image.

The job (JSON)::

    {"threads": 4, "cooldown_s": 0, "protocol": {"warmup": 10, "runs": 100, ...},
     "groups": [[{"key": "0", "runtime": "ort", "path": "a0.onnx", "shape": [1, 3, 224, 224],
                  "agree": "agree-1.npy" | null}, ...], ...]}

Output: one line per event on stdout, each ``@edgezoo {json}`` (a runtime's own prints are left
alone): ``hello`` (the fingerprint), ``missing`` (a runtime's module is not importable: nothing is
timed), ``record`` or ``failed`` per artifact as each group finishes, and ``done``. Exit status 0, or 3
when a runtime's package is missing.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: runtime -> (module to import, package to pip install on the target)
MODULES = {"ort": ("onnxruntime", "onnxruntime"), "ort-int8": ("onnxruntime", "onnxruntime"),
           "executorch": ("executorch", "executorch"), "openvino": ("openvino", "openvino"),
           "litert": ("ai_edge_litert", "ai-edge-litert")}
PREFIX = "@edgezoo "
MISSING_EXIT = 3

Runner = Callable[[Any], Any]


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(PREFIX + json.dumps({"event": event, **fields}, default=str) + "\n")
    sys.stdout.flush()


def example(shape: list[int]) -> Any:
    """The seeded input every benchmark of edgezoo times (``BenchItem.example``: standard normal, seed 0)."""
    import numpy as np

    return np.random.default_rng(0).standard_normal(tuple(shape), dtype=np.float32)


def load_ort(path: str, threads: int) -> tuple[Runner, list[int]]:
    import onnxruntime as ort

    opts = ort.SessionOptions()  # the options of edgezoo.export.onnx.session_options
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.force_spinning_stop", "1")
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    return (lambda x: session.run(None, {inp.name: x})[0]), [int(d) for d in inp.shape]


def load_executorch(path: str, threads: int) -> tuple[Runner, list[int]]:
    import torch
    from executorch.runtime import Runtime

    try:
        from executorch.extension.pybindings import portable_lib

        portable_lib._unsafe_reset_threadpool(threads)
    except (ImportError, AttributeError):  # older wheels: XNNPACK's pool keeps its default size
        pass
    program = Runtime.get().load_program(Path(path))
    method = program.load_method("forward")
    shape = list(method.metadata.input_tensor_meta(0).sizes())

    def run(x: Any, _keep: Any = program) -> Any:  # the program must outlive its method
        return method.execute([torch.from_numpy(x)])[0].numpy()

    return run, shape


def load_openvino(path: str, threads: int, precision: str) -> tuple[Runner, list[int]]:
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    model = core.read_model(path)
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()

    def run(x: Any, _keep: Any = compiled) -> Any:
        request.infer({0: x})
        return request.get_output_tensor(0).data

    return run, [int(d) for d in model.inputs[0].get_shape()]


def load_litert(path: str, threads: int) -> tuple[Runner, list[int]]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=path, num_threads=threads or None)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    shape = [int(d) for d in inp["shape"]]

    def run(x: Any) -> Any:
        if x.shape != tuple(shape) and x.ndim == 4:  # NCHW images into an NHWC graph
            x = x.transpose(0, 2, 3, 1)
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        return interp.get_tensor(out["index"])

    return run, shape


def load(entry: dict[str, Any], threads: int) -> tuple[Runner, list[int]]:
    rt, path = entry["runtime"], entry["path"]
    if rt in ("ort", "ort-int8"):
        return load_ort(path, threads)
    if rt == "executorch":
        return load_executorch(path, threads)
    if rt == "openvino":
        return load_openvino(path, threads, entry.get("precision", "fp32"))
    if rt == "litert":
        return load_litert(path, threads)
    raise ValueError(f"runtime {rt!r} has no Python runner here (known: {', '.join(MODULES)})")


def missing_modules(groups: list[list[dict[str, Any]]]) -> list[tuple[str, str, str]]:
    """``[(runtime, module, package)]`` of the job's runtimes whose module does not import (numpy first)."""
    import importlib.util

    out = []
    needed = [("numpy", "numpy", "numpy")]
    needed += [(rt, *MODULES[rt]) for rt in dict.fromkeys(e["runtime"] for g in groups for e in g) if rt in MODULES]
    for rt, module, package in needed:
        if importlib.util.find_spec(module) is None:
            out.append((rt, module, package))
    return out


def time_group(group: list[dict[str, Any]], job: dict[str, Any], threads: int, images: dict[str, Any]) -> None:
    """Load, warm up and time one group's artifacts interleaved; emit one event per artifact."""
    import numpy as np
    from memory import PeakRss
    from protocol import Protocol, measure

    proto = Protocol(**job["protocol"])
    runners: dict[str, Runner] = {}
    inputs: dict[str, Any] = {}
    facts: dict[str, dict[str, Any]] = {}
    for entry in group:
        key = entry["key"]
        try:
            with PeakRss() as peak:
                start = time.perf_counter()
                run, shape = load(entry, threads)
                load_ms = (time.perf_counter() - start) * 1e3
                x = example(entry.get("shape") or shape)
                for _ in range(max(proto.warmup, 1)):
                    run(x)
            runners[key], inputs[key] = run, x
            facts[key] = {"load_ms": round(load_ms, 3), "peak_memory_mb": peak.mb, "shape": list(x.shape)}
        except Exception as err:  # one artifact that does not load is its record; the others are timed
            emit("failed", key=key, error=first_line(err))
    if not runners:
        return
    timed = Protocol(warmup=0, runs=proto.runs, max_seconds=proto.max_seconds * len(runners),
                     min_runs=proto.min_runs, block=proto.block)
    try:
        stats = measure({k: (lambda r=r, x=inputs[k]: r(x)) for k, r in runners.items()}, timed)
    except Exception as err:
        for key in runners:
            emit("failed", key=key, error=first_line(err))
        return
    for key, run in runners.items():
        fields = {**facts[key], "stats": stats[key].to_dict(), "interleaved_with": len(runners) - 1}
        agree = images.get(next(e for e in group if e["key"] == key).get("agree") or "")
        if agree is not None and facts[key]["shape"][0] == 1:
            try:
                fields["top1"] = [int(np.argmax(run(np.ascontiguousarray(agree[i:i + 1])))) for i in range(len(agree))]
            except Exception as err:
                fields["agree_error"] = first_line(err)
        emit("record", key=key, **fields)


def load_average() -> float | None:
    """The target's 1-minute load average (how busy it was), ``None`` where the OS has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def first_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:300]}"


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    job = json.loads(Path(argv[1]).read_text())
    groups = job["groups"]
    missing = missing_modules(groups)
    if missing:
        for rt, module, package in missing:
            emit("missing", runtime=rt, module=module, package=package, python=sys.executable)
        return MISSING_EXIT
    from fingerprint import fingerprint

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = int(job.get("threads") or usable)
    emit("hello", pid=os.getpid(), fingerprint=fingerprint(threads), python=sys.executable, load=load_average())
    import numpy as np

    names = {e["agree"] for g in groups for e in g if e.get("agree")}
    images = {name: np.load(here / name).astype(np.float32) for name in names}  # --agree's held-out images
    for n, group in enumerate(groups):
        if n and job.get("cooldown_s"):
            time.sleep(float(job["cooldown_s"]))  # let a phone or a fanless board cool between groups
        time_group(group, job, threads, images)
    emit("done", load=load_average())
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except Exception as err:  # a crash is one event the host reports in one line, with the traceback on stderr
        traceback.print_exc()
        emit("crash", error=first_line(err))
        sys.exit(1)
