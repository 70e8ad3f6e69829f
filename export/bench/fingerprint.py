"""The device fingerprint every benchmark figure carries: CPU, its vector/matrix flags, cores and
threads, GPUs and driver, the OS, and the version of every runtime that is installed.

:func:`fingerprint_id` turns the hardware part into a short file name
(``bench/results/<id>.json``): the same machine kind gives the same id whatever the versions.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

__all__ = ["FLAGS", "cpu_flags", "fingerprint", "fingerprint_id", "matmul_gflops", "package_versions"]

#: CPU flags that decide which kernels a runtime can use (int8 dot products, bf16, AMX tiles).
FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8",
         "asimd", "asimddp", "bf16", "i8mm")

#: Distributions whose version a figure depends on (only those installed are listed).
PACKAGES = ("edgezoo", "torch", "timm", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxslim", "executorch",
            "openvino", "tensorrt", "coremltools")


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _cpu_model(info: str) -> str:
    for line in info.splitlines():
        if line.startswith(("model name", "Hardware", "Model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags(info: str | None = None) -> dict[str, bool]:
    """Which of :data:`FLAGS` the CPU reports (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    info = _cpuinfo() if info is None else info
    words: set[str] = set()
    for line in info.splitlines():
        if line.startswith(("flags", "Features")):
            words |= set(line.split(":", 1)[1].split())
    return {f: f in words for f in FLAGS} if words else {}


def _physical_cores(info: str) -> int | None:
    pairs = set()
    phys = core = None
    for line in info.splitlines():
        if line.startswith("physical id"):
            phys = line.split(":", 1)[1].strip()
        elif line.startswith("core id"):
            core = line.split(":", 1)[1].strip()
            pairs.add((phys, core))
    return len(pairs) or None


def _gpus() -> list[dict[str, str]]:
    """GPUs as ``nvidia-smi`` names them (name, driver, memory), else torch's CUDA view; ``[]`` when none."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=10).stdout
            rows = [[c.strip() for c in line.split(",")] for line in out.strip().splitlines() if line.strip()]
            return [{"name": r[0], "driver": r[1], "memory": r[2]} for r in rows if len(r) >= 3]
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        import torch

        if torch.cuda.is_available():
            return [{"name": torch.cuda.get_device_name(i), "driver": "unknown", "cuda": str(torch.version.cuda)}
                    for i in range(torch.cuda.device_count())]
    except Exception:  # a broken CUDA install must not stop a CPU benchmark
        pass
    return []


def package_versions() -> dict[str, str]:
    """``{distribution: version}`` of the runtimes and libraries in :data:`PACKAGES` that are installed."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def matmul_gflops(threads: int, n: int = 1024, seconds: float = 0.3) -> float:
    """fp32 GFLOP/s of an ``n x n`` matmul in torch at ``threads`` threads: the machine's ceiling for reference."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or runs < 2:
            a @ b
            runs += 1
        return round(2 * n ** 3 * runs / (time.perf_counter() - start) / 1e9, 1)
    finally:
        torch.set_num_threads(old)


def fingerprint(threads: int, measure: bool = True) -> dict[str, Any]:
    """The fingerprint of this machine for a benchmark at ``threads`` threads (``measure``: add the matmul figure)."""
    info = _cpuinfo()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    fp: dict[str, Any] = {
        "cpu": _cpu_model(info),
        "arch": platform.machine(),
        "flags": cpu_flags(info),
        "logical_cores": os.cpu_count(),
        "physical_cores": _physical_cores(info),
        "usable_cores": usable,
        "threads": threads,
        "gpus": _gpus(),
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "versions": package_versions(),
    }
    if measure:
        fp["matmul_gflops_fp32"] = matmul_gflops(threads)
    fp["id"] = fingerprint_id(fp)
    return fp


def fingerprint_id(fp: dict[str, Any]) -> str:
    """A short, readable id of the hardware: ``amd-epyc-2c-avx512-vnni-bf16-<hash>`` (versions left out)."""
    slug = re.sub(r"[^a-z0-9]+", "-", fp["cpu"].lower()).strip("-")[:32] or "cpu"
    flags = fp.get("flags", {})
    tags = [t for t, keys in (("amx", ("amx_tile",)), ("avx512", ("avx512f",)), ("vnni", ("avx512_vnni", "avx_vnni")),
                              ("bf16", ("avx512_bf16", "amx_bf16", "bf16"))) if any(flags.get(k) for k in keys)]
    gpu = fp.get("gpus") or []
    if gpu:
        tags.append(re.sub(r"[^a-z0-9]+", "-", gpu[0]["name"].lower()).strip("-")[:24])
    key = repr((fp["cpu"], sorted(k for k, v in flags.items() if v), fp.get("usable_cores"),
                [g.get("name") for g in gpu]))
    digest = hashlib.sha1(key.encode()).hexdigest()[:6]
    return "-".join([slug, f"{fp.get('usable_cores')}c", *tags, digest])
