"""The runtimes' own benchmark tools, for targets with no Python (an Android phone) and for TensorRT
engines, which must be built on the GPU that runs them: the command line each is run with and a parser
of what it prints, into the fields of a benchmark record.

=========================  =========  ==============================================================
tool                       runtime    what it prints that is read
=========================  =========  ==============================================================
``onnxruntime_perf_test``  ort        ``Session creation time cost``, ``Average inference time cost``,
                                      ``Peak working set size``, ``Min/P50/P90/P99 Latency`` (seconds)
``executor_runner``        executorch ``Model executed successfully N time(s) in T ms.`` (a mean only)
``benchmark_model``        litert     the timed ``count=... min=... max=... avg=... std=...`` line (us),
                                      ``Initialized session in T ms.``, the peak-memory lines (MB)
``trtexec``                tensorrt   ``Latency: min = ..., mean = ..., median = ..., percentile(90%)``
                                      ``= ..., percentile(99%) = ...``, the engine build time
=========================  =========  ==============================================================

A parsed record keeps only what the tool measured: ``latency_ms`` has the keys the tool printed
(``executor_runner``: ``mean`` alone), and ``protocol`` names the tool and its settings, not edgezoo's
protocol. Each parser raises ``ValueError`` when the lines it needs are missing.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

__all__ = ["COMMANDS", "PARSERS", "native_command", "parse_benchmark_model", "parse_executor_runner",
           "parse_ort_perf_test", "parse_trtexec"]

_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"


def _search(pattern: str, text: str, tool: str, what: str) -> re.Match[str]:
    matches = list(re.finditer(pattern, text))
    if not matches:
        raise ValueError(f"{tool}: no {what} in its output")
    return matches[-1]  # the last: a tool's final summary comes after its warm-up's


def _latency(**values: float | None) -> dict[str, float]:
    return {k: round(v, 4) for k, v in values.items() if v is not None}


def parse_ort_perf_test(text: str) -> dict[str, Any]:
    """``onnxruntime_perf_test -m times -r N``: its summary lines (latencies in seconds, memory in bytes)."""
    tool = "onnxruntime_perf_test"

    def seconds(name: str) -> float | None:
        m = re.search(rf"^\s*{name} Latency:\s*{_NUM}\s*s", text, re.M)
        return float(m[1]) * 1e3 if m else None

    mean = float(_search(rf"Average inference time cost(?: total)?:\s*{_NUM}\s*ms", text, tool, "average time")[1])
    runs = int(_search(r"Total inference requests:\s*(\d+)", text, tool, "request count")[1])
    out: dict[str, Any] = {"latency_ms": _latency(p50=seconds("P50"), p90=seconds("P90"), p99=seconds("P99"),
                                                  min=seconds("Min"), mean=mean), "runs": runs}
    session = re.search(rf"Session creation time cost:\s*{_NUM}\s*s", text)
    if session:
        out["load_ms"] = round(float(session[1]) * 1e3, 3)
    peak = re.search(r"Peak working set size:\s*(\d+)\s*bytes", text)
    if peak:
        out["peak_memory_mb"] = round(int(peak[1]) / 1e6, 1)
    return out


def parse_executor_runner(text: str) -> dict[str, Any]:
    """``executor_runner --num_executions N``: the total time of N executions (its only timing)."""
    m = _search(rf"Model executed successfully (\d+) time\(s\) in {_NUM} ms", text, "executor_runner",
                "'Model executed successfully' line")
    runs = int(m[1])
    return {"latency_ms": _latency(mean=float(m[2]) / max(runs, 1)), "runs": runs}


def parse_benchmark_model(text: str) -> dict[str, Any]:
    """LiteRT's ``benchmark_model``: the last ``count=`` statistics line (the timed runs, microseconds)."""
    tool = "benchmark_model"
    m = _search(r"count=(\d+)(.*)", text, tool, "'count=' statistics line")
    fields = dict(re.findall(rf"(\w+)={_NUM}", m[2]))
    runs = int(m[1])
    if "avg" in fields:
        names = (("min", "min"), ("mean", "avg"), ("std", "std"), ("p50", "median"))
        lat = {k: float(fields[s]) / 1e3 for k, s in names if s in fields}
    elif "curr" in fields:  # every run took the same time: "count=N curr=T(all same)"
        lat = {k: float(fields["curr"]) / 1e3 for k in ("min", "mean", "p50")}
    else:
        raise ValueError(f"{tool}: the 'count=' line has no timings")
    out: dict[str, Any] = {"latency_ms": _latency(**lat), "runs": runs}
    init = re.search(rf"Initialized session in {_NUM}\s*ms", text)
    if init:
        out["load_ms"] = round(float(init[1]), 3)
    peak = re.search(rf"(?:Overall peak memory footprint \(MB\) via periodic monitoring|"
                     rf"Peak memory footprint \(MB\): init=[\d.]+ overall=)\s*:?\s*{_NUM}", text)
    if peak:
        out["peak_memory_mb"] = round(float(peak[1]), 1)
    return out


