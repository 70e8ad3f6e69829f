"""``edgezoo.bench.bench``: models x input sizes x runtimes x precisions x batches -> one report.

    from edgezoo.bench import bench, parse_runtimes
    report = bench(["ez_efficientvit_m0"], parse_runtimes("torch,ort,ort-int8"), batches=[1, 16])
    report["records"][0]["latency_ms"]["p50"]

Every record is timed by :func:`edgezoo.bench.protocol.measure` (the same protocol for every
runtime); peak memory is the rise of the process's peak RSS while the artifact loads and warms up
(host runtimes only). A runtime that is not installed, or a precision this CPU cannot compute
natively, is a record with status ``absent`` and the reason; an export or a run that fails is a record
with status ``failed`` and the error's first line. With ``compare_timm`` each model is paired with
timm's model carrying the same weights (:mod:`edgezoo.bench.timm_pair`); the two are exported
by the same exporter, loaded in the same runtime and timed interleaved, and the edgezoo record gets
``compare.ratio_p50`` (edgezoo / timm: below 1 is faster).
"""

from __future__ import annotations

import dataclasses
import gc
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from edgezoo.bench.ceiling import measured_fingerprint
from edgezoo.bench.memory import PeakRss
from edgezoo.bench.passes import combine, ratio
from edgezoo.bench.protocol import Protocol, Stats, measure
from edgezoo.bench.runtime import Artifacts, BenchItem, Runner, Runtime
from edgezoo.errors import InvalidArgumentError

__all__ = ["INTERLEAVE_BLOCK", "SCHEMA", "bench", "check_threads", "latency_ms", "smallest_per_family"]

SCHEMA = "edgezoo.bench/1"

#: timed calls per turn when runtimes are interleaved (``bench(interleave_runtimes=True)``): each turn
#: starts with one untimed call, so a runtime's figures are its own steady state, not the cost of
#: waking its thread pool after another runtime's ran
INTERLEAVE_BLOCK = 10


def check_threads(threads: int | None) -> int:
    """``threads`` validated (default: the cores this process may use)."""
    if threads is None:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if threads < 1:
        raise InvalidArgumentError(f"--threads must be >= 1, got {threads}")
    return int(threads)


def _first_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:300]}"


def _family(name: str) -> str | None:
    from edgezoo.registry import find_spec

    spec = find_spec(name)
    return spec.family if spec else None


def _item(source: Any, img_size: int | None, threads: int, work: Path, calib: str, log: Callable[[str], None],
          name: str | None = None, deploy: bool = True) -> BenchItem:
    """A :class:`BenchItem` of ``source`` (deploy form unless ``deploy`` is false: then as it is, eval mode).

    A ``BenchItem`` passes through as it is: its caller made the source and the artifacts (e.g. exported already).
    """
    if isinstance(source, BenchItem):
        return source
    from edgezoo.export import prepare
    from edgezoo.export.source import resolve_source
    from edgezoo.profile import count_macs, count_params

    if deploy:
        src = prepare(source, model=name, img_size=img_size)
    else:
        src = resolve_source(source, model=name, img_size=img_size)
        src.model = src.model.eval().float()
        src.model._edgezoo_deploy = True  # type: ignore[assignment]  # export takes it as it is: no fuse
    if img_size:
        src.input_size = (src.input_size[0], img_size, img_size)
    item = BenchItem(src=src, artifacts=Artifacts(src, work, calib=calib, log=log), threads=threads)
    item.extra["params"] = count_params(src.model)
    item.extra["macs"] = int(count_macs(src.model, src.input_size))
    return item


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _load_warm(rt: Runtime, item: BenchItem, precision: str, batch: int, warmup: int) -> tuple[Runner, float | None]:
    """Load ``item`` into ``rt`` and run the warm-up; ``(runner, peak MB of doing so)``.

    A first load makes the artifact (an export, a compilation) and is dropped: the memory figure is the
    runtime's, not the exporter's (with the export inside it, MobileNetV2-ECA at 224 px read 0.87 GB for
    onnxruntime int8 and 0.93 GB for ExecuTorch int8, against 0.27 GB for onnxruntime fp32).
    """
    x = item.example(batch)
    rt.load(item, precision, batch)
    gc.collect()
    with PeakRss() as peak:
        runner = rt.load(item, precision, batch)
        for _ in range(max(warmup, 1)):
            runner(x)
    return runner, (peak.mb if rt.host_memory else None)


