"""What ``edgezoo demo`` writes: ``report.md`` (one table, timings, the choices), ``report.json`` and three PNGs.

* ``accuracy_latency.png``: val top-1 against batch-1 latency, one marker per runtime
  (:func:`edgezoo.bench.plot.pareto_png` with the validation accuracy as x axis);
* ``training_curves.png``: val top-1 and train loss per epoch of every model;
* ``latency_runtimes.png``: batch-1 p50 latency of each model on each runtime (grouped bars).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from edgezoo.tables import format_count, markdown_table

__all__ = ["CHARTS", "headline", "machine_summary", "markdown", "write_report"]

CHARTS = {"accuracy_latency": "accuracy_latency.png", "training_curves": "training_curves.png",
          "latency_runtimes": "latency_runtimes.png"}
_FORMAT_NAMES = {"onnx": "ONNX fp32", "onnx-int8": "ONNX int8", "coreml": "CoreML fp16",
                 "executorch": "ExecuTorch fp32", "executorch-int8": "ExecuTorch int8",
                 "litert": "LiteRT fp32", "tensorrt": "TensorRT fp16"}
_FAMILY_NAMES = {"cnn_attention": "CNN attention", "single_head_vit": "single-head ViT",
                 "cascaded_group": "cascaded group", "focal_modulation": "focal modulation", "linear_vit": "linear ViT"}


def machine_summary(**fields: Any) -> dict[str, Any]:
    """The run's settings and totals with the machine (CPU model, cores, OS), load average and date."""
    from edgezoo.pipelines.matrix import machine

    try:
        load = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        load = None
    return {"machine": machine(), "load_average_1min_end": load, "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            **{k: (round(v, 1) if isinstance(v, float) else v) for k, v in fields.items()}}


def _records(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every benchmark record of the run: this machine's, then the remote target's (``edgezoo demo --remote``)."""
    return [rec for r in results for rec in _own(r)]


def _own(r: dict[str, Any]) -> list[dict[str, Any]]:
    return [*(r.get("bench") or {}).get("records", []), *(r.get("remote") or {}).get("records", [])]


def _col(rec: dict[str, Any]) -> str:
    """A record's column: ``runtime precision``, with ``@ target`` for a remote target's."""
    return f"{rec['runtime']} {rec['precision']}" + (f" @ {rec['target']}" if rec.get("target") else "")


def _columns(results: list[dict[str, Any]]) -> tuple[list[str], dict[str, str]]:
    """Runtime columns timed somewhere (``runtime precision``), and the absent ones with their reason."""
    cols, absent = [], {}
    for rec in _records(results):
        col = _col(rec)
        if rec["status"] == "absent":
            absent.setdefault(col, rec.get("reason", ""))
        elif col not in cols:
            cols.append(col)
    return cols, {k: v for k, v in absent.items() if k not in cols}


def _latency(r: dict[str, Any], col: str) -> str:
    rec = next((x for x in _own(r) if _col(x) == col and x["batch"] == 1), None)
    if rec is None:
        return "-"
    if rec["status"] == "ok":
        return f"{rec['latency_ms']['p50']:.2f}"
    return rec["status"]


def _int8_agreement(r: dict[str, Any]) -> str:
    p = (r["exports"].get("onnx-int8") or {}).get("parity") or {}
    if "top1_agreement" not in p:
        return "-"
    text = f"{p['top1_agreement']:.1%}"
    if p.get("top1_agreement_ort_cpu_kernels") is not None:
        text += f" / {p['top1_agreement_ort_cpu_kernels']:.1%}"
    return text + f" ({p.get('images', '?')} img)"


def _status(r: dict[str, Any], key: str) -> str:
    e = r["exports"].get(key)
    return "-" if e is None else e["status"] + (" (reused)" if e.get("reused") else "")


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The report's Markdown: the table, the charts, where the time went, the absent runtimes and the choices."""
    formats = meta["formats"]
    cols, absent = _columns(results)
    head = ["family", "model", "params", "MACs", "val top-1", *[_FORMAT_NAMES[f] for f in formats],
            *[f"`{c}` ms" for c in cols], "int8 agreement"]
    rows = []
    for r in results:
        val = f"{r['val']['top1']:.2f}%" if r.get("val") else "failed"
        name = f"`{r['model']}` {r['epochs']} ep, {r['img_size']} px"
        rows.append([_FAMILY_NAMES.get(r["family"], r["family"]), name,
                     format_count(r["params"]) if r.get("params") else "-",
                     format_count(r["macs"]) if r.get("macs") else "-", val,
                     *[_status(r, f) for f in formats], *[_latency(r, c) for c in cols], _int8_agreement(r)])
    lines = [f"# edgezoo demo: {len(results)} famil{'y' if len(results) == 1 else 'ies'} on digits", "",
             markdown_table(rows, head), "", _caption(meta), "", *_charts(), "", *_timings(results, meta)]
    if absent:
        lines += ["", "Runtimes not present here: " + "; ".join(f"`{c}` ({why})" for c, why in absent.items()) + "."]
    errors = [f"`{r['model']}` {stage}: {err}" for r in results for stage, err in r.get("errors", {}).items()]
    if errors:
        lines += ["", "Errors: " + "; ".join(errors)]
    lines += ["", *_choices(results, meta)]
    return "\n".join(lines) + "\n"


def headline(report: dict[str, Any], source: str) -> str:
    """The README's headline: each family's demo model, its accuracy, its latency on every runtime timed, and
    where the figures come from (``report``: a demo's ``report.json``, found at ``source``)."""
    results, meta = report["results"], report["meta"]
    cols, _ = _columns(results)
    rows = [[_FAMILY_NAMES.get(r["family"], r["family"]), f"`{r['model']}`",
             f"{r['val']['top1']:.1f}%" if r.get("val") else "failed", *[_latency(r, c) for c in cols],
             _int8_agreement(r).split(" (")[0]] for r in results]
    head = ["family", "model", "digits top-1", *[f"`{c}` ms" for c in cols], "int8 agreement"]
    return (markdown_table(rows, head) + f"\n\n`{meta.get('command', 'make demo')}` on {meta['machine']}, "
            f"{meta['date']}: batch-1 p50 latency at {results[0]['img_size']} px, one thread, runtimes interleaved; "
            f"int8 agreement: the ONNX int8 file's top-1 agreement with fp32 on the 360 held-out digits. The whole "
            f"report, with its charts and timings: [{source}]({source}).")


def _caption(meta: dict[str, Any]) -> str:
    from edgezoo.bench.run import INTERLEAVE_BLOCK

    p = meta["protocol"]
    return (f"val top-1 on the 360 held-out digits (the better of the weights and their EMA); params and MACs of the "
            f"deploy form at batch 1; export status from each format's parity gate (`verified`: run here and matched "
            f"PyTorch, `converted`: no runtime here, `absent`: not installed); latency: batch-1 p50 in ms, 1 thread, "
            f"{p['warmup']} warm-up runs then up to {p['runs']} runs or {p['max_seconds']} s each, one model at a "
            f"time after every other stage had finished, its runtimes interleaved in turns of {INTERLEAVE_BLOCK} "
            f"calls; int8 agreement: top-1 agreement of the ONNX int8 file with fp32 on held-out digits (reference "
            f"QDQ semantics / onnxruntime's int8 kernels on this CPU). {meta['machine']}, {meta['date']}.")


def _charts() -> list[str]:
    return [f"![{name.replace('_', ' ')}]({file})" for name, file in CHARTS.items()]


def _timings(results: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    """Wall and CPU seconds of each stage of each model, and the run's totals."""
    keys = meta["formats"]
    head = ["model", "train + validate", *[_FORMAT_NAMES[k] for k in keys], "bench"]
    where = (f"its own worker process, {meta['jobs']} side by side" if meta["jobs"] else "in the demo's process")
    lines = ["## Where the time went", "", f"Seconds, wall / CPU, of each stage ({where}, "
             f"{meta['threads']} thread{'s' if meta['threads'] > 1 else ''}).",
             ""]

    def cell(t: dict[str, Any] | None) -> str:
        if not t or "wall_s" not in t:
            return "-"
        return f"{t['wall_s']:.0f} / {t['cpu_s']:.0f}" + (" (reused)" if t.get("reused") else "")

    rows = [[f"`{r['model']}`", cell(r.get("train")), *(cell(r["exports"].get(k)) for k in keys),
             cell((r.get("bench") or {}).get("timing"))] for r in results]
    lines += [markdown_table(rows, head), "",
              f"Whole run: {meta['wall_s']:.0f} s wall, {meta['cpu_s']:.0f} s CPU (every process), {meta['jobs']} "
              f"worker processes; 1-minute load average at the end {meta['load_average_1min_end']}."]
    return lines


def _choices(results: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    """Why the demo is set up as it is, with this run's figures where it has them."""
    from edgezoo.pipelines.demo import PLAN

    int8 = ", ".join(f"`{e.model}` {e.int8.get('int8_scheme')}" for e in PLAN.values())
    epochs = ", ".join(f"`{r['model']}` {r['epochs']}" for r in results)
    batches = ", ".join(f"`{e.model}` {64 if any(x.startswith('data.batch_size=64') for x in e.sets) else 32}"
                        for e in PLAN.values())
    return ["## Choices", "",
            "- **32 px, one thread per process, two processes.** Digits are 8x8 images; at 32 px the models are so "
            "small that per-op overhead, not arithmetic, sets the time of a step, and one thread per process is "
            "faster than two (with two threads on a busy machine a training step took up to 30 times longer). So "
            "each stage runs in its own worker process, one per core, the longest ready stage first.",
            f"- **Epochs per family** ({epochs}; batch {batches}): the shortest schedule of `configs/digits.yaml` "
            "after which the family clears 95% val top-1; batch 64 (the learning rate scaled with it) where the "
            "family keeps a margin with half the steps, since a step at 64 costs little more than at 32. The CNN is "
            "ResNet-18-ECA, not the MobileNetV2 (fewer MACs): at 32 px MobileNetV2-ECA stays below 90% after 5 "
            "epochs.",
            f"- **ONNX int8** without the sensitivity fallback (`int8_fallback=0`: its ranking pass costs minutes "
            f"on two cores) and with the QDQ placement per family: {int8}.",
            "- **ExecuTorch int8 is off** (`--formats ...,executorch-int8` adds it): its PT2E quantisation and "
            "lowering took about 160 CPU seconds for EfficientViT-M0 alone, more than half of the budget; fp32 "
            "lowering (see the timings) stays.",
            "- **Benchmarks last**: they run after every other stage, one model at a time, so no training or export "
            "shares the CPU with a timed run.",
            "- **`--resume`** reuses finished training runs (and exports made from the same checkpoint with the same "
            "settings); without it the demo's folders for the chosen models are cleared and made again."]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)


def training_curves_png(results: list[dict[str, Any]], path: Path) -> None:
    """Val top-1 (solid: weights, dashed: EMA) and train loss per epoch, one colour per model."""
    plt = _plt()
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(11, 4))
    for r in results:
        rows = (r.get("train") or {}).get("history") or []
        if not rows:
            continue
        ep = [x["epoch"] for x in rows]
        line, = acc.plot(ep, [x["val_top1"] for x in rows], "o-", ms=3, label=r["model"].removeprefix("ez_"))
        if "ema_val_top1" in rows[0]:
            acc.plot(ep, [x["ema_val_top1"] for x in rows], "--", color=line.get_color(), lw=1)
        loss.plot(ep, [x["train_loss"] for x in rows], "o-", ms=3, color=line.get_color())
    acc.axhline(95, color="grey", lw=0.8, ls=":")
    acc.set(xlabel="epoch", ylabel="val top-1 (%)", title="validation accuracy (dashed: EMA)", ylim=(0, 100))
    loss.set(xlabel="epoch", ylabel="train loss", title="training loss")
    for ax in (acc, loss):
        ax.grid(alpha=0.3)
    acc.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def latency_runtimes_png(results: list[dict[str, Any]], path: Path, title: str) -> None:
    """Batch-1 p50 latency of each model (groups) on each runtime (bars), log scale."""
    import numpy as np

    plt = _plt()
    cols, _ = _columns(results)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(results) + 2), 4.2))
    width = 0.8 / max(len(cols), 1)
    for j, col in enumerate(cols):
        vals = []
        for r in results:
            cell = _latency(r, col)
            vals.append(float(cell) if cell.replace(".", "", 1).isdigit() else np.nan)
        ax.bar(np.arange(len(results)) + (j - (len(cols) - 1) / 2) * width, vals, width, label=col)
    ax.set_xticks(range(len(results)), [r["model"].removeprefix("ez_") for r in results], rotation=15, fontsize=8)
    ax.set_yscale("log")
    ax.set(ylabel="p50 latency, batch 1 (ms)", title=title)
    ax.title.set_fontsize(9)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _merged_bench(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    reports = [r["bench"] for r in results if r.get("bench")]
    if not reports:
        return None
    return {**reports[0], "records": _records(results)}


def write_report(out: Path, results: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """Write ``report.json``, the charts and ``report.md`` into ``out``; return the paths and whether any stage
    failed (``failed``: a crashed stage, a failed export gate or a failed benchmark record)."""
    from edgezoo.bench.plot import pareto_png

    out.mkdir(parents=True, exist_ok=True)
    charts = {k: out / v for k, v in CHARTS.items()}
    training_curves_png(results, charts["training_curves"])
    bench = _merged_bench(results)
    accuracy = {r["model"]: r["val"]["top1"] for r in results if r.get("val")}
    title = f"{meta['machine']}, 1 thread, batch 1"
    latency_runtimes_png(results, charts["latency_runtimes"], title)
    if bench is not None and accuracy and any(rec["status"] == "ok" for rec in bench["records"]):
        pareto_png(bench, charts["accuracy_latency"], accuracy)
    else:
        charts.pop("accuracy_latency").unlink(missing_ok=True)
    report_json = out / "report.json"
    report_json.write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=str))
    md = out / "report.md"
    md.write_text(markdown(results, meta))
    failed = any(r.get("errors") for r in results) or any(
        e.get("status") == "failed" for r in results for e in r["exports"].values()) or any(
        rec["status"] == "failed" for rec in _records(results))
    return {"report_md": str(md), "report_json": str(report_json), "charts": {k: str(v) for k, v in charts.items()},
            "failed": failed}
