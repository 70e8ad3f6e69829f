"""The runtime tables of the benchmarking docs, rendered from the JSON ``make bench`` writes under results/bench/
(``python -m edgezoo.pipelines.tables bench``).

A folder is read as ``<id>.json`` (every runtime), ``<id>-timm.json`` (``--compare-timm``) and
``<id>-sizes.json`` (the cost curve, drawn beside it as ``<id>-sizes.png``) for the fingerprint id whose
main report is newest, or the one given with ``--fingerprint``; a kind of report that machine has none
of is taken from the newest machine that has one (its footer names it). The fastest-faithful-path
reports ``<id>-digits.json`` and ``<id>-digits-<S>px.json`` (:mod:`edgezoo.pipelines.fastest_path`: digits-trained
models, agreement-gated) come from every machine: that machine's first, then the others', newest first,
since which path wins depends on the CPU (int8 pays with VNNI, not without).
"Newest" is the last run a report records (``finished``, or its latest ``merged_runs``), never a file's
modification time, which a fresh clone sets to the moment of checkout.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

_SUFFIXES = ("", "-timm", "-sizes")


def _reports(folder: Path, fingerprint: str | None) -> tuple[list[dict | None], str | None]:
    from edgezoo.bench.report import load_report

    mains = [p for p in folder.glob("*.json")  # a machine's main report is named by its fingerprint id alone
             if (report := json.loads(p.read_text())).get("schema")
             and isinstance(report.get("fingerprint"), dict) and report["fingerprint"].get("id") == p.stem]
    if fingerprint is None:
        if not mains:
            raise SystemExit(f"no benchmark reports in {folder}: run make bench")
        fingerprint = max(mains, key=_finished).stem
    paths = [_this_or_newest(folder, fingerprint, s) for s in _SUFFIXES]
    reports = [load_report(p) if p is not None else None for p in paths]
    png = paths[2].with_suffix(".png") if paths[2] is not None else folder / f"{fingerprint}-sizes.png"
    return [*reports, [load_report(p) for p in _digits(folder, fingerprint)]], (str(png) if png.is_file() else None)


def _digits(folder: Path, fingerprint: str) -> list[Path]:
    """Every machine's fastest-path reports: ``fingerprint``'s first, then the other machines', the one that
    ran last first; a machine's report at its rows' own sizes, then those at one size, smallest first."""
    machines: dict[str, list[tuple[int, Path]]] = {}  # machine: [(size, 0 for the rows' own; path)]
    for path in folder.glob("*-digits*.json"):
        if match := re.fullmatch(r"(.+)-digits(?:-(\d+)px)?", path.stem):
            machines.setdefault(match[1], []).append((int(match[2] or 0), path))
    newest = sorted(machines, key=lambda m: max(_finished(p) for _, p in machines[m]), reverse=True)
    order = sorted(newest, key=lambda m: m != fingerprint)  # stable: the rest stay newest first
    return [p for m in order for _, p in sorted(machines[m])]


def _this_or_newest(folder: Path, fingerprint: str, suffix: str) -> Path | None:
    """``<fingerprint><suffix>.json``, else the newest ``*<suffix>.json`` of another machine (its part of the
    section then names that machine's fingerprint in its footer), else ``None``."""
    own = folder / f"{fingerprint}{suffix}.json"
    if own.is_file():
        return own
    others = [p for p in folder.glob(f"*{suffix}.json") if suffix or not p.stem.endswith(_SUFFIXES[1:])]
    return max(others, key=_finished) if others and suffix else None


def _finished(path: Path) -> str:
    """When the report at ``path`` last ran: its ``finished`` or its newest merged run's (ISO 8601, comparable)."""
    report = json.loads(path.read_text())
    return max([report.get("finished", ""), *(r.get("finished", "") for r in report.get("merged_runs", []))])


def render(folder: Path, page_dir: Path, fingerprint: str | None = None) -> str:
    """The section for the machine whose main report is newest (or ``fingerprint``'s), charts linked relative
    to ``page_dir``."""
    import os

    from edgezoo.bench.markdown import markdown

    (runtimes, timm, sizes, digits), png = _reports(folder, fingerprint)
    if png:
        png = Path(os.path.relpath(Path(png).resolve(), page_dir.resolve())).as_posix()
    return markdown(runtimes, timm, sizes, png, digits=digits)
