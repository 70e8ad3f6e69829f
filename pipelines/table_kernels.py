"""The GPU-kernel tables of the kernels page, rendered from the JSON ``scripts/bench_kernels.py`` writes
(``python -m edgezoo.pipelines.tables kernels-gpu``).

Ops: GPU time per call from CUDA-graph replay (the kernels' own time) and, beside it, the speed-up an
eager Python caller sees (CPU dispatch included). Models: the whole forward captured in a CUDA graph,
and eager calls interleaved between the two modes.
"""

from __future__ import annotations

from typing import Any

from edgezoo.tables import markdown_table


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def ops_table(report: dict[str, Any]) -> str:
    copy, rows = report["copy_bandwidth_gbs"], []
    for r in report["ops"]:
        if "error" in r:
            rows.append([r["op"], r["shape"], f"error: {r['error'][:80]}", *[""] * 6])
            continue
        gbs = f"{r['triton_gbs']:.0f} ({r['triton_gbs'] / copy:.0%})" if "triton_gbs" in r else "-"
        rows.append([r["op"], r["shape"], _ms(r.get("eager_gpu_ms")), _ms(r.get("compile_gpu_ms")),
                     _ms(r.get("triton_gpu_ms")), _x(r.get("gpu_speedup_vs_eager")),
                     _x(r.get("gpu_speedup_vs_compile")), gbs,
                     f"{_x(r.get('speedup_vs_eager'))} / {_x(r.get('speedup_vs_compile'))}"])
    return markdown_table(rows, ["op", "shape (bf16)", "eager ms", "compile ms", "Triton ms", "vs eager", "vs compile",
                                 "Triton GB/s (of copy)", "eager call: vs eager / vs compile"])


def models_table(report: dict[str, Any]) -> str:
    rows = []
    for r in report["models"]:
        if "error" in r:
            rows.append([f"`{r['model']}`", r["batch"], f"error: {r['error'][:80]}", "", "", ""])
            continue
        rows.append([f"`{r['model']}`", r["batch"], _ms(r.get("reference_gpu_ms")), _ms(r.get("triton_gpu_ms")),
                     _x(r.get("gpu_speedup")), _x(r.get("speedup"))])
    for r in report["training"]:
        if "error" not in r:
            runs = ", ".join(f"{a:.1f}/{b:.1f}" for a, b in zip(r["reference_ms_runs"], r["triton_ms_runs"],
                                                                    strict=True))
            rows.append([f"`{r['model']}` training step (SGD; interleaved runs, reference/Triton ms: {runs})",
                         r["batch"], f"{r['reference_ms']:.1f} (eager)", f"{r['triton_ms']:.1f} (eager)", "-",
                         _x(r["speedup"])])
    return markdown_table(rows, ["model (bf16 autocast, 224 px)", "batch", "reference GPU ms", "Triton GPU ms",
                                 "GPU speed-up", "eager speed-up"])


def render(report: dict[str, Any], source: str) -> str:
    t = report["timing"]
    head = (f"**Fused ops on {report['device']}** (`{source}`; torch {report['torch']}, Triton {report['triton']}, "
            f"CUDA {report['cuda']}; measured device-to-device copy {report['copy_bandwidth_gbs']:.0f} GB/s, "
            f"datasheet {report['datasheet_bandwidth_gbs']:.0f}; {t['warmup']} warm-up calls, then the median of "
            f"{t['rounds']} rounds of {t['repeats']} calls timed with CUDA events; inputs rotate through fresh "
            f"sets larger than L2; {report['date']}.) GPU columns: calls captured in a CUDA graph and replayed "
            "(the kernels' own time); \"eager call\": the same calls from Python, CPU dispatch included.")
    return "\n".join([head, "", ops_table(report), "", models_table(report)])
