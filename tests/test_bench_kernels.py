"""The GPU kernel benchmark's tooling, on CPU: ``scripts/bench_kernels.py --smoke`` runs end to end and
writes a report :mod:`edgezoo.pipelines.table_kernels` turns into the kernels page's tables (figures computed,
not copied)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_kernels_smoke_writes_a_report_the_table_renders(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_kernels.py"), "--smoke", "--skip-models",
                          "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads((tmp_path / "kernels-smoke-cpu.json").read_text())
    ops = {r["op"] for r in report["ops"]}
    assert ops >= {"linear_attention", "focal_aggregate", "channel_attention[se]", "channel_attention[eca]",
                   "channel_attention[cbam]", "cga_attention", "linear_attention fwd+bwd"}
    for row in report["ops"]:
        assert "error" not in row, row
        assert row["rel_err_vs_reference" if "fwd" not in row["op"] else "grad_rel_err_vs_reference"] < 1e-2
        assert row["speedup_vs_eager"] == row["eager_ms"] / row["triton_ms"]
    from edgezoo.pipelines.table_kernels import render
    from edgezoo.pipelines.tables import splice

    page = "# x\n<!-- table:kernels-gpu:start -->\nold\n<!-- table:kernels-gpu:end -->\ntail\n"
    out = splice(page, render(report, "kernels-smoke-cpu.json"), "kernels-gpu")
    assert "\nold\n" not in out and out.endswith("<!-- table:kernels-gpu:end -->\ntail\n")
    cga = next(r for r in report["ops"] if r["op"] == "cga_attention")
    assert f"| cga_attention | {cga['shape']} | {cga['eager_gpu_ms']:.3f} |" in out
    assert f"{cga['gpu_speedup_vs_eager']:.2f}x" in out
