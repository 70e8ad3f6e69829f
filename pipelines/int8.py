"""The int8 table's measurements: train a few models briefly on digits, export them int8, write the JSON.

    python -m edgezoo.pipelines.int8 --json results/int8.json    # make int8-table (then make tables)

Each row: a model trained on digits (`edgezoo.train.train_digits`, seeded), exported by
`edgezoo.export.export` to ONNX int8 with each QDQ placement, to ExecuTorch int8 and to LiteRT int8 (full
integer, weighted and dynamic range); the cells are
top-1 agreement with fp32 on every held-out digits image, as the gate computes it (ONNX:
reference QDQ semantics / onnxruntime's fused kernels on this CPU), and the size against fp32.
Trained checkpoints are kept under ``--work`` and reused by later runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from edgezoo.pipelines.runner import Plan, Stage, run
from edgezoo.tables import markdown_table

#: (model, epochs, image size): one CNN-attention model, three ViT families, FocalNet. The epochs bring
#: each to 96.7-98.9% val top-1 at these sizes. FocalNet edge-XS and EfficientViT-B0 need 8: after 3 they
#: were at 92.8% and 94.2%, and an undertrained model has many low-margin images that int8 flips on any
#: runtime (B0's ExecuTorch int8 agreed 97.8% at 3 epochs, 99.4% at 8).
ROWS = [
    ("ez_resnet18_eca", 3, 32),
    ("ez_focalnet_edge_xs", 8, 32),
    ("ez_shvit_s1", 3, 48),
    ("ez_efficientvit_m0", 8, 48),
    ("ez_efficientvit_b0", 8, 48),
]
CELLS = [("onnx", {"int8_scheme": "full"}), ("onnx", {"int8_scheme": "weighted"}), ("executorch", {}),
         ("litert", {"int8_mode": "full"}), ("litert", {"int8_mode": "weighted"}),
         ("litert", {"int8_mode": "dynamic"})]


def train_stage(model: str, epochs: int, img_size: int, work: str) -> dict[str, Any]:
    """Train ``model`` on digits into ``work`` (continuing a run a kill stopped): its checkpoint and top-1."""
    from edgezoo.train import train_digits

    folder = Path(work) / f"{model}-{img_size}px-{epochs}ep"
    final = train_digits(model, epochs=epochs, img_size=img_size, output=str(folder), resume=True,
                         run__progress=False)
    return {"checkpoint": str(final["checkpoint"]), "top1": max(final["val_top1"], final.get("ema_val_top1", 0.0))}


def train_stages(rows: list[tuple[str, int, int]], work: Path) -> list[Stage]:
    """The training stages of ``rows`` (shared by the int8 table and the fastest-path benchmark: the same
    names and settings, so a model trained for one is reused by the other)."""
    return [Stage(f"{m}/train-{s}px-{e}ep", train_stage, dict(model=m, epochs=e, img_size=s, work=str(work)),
                  cost=e * s, affinity=m) for m, e, s in rows]


def cell_stage(fmt: str, options: dict[str, Any], out: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """One int8 cell: the trained checkpoint exported int8 to ``fmt`` with ``options``, against its fp32 size."""
    from edgezoo.export import export
    from edgezoo.pipelines.cache import prepared

    (trained,) = inputs.values()
    src = prepared(trained["checkpoint"])
    fp32_size = export(src, fmt, Path(out) / "fp32").size_bytes or 0
    res = export(src, fmt, out, int8=True, calib="digits", **options)
    if res.status == "failed" and not res.parity:  # a crash, not a gate's verdict: the next run tries again
        raise RuntimeError(res.error or "export failed")
    p, fb = res.parity, res.notes.get("int8_fallback") or {}
    return {"format": fmt, "options": options, "status": res.status, "agreement": p.get("top1_agreement"),
            "float_tensors": len(fb["tensors"]) if fb else None, "candidates": fb.get("candidates"),
            "kernels": p.get("top1_agreement_ort_cpu_kernels"), "flips": p.get("top1_flips"),
            "decisive": p.get("decisive_flips"), "images": p.get("images"), "size": res.size_bytes,
            "fp32_size": fp32_size, "seconds": round(res.seconds, 1), "error": res.error}


def _fmt(c: dict[str, Any] | None) -> str:
    if c is None:
        return "-"
    if c["status"] == "failed" and c["agreement"] is None:
        return f"failed: {c['error']}"
    text = ("failed gate: " if c["status"] == "failed" else "") + f"{c['agreement']:.1%}"
    if c["kernels"] is not None:
        text += f" / {c['kernels']:.1%}"
    text += f" ({c['flips']} flips, {c['decisive']} decisive)"
    if c.get("float_tensors") is not None:
        text += f", {c['float_tensors']}/{c['candidates']} left float"
    if c["size"] and c["fp32_size"]:
        text += f", {c['size'] / c['fp32_size']:.2f}x size"
    return text


def markdown(rows: list[dict[str, Any]], machine: str) -> str:
    head = ["model (digits fp32 top-1)", "ONNX `full`", "ONNX `weighted`", "ExecuTorch XNNPACK", "LiteRT `full`",
            "LiteRT `weighted`", "LiteRT `dynamic`"]
    width = len(head) - 1
    rows = [{**r, "cells": [*r["cells"], *[None] * (width - len(r["cells"]))]} for r in rows]  # rows made before
    # the LiteRT columns have a "-" there
    lines = [markdown_table([[f"`{r['model']}` {r['epochs']} ep, {r['img_size']} px ({r['top1']:.1f}%)",
                              *(_fmt(c) for c in r["cells"])] for r in rows], head)]
    images = {c["images"] for r in rows for c in r["cells"] if c and c.get("images")}
    lines.append("")
    lines.append(f"Top-1 agreement with fp32 on {', '.join(map(str, sorted(images)))} held-out digits (ONNX: "
                 f"reference QDQ semantics / onnxruntime's int8 kernels on this CPU); \"left float\": activations "
                 f"the sensitivity fallback kept in float, of those quantised (`int8_fallback=auto`); LiteRT "
                 f"`dynamic`: int8 weights, activations quantised per call (no calibration, no fallback); "
                 f"`make int8-table` on {machine}.")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=Path("results/int8.json"))
    parser.add_argument("--work", type=Path, default=Path("runs/int8-table"))
    parser.add_argument("--models", help="comma-separated subset of the rows")
    parser.add_argument("--jobs", type=int, help="worker processes (default: the cores; 0: in this process)")
    args = parser.parse_args()
    from edgezoo.export.onnx import cpu_has_vnni
    from edgezoo.pipelines.matrix import machine as describe

    machine = f"{describe()}, VNNI {cpu_has_vnni()}, {time.strftime('%Y-%m-%d')}"
    wanted = set(args.models.split(",")) if args.models else None
    kept = _kept_rows(args.json, wanted)
    chosen = [r for r in ROWS if not wanted or r[0] in wanted]
    trains = train_stages(chosen, args.work)
    stages = list(trains)
    for (name, _, _), train in zip(chosen, trains, strict=True):
        stages += [Stage(f"{name}/{fmt}-{opts.get('int8_scheme', opts.get('int8_mode', 'xnnpack'))}", cell_stage, dict(
            fmt=fmt, options=opts, out=str(args.work / "exported" / name)), needs=(train.name,), affinity=name)
            for fmt, opts in CELLS]
    done: dict[str, Any] = {}

    def landed(name: str, outcome: Any) -> None:
        done[name] = outcome
        rows = _rows(chosen, trains, stages, done)
        if rows:
            args.json.parent.mkdir(parents=True, exist_ok=True)  # written as cells land: a kill loses one cell
            args.json.write_text(json.dumps({"machine": machine, "rows": _in_order(rows, kept)}, indent=2))

    run(Plan(stages, args.work / ".plan-int8"), jobs=args.jobs, desc="int8 table", on_outcome=landed)
    print(markdown(_in_order(_rows(chosen, trains, stages, done), kept), machine))
    print(f"{args.json}: the docs' int8 table is rendered from it by `make tables`")
    return 0


def _rows(chosen: list[tuple[str, int, int]], trains: list[Stage], stages: list[Stage],
          done: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's rows whose training and every cell have finished (failed cells carry their error)."""
    rows = []
    for (name, epochs, size), train in zip(chosen, trains, strict=True):
        cells = [s for s in stages if s.needs == (train.name,)]
        if train.name not in done or any(c.name not in done for c in cells) or done[train.name].result is None:
            continue
        row_cells = [done[c.name].result or {"format": c.settings["fmt"], "status": "failed", "agreement": None,
                                             "error": done[c.name].error} for c in cells]
        rows.append({"model": name, "epochs": epochs, "img_size": size, "top1": done[train.name].result["top1"],
                     "cells": row_cells})
    return rows


def _kept_rows(path: Path, wanted: set[str] | None) -> list[dict[str, Any]]:
    """With ``--models``, the other models' rows already in the report stay (same table, one machine line)."""
    if not wanted or not path.is_file():
        return []
    return [r for r in json.loads(path.read_text())["rows"] if r["model"] not in wanted]


def _in_order(rows: list[dict[str, Any]], kept: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """This run's rows and the kept ones (other models), in the order of :data:`ROWS`."""
    order = {name: i for i, (name, _, _) in enumerate(ROWS)}
    return sorted(kept + rows, key=lambda r: order.get(r["model"], len(order)))


if __name__ == "__main__":
    sys.exit(main())
