"""The README's speed section, generated from benchmark reports (``scripts/bench_table.py`` writes it).

Three parts, each present when a report has its records: latency per runtime for each model
(batch-1 p50, the fastest marked, throughput at the largest batch), the ``--compare-timm``
ratios, and the cost curve's fitted exponents; then the fingerprint and protocol they ran under.
"""

from __future__ import annotations

from typing import Any

from edgezoo.bench.passes import ratio
from edgezoo.tables import markdown_table

__all__ = ["fastest", "markdown"]


def _ok(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in report["records"] if r["status"] == "ok" and r.get("role") != "timm"]


def _column(r: dict[str, Any]) -> str:
    return f"{r['runtime']} {r['precision']}"


#: the least top-1 agreement with PyTorch a record needs to count as a faithful path
FAITHFUL = 0.99


def fastest(report: dict[str, Any], min_agreement: float = FAITHFUL) -> dict[str, dict[str, Any]]:
    """``{model: record}`` of the fastest batch-1 CPU record of each model (GPU runtimes left out).

    A record whose top-1 agreement was measured and is below ``min_agreement`` is not a candidate.
    """
    best: dict[str, dict[str, Any]] = {}
    for r in _ok(report):
        if r["batch"] != 1 or r["runtime"] in ("ort-cuda", "tensorrt", "coreml"):
            continue
        if r.get("agreement") and r["agreement"]["top1_agreement"] < min_agreement:
            continue
        if r["model"] not in best or r["latency_ms"]["p50"] < best[r["model"]]["latency_ms"]["p50"]:
            best[r["model"]] = r
    return best


def _runtime_table(report: dict[str, Any]) -> list[str]:
    recs = [r for r in _ok(report) if r["batch"] == 1]
    if not recs:
        return []
    cols = list(dict.fromkeys(_column(r) for r in report["records"] if r.get("role") != "timm" and r["batch"] == 1))
    absent = {_column(r): r.get("reason", "") for r in report["records"] if r["status"] == "absent"}
    models = list(dict.fromkeys(r["model"] for r in recs))
    best = fastest(report)
    big = max((r["batch"] for r in _ok(report)), default=1)
    # batch 1 only: no throughput column (its img/s is 1000 / p50)
    header = ["model (MMACs, px)", *(f"`{c}`" for c in cols if c not in absent), "fastest vs ort fp32",
              *([f"img/s at batch {big} (best)"] if big > 1 else [])]
    rows = []
    for m in models:
        cells = {_column(r): r for r in recs if r["model"] == m}
        failed = {_column(r) for r in report["records"] if r["model"] == m and r["status"] == "failed"}
        first = next(iter(cells.values()))
        row = [f"`{m}` ({first['macs'] / 1e6:.0f}, {first['img_size']})"]
        for c in cols:
            if c in absent:
                continue
            r = cells.get(c)
            text = "failed" if c in failed else "" if r is None else f"{r['latency_ms']['p50']:.2f}"
            if r is not None and best.get(m) is r:
                text = f"**{text}**"
            if r is not None and r.get("agreement"):
                text += f" ({r['agreement']['top1_agreement']:.1%})"
            row.append(text)
        ort, win = cells.get("ort fp32"), best.get(m)
        row.append(f"`{_column(win)}` {ratio(ort, win).text()}" if ort and win else "")
        if big > 1:
            top = max((r for r in _ok(report) if r["model"] == m and r["batch"] == big),
                      key=lambda r: r["throughput_ips"], default=None)
            row.append(f"{top['throughput_ips']:.0f} (`{_column(top)}`)" if top else "")
        rows.append(row)
    notes = [f"`{c}`: {why}" for c, why in absent.items()]
    lines = [markdown_table(rows, header), ""]
    lines.append(f"Batch-1 p50 latency in ms (fastest CPU path in bold; top-1 agreement with PyTorch in brackets "
                 f"where measured: a path below {FAITHFUL:.0%} is never the fastest)."
                 + (f" Absent here: {'; '.join(notes)}." if notes else ""))
    return lines


def _timm_table(report: dict[str, Any]) -> list[str]:
    recs = [r for r in _ok(report) if r.get("compare", {}).get("ratio_p50") is not None]
    if not recs:
        return []
    rows = []
    for r in recs:
        c = r["compare"]
        rate = 2 * r["macs"] * r["batch"] / r["latency_ms"]["p50"] / 1e6 if r.get("macs") else None
        rows.append([f"`{r['model']}`", f"`{c['timm_model']}`", f"`{_column(r)}` b{r['batch']}",
                     f"{r['latency_ms']['p50']:.2f}", f"{c['timm_latency_ms']['p50']:.2f}",
                     f"{c['ratio_p50']:.3f}{_range(c)}", f"{c['ratio_min']:.3f}", f"{rate:.0f}" if rate else ""])
    head = ["model", "timm model", "runtime", "edgezoo p50 ms", "timm p50 ms", "ratio (p50)", "ratio (min)",
            "edgezoo GFLOP/s (p50)"]
    lines = [markdown_table(rows, head), "",
             "Same weights (timm's mapped into edgezoo's model, outputs checked equal), same exporter and "
             "runtime, runs interleaved; below 1.0 edgezoo is faster. edgezoo in its deploy form "
                  "(`edgezoo.fuse`), timm as timm ships it (eval). GFLOP/s: 2 x MACs / p50, how much of this "
                  "CPU's arithmetic a model uses (the ResNets' large convolutions show what the runtime reaches)."]
    return lines


