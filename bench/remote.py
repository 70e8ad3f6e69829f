"""``edgezoo bench --remote SPEC``: latency on the user's own devices, with the protocol of the local benchmark.

    from edgezoo.bench import parse_runtimes
    from edgezoo.bench.remote import bench_remote
    report = bench_remote(["ez_efficientvit_m0"], parse_runtimes("ort,executorch"), "ssh://pi@raspberrypi",
                          agree=50, img_sizes=[224])

Models and checkpoints are exported here first (the exporters and the artifact cache of the local
benchmark); the artifacts, :mod:`remote_runner <edgezoo.bench.remote_runner>` and the
``protocol``, ``fingerprint`` and ``memory`` modules (standard library and numpy only) are copied to a
fresh folder under the target's work folder, and the runner times them there with
:func:`edgezoo.bench.protocol.measure`. A target's native runners (:mod:`edgezoo.bench.native`) replace
the Python runner for their runtime when given; TensorRT is always built and timed there by ``trtexec``
and the engine and its build log come back beside the ONNX file.

The report has the schema of the local one (:data:`edgezoo.bench.SCHEMA`): its ``fingerprint`` is the
target's, and every record adds ``target`` (the SPEC), ``target_fingerprint`` (the fingerprint module's
output there), ``protocol`` (``edgezoo`` or the native tool that timed it) and ``load_ms``. Records
land one by one through ``on_progress``: a connection lost mid-run keeps the finished ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgezoo.bench.fingerprint import cpu_flags, fingerprint_id
from edgezoo.bench.native import PARSERS, native_command
from edgezoo.bench.protocol import Protocol, Stats
from edgezoo.bench.run import SCHEMA, check_threads, latency_ms
from edgezoo.bench.runtime import BenchFailure, BenchItem, Runtime
from edgezoo.bench.targets import NATIVE_RUNNERS, Target, parse_target
from edgezoo.bench.transport import RemoteError, Transport, connect
from edgezoo.errors import InvalidArgumentError

__all__ = ["ARTIFACT_SUFFIXES", "REMOTE_RUNTIMES", "RemoteError", "bench_remote"]

#: runtime -> (export format, file precision for each timed precision)
REMOTE_RUNTIMES: dict[str, tuple[str, dict[str, str]]] = {
    "ort": ("onnx", {"fp32": "fp32"}), "ort-int8": ("onnx", {"int8": "int8"}),
    "executorch": ("executorch", {"fp32": "fp32", "int8": "int8"}),
    "openvino": ("onnx", {"fp32": "fp32", "int8": "int8", "bf16": "fp32"}),
    "tensorrt": ("onnx", {"fp16": "fp32", "fp32": "fp32", "int8": "int8"}),
}
#: an artifact file's suffix -> the runtime that runs it
ARTIFACT_SUFFIXES = {".onnx": "ort", ".pte": "executorch", ".tflite": "litert"}
#: the files the Python runner needs beside it (standard library and numpy only)
SHIPPED = ("remote_runner.py", "protocol.py", "fingerprint.py", "memory.py")
TOOL_OF_RUNTIME = {rt: tool for tool, rt in NATIVE_RUNNERS.items()} | {"ort-int8": "onnxruntime_perf_test"}


@dataclass
class Entry:
    """One artifact to time there: one record."""

    key: str
    runtime: str
    precision: str
    batch: int
    path: Path | None  # the local artifact (None: its export failed)
    item: BenchItem | None = None  # None for an artifact file given as it is
    tool: str | None = None  # a native runner instead of the Python one
    error: str | None = None
    reference: np.ndarray | None = None  # host fp32 PyTorch top-1 of the --agree images
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def remote_name(self) -> str:
        return f"a{self.key}{self.path.suffix if self.path else ''}"


def _base_record(e: Entry, target: Target, fp: dict[str, Any]) -> dict[str, Any]:
    from edgezoo.bench.run import _family

    if e.item is not None:
        src = e.item.src
        head = {"model": src.name, "family": _family(src.name), "source": src.origin, "img_size": src.input_size[1],
                "params": e.item.extra.get("params"), "macs": e.item.extra.get("macs")}
    else:
        head = {"model": e.path.stem if e.path else "?", "family": None, "source": str(e.path),
                "img_size": int(e.extra.get("shape", [0, 0, 0])[2]) if e.extra.get("shape") else 0,
                "params": None, "macs": None}
    return {**head, "runtime": e.runtime, "precision": e.precision, "batch": e.batch, "threads": fp["threads"],
            "fingerprint": fp["id"], "target": target.name, "target_fingerprint": fp}


def _agreement(e: Entry, top1: list[int], calib: str) -> dict[str, Any]:
    got = np.asarray(top1)
    ref = e.reference
    assert ref is not None
    return {"top1_agreement": float((got == ref).mean()), "images": len(ref), "calib": calib,
            "reference": "host fp32 PyTorch (deploy form)"}


def _entries(sources: Sequence[Any], runtimes: list[tuple[Runtime, list[str]]], batches: Sequence[int],
             img_sizes: Sequence[int | None], threads: int, work: Path, calib: str, model: str | None,
             log: Callable[[str], None]) -> list[Entry]:
    """Every artifact to time, exported here first (a failed export is a failed record)."""
    from edgezoo.bench.run import _groups

    entries: list[Entry] = []
    models = []
    for source in sources:
        suffix = Path(source).suffix.lower() if isinstance(source, str | os.PathLike) else ""
        if suffix in ARTIFACT_SUFFIXES:
            path = Path(source).expanduser()
            if not path.is_file():
                raise InvalidArgumentError(f"artifact {path} not found")
            names = [rt.name for rt, _ in runtimes if rt.name in ("openvino", "tensorrt")] if suffix == ".onnx" else []
            for rt in names or [ARTIFACT_SUFFIXES[suffix]]:
                int8 = ".int8" in path.name or "-int8" in path.name
                prec = "int8" if int8 else "fp16" if rt == "tensorrt" else "fp32"
                entries.append(Entry(str(len(entries)), rt, prec, 1, path))
        else:
            models.append(source)
    if not models:
        return entries
    for bad in [rt.name for rt, _ in runtimes if rt.name not in REMOTE_RUNTIMES]:
        raise InvalidArgumentError(f"runtime {bad!r} does not run on a remote target: choose from "
                                   f"{', '.join(REMOTE_RUNTIMES)}")
    for items, _ in _groups(models, img_sizes, False, threads, work, calib, log, model):
        for item in items:
            for rt, precs in runtimes:
                fmt, file_prec = REMOTE_RUNTIMES[rt.name]
                for prec in precs:
                    for batch in batches:
                        e = Entry(str(len(entries)), rt.name, prec, batch, None, item=item)
                        try:
                            e.path = item.artifacts.get(fmt, file_prec[prec], batch)
                        except BenchFailure as err:
                            e.error = str(err)
                        entries.append(e)
    return entries


def _choose_tools(entries: list[Entry], target: Target, runners: dict[str, str]) -> None:
    """A native runner for each entry whose runtime has one given; TensorRT needs trtexec; no Python, no
    Python runner."""
    for e in entries:
        tool = TOOL_OF_RUNTIME.get(e.runtime)
        if tool and tool in runners:
            e.tool = tool
        elif e.runtime == "tensorrt":
            raise InvalidArgumentError(f"TensorRT on {target.spec} is built and timed by trtexec there: give "
                                       f"--runner trtexec=target:/usr/src/tensorrt/bin/trtexec (or runners: in the "
                                       f"targets file)")
        elif target.python is None:
            raise InvalidArgumentError(f"{target.spec} has no Python (python: null) and no native runner for "
                                       f"{e.runtime}: give --runner {tool or 'TOOL'}=PATH")


def _agree_inputs(entries: list[Entry], agree: int, calib: str, folder: Path) -> dict[str, Path]:
    """Held-out images per input size (``.npy``), and each batch-1 entry's host fp32 reference top-1."""
    import torch

    from edgezoo.data.calib import load_calibration

    files: dict[str, Path] = {}
    refs: dict[int, np.ndarray] = {}
    for e in entries:
        if e.item is None or e.batch != 1 or e.path is None:
            continue
        key = f"agree-{id(e.item)}.npy"
        if key not in files:
            held = load_calibration(calib, e.item.src, n=1, held_out=agree).held_out
            with torch.inference_mode():
                refs[id(e.item)] = e.item.src.model(held).argmax(1).numpy()
            files[key] = folder / key
            np.save(files[key], held.numpy().astype(np.float32))
        e.reference = refs[id(e.item)]
        e.extra["agree"] = key
    return files