def _agreement(runner: Runner, item: BenchItem, images: int, calib: str) -> dict[str, Any]:
    """Top-1 agreement of ``runner`` (batch 1) with the PyTorch deploy form on ``images`` held-out images."""
    import torch

    from edgezoo.data.calib import load_calibration

    held = load_calibration(calib, item.src, n=1, held_out=images).held_out
    with torch.inference_mode():
        ref = item.src.model(held).argmax(1).numpy()
    got = np.array([int(np.argmax(runner(held[i:i + 1].numpy()))) for i in range(len(held))])
    return {"top1_agreement": float((got == ref).mean()), "images": len(held), "calib": calib}


def _record(item: BenchItem, rt: Runtime, precision: str, batch: int, fp_id: str, **fields: Any) -> dict[str, Any]:
    src = item.src
    return {"model": src.name, "family": _family(src.name), "source": src.origin, "img_size": src.input_size[1],
            "runtime": rt.name, "precision": precision, "batch": batch, "threads": item.threads,
            "params": item.extra.get("params"), "macs": item.extra.get("macs"), "fingerprint": fp_id, **fields}


def _timed(stats: Stats, batch: int, memory: float | None) -> dict[str, Any]:
    return {"status": "ok", "latency_ms": latency_ms(stats), "runs": stats.runs, "seconds": round(stats.seconds, 3),
            "throughput_ips": round(batch * 1e3 / stats.p50_ms, 2), "peak_memory_mb": memory}


def latency_ms(stats: Stats) -> dict[str, float]:
    """A record's ``latency_ms``: p50, p90, p99, min, mean and std of :class:`Stats` (ms, 4 decimals)."""
    return {k: round(getattr(stats, f"{k}_ms"), 4) for k in ("p50", "p90", "p99", "min", "mean", "std")}


Entry = tuple[BenchItem, Runtime, str]  # (item, runtime, precision): one record


def _run_one(entries: list[Entry], batch: int, protocol: Protocol, fp_id: str, agree: int, calib: str,
             op_profile: bool = False) -> list[dict[str, Any]]:
    """One record per entry, all timed together by one :func:`measure` (interleaved).

    The entries are an edgezoo/timm pair on one runtime, one item on several runtimes
    (``interleave_runtimes``), or a single item on a single runtime. An absent runtime or an
    artifact that fails to load is that entry's record; the others are still timed.
    """
    records: dict[int, dict[str, Any]] = {}
    runners: dict[int, Runner] = {}
    memory: dict[int, float | None] = {}
    for i, (it, rt, precision) in enumerate(entries):
        reason = rt.absent() or rt.precision_absent(precision)
        if reason:
            records[i] = _record(it, rt, precision, batch, fp_id, status="absent", reason=reason)
            continue
        try:
            runners[i], memory[i] = _load_warm(rt, it, precision, batch, protocol.warmup)
        except Exception as err:  # one failed runtime is a record, never the end of the benchmark
            records[i] = _record(it, rt, precision, batch, fp_id, status="failed", error=_first_line(err))
    try:
        xs = {i: entries[i][0].example(batch) for i in runners}
        # ``max_seconds`` is per record: the interleaved group gets the sum of its records' budgets
        stats = measure({i: (lambda r=r, x=xs[i]: r(x)) for i, r in runners.items()},
                        Protocol(warmup=0, runs=protocol.runs, max_seconds=protocol.max_seconds * len(runners),
                                 min_runs=protocol.min_runs, block=protocol.block))
        for i in runners:
            it, rt, precision = entries[i]
            rec = _record(it, rt, precision, batch, fp_id, **_timed(stats[i], batch, memory[i]))
            if len(runners) > 1:
                rec["interleaved_with"] = len(runners) - 1
            if agree and batch == 1:
                rec["agreement"] = _agreement(runners[i], it, agree, calib)
            if op_profile and rt.name in _PROFILED:
                from edgezoo.bench.op_profile import op_profile as profile

                path = it.artifacts.get("onnx", getattr(rt, "precision_of_file", precision), batch)
                rec["op_profile"] = profile(path, xs[i], it.threads)
            records[i] = rec
    except Exception as err:
        for i in runners:
            it, rt, precision = entries[i]
            records[i] = _record(it, rt, precision, batch, fp_id, status="failed", error=_first_line(err))
    finally:
        runners.clear()
        gc.collect()
    return [records[i] for i in range(len(entries))]


#: runtimes whose records ``op_profile=True`` profiles per op (onnxruntime's profiler, CPU)
_PROFILED = ("ort", "ort-int8")


Group = tuple[list[BenchItem], tuple[str, float] | None]  # items (one, or an edgezoo/timm pair), pair info


