"""The benchmark report: its JSON schema check, saving and loading, and the printed table.

A report is ``{"schema", "started", "finished", "fingerprint", "protocol", "records"}``; each record is
one model x runtime x precision x batch (x input size) with ``status`` ``ok`` (timed: ``latency_ms``
p50/p90/min/mean, ``runs``, ``throughput_ips``, ``peak_memory_mb``), ``absent`` (``reason``) or
``failed`` (``error``), and the fingerprint id of the machine it ran on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["STATUSES", "check_same_machine", "load_report", "merge_reports", "output_path", "save_report", "table",
           "validate_report"]

STATUSES = ("ok", "absent", "failed")

_REPORT_KEYS = {"schema": str, "started": str, "finished": str, "fingerprint": dict, "protocol": dict, "records": list}
_RECORD_KEYS = {"model": str, "runtime": str, "precision": str, "batch": int, "img_size": int, "threads": int,
                "status": str, "fingerprint": str}
_OK_KEYS = {"latency_ms": dict, "runs": int, "seconds": float, "throughput_ips": float}
_FINGERPRINT_KEYS = {"id": str, "cpu": str, "flags": dict, "threads": int, "gpus": list, "versions": dict}


def _check(obj: dict[str, Any], keys: dict[str, type], where: str) -> None:
    for key, kind in keys.items():
        if key not in obj:
            raise ValueError(f"{where}: missing {key!r}")
        if not isinstance(obj[key], kind) and not (kind is float and isinstance(obj[key], int)):
            raise ValueError(f"{where}: {key!r} is {type(obj[key]).__name__}, expected {kind.__name__}")


def validate_report(report: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the first field that breaks the schema :data:`edgezoo.bench.SCHEMA`."""
    from edgezoo.bench.run import SCHEMA

    _check(report, _REPORT_KEYS, "report")
    if report["schema"] != SCHEMA:
        raise ValueError(f"report: schema {report['schema']!r}, expected {SCHEMA!r}")
    _check(report["fingerprint"], _FINGERPRINT_KEYS, "fingerprint")
    for i, rec in enumerate(report["records"]):
        where = f"record {i} ({rec.get('model')} {rec.get('runtime')} {rec.get('precision')})"
        _check(rec, _RECORD_KEYS, where)
        if rec["status"] not in STATUSES:
            raise ValueError(f"{where}: status {rec['status']!r} is not one of {', '.join(STATUSES)}")
        if rec["fingerprint"] != report["fingerprint"]["id"]:
            raise ValueError(f"{where}: fingerprint {rec['fingerprint']!r} is not the report's")
        if rec["status"] == "ok":
            _check(rec, _OK_KEYS, where)
            lat = rec["latency_ms"]
            # a native tool's record (``protocol``: the tool) has the figures the tool printed, a mean at least
            needed = ("p50", "p90", "min", "mean") if rec.get("protocol", "edgezoo") == "edgezoo" else ("mean",)
            if not all(isinstance(lat.get(k), int | float) for k in needed):
                raise ValueError(f"{where}: latency_ms needs {', '.join(needed)}")
            ordered = [lat[k] for k in ("min", "p50", "p90", "p99") if k in lat]
            if ordered != sorted(ordered):
                raise ValueError(f"{where}: latency_ms is not ordered min <= p50 <= p90 <= p99")
        elif not isinstance(rec.get("reason" if rec["status"] == "absent" else "error"), str):
            raise ValueError(f"{where}: a {rec['status']} record needs its "
                             f"{'reason' if rec['status'] == 'absent' else 'error'}")


def output_path(target: str | os.PathLike, report: dict[str, Any], suffix: str = "", ext: str = ".json") -> Path:
    """``target`` itself, or ``target/<fingerprint id><suffix><ext>`` when it is a folder (or ends in ``/``)."""
    path = Path(target)
    if path.is_dir() or str(target).endswith(("/", os.sep)):
        return path / f"{report['fingerprint']['id']}{suffix}{ext}"
    return path


def save_report(report: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``report`` atomically as JSON at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=1, default=str) + "\n")
    tmp.replace(path)
    return path


