"""Charts of a benchmark report (PNG, matplotlib's Agg backend).

* :func:`pareto_png`: batch-1 p50 latency against MACs, or against accuracy read from a results
  file (:func:`read_accuracy`), one marker per runtime/precision, the Pareto front drawn per
  runtime (points no other point beats on both axes: lower latency, more MACs / higher accuracy).
* :func:`cost_curve_png`: latency against input pixels on log-log axes, one line per model and
  runtime, with the fitted exponent (1.0: linear in pixels; above 1: faster than linear).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgezoo.errors import InvalidArgumentError

__all__ = ["cost_curve_png", "fit_exponents", "pareto_front", "pareto_png", "read_accuracy"]


def read_accuracy(path: str | os.PathLike) -> dict[str, float]:
    """``{model: top-1 %}`` from a CSV with ``model`` and ``top1`` columns (timm's results files), or JSON:
    ``edgezoo validate --json`` output with ``model``/``arch`` added, a list of those, or ``{model: top1}``."""
    path = Path(path)
    if not path.is_file():
        raise InvalidArgumentError(f"accuracy file not found: {path}")
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    else:
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise InvalidArgumentError(f"accuracy file {path} is not JSON ({err.msg}): give a .csv or .json") from err
        if isinstance(data, dict) and "top1" not in data:
            return {str(k): float(v["top1"] if isinstance(v, dict) else v) for k, v in data.items()}
        rows = data if isinstance(data, list) else [data]
    out = {}
    for row in rows:
        name = row.get("model") or row.get("arch") or row.get("name")
        if name and row.get("top1") not in (None, ""):
            out[str(name)] = float(row["top1"])
    if not out:
        raise InvalidArgumentError(f"no model/top1 pairs in {path}: expected columns or keys 'model' and 'top1'")
    return out


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points ``(x, latency)`` that no other point beats with a higher x and a lower latency."""
    front = []
    for i, (x, y) in enumerate(points):
        beaten = any((x2 >= x and y2 <= y) and (x2 > x or y2 < y) for j, (x2, y2) in enumerate(points) if j != i)
        if not beaten:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ok(report: dict[str, Any], batch: int | None = 1) -> list[dict[str, Any]]:
    """Timed records with a p50 (a native tool that prints only a mean has none) at ``batch``."""
    return [r for r in report["records"] if r["status"] == "ok" and "p50" in r["latency_ms"]
            and (batch is None or r["batch"] == batch)]


def _finish(plt: Any, fig: Any, ax: Any, report: dict[str, Any], title: str, ylabel: str,
            path: str | os.PathLike) -> Path:
    """Label, title (with the machine), grid and legend; write ``path`` atomically and close the figure."""
    fp = report["fingerprint"]
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}{fp['cpu']}, {fp['threads']} threads", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    out = _save(fig, path)
    plt.close(fig)
    return out


def _save(fig: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    tmp.replace(path)
    return path


def pareto_png(report: dict[str, Any], path: str | os.PathLike, accuracy: dict[str, float] | None = None) -> Path:
    """Draw the batch-1 latency/MACs (or latency/accuracy) chart of ``report`` at ``path``."""
    plt = _plt()
    recs = _ok(report)
    # an artifact file timed as it is (edgezoo bench FILE --remote) has no MACs count
    recs = [r for r in recs if (r["model"] in accuracy if accuracy is not None else r.get("macs"))]
    if not recs:
        raise InvalidArgumentError("nothing to plot: no batch-1 record timed" +
                                   (" for a model in the accuracy file" if accuracy is not None else
                                    " with a MACs count (models, not artifact files)"))
    fig, ax = plt.subplots(figsize=(7.5, 5))
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        groups.setdefault(f"{r['runtime']} {r['precision']}", []).append(r)
    for label, rs in sorted(groups.items()):
        pts = [((accuracy[r["model"]] if accuracy else r["macs"] / 1e6), r["latency_ms"]["p50"]) for r in rs]
        line = ax.scatter(*zip(*pts, strict=True), label=label, s=28)
        front = pareto_front(pts)
        ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], color=line.get_facecolor()[0], lw=1)
        for r, (x, y) in zip(rs, pts, strict=True):
            ax.annotate(r["model"].removeprefix("ez_"), (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
    ax.set_yscale("log")
    if not accuracy:
        ax.set_xscale("log")
    ax.set_xlabel("top-1 accuracy (%)" if accuracy else "MMACs (batch 1)")
    return _finish(plt, fig, ax, report, "", "p50 latency, batch 1 (ms)", path)


def fit_exponents(report: dict[str, Any]) -> dict[str, float]:
    """``{"model runtime precision": b}`` with latency ~ pixels**b fitted on the batch-1 records (2+ sizes)."""
    series: dict[str, list[tuple[int, float]]] = {}
    for r in _ok(report):
        series.setdefault(f"{r['model']} {r['runtime']} {r['precision']}", []).append(
            (r["img_size"] ** 2, r["latency_ms"]["p50"]))
    out = {}
    for key, pts in series.items():
        if len({p for p, _ in pts}) >= 2:
            px, lat = np.log([p for p, _ in pts]), np.log([t for _, t in pts])
            out[key] = round(float(np.polyfit(px, lat, 1)[0]), 3)
    return out


def cost_curve_png(report: dict[str, Any], path: str | os.PathLike) -> Path:
    """Draw latency against input pixels (log-log) for every model/runtime timed at 2+ sizes."""
    plt = _plt()
    slopes = fit_exponents(report)
    if not slopes:
        raise InvalidArgumentError("a cost curve needs the same model timed at 2 or more sizes (--sizes 128,256,512)")
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for key, b in sorted(slopes.items()):
        model, rt, prec = key.split(" ")
        pts = sorted((r["img_size"], r["latency_ms"]["p50"]) for r in _ok(report)
                     if (r["model"], r["runtime"], r["precision"]) == (model, rt, prec))
        ax.plot([s * s for s, _ in pts], [t for _, t in pts], marker="o", ms=3,
                label=f"{model.removeprefix('ez_')} ({rt} {prec}): ~pixels^{b:.2f}")
    sizes = sorted({r["img_size"] for r in _ok(report)})
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks([s * s for s in sizes], [f"{s}²" for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("input pixels (side², batch 1)")
    return _finish(plt, fig, ax, report, "latency against input size; ", "p50 latency (ms)", path)
