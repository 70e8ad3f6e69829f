"""The export matrix: every model x format x precision, as a table, JSON, and a docs page.

``edgezoo export --all --format onnx,coreml,executorch`` runs :func:`run_matrix`; the JSON it
writes is the only source of the docs' export table (:func:`markdown_table`, written by ``make tables``),
so the table is generated, never typed.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = ["markdown_table", "print_table", "run_matrix"]


def run_matrix(models: Iterable[str], formats: list[str], out_dir: Path, precisions: list[str] | None = None,
               img_size: int | None = None, log: Callable[[str], None] = print, json_path: Path | None = None,
               **common: Any) -> dict[str, Any]:
    """Export each model to each format in each precision it supports (or ``precisions``).

    Returns ``{"machine", "started", "results": [ExportResult dicts]}``; a failure is a cell with
    its error, never an exception (bad input, such as an unknown format, still raises first).
    With ``json_path`` the matrix so far is written there after each model, so a long run that is
    stopped keeps what it finished.
    """
    from edgezoo.export.api import ExportResult, export, prepare
    from edgezoo.export.base import get_format

    fmts = [get_format(f) for f in formats]
    for fmt in fmts:
        fmt.require()
    results: list[dict[str, Any]] = []
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    for name in models:
        try:
            src = prepare(name, img_size=img_size)
        except Exception as err:  # a model that cannot even be built fails all its cells
            for fmt in fmts:
                results.append(ExportResult(name, fmt.name, "-", "failed", error=f"{type(err).__name__}: {err}")
                               .to_dict())
            continue
        for fmt in fmts:
            for prec in [p for p in fmt.precisions if precisions is None or p in precisions]:
                res = export(src, fmt.name, out_dir / name, precision=prec, log=lambda m: None, **common)
                log(f"  {res.summary()}")
                row = res.to_dict()
                row.pop("metadata", None)
                row["notes"] = {k: v for k, v in row["notes"].items() if k in ("exporter", "dynamic_hw", "traceback")}
                results.append(row)
        if json_path is not None:
            _save(json_path, {"machine": machine(), "started": started, "results": results})
    return {"machine": machine(), "started": started, "results": results}


def machine() -> str:
    import os

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()}"


def _save(path: Path, matrix: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(matrix, indent=1, default=str))
    tmp.replace(path)


def _cells(matrix: dict[str, Any]) -> tuple[list[str], list[str], dict[tuple[str, str], dict[str, Any]]]:
    models, columns, cells = [], [], {}
    for r in matrix["results"]:
        col = f"{r['format']} {r['precision']}"
        if r["model"] not in models:
            models.append(r["model"])
        if col not in columns:
            columns.append(col)
        cells[(r["model"], col)] = r
    return models, columns, cells


def _cell(r: dict[str, Any] | None, markdown: bool) -> str:
    if r is None:
        return ""
    status = r["status"]
    if status == "failed":
        return "failed" if markdown else f"failed: {(r.get('error') or r['parity'].get('reason') or '')[:60]}"
    fig, secs = r.get("parity") or {}, f"{r.get('seconds', 0):.0f} s"
    if r["precision"] == "int8" and "top1_agreement" in fig:
        return f"{status} ({fig['top1_agreement']:.0%} agree, {secs})"
    if "max_rel_err" in fig:
        return f"{status} ({fig['max_rel_err']:.0e}, {secs})"
    return f"{status} ({secs})"


def print_table(matrix: dict[str, Any]) -> str:
    """The matrix as a plain-text table (status per cell; failures with their error)."""
    models, columns, cells = _cells(matrix)
    rows = [[m, *(_cell(cells.get((m, c)), False) for c in columns)] for m in models]
    header = ["model", *columns]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, rows)])


def markdown_table(matrix: dict[str, Any]) -> str:
    """The matrix as the docs' Markdown table, with export times and a legend."""
    models, columns, cells = _cells(matrix)
    lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for m in models:
        lines.append(f"| `{m}` | " + " | ".join(_cell(cells.get((m, c)), True) for c in columns) + " |")
    counts: dict[str, int] = {}
    for r in matrix["results"]:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    total = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    lines.append("")
    lines.append(f"Generated from the export matrix JSON of {matrix['started']} ({matrix['machine']}): {total}. "
                 "`verified`: a runtime here ran the artifact and it passed its gate (relative max error "
                 "and conversion time in brackets); `converted`: the file exists but no runtime here can run it; "
                 "int8 cells give top-1 agreement with fp32 on held-out digits (random weights: reported, not gated)."
                 + (f" Runs: {matrix['note']}." if matrix.get("note") else ""))
    return "\n".join(lines)


def load_matrix(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
