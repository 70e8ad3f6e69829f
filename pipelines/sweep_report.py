"""The mixer sweep's outputs: one table as JSON, CSV and Markdown, and a Pareto chart per runtime.

A *row* is one mixer: ``mixer``, ``model``, ``params``, ``macs_224``, ``macs`` (at the sweep's input
size), ``top1``, ``top1_ema``, ``latency_ms`` (``{runtime label: batch-1 p50}``), ``peak_train_mb`` and
``train_seconds``. The charts reuse :func:`edgezoo.bench.plot.pareto_png` on the mixers' merged
benchmark records, one runtime at a time, with the rows' top-1 as the accuracy axis.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from edgezoo.tables import markdown_table as table

__all__ = ["latency_columns", "markdown_table", "pareto_charts", "write_tables"]


def latency_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Runtime labels (``"ort fp32"``...) any row has a latency for, in first-seen order."""
    seen: dict[str, None] = {}
    for row in rows:
        for label in row.get("latency_ms", {}):
            seen.setdefault(label)
    return list(seen)


def _cells(row: dict[str, Any], runtimes: list[str]) -> list[str]:
    def num(v: Any, fmt: str) -> str:
        return "" if v is None else format(v, fmt)

    lat = row.get("latency_ms", {})
    return [row["mixer"], num(row["params"] / 1e6, ".2f"), num(row["macs_224"] / 1e9, ".3f"),
            num(row["macs"] / 1e6, ".1f"), num(row.get("top1"), ".2f"), num(row.get("top1_ema"), ".2f"),
            *(num(lat.get(r), ".3f") for r in runtimes), num(row.get("peak_train_mb"), ".0f"),
            num(row.get("train_seconds"), ".0f")]


def _header(runtimes: list[str], img_size: int) -> list[str]:
    return ["mixer", "params (M)", "GMACs @224", f"MMACs @{img_size}", "top-1 (%)", "top-1 EMA (%)",
            *(f"{r} p50 (ms)" for r in runtimes), "peak train RSS (MB)", "train (s)"]


def markdown_table(rows: list[dict[str, Any]], img_size: int) -> str:
    """The rows as a Markdown table (latency: batch 1, p50, at the sweep's input size)."""
    runtimes = latency_columns(rows)
    header = _header(runtimes, img_size)
    return table([_cells(r, runtimes) for r in rows], header)


def write_tables(rows: list[dict[str, Any]], out: Path, meta: dict[str, Any]) -> dict[str, Path]:
    """``sweep.json`` (rows + ``meta``), ``sweep.csv`` and ``sweep.md`` in ``out``; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    img = int(meta["img_size"])
    paths = {"json": out / "sweep.json", "csv": out / "sweep.csv", "md": out / "sweep.md"}
    tmp = paths["json"].with_suffix(".json.tmp")
    tmp.write_text(json.dumps({**meta, "rows": rows}, indent=2))
    tmp.replace(paths["json"])
    runtimes = latency_columns(rows)
    with paths["csv"].open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(_header(runtimes, img))
        writer.writerows(_cells(r, runtimes) for r in rows)
    note = (f"\n\n{meta.get('note', '')}\n" if meta.get("note") else "\n")
    paths["md"].write_text(markdown_table(rows, img) + note)
    return paths


def pareto_charts(records: list[dict[str, Any]], fingerprint: dict[str, Any], rows: list[dict[str, Any]],
                  out: Path) -> list[Path]:
    """One ``pareto-<runtime>-<precision>.png`` per runtime: top-1 against batch-1 p50 latency."""
    from edgezoo.bench.plot import pareto_png

    accuracy = {r["model"]: r["top1"] for r in rows if r.get("top1") is not None}
    groups: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        if rec.get("status") == "ok" and rec.get("batch") == 1 and rec["model"] in accuracy:
            groups.setdefault(f"{rec['runtime']}-{rec['precision']}", []).append(rec)
    paths = []
    for label, recs in groups.items():
        report = {"records": recs, "fingerprint": fingerprint}
        paths.append(pareto_png(report, out / f"pareto-{label}.png", accuracy=accuracy))
    return paths


