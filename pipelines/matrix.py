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

__all__ = ["commit", "markdown_table", "matrix_cell", "print_table", "run_matrix"]


def matrix_cell(model: str, format: str, precision: str, out_dir: str, img_size: int | None,
                common: dict[str, Any]) -> dict[str, Any]:
    """One cell: ``model`` (random weights, prepared once per worker) exported to ``format`` at ``precision``."""
    from edgezoo.export.api import export
    from edgezoo.pipelines.cache import prepared

    src = prepared(model, img_size=img_size)
    res = export(src, format, Path(out_dir) / model, precision=precision, log=lambda m: None, **common)
    row = res.to_dict()
    row.pop("metadata", None)
    row["notes"] = {k: v for k, v in row["notes"].items() if k in ("exporter", "dynamic_hw", "traceback")}
    row["commit"] = _COMMIT or commit()  # the code the worker imported when the run started
    row["date"] = time.strftime("%Y-%m-%d")
    return row


#: set in each worker by :func:`_init_worker`: the commit the run started from
_COMMIT: str | None = None


def commit() -> str | None:
    """The repository's commit (``+dirty`` when the package's source differs from it: docs and tests do not
    count), or None outside a git checkout."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *_source(root)],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+dirty" if dirty else "")) or None


def run_matrix(models: Iterable[str], formats: list[str], out_dir: Path, precisions: list[str] | None = None,
               img_size: int | None = None, log: Callable[[str], None] = print, json_path: Path | None = None,
               jobs: int | None = None, progress: bool = False, **common: Any) -> dict[str, Any]:
    """Export each model to each format in each precision it supports (or ``precisions``): one stage a cell of a
    plan (:mod:`edgezoo.pipelines.runner`), a model's cells on the worker that prepared it.

    Returns ``{"machine", "fingerprint", "started", "results": [ExportResult dicts]}``; a failure is a cell with
    its error, never an exception (bad input, such as an unknown format, still raises first). The plan's
    records live in ``out_dir/.plan``: run again, the cells already made are not made again, so the matrix fills
    over several sittings. With ``json_path`` the matrix so far is written there as each cell lands.
    """
    from edgezoo.bench.fingerprint import fingerprint
    from edgezoo.export.api import ExportResult
    from edgezoo.export.base import get_format
    from edgezoo.pipelines.runner import Plan, Stage, run, usable_cores

    fmts = [get_format(f) for f in formats]
    for fmt in fmts:
        fmt.require()
    models = sorted(models, key=_size)  # the smallest first: a matrix stopped part way holds their whole rows
    stages = [Stage(f"{name}/{fmt.name}-{prec}", matrix_cell, dict(
        model=name, format=fmt.name, precision=prec, out_dir=str(out_dir), img_size=img_size, common=common),
        affinity=name) for name in models for fmt in fmts
        for prec in fmt.precisions if precisions is None or prec in precisions]
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    fp = fingerprint(1)
    settings = {"out_dir": str(out_dir), "img_size": img_size, "common": common}
    head = {"machine": machine(), "fingerprint": {k: fp[k] for k in ("id", "cpu", "flags", "usable_cores", "os",
                                                                     "versions")}, "started": started,
            "planned": {"models": models, "formats": [f.name for f in fmts], "cells": len(stages)},
            "settings": settings}
    if json_path is not None:
        seeded = seed_plan(stages, Path(out_dir) / ".plan", Path(json_path), settings)
        if seeded:
            log(f"  {seeded} cells taken from {json_path} (their plan records were missing)")
    cells: dict[str, dict[str, Any]] = {}

    def landed(name: str, outcome: Any) -> None:
        model, _, cell = name.partition("/")
        fmt, _, prec = cell.rpartition("-")
        row = outcome.result or ExportResult(model, fmt, prec, "failed", error=outcome.error).to_dict()
        cells[name] = row
        if outcome.status != "reused":
            log(f"  {model} {fmt} {prec}: {row['status']}" + (f" ({row.get('error')})" if row.get("error") else ""))
        if json_path is not None:
            _save(json_path, {**head, "results": [cells[s.name] for s in stages if s.name in cells]})

    threads = 1 if (jobs or usable_cores()) > 1 else usable_cores()
    run(Plan(stages, Path(out_dir) / ".plan"), jobs=jobs, progress=progress, desc="export matrix",
        on_outcome=landed, initializer=_init_worker,
        initargs=(threads, commit(), str(Path(out_dir) / ".plan" / "converters.log")))
    return {**head, "results": [cells[s.name] for s in stages]}


def seed_plan(stages: list[Any], state_dir: Path, json_path: Path, settings: dict[str, Any]) -> int:
    """When there is no ``state_dir`` (a fresh clone has the JSON, not the plan's records), record as done each
    cell of ``stages`` the published ``json_path`` holds, so the run goes on from the published matrix instead
    of starting again and overwriting it. Only a JSON made with the same ``settings`` counts, and only cells that
    did not fail: a failed cell is tried again. Where ``state_dir`` exists its records rule, so deleting one
    makes that cell again. Returns how many were recorded."""
    from edgezoo.pipelines.runner import Outcome, content_key, recorded, write_record

    if state_dir.exists():
        return 0
    try:
        published = json.loads(json_path.read_text())
    except (OSError, ValueError):
        return 0
    if published.get("settings") != json.loads(json.dumps(settings, default=str)):  # as the JSON holds them
        return 0
    rows = {f"{r['model']}/{r['format']}-{r['precision']}": r for r in published.get("results", [])}
    seeded = 0
    for stage in stages:
        row = rows.get(stage.name)
        if row is None or row.get("status") == "failed":
            continue
        key = content_key(stage, {})
        if recorded(state_dir, stage.name, key) is None:
            state_dir.mkdir(parents=True, exist_ok=True)
            write_record(state_dir, stage.name, Outcome("done", row, seconds=row.get("seconds") or 0.0, key=key))
            seeded += 1
    return seeded


def _size(model: str) -> int:
    """``model``'s parameter count, built on the meta device (no memory, no init: milliseconds)."""
    import torch

    from edgezoo import create_model

    with torch.device("meta"):
        return sum(p.numel() for p in create_model(model).parameters())




def _source(root: Path) -> list[str]:
    """The package's source folders (pyproject's package-dir) and pyproject itself."""
    import tomllib

    try:
        dirs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values()
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return ["."]
    return sorted({*dirs, "pyproject.toml"})


def _init_worker(threads: int, code: str | None, log: str | None = None) -> None:
    """Each worker: its torch threads, the commit its cells record, and its converters' own output (progress
    bars, warnings) sent to ``log`` so that the terminal shows the matrix's progress alone."""
    import os

    import torch

    global _COMMIT
    _COMMIT = code
    torch.set_num_threads(threads)
    if log is not None:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)


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
        return "failed" if markdown else f"failed: {_reason(r)[:60]}"
    fig, secs = r.get("parity") or {}, f"{r.get('seconds', 0):.0f} s"
    if r["precision"] == "int8" and "top1_agreement" in fig:
        return f"{status} ({fig['top1_agreement']:.0%} agree, {secs})"
    if "max_rel_err" in fig:
        return f"{status} ({fig['max_rel_err']:.0e}, {secs})"
    return f"{status} ({secs})"