def _tasks(groups: list[Group], runtimes: list[tuple[Runtime, list[str]]], batches: Sequence[int],
           interleave_runtimes: bool) -> list[tuple[list[Entry], int, tuple[str, float] | None]]:
    """``[(entries timed together, batch, pair info)]`` in the order they run."""
    if interleave_runtimes:  # a group's items are one model at one size, or at several (``interleave_sizes``)
        return [([(it, rt, p) for it in items for rt, precs in runtimes for p in precs], b, None)
                for items, _ in groups for b in batches]
    return [([(it, rt, p) for it in items], b, pair)
            for items, pair in groups for rt, precs in runtimes for p in precs for b in batches]


def _pair_records(records: list[dict[str, Any]], timm_name: str, rel_err: float) -> None:
    """Add ``compare`` (edgezoo / timm) to the edgezoo record of a pair, ``pair_of`` to timm's."""
    ez, ref = records
    ref["role"], ref["pair_of"], ez["role"] = "timm", ez["model"], "edgezoo"
    ez["compare"] = {"timm_model": timm_name, "outputs_rel_err": rel_err}
    if ez["status"] == "ok" and ref["status"] == "ok":
        p50 = ratio(ez, ref)  # with several passes: the median of the per-pass ratios
        ez["compare"].update(timm_latency_ms=ref["latency_ms"], ratio_p50=round(p50.median, 4),
                             ratio_min=round(ez["latency_ms"]["min"] / ref["latency_ms"]["min"], 4))
        if p50.passes > 1:
            ez["compare"]["ratio_p50_range"] = [round(p50.low, 4), round(p50.high, 4)]


def _combined(passes: list[list[list[dict[str, Any]]]], tasks: list[tuple[list[Entry], int, tuple[str, float] | None]],
              run: str) -> list[dict[str, Any]]:
    """The records of the tasks run so far, each one :func:`~edgezoo.bench.passes.combine` of its passes
    (``run``: when this run started, which tells its records from those another run merges beside them)."""
    records: list[dict[str, Any]] = []
    for done, (_, _, pair) in zip(passes, tasks, strict=True):
        if not done:
            continue
        recs = [combine([p[i] for p in done], run) for i in range(len(done[0]))]
        if pair is not None:
            _pair_records(recs, *pair)
        records.extend(recs)
    return records


def _groups(sources: Sequence[Any], sizes: Sequence[int | None], compare_timm: bool, threads: int, work: Path,
            calib: str, log: Callable[[str], None], model: str | None = None, interleave_sizes: bool = False,
            ) -> list[Group]:
    """``[(items, pair info)]``: one item per source and size, or an (edgezoo, timm) pair with ``compare_timm``.

    With ``interleave_sizes`` a source's items at every size form one group (timed together).
    """
    from edgezoo.bench.timm_pair import make_pair

    groups: list[Group] = []
    for source in sources:
        if interleave_sizes:
            groups.append(([_item(source, size, threads, work, calib, log, name=model) for size in sizes], None))
            continue
        for size in sizes:
            if not compare_timm:
                groups.append(([_item(source, size, threads, work, calib, log, name=model)], None))
                continue
            if not isinstance(source, str) or Path(source).suffix:
                raise InvalidArgumentError(f"--compare-timm takes model names (it maps timm's weights into edgezoo's "
                                           f"model), not {source!r}")
            pair = make_pair(source, size)
            ez = _item(pair.ez, size, threads, work, calib, log, name=source)
            ref = _item(pair.timm, size, threads, work, calib, log, name=pair.timm_slug, deploy=False)
            for it in (ez, ref):  # randomised weights: int8 agreement is reported, not gated
                it.src.trained, it.src.origin = False, f"random weights (shared with {source})"
            groups.append(([ez, ref], (pair.timm_name, pair.rel_err)))
    return groups