def _range(compare: dict[str, Any]) -> str:
    low_high = compare.get("ratio_p50_range")
    return f" ({low_high[0]:.3f}-{low_high[1]:.3f})" if low_high else ""


def _curve_table(report: dict[str, Any], png: str | None) -> list[str]:
    from edgezoo.bench.plot import fit_exponents

    slopes = fit_exponents(report)
    if not slopes:
        return []
    sizes = sorted({r["img_size"] for r in _ok(report)})
    rows = []
    for key, b in slopes.items():
        model, rt, prec = key.split(" ")
        by = {r["img_size"]: r["latency_ms"]["p50"] for r in _ok(report)
              if (r["model"], r["runtime"], r["precision"], r["batch"]) == (model, rt, prec, 1)}
        cells = [f"{by[s]:.1f}" if s in by else "" for s in sizes]
        rows.append([f"`{model}`", f"`{rt} {prec}`", *cells, f"{b:.2f}"])
    lines = [markdown_table(rows, ["model", "runtime", *(f"{s} px" for s in sizes), "latency ~ pixels^b"]), "",
             "Batch-1 p50 ms against input size; b is the fitted log-log slope (1.0: linear in pixels)."]
    if png:
        lines += ["", f"![latency against input size]({png})"]
    return lines


def _sizes(report: dict[str, Any]) -> str:
    """``"128 px, "`` when every record of ``report`` is at one size, else ``""``."""
    sizes = {r["img_size"] for r in report["records"]}
    return f"{sizes.pop()} px, " if len(sizes) == 1 else ""


def _footer(report: dict[str, Any]) -> str:
    fp, pr = report["fingerprint"], report["protocol"]
    flags = ", ".join(k for k, v in fp["flags"].items() if v) or "unknown flags"
    gpu = "; ".join(f"{g['name']} (driver {g.get('driver')})" for g in fp["gpus"]) or "no GPU"
    vers = ", ".join(f"{k} {v}" for k, v in fp["versions"].items() if k != "edgezoo")
    gflops = f", fp32 matmul {fp['matmul_gflops_fp32']:.0f} GFLOP/s" if fp.get("matmul_gflops_fp32") else ""
    return (f"`{fp['id']}`: {fp['cpu']} ({flags}), {fp['usable_cores']} usable cores, {fp['threads']} threads"
            f"{gflops}, {gpu}; {vers}. Protocol: {pr['warmup']} warm-up runs, then up to {pr['runs']} timed runs "
            f"or {pr['max_seconds']:g} s{_interleaving(report)}{_passes(report)}; {report['started'][:10]}.")


def _interleaving(report: dict[str, Any]) -> str:
    """How the records were interleaved (the protocol's turns), for the footer."""
    block = report["protocol"].get("block", 1)
    if not any(r.get("interleaved_with") for r in report["records"]):
        return ""
    recs = [r for r in report["records"] if r.get("interleaved_with")]
    what = "sizes" if len({r["img_size"] for r in recs}) > 1 and len({r["runtime"] for r in recs}) == 1 else "runtimes"
    if block > 1:
        return f", each model's {what} interleaved in turns of {block} calls (each after an untimed one)"
    return f", each model's {what} interleaved call by call" if what == "sizes" else ", interleaved call by call"


def _passes(report: dict[str, Any]) -> str:
    """How many passes of the plan its records ran (``--repeat``; merged runs may differ), for the footer."""
    counts = sorted({len(r["pass_p50_ms"]) for r in report["records"] if r.get("pass_p50_ms")})
    if not counts:
        return ""
    return (f"; the whole plan run {' or '.join(map(str, counts))} times, every runtime loaded again each time: "
            f"latencies are the median of the passes' p50, ratios the median of the per-pass ratios (their range "
            f"in brackets)")


def markdown(runtimes: dict[str, Any] | None = None, timm: dict[str, Any] | None = None,
             sizes: dict[str, Any] | None = None, curve_png: str | None = None,
             digits: dict[str, Any] | list[dict[str, Any]] | None = None) -> str:
    """The speed section from the reports: per-runtime, ``--compare-timm``, ``--sizes`` and the
    digits-trained fastest-faithful-path reports (``scripts/fastest_path.py``; one or a list, e.g. at
    the rows' own sizes and at 128 px)."""
    parts: list[str] = []
    digits = [digits] if isinstance(digits, dict) else list(digits or [])
    fastest_parts = [(f"Fastest faithful path ({_sizes(d)}digits-trained models, every held-out digit)", d,
                      _runtime_table) for d in digits]
    for title, report, render in (("Latency by runtime", runtimes, _runtime_table),
                                  *fastest_parts,
                                  ("Against timm", timm, _timm_table),
                                  ("Cost curve", sizes, lambda r: _curve_table(r, curve_png))):
        if report is None:
            continue
        body = render(report)
        if body:
            parts += [f"**{title}** ({_footer(report)})", "", *body, ""]
    return "\n".join(parts).rstrip() or "No benchmark records yet: run `make bench`."
