"""The device fingerprint every benchmark figure carries: CPU, its vector/matrix flags, cores and
threads, GPUs and driver, the OS, what the device says of itself (Android properties, Jetson's L4T
release and power mode, the CPU governor and temperature where readable) and the version of every
runtime that is installed.

:func:`fingerprint_id` turns the hardware part into a short file name
(``results/bench/<id>.json``): the same machine kind gives the same id whatever the versions.

Standard library only, on Linux, macOS and Windows: the remote runner ships this file to a target
where edgezoo is not installed (:mod:`edgezoo.bench.remote`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["FLAGS", "cpu_flags", "device_facts", "fingerprint", "fingerprint_id", "package_versions"]

#: CPU flags that decide which kernels a runtime can use (int8 dot products, bf16, AMX tiles).
FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8",
         "asimd", "asimddp", "bf16", "i8mm")

#: Distributions whose version a figure depends on (only those installed are listed).
PACKAGES = ("edgezoo", "torch", "timm", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxslim", "executorch",
            "openvino", "tensorrt", "coremltools", "ai-edge-litert", "litert-torch")


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _command(*argv: str) -> str:
    """What a command prints, or "" when it is missing or fails (never raises)."""
    if not shutil.which(argv[0]):
        return ""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpuinfo() -> str:
    """``/proc/cpuinfo`` on Linux (and Android); on macOS the ``sysctl`` lines in the same ``key: value`` form."""
    info = _read("/proc/cpuinfo")
    if info or platform.system() != "Darwin":
        return info
    brand = _command("sysctl", "-n", "machdep.cpu.brand_string")
    features = _command("sysctl", "-n", "machdep.cpu.features", "machdep.cpu.leaf7_features").lower().split()
    optional = _command("sysctl", "hw.optional")  # arm64: hw.optional.arm.FEAT_BF16: 1
    for line in optional.splitlines():
        key, _, value = line.partition(":")
        if value.strip() == "1":
            name = key.rsplit(".", 1)[-1].lower().removeprefix("feat_")
            features.append({"dotprod": "asimddp", "neon": "asimd", "avx512vnni": "avx512_vnni"}.get(name, name))
    return f"model name : {brand}\nflags : {' '.join(features)}\n" if brand else ""


def _cpu_model(info: str) -> str:
    for line in info.splitlines():
        if line.startswith(("model name", "Hardware", "Model")):
            return line.split(":", 1)[1].strip()
    if platform.system() == "Windows":
        try:
            import winreg

            key = winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"HARDWARE\DESCRIPTION\System\CentralProcessor\0")
            return str(winreg.QueryValueEx(key, "ProcessorNameString")[0]).strip()
        except (ImportError, OSError):
            pass
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
    """GPUs as ``nvidia-smi`` names them (name, driver, memory); ``[]`` when there is none or no ``nvidia-smi``."""
    out = _command("nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader")
    rows = [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]
    return [{"name": r[0], "driver": r[1], "memory": r[2]} for r in rows if len(r) >= 3]


def device_facts() -> dict[str, Any]:
    """What the device tells of itself, where readable: Android's model and SoC (``getprop``), a Jetson's L4T
    release and power mode, the CPU frequency governor and the hottest thermal zone (degrees C)."""
    facts: dict[str, Any] = {}
    for key, prop in (("android_model", "ro.product.model"), ("android_soc", "ro.soc.model"),
                      ("android_release", "ro.build.version.release"), ("android_abi", "ro.product.cpu.abi")):
        value = _command("getprop", prop)
        if value:
            facts[key] = value
    tegra = _read("/etc/nv_tegra_release").splitlines()
    if tegra:
        facts["l4t"] = tegra[0].strip("# ").strip()
        mode = _command("nvpmodel", "-q")
        if mode:
            facts["power_mode"] = " ".join(mode.split())
    governor = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").strip()
    if governor:
        facts["governor"] = governor
    temps = []
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*/temp")) if Path("/sys/class/thermal").is_dir() \
            else []:
        value = _read(str(zone)).strip()
        if value.lstrip("-").isdigit():
            temps.append(int(value) / 1000)
    if temps:
        facts["max_temp_c"] = max(temps)
    return facts


def package_versions() -> dict[str, str]:
    """``{distribution: version}`` of the runtimes and libraries in :data:`PACKAGES` that are installed."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def fingerprint(threads: int) -> dict[str, Any]:
    """The fingerprint of this machine for a benchmark at ``threads`` threads (``edgezoo.bench.ceiling`` adds
    the measured matmul rate)."""
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
    device = device_facts()
    if device:
        fp["device"] = device
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
