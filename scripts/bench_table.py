"""Generate the README's speed section from the JSON ``make bench`` writes under bench/results/.

    python scripts/bench_table.py bench/results                    # print it (newest fingerprint)
    python scripts/bench_table.py bench/results --write README.md  # splice it between the bench markers

A folder is read as ``<id>.json`` (every runtime), ``<id>-timm.json`` (``--compare-timm``) and
``<id>-sizes.json`` (the cost curve, drawn beside it as ``<id>-sizes.png``) and ``<id>-digits.json``
and ``<id>-digits-<S>px.json`` (``scripts/fastest_path.py``: digits-trained models, agreement-gated),
for the fingerprint id whose main report is newest, or the one given with ``--fingerprint``; a kind of
report that machine has none of is taken from the newest machine that has one (its footer names it).
"Newest" is the last run a report records (``finished``, or its latest ``merged_runs``), never a file's
modification time, which a fresh clone sets to the moment of checkout.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


_SUFFIXES = ("", "-timm", "-sizes", "-digits")


def _reports(folder: Path, fingerprint: str | None) -> tuple[list[dict | None], str | None]:
    from edgezoo.export.bench.report import load_report

    mains = [p for p in folder.glob("*.json")  # scripts' own JSON (int8_activations.py) is not a report
             if not p.stem.endswith(_SUFFIXES[1:]) and not re.search(r"-digits-\d+px$", p.stem)
             and "schema" in json.loads(p.read_text())]
    if fingerprint is None:
        if not mains:
            raise SystemExit(f"no benchmark reports in {folder}: run make bench")
        fingerprint = max(mains, key=_finished).stem
    paths = [_this_or_newest(folder, fingerprint, s) for s in _SUFFIXES]
    reports = [load_report(p) if p is not None else None for p in paths]
    sized = sorted(folder.glob(f"{fingerprint}-digits-*px.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1][:-2]))
    png = paths[2].with_suffix(".png") if paths[2] is not None else folder / f"{fingerprint}-sizes.png"
    return [*reports, [load_report(p) for p in sized]], (str(png) if png.is_file() else None)


def _this_or_newest(folder: Path, fingerprint: str, suffix: str) -> Path | None:
    """``<fingerprint><suffix>.json``, else the newest ``*<suffix>.json`` of another machine (its part of the
    section then names that machine's fingerprint in its footer), else ``None``."""
    own = folder / f"{fingerprint}{suffix}.json"
    if own.is_file():
        return own
    others = [p for p in folder.glob(f"*{suffix}.json") if suffix or not p.stem.endswith(_SUFFIXES[1:])]
    others = [p for p in others if not re.search(r"-digits-\d+px$", p.stem)]
    return max(others, key=_finished) if others and suffix else None


def _finished(path: Path) -> str:
    """When the report at ``path`` last ran: its ``finished`` or its newest merged run's (ISO 8601, comparable)."""
    report = json.loads(path.read_text())
    return max([report.get("finished", ""), *(r.get("finished", "") for r in report.get("merged_runs", []))])


def main() -> int:
    from _readme import splice  # scripts/ is on sys.path when a script runs

    from edgezoo.export.bench.markdown import markdown

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="bench/results")
    parser.add_argument("--fingerprint", help="which machine's reports (default: the newest)")
    parser.add_argument("--write", type=Path, metavar="README")
    args = parser.parse_args()
    (runtimes, timm, sizes, digits, digits_sized), png = _reports(args.folder, args.fingerprint)
    if args.write and png:
        png = str(Path(png).resolve().relative_to(args.write.resolve().parent))
    text = markdown(runtimes, timm, sizes, png, digits=[d for d in (digits, *digits_sized) if d])
    if args.write:
        args.write.write_text(splice(args.write.read_text(), text, START, END))
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