def _shipped_sources() -> list[Path]:
    here = Path(__file__).resolve().parent
    return [here / name for name in SHIPPED]


def _check_space(tr: Transport, target: Target, files: Sequence[Path]) -> None:
    need = sum(p.stat().st_size for p in files)
    free = tr.free_bytes(target.work)
    margin = 16 * 2**20  # the runner's own files, logs and an engine file
    if free is not None and free < need + margin:
        raise RemoteError(f"{target.spec}: no space for this run in {target.work}: it needs "
                          f"{(need + margin) / 1e6:.0f} MB, {free / 1e6:.0f} MB are free: free some, or set another "
                          f"work folder (targets file: work)")


def _python_run(tr: Transport, target: Target, run_dir: str, entries: dict[str, Entry],
                land: Callable[[Entry, dict[str, Any], dict[str, Any]], None], loads: list[float | None],
                ) -> dict[str, Any] | None:
    """Run the Python runner on the shipped job; ``land(entry, fields, fingerprint)`` per record; the target's
    load average at its start and end appended to ``loads``; return the fingerprint."""
    py = target.python or "python3"
    fp: dict[str, Any] | None = None
    missing: list[dict[str, Any]] = []
    crash = None
    done = False
    for line in tr.stream(f"cd {shlex.quote(run_dir)} && {shlex.quote(py)} remote_runner.py job.json"):
        if not line.startswith("@edgezoo "):
            continue
        ev = json.loads(line[len("@edgezoo "):])
        kind = ev.pop("event")
        if kind == "hello":
            fp = ev["fingerprint"]
            loads.append(ev.get("load"))
        elif kind == "missing":
            missing.append(ev)
        elif kind in ("record", "failed") and fp is not None:
            land(entries[ev.pop("key")], ev, fp)
        elif kind == "crash":
            crash = ev["error"]
        elif kind == "done":
            done = True
            loads.append(ev.get("load"))
    rc, stderr = tr.ended
    lost = tr.classify(stderr, rc, "running the benchmark", shell=True) if rc else None
    if lost is not None:
        raise lost
    if missing:
        m = missing[0]
        raise RemoteError(f"{target.spec}: {m['module']} is missing for runtime {m['runtime']} in {m['python']}: "
                          f"pip install {' '.join(dict.fromkeys(x['package'] for x in missing))} there")
    if rc == 127:
        raise RemoteError(f"{target.spec}: no {py} there ({(stderr.strip().splitlines() or [''])[-1][:120]}): "
                          f"install Python 3 with numpy, or set python: in the targets file")
    if crash or not done:
        why = crash or (stderr.strip().splitlines() or [f"exit {rc}"])[-1][:200]
        raise RemoteError(f"{target.spec}: the runner stopped: {why}")
    return fp


