"""Where the time goes inside an onnxruntime session: ``edgezoo bench --op-profile``.

onnxruntime's own profiler (``SessionOptions.enable_profiling``) records every kernel launch of every
run; :func:`op_profile` runs one artifact with it on, then sums the kernels by op type (after
onnxruntime's graph optimisations: ``FusedMatMul``, ``ReorderInput`` of its NCHWc layout, ...) and by
(op type, input shapes), per run. The profiler adds a few microseconds to every kernel, so its total
is above the protocol's latency; compare op types within one profile, or two models profiled in one
run (``--compare-timm``), not a profile with a timing.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["op_profile", "op_profile_table"]


def _shapes(args: dict[str, Any]) -> str:
    """``1x64x14x14;128x64x1x1``: the input shapes of one profiled kernel."""
    return ";".join("x".join(str(d) for d in next(iter(s.values()))) for s in args.get("input_type_shape", []))


def op_profile(path: str | os.PathLike, x: np.ndarray, threads: int, runs: int = 50, top: int = 15) -> dict[str, Any]:
    """Profile ``runs`` runs of the ONNX file at ``path`` on input ``x`` (after 5 warm-up runs, left out).

    Returns ``{"runs", "nodes_per_run", "kernel_ms_per_run", "by_op": [{"op", "ms", "count"}],
    "top_kernels": [{"op", "shapes", "ms", "count"}]}`` with ``ms`` and ``count`` per run, largest first.
    """
    import onnxruntime as ort

    from edgezoo.export.onnx import session_options

    with tempfile.TemporaryDirectory(prefix="edgezoo-opprof-") as tmp:
        opts = session_options(threads)
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        for _ in range(5 + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    # each run is a "model_run" event: keep the kernels inside the last ``runs`` of them
    windows = sorted((ev["ts"], ev["ts"] + ev["dur"]) for ev in events if ev.get("name") == "model_run")[-runs:]
    start = windows[0][0] if windows else 0
    by_op: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    by_kernel: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    total_runs = len(windows) or 1
    for ev in events:
        if ev.get("cat") != "Node" or not ev.get("name", "").endswith("_kernel_time") or ev["ts"] < start:
            continue
        op = ev["args"]["op_name"]
        for acc in (by_op[op], by_kernel[(op, _shapes(ev["args"]))]):
            acc[0] += ev["dur"]
            acc[1] += 1

    def rows(acc: dict, label: Any, limit: int | None) -> list[dict[str, Any]]:
        ordered = sorted(acc.items(), key=lambda kv: -kv[1][0])[:limit]
        return [{**label(k), "ms": round(v[0] / total_runs / 1e3, 4), "count": round(v[1] / total_runs, 2)}
                for k, v in ordered]

    total_us = sum(v[0] for v in by_op.values())
    return {"runs": total_runs, "threads": threads,
            "nodes_per_run": round(sum(v[1] for v in by_op.values()) / total_runs, 1),
            "kernel_ms_per_run": round(total_us / total_runs / 1e3, 4),
            "by_op": rows(by_op, lambda k: {"op": k}, None),
            "top_kernels": rows(by_kernel, lambda k: {"op": k[0], "shapes": k[1]}, top)}


def op_profile_table(report: dict[str, Any], top: int = 10) -> str:
    """The op profiles of a report's records as text: per model, op types by time (timm's beside edgezoo's)."""
    from edgezoo.tables import text_table

    recs = [r for r in report["records"] if r.get("op_profile")]
    out = []
    for r in recs:
        if r.get("role") == "timm":
            continue
        ref = next((t for t in recs if t.get("pair_of") == r["model"] and t["runtime"] == r["runtime"]
                    and t["img_size"] == r["img_size"]), None)
        prof = r["op_profile"]
        head = (f"{r['model']} @{r['img_size']} {r['runtime']}: {prof['kernel_ms_per_run']:.3f} ms of kernels a run "
                f"(profiled), {prof['nodes_per_run']:g} kernels")
        theirs: dict[str, dict[str, Any]] = {}
        if ref is not None:
            p = ref["op_profile"]
            theirs = {row["op"]: row for row in p["by_op"]}
            head += f"; {ref['model']}: {p['kernel_ms_per_run']:.3f} ms, {p['nodes_per_run']:g} kernels"
        ops = [row["op"] for row in prof["by_op"][:top]]
        ops += [op for op in list(theirs)[:top] if op not in ops]
        mine = {row["op"]: row for row in prof["by_op"]}
        rows = []
        for op in ops:
            a, b = mine.get(op, {"ms": 0.0, "count": 0}), theirs.get(op)
            row = [op, f"{a['ms']:.3f}", f"{a['count']:g}"]
            if ref is not None:
                row += [f"{b['ms']:.3f}" if b else "0", f"{b['count']:g}" if b else "0"]
            rows.append(row)
        header = ["op", "ms/run", "n/run"] + (["timm ms/run", "timm n/run"] if ref is not None else [])
        out.append(head + "\n" + text_table(rows, header))
    return "\n\n".join(out)