def parse_trtexec(text: str) -> dict[str, Any]:
    """``trtexec``'s performance summary (host latency, ms) and its engine build time."""
    tool = "trtexec"
    m = _search(r"\]\s*Latency:\s*(.*)", text, tool, "'Latency:' summary line")
    values = {k: float(v) for k, v in re.findall(rf"(min|max|mean|median|percentile\(\d+%\))\s*=\s*{_NUM}\s*ms",
                                                  m[1])}
    if "mean" not in values:
        raise ValueError(f"{tool}: the 'Latency:' line has no mean")
    out: dict[str, Any] = {"latency_ms": _latency(min=values.get("min"), p50=values.get("median"),
                                                  p90=values.get("percentile(90%)"), p99=values.get("percentile(99%)"),
                                                  mean=values["mean"])}
    gpu = re.search(r"\]\s*GPU Compute Time:\s*.*?mean\s*=\s*" + _NUM + r"\s*ms", text)
    if gpu:
        out["gpu_compute_mean_ms"] = round(float(gpu[1]), 4)
    built = re.search(rf"Engine built in {_NUM} sec|Engine generation completed in {_NUM} seconds", text)
    if built:
        out["engine_build_s"] = round(float(built[1] or built[2]), 3)
    throughput = re.search(rf"\]\s*Throughput:\s*{_NUM}\s*qps", text)
    if throughput:
        out["tool_throughput_qps"] = float(throughput[1])
    runs = re.search(r"Timing trace has (\d+) queries", text)
    if runs:
        out["runs"] = int(runs[1])
    return out


PARSERS = {"onnxruntime_perf_test": parse_ort_perf_test, "executor_runner": parse_executor_runner,
           "benchmark_model": parse_benchmark_model, "trtexec": parse_trtexec}

#: the arguments each tool is run with: {model} the artifact, {runs}, {warmup}, {threads}, {seconds}
COMMANDS = {
    "onnxruntime_perf_test": "-e cpu -m times -r {runs} -x {threads} -I {model}",
    "executor_runner": "--model_path={model} --num_executions={runs}",
    "benchmark_model": "--graph={model} --num_runs={runs} --warmup_runs={warmup} --num_threads={threads} "
                       "--max_secs={seconds}",
    "trtexec": "--onnx={model} --saveEngine={engine} --iterations={runs} --warmUp={warmup_ms} --duration=0 "
               "--avgRuns=1 --percentile=90,99",
}


def native_command(tool: str, binary: str, model: str, *, runs: int, warmup: int, threads: int, seconds: float,
                   engine: str = "", precision: str = "fp32", plugins: str | None = None) -> str:
    """The shell command that runs ``tool`` (at ``binary`` on the target) on ``model``."""
    args = COMMANDS[tool].format(model=shlex.quote(model), runs=runs, warmup=warmup, threads=threads,
                                 seconds=seconds, engine=shlex.quote(engine), warmup_ms=max(warmup, 1) * 20)
    if tool == "trtexec":
        args += {"fp16": " --fp16", "int8": " --int8 --fp16"}.get(precision, " --noTF32")
        if plugins:  # --plugins: TensorRT 8.x; 10.x reads it as its --staticPlugins
            args += f" --plugins={shlex.quote(plugins)}"
    return f"{shlex.quote(binary)} {args}"