def shell_fingerprint(tr: Transport, threads: int | None) -> dict[str, Any]:
    """The fingerprint of a target without Python, from its shell (``/proc/cpuinfo``, ``uname``, ``getprop``)."""
    from edgezoo.bench.fingerprint import _cpu_model, _physical_cores

    script = ("cat /proc/cpuinfo; echo @@; uname -m; echo @@; uname -sr; echo @@; nproc 2>/dev/null || "
              "grep -c ^processor /proc/cpuinfo; echo @@; for p in ro.product.model ro.soc.model "
              "ro.build.version.release ro.product.cpu.abi; do getprop $p 2>/dev/null; echo; done; echo @@; "
              "cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null")
    parts = [*tr.run(script, "reading the fingerprint", check=False).stdout.split("@@"), "", "", "", "", ""]
    info, arch, osname, cores, props, governor = (p.strip() for p in parts[:6])
    n = int(cores) if cores.isdigit() else None
    fp: dict[str, Any] = {"cpu": _cpu_model(info) if info else "unknown", "arch": arch, "flags": cpu_flags(info),
                          "logical_cores": n, "physical_cores": _physical_cores(info), "usable_cores": n,
                          "threads": threads or n or 1, "gpus": [], "os": osname, "python": None, "versions": {}}
    device = {k: v for k, v in zip(("android_model", "android_soc", "android_release", "android_abi"),
                                   props.split("\n"), strict=False) if v.strip()}
    if governor:
        device["governor"] = governor
    if device:
        fp["device"] = device
    fp["id"] = fingerprint_id(fp)
    return fp


