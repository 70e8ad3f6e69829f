"""Generate the README's model table from the registry (never typed by hand).

    python scripts/model_table.py              # print the table
    python scripts/model_table.py --write README.md   # replace the table between the markers
    python scripts/model_table.py --check README.md   # exit 1 if the README's table is stale

Beside params and MACs, each row carries its export status per format from the export matrix JSON
(``make export-matrix``: results/export-matrix.json) and its onnxruntime CPU latency from the newest
benchmark report under results/bench/ that timed it (``make bench``); a model neither has run is "-".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

START, END = "<!-- model-table:start -->", "<!-- model-table:end -->"
ROOT = Path(__file__).resolve().parents[1]
MATRIX = ROOT / "results" / "export-matrix.json"
BENCH = ROOT / "bench" / "results"
FORMATS = ("onnx", "coreml", "executorch")


def export_status(path: Path = MATRIX) -> dict[tuple[str, str], str]:
    """``{(model, format): word}``: ``verified`` / ``converted`` when every precision run is, else the failures."""
    if not path.is_file():
        return {}
    cells: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for r in json.loads(path.read_text())["results"]:
        cells.setdefault((r["model"], r["format"]), []).append((r["precision"], r["status"]))
    out = {}
    for key, runs in cells.items():
        failed = [p for p, s in runs if s == "failed"]
        worst = "converted" if any(s == "converted" for _, s in runs) else "verified"
        out[key] = f"failed ({', '.join(failed)})" if failed else f"{worst} ({'/'.join(p for p, _ in runs)})"
    return out


def ort_latency(folder: Path = BENCH) -> tuple[dict[tuple[str, int], float], str | None]:
    """``{(model, px): p50 ms}`` of onnxruntime fp32 batch-1 records and the machine they come from.

    One machine for the whole column: the one whose main report (``<fingerprint>.json``, ``make
    bench-runtimes``) finished last; its other reports (``-timm``, ...) fill in models the main report
    lacks, the newest record winning. Reports of other machines never mix in (their CPUs differ by 2x).
    """
    reports = []
    for p in folder.glob("*.json"):
        try:
            rep = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if "records" in rep and isinstance(rep.get("fingerprint"), dict):
            reports.append((p.stem, rep))
    mains = [rep for stem, rep in reports if stem == rep["fingerprint"].get("id")]
    if not mains:
        return {}, None
    machine = max(mains, key=lambda r: r.get("finished", ""))["fingerprint"]["id"]
    found: dict[tuple[str, int], float] = {}
    fingerprint = None
    for _, rep in sorted(reports, key=lambda sr: sr[1].get("finished", "")):
        if rep["fingerprint"].get("id") != machine:
            continue
        for r in rep["records"]:
            if (r["status"], r["runtime"], r["precision"], r["batch"]) == ("ok", "ort", "fp32", 1) and \
                    r.get("role") != "timm" and not str(r.get("source", "")).endswith((".pth", ".safetensors")):
                found[(r["model"], r["img_size"])] = r["latency_ms"]["p50"]
                fingerprint = f"{machine}, {r['threads']} threads"
    return found, fingerprint


def render(matrix: Path = MATRIX, bench: Path = BENCH) -> str:
    import edgezoo
    from edgezoo.profile import profile_model
    from edgezoo.registry import model_doc
    from edgezoo.tables import format_count

    status = export_status(matrix)
    latency, fingerprint = ort_latency(bench)
    lines = ["| model | family | params | MACs | input | " + " | ".join(FORMATS) + " | ort fp32 ms | what it is |",
             "|---|---|---|---|---|" + "---|" * len(FORMATS) + "---|---|"]
    for family in edgezoo.FAMILIES:
        if family == "mixer_sweep":  # 26 ez_mix_* models of one macro: the README's sweep section lists them
            continue
        for name in edgezoo.list_models(family=family):
            prof = profile_model(name)
            size = "x".join(map(str, prof.input_size[1:]))
            formats = " | ".join(status.get((name, f), "-") for f in FORMATS)
            ms = latency.get((name, prof.input_size[-1]))
            lines.append(f"| `{name}` | {family} | {format_count(prof.params)} | {format_count(prof.macs)} | {size} "
                         f"| {formats} | {f'{ms:.2f}' if ms else '-'} | {model_doc(name)} |")
    lines += ["", "Export status per format at the default input size with random weights (`make export-matrix`: "
              "`verified` ran here and passed its gate, `converted` exists but cannot run here, with the precisions "
              "run); onnxruntime CPU fp32 batch-1 p50 latency at the default size from `make bench`"
              + (f" ({fingerprint})" if fingerprint else "") + "; `-`: not run yet."]
    return "\n".join(lines)


def splice(text: str, table: str) -> str:
    from _readme import splice as _splice  # scripts/ is on sys.path when a script runs

    return _splice(text, table, START, END)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", type=Path, metavar="README")
    group.add_argument("--check", type=Path, metavar="README")
    args = parser.parse_args()
    table = render()
    if args.write:
        args.write.write_text(splice(args.write.read_text(), table))
    elif args.check:
        text = args.check.read_text()
        if splice(text, table) != text:
            print(f"{args.check}: model table is stale; run `make table`", file=sys.stderr)
            return 1
    else:
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