def load_report(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a report."""
    report = json.loads(Path(path).read_text())
    validate_report(report)
    return report


def _key(rec: dict[str, Any]) -> tuple:
    """What one record measured: the same key in two runs is the same measurement, timed twice."""
    return (rec["model"], rec["runtime"], rec["precision"], rec["batch"], rec["img_size"], rec.get("role"),
            rec.get("source"))


def check_same_machine(report: dict[str, Any], machine: str, where: str = "the report") -> None:
    """Refuse (one line) to merge into ``report`` unless it was measured on fingerprint id ``machine``."""
    from edgezoo.errors import InvalidArgumentError

    if report["fingerprint"]["id"] != machine:
        raise InvalidArgumentError(f"--merge: {where} holds fingerprint {report['fingerprint']['id']}, this machine "
                                   f"is {machine}: write to another file (or folder)")


def merge_reports(old: dict[str, Any], new: dict[str, Any], note: str = "") -> dict[str, Any]:
    """``old`` with ``new``'s records added (``edgezoo bench --merge``): a record that measured the same
    model x runtime x precision x batch x size again replaces the old one, in place; the others are
    appended. ``old``'s own run stays the report's header; ``new``'s (when, load, protocol, its matmul
    figure and versions, and ``note``) is appended to ``merged_runs``. Both must come from one machine
    (one fingerprint id).
    """
    check_same_machine(old, new["fingerprint"]["id"])
    fresh = {_key(r): r for r in new["records"]}
    records = [fresh.pop(_key(r), r) for r in old["records"]]
    run = {k: new[k] for k in ("started", "finished", "protocol", "load_average_1min") if k in new}
    run["batches"] = sorted({r["batch"] for r in new["records"]})
    fp = new["fingerprint"]
    run["fingerprint"] = {k: fp[k] for k in ("matmul_gflops_fp32", "versions") if k in fp}
    run["records"] = len(new["records"])
    if note:
        run["note"] = note
    return {**old, "records": records + list(fresh.values()), "merged_runs": [*old.get("merged_runs", []), run]}


def _cell(rec: dict[str, Any]) -> list[str]:
    if rec["status"] != "ok":
        why = rec.get("reason") or rec.get("error") or ""
        return [rec["status"], "", "", "", "", "", why[:70]]
    lat = rec["latency_ms"]
    mem = rec.get("peak_memory_mb")
    cmp = rec.get("compare", {}).get("ratio_p50")
    note = f"{cmp:.3f}x {rec['compare']['timm_model']}" if cmp is not None else ""
    if rec.get("pass_p50_ms"):
        note = (note + " " if note else "") + f"{len(rec['pass_p50_ms'])} passes"
    agree = rec.get("agreement")
    if agree:
        note = (note + " " if note else "") + f"agree {agree['top1_agreement']:.1%}"
    if rec.get("protocol", "edgezoo") != "edgezoo":
        mean = "" if "p50" in lat else f" mean {lat['mean']:.2f}"
        note = (note + " " if note else "") + f"{rec['protocol']}{mean}"
    ms = [f"{lat[k]:.2f}" if k in lat else "" for k in ("p50", "p90", "min")]
    return ["ok", *ms, f"{rec['throughput_ips']:.1f}", "" if mem is None else f"{mem:.0f}", note]


def table(report: dict[str, Any]) -> str:
    """The records as a plain-text table (timm's records of a pair folded into edgezoo's ratio)."""
    from edgezoo.tables import text_table

    rows = [[r["model"], str(r["img_size"]), r["runtime"], r["precision"], str(r["batch"]), *_cell(r)]
            for r in report["records"] if r.get("role") != "timm"]
    header = ["model", "px", "runtime", "precision", "batch", "status", "p50 ms", "p90 ms", "min ms", "img/s",
              "peak MB", "vs timm (p50) / note"]
    fp = report["fingerprint"]
    flags = ", ".join(k for k, v in fp["flags"].items() if v) or "unknown"
    head = (f"{fp['cpu']}, {fp['usable_cores']} usable cores, {fp['threads']} threads; flags: {flags}; "
            f"fingerprint {fp['id']}")
    return head + "\n" + text_table(rows, header)