def _native_run(tr: Transport, target: Target, run_dir: str, e: Entry, runners: dict[str, str],
                protocol: Protocol, threads: int, plugins: str | None) -> dict[str, Any]:
    """Run ``e``'s native tool there on its artifact; the parsed fields (TensorRT: the engine and its log back)."""
    assert e.tool is not None and e.path is not None
    binary = runners[e.tool]
    binary = binary.removeprefix("target:") if binary.startswith("target:") else f"{run_dir}/bin/{Path(binary).name}"
    model = f"{run_dir}/{e.remote_name}"
    engine = f"{run_dir}/a{e.key}.engine"
    plugin = f"{run_dir}/bin/{Path(plugins).name}" if plugins else None
    cmd = native_command(e.tool, binary, model, runs=protocol.runs, warmup=protocol.warmup, threads=threads,
                         seconds=protocol.max_seconds, engine=engine, precision=e.precision, plugins=plugin)
    proc = tr.run(f"{cmd} 2>&1", f"running {e.tool}", timeout=max(600, protocol.max_seconds * 4), check=False)
    if proc.returncode == 126:
        raise RemoteError(f"{target.spec}: runner binary {binary} is not executable there ({_tail(proc.stdout)}): "
                          f"build it for {target.spec}'s CPU, and keep the work folder off noexec mounts "
                          f"(Android: /data/local/tmp)")
    if proc.returncode == 127:
        raise RemoteError(f"{target.spec}: runner binary {binary} not found there: fix its path (runners: or --runner)")
    fields: dict[str, Any] = {"protocol_command": cmd}
    if e.runtime == "tensorrt":
        local_engine = e.path.with_name(f"{e.path.stem}-{_slug(target.name)}-{e.precision}.engine")
        log_path = local_engine.with_suffix(".build.log")
        log_path.write_text(proc.stdout)
        fields["build_log"] = str(log_path)
        if proc.returncode == 0:
            tr.pull(engine, local_engine)
            fields["engine"] = str(local_engine)
    if proc.returncode != 0:
        return {**fields, "error": f"{e.tool} exit {proc.returncode}: {_tail(proc.stdout)}"}
    try:
        return {**fields, **PARSERS[e.tool](proc.stdout)}
    except ValueError as err:
        return {**fields, "error": str(err)}


def _tail(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "no output"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.removeprefix("ssh://").removeprefix("adb://")).strip("-")


