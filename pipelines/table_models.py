"""The model tables (every model on the Models page, one family's on its page), rendered from JSON.

Params, MACs, input size and the entrypoint's description come from ``results/models.json``
(``python -m edgezoo.pipelines.tables --profile`` measures them: MACs with torch's ``FlopCounterMode`` at
the default input size, 1000 classes); each row's export status per format from the export matrix
(``results/export-matrix.json``, ``make export-matrix``) and its onnxruntime CPU latency from the newest
benchmark report under ``results/bench/`` that timed it (``make bench``); a model neither has run is "-".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FORMATS = ("onnx", "coreml", "executorch", "litert")


def export_status(path: Path) -> dict[tuple[str, str], str]:
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


def ort_latency(folder: Path) -> tuple[dict[tuple[str, int], float], str | None]:
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


def profile_all(path: Path) -> Path:
    """Measure params, MACs and input size of every registered model into ``path`` (JSON)."""
    import edgezoo
    from edgezoo.profile import profile_model
    from edgezoo.registry import model_doc

    rows: dict[str, dict[str, Any]] = {}
    for name in edgezoo.list_models():
        prof = profile_model(name)
        rows[name] = {"family": edgezoo.get_spec(name).family, "params": int(prof.params), "macs": int(prof.macs),
                      "input_size": list(prof.input_size), "doc": model_doc(name)}
    path.write_text(json.dumps(rows, indent=1) + "\n")
    return path


def render(results: Path, family: str | None = None) -> str:
    """The table of every model (``family``: of that family only) from the JSON under ``results``."""
    from edgezoo.tables import format_count, markdown_table

    profiles = json.loads((results / "models.json").read_text())
    status = export_status(results / "export-matrix.json")
    latency, fingerprint = ort_latency(results / "bench")
    rows = []
    for name, prof in profiles.items():
        if (prof["family"] == "mixer_sweep" and family != "mixer_sweep") or (family and prof["family"] != family):
            continue  # the 26 ez_mix_* models of one macro are listed on the mixer sweep's page
        size = prof["input_size"]
        ms = latency.get((name, size[-1]))
        rows.append([f"`{name}`", *([] if family else [prof["family"]]), format_count(prof["params"]),
                     format_count(prof["macs"]), "x".join(map(str, size[1:])),
                     *(status.get((name, f), "-") for f in FORMATS), f"{ms:.2f}" if ms else "-",
                     *([] if family else [prof["doc"]])])
    # a family's page describes its models below the table (the module's docstring): no description column
    header = ["model", *([] if family else ["family"]), "params", "MACs", "input", *FORMATS, "ort fp32 ms",
              *([] if family else ["what it is"])]
    note = ("Params and MACs: `python -m edgezoo.pipelines.tables --profile` (`results/models.json`; MACs at the "
            "default input size, 1000 classes). Export status per format at the default input size with random "
            "weights (`make export-matrix`, `results/export-matrix.json`: `verified` ran here and passed its gate, "
            "`converted` exists but cannot run here, with the precisions run); onnxruntime CPU fp32 batch-1 p50 "
            "latency at the default size from `make bench`" + (f" ({fingerprint})" if fingerprint else "")
            + "; `-`: not run yet.")
    return markdown_table(rows, header) + "\n\n" + note