def print_table(matrix: dict[str, Any]) -> str:
    """The matrix as a plain-text table (status per cell; failures with their error)."""
    from edgezoo.tables import text_table

    models, columns, cells = _cells(matrix)
    return text_table([[m, *(_cell(cells.get((m, c)), False) for c in columns)] for m in models], ["model", *columns])


def markdown_table(matrix: dict[str, Any]) -> str:
    """The matrix as the docs' Markdown table, with export times, a legend and where it comes from."""
    from edgezoo.tables import markdown_table as table

    models, columns, cells = _cells(matrix)
    rows = [[f"`{m}`", *(_cell(cells.get((m, c)), True) for c in columns)] for m in models]
    counts: dict[str, int] = {}
    for r in matrix["results"]:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    total = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    commits = sorted({r["commit"] for r in matrix["results"] if r.get("commit")})
    dates = sorted({r["date"] for r in matrix["results"] if r.get("date")})
    planned = matrix.get("planned") or {}
    progress = ""
    if planned.get("models"):
        per_model = planned["cells"] // len(planned["models"])  # every model has the same formats and precisions
        made = {m: sum(r["model"] == m for r in matrix["results"]) for m in planned["models"]}
        complete = [m for m, n in made.items() if n >= per_model]
        progress = (f" Filled so far: {len(matrix['results'])} of {planned['cells']} cells, {len(complete)} of "
                    f"{len(planned['models'])} models complete (smallest first; `make export-matrix` continues "
                    f"where it stopped)" + (f", cells made {dates[0]} to {dates[-1]}" if len(dates) > 1 else
                                   f", cells made {dates[0]}" if dates else "") + ".")
    failures = [f"`{r['model']}` {r['format']} {r['precision']}: {_reason(r)}" for r in matrix["results"]
                if r["status"] == "failed"]
    fp = matrix.get("fingerprint") or {}
    where = f"`{fp['id']}` ({matrix['machine']})" if fp.get("id") else matrix["machine"]
    legend = (f"`make export-matrix` started {matrix['started']} on {where}"
              + (f", commit {', '.join(commits)}" if commits else "") + f": {total}."
              + progress + (f" Runs: {matrix['note']}." if matrix.get("note") else ""))
    text = table(rows, ["model", *columns]) + "\n\n" + legend
    if failures:
        text += "\n\nFailed cells (the first line of each error):\n\n" + "\n".join(f"- {f}" for f in failures)
    return text


def _reason(r: dict[str, Any]) -> str:
    text = (r.get("error") or (r.get("parity") or {}).get("reason") or "no reason recorded").strip()
    return text.splitlines()[0][:160].replace("|", "/") if text else "no reason recorded"


def load_matrix(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