def _job(entries: list[Entry], protocol: Protocol, threads: int | None, cooldown: float,
         interleave_runtimes: bool) -> dict[str, Any]:
    """The Python runner's job: groups of entries timed together (an item's runtimes with ``interleave_runtimes``)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for e in entries:
        if e.tool or e.path is None:
            continue
        key = (id(e.item) if e.item is not None else e.key, e.batch) if interleave_runtimes else (e.key,)
        shape = [e.batch, *e.item.src.input_size] if e.item is not None else None
        groups.setdefault(key, []).append({"key": e.key, "runtime": e.runtime, "precision": e.precision,
                                           "path": e.remote_name, "shape": shape, "agree": e.extra.get("agree")})
    block = protocol.block
    if interleave_runtimes and block == 1:
        from edgezoo.bench.run import INTERLEAVE_BLOCK

        block = INTERLEAVE_BLOCK
    proto = {k: v for k, v in protocol.to_dict().items() if k != "repeat"} | {"block": block}
    return {"threads": threads, "cooldown_s": cooldown, "protocol": proto, "groups": list(groups.values())}


def bench_remote(sources: Sequence[Any], runtimes: list[tuple[Runtime, list[str]]], target: str | Target, *,
                 targets_file: str | os.PathLike | None = None, batches: Sequence[int] = (1,),
                 threads: int | None = None, img_sizes: Sequence[int | None] = (None,),
                 protocol: Protocol | None = None, agree: int = 0, calib: str = "digits",
                 work_dir: str | os.PathLike | None = None, model: str | None = None,
                 runners: dict[str, str] | None = None, plugins: str | os.PathLike | None = None,
                 interleave_runtimes: bool = False, keep: bool = False, log: Callable[[str], None] | None = None,
                 on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Benchmark ``sources`` (model names, checkpoints, or artifact files: ``.onnx``, ``.pte``, ``.tflite``) on
    ``target`` (a SPEC or a :class:`Target`); return the report (see the module docstring).

    ``runners`` (``{tool: path}``) adds to the target's native runners; ``plugins`` is a TensorRT plugin
    library shipped with the ONNX file; ``keep`` leaves the run's folder on the target.
    """
    log = log or (lambda m: None)
    protocol = protocol or Protocol()
    tgt = target if isinstance(target, Target) else parse_target(target, targets_file)
    if runners:
        from edgezoo.bench.targets import runner_paths

        tgt.runners = {**tgt.runners, **runner_paths(runners, "--runner")}
    if plugins and not Path(plugins).expanduser().is_file():
        raise InvalidArgumentError(f"--plugins {plugins}: no such file")
    if agree < 0:
        raise InvalidArgumentError(f"--agree must be >= 0, got {agree}")
    threads = threads if threads is None else check_threads(threads)
    want_threads = threads or tgt.threads
    tr = connect(tgt)
    tr.run("true", "connecting")  # unreachable host, refused key, unknown host key: one line, before any export
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="edgezoo-remote-"))
    entries = _entries(sources, runtimes, batches, img_sizes, check_threads(None), work, calib, model, log)
    _choose_tools(entries, tgt, tgt.runners)
    if agree and any(e.item is None for e in entries):
        raise InvalidArgumentError("--agree compares with the host's fp32 PyTorch: name models or checkpoints, not "
                                   "artifact files")
    staging = Path(tempfile.mkdtemp(prefix="edgezoo-ship-"))
    agree_files = _agree_inputs(entries, agree, calib, staging) if agree else {}
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    run_dir = f"{tgt.work.rstrip('/')}/run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    records: dict[str, dict[str, Any]] = {}
    fp_holder: dict[str, Any] = {}
    loads: list[float | None] = []  # the target's, from the Python runner

    def report() -> dict[str, Any]:
        fp = fp_holder.get("fp") or {"id": "unknown", "cpu": "unknown", "flags": {}, "threads": 0, "gpus": [],
                                     "versions": {}}
        return {"schema": SCHEMA, "started": started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "load_average_1min": loads or [None], "fingerprint": fp, "protocol": protocol.to_dict(),
                "target": tgt.name, "host": {"node": platform.node(), "python": platform.python_version()},
                "records": [records[e.key] for e in entries if e.key in records]}

    def land(e: Entry, fields: dict[str, Any], fp: dict[str, Any]) -> None:
        fp_holder["fp"] = fp
        if "shape" in fields:
            e.extra["shape"] = fields.pop("shape")
        rec = _base_record(e, tgt, fp)
        if e.tool:
            rec["protocol"] = e.tool
        else:
            rec["protocol"] = "edgezoo"
        if "error" in fields and "latency_ms" not in fields:
            rec.update(status="failed", error=fields["error"], **{k: v for k, v in fields.items() if k != "error"})
        elif "stats" in fields:
            s = fields["stats"]
            stats = Stats(**{k: s[k] for k in Stats.__dataclass_fields__})
            rec.update(status="ok", latency_ms=latency_ms(stats), runs=stats.runs, seconds=round(stats.seconds, 3),
                       throughput_ips=round(e.batch * 1e3 / stats.p50_ms, 2), peak_memory_mb=fields["peak_memory_mb"],
                       load_ms=fields["load_ms"])
            if fields.get("interleaved_with"):
                rec["interleaved_with"] = fields["interleaved_with"]
            if "top1" in fields and e.reference is not None:
                rec["agreement"] = _agreement(e, fields["top1"], calib)
            elif "agree_error" in fields:
                rec["agreement_error"] = fields["agree_error"]
        else:  # a native tool's parsed figures
            lat = fields["latency_ms"]
            rec.update(status="ok", **fields)
            rec.setdefault("runs", protocol.runs)
            rec["seconds"] = round(rec["runs"] * lat["mean"] / 1e3, 3)
            rec["throughput_ips"] = round(e.batch * 1e3 / lat.get("p50", lat["mean"]), 2)
            rec.setdefault("peak_memory_mb", None)
        records[e.key] = rec
        if on_progress is not None:
            on_progress(report())

    try:
        for e in entries:
            if e.error is not None:
                e.extra["failed"] = e.error
        files = [p for e in entries if e.path is not None for p in [e.path]]
        natives = {Path(p) for t, p in tgt.runners.items() if not p.startswith("target:")
                   and any(e.tool == t for e in entries)}
        tr.run(f"mkdir -p {shlex.quote(run_dir)}/bin", "creating the work folder")
        _check_space(tr, tgt, [*files, *natives, *agree_files.values(), *([Path(plugins)] if plugins else [])])
        job = _job(entries, protocol, want_threads, tgt.cooldown, interleave_runtimes)
        (staging / "job.json").write_text(json.dumps(job))
        for e in entries:
            if e.path is not None:
                link = staging / e.remote_name
                if not link.exists():
                    os.symlink(e.path.resolve(), link)
        ship = [*_shipped_sources(), staging / "job.json", *agree_files.values(),
                *[staging / e.remote_name for e in entries if e.path is not None]]
        log(f"{tgt.spec}: copying {len(ship)} files to {run_dir}")
        tr.push(ship, run_dir)
        if natives or plugins:
            tr.push([*natives, *([Path(plugins).expanduser()] if plugins else [])], f"{run_dir}/bin")
            tr.run(f"chmod +x {shlex.quote(run_dir)}/bin/*", "making the runners executable")
        python_fp = None
        if job["groups"]:
            python_fp = _python_run(tr, tgt, run_dir, {e.key: e for e in entries}, land, loads)
        native = [e for e in entries if e.tool and e.path is not None]
        if native:
            fp = python_fp or shell_fingerprint(tr, want_threads)
            for n, e in enumerate(native):
                if n and tgt.cooldown:
                    time.sleep(tgt.cooldown)
                land(e, _native_run(tr, tgt, run_dir, e, tgt.runners, protocol, fp["threads"],
                                    str(plugins) if plugins else None), fp)
        fp = fp_holder.get("fp") or python_fp or shell_fingerprint(tr, want_threads)
        for e in entries:
            if e.key not in records and e.error is not None:
                land(e, {"error": e.error}, fp)
    finally:
        if not work_dir:
            shutil.rmtree(work, ignore_errors=True)
        if not keep:
            with contextlib.suppress(RemoteError):  # the connection is gone: the error that ended the run is the one
                tr.run(f"rm -rf {shlex.quote(run_dir)}", "removing the run folder", timeout=60, check=False)
        for p in staging.iterdir():
            p.unlink()
        staging.rmdir()
    return report()