def bench(sources: Sequence[Any], runtimes: list[tuple[Runtime, list[str]]], *, batches: Sequence[int] = (1,),
          threads: int | None = None, img_sizes: Sequence[int | None] = (None,), protocol: Protocol | None = None,
          compare_timm: bool = False, agree: int = 0, calib: str = "digits", work_dir: str | os.PathLike | None = None,
          model: str | None = None, progress: bool = True, log: Callable[[str], None] | None = None,
          on_progress: Callable[[dict[str, Any]], None] | None = None, op_profile: bool = False,
          interleave_runtimes: bool = False, interleave_sizes: bool = False) -> dict[str, Any]:
    """Benchmark ``sources`` (names, checkpoints, modules, or ready :class:`BenchItem` s); return the report.

    See the module docstring for the report.

    ``model`` names the model a checkpoint holds when the checkpoint does not record it;
    ``on_progress`` is called with the report so far after each record (to save it: a long run
    that is stopped keeps what it measured). ``op_profile`` adds onnxruntime's per-op profile to the
    ``ort`` / ``ort-int8`` records (:mod:`edgezoo.bench.op_profile`). ``interleave_runtimes``
    times every runtime and precision of a model (at one batch) together, in turns of
    ``protocol.block`` calls (:data:`INTERLEAVE_BLOCK` when the protocol says 1): their ratios then come
    from one stretch of time, as a pair's do with ``compare_timm``. ``interleave_sizes`` times a model's
    ``img_sizes`` together: a cost curve whose points come from one stretch of time (with
    ``interleave_runtimes``, every size on every runtime). ``protocol.repeat`` > 1 runs the whole plan
    that many times and combines each record's passes (:mod:`edgezoo.bench.passes`).
    """
    from tqdm import tqdm

    threads = check_threads(threads)
    if any(b < 1 for b in batches):
        raise InvalidArgumentError(f"--batch sizes must be >= 1, got {list(batches)}")
    if any(s is not None and s < 16 for s in img_sizes):
        raise InvalidArgumentError(f"--img-size must be >= 16, got {list(img_sizes)}")
    log = log or (lambda m: None)
    protocol = protocol or Protocol()
    if compare_timm and (interleave_runtimes or interleave_sizes):
        raise InvalidArgumentError("--compare-timm interleaves each model with timm's; it cannot also interleave "
                                   "runtimes or sizes: drop --interleave-runtimes / --sizes")
    run_protocol = protocol
    if interleave_runtimes and protocol.block == 1:
        run_protocol = dataclasses.replace(protocol, block=INTERLEAVE_BLOCK)
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="edgezoo-bench-"))
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load = [_load_average()]
    records: list[dict[str, Any]] = []
    gc.collect()
    gc.freeze()  # what exists now outlives the runs: the collection after each runtime skips it
    try:
        with _torch_threads(threads):
            groups = _groups(sources, img_sizes, compare_timm, threads, work, calib, log, model,  # bad input fails here
                             interleave_sizes and len(img_sizes) > 1)
            fp = measured_fingerprint(threads)
            tasks = _tasks(groups, runtimes, batches, interleave_runtimes)
            passes: list[list[list[dict[str, Any]]]] = [[] for _ in tasks]  # per task: each pass's records
            bar = tqdm(total=len(tasks) * protocol.repeat, disable=not progress, unit="run", dynamic_ncols=True,
                       leave=False)
            for n in range(protocol.repeat):  # the whole plan again: a record's passes are apart in time
                for k, (entries, batch, pair) in enumerate(tasks):
                    what = entries[0][1].name if len(entries) == 1 or pair else f"{len(entries)} runtimes"
                    again = f" pass {n + 1}/{protocol.repeat}" if protocol.repeat > 1 else ""
                    bar.set_description(f"{entries[0][0].name}@{entries[0][0].src.input_size[1]} {what} b{batch}"
                                        f"{again}")
                    first = n == 0  # agreement and the op profile are measured once
                    passes[k].append(_run_one(entries, batch, run_protocol, fp["id"], agree if first else 0, calib,
                                              op_profile and first))
                    records = _combined(passes, tasks, started)
                    if on_progress is not None:
                        on_progress(_report(started, [*load, _load_average()], fp, run_protocol, records))
                    bar.update()
            bar.close()
    finally:
        gc.unfreeze()
        if not work_dir:
            shutil.rmtree(work, ignore_errors=True)
    return _report(started, [*load, _load_average()], fp, run_protocol, records)


def _report(started: str, load: list[float | None], fp: dict[str, Any], protocol: Protocol,
            records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"schema": SCHEMA, "started": started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "load_average_1min": load, "fingerprint": fp, "protocol": protocol.to_dict(), "records": list(records)}


def _load_average() -> float | None:
    """The 1-minute load average (how busy a shared machine was), ``None`` where the OS has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def smallest_per_family() -> list[str]:
    """The edgezoo model with the fewest MACs (at its default size) in each block family, in the families' order.

    The mixer sweep's ``ez_mix_*`` models are one macro-architecture, not a block family: left out.
    """
    from edgezoo import FAMILIES, get_spec, list_models
    from edgezoo.profile import profile_model

    best: dict[str, tuple[int, str]] = {}
    for name in list_models():
        fam = get_spec(name).family
        if fam == "mixer_sweep":
            continue
        macs = profile_model(name).macs
        if fam not in best or macs < best[fam][0]:
            best[fam] = (macs, name)
    return [best[f][1] for f in FAMILIES if f in best]
