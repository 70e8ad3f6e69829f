"""The ``litert`` and ``litert-builtin`` runtimes of ``edgezoo bench``: listed, and (slow) timing a model
under the common protocol, interleaved, on the files the LiteRT exporter gated."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm

from edgezoo.bench import Protocol, bench, get_runtime, parse_runtimes
from edgezoo.cli import main
from tests.util import calibrate_bn_

pytest.importorskip("ai_edge_litert")


def test_listed_with_its_precisions(capsys) -> None:
    for name, xnnpack in (("litert", True), ("litert-builtin", False)):
        rt = get_runtime(name)
        assert rt.absent() is None and rt.precisions == ("fp32", "int8", "fp16") and rt.xnnpack is xnnpack
    assert main(["bench", "--list-runtimes"]) == 0
    out = capsys.readouterr().out
    assert "litert " in out and "litert-builtin" in out


@pytest.mark.slow
def test_times_a_model_with_and_without_xnnpack(tmp_path: Path) -> None:
    model = calibrate_bn_(timm.create_model("ez_efficientvit_m0", num_classes=10), 64)  # never a fresh init
    report = bench([model], parse_runtimes("litert:fp32,litert-builtin:fp32"), img_sizes=[64], threads=1,
                   protocol=Protocol(warmup=2, runs=5, max_seconds=10), agree=16, interleave_runtimes=True,
                   work_dir=tmp_path, progress=False)
    records = {r["runtime"]: r for r in report["records"]}
    assert set(records) == {"litert", "litert-builtin"}
    for rec in records.values():
        assert rec["status"] == "ok", rec
        assert rec["runs"] >= 5 and rec["latency_ms"]["p50"] > 0 and rec["interleaved_with"] == 1
        assert rec["agreement"]["top1_agreement"] == 1.0  # the same file, both kernel sets, PyTorch's classes
        assert rec["fingerprint"] == report["fingerprint"]["id"]
    assert len(list(tmp_path.rglob("*.tflite"))) == 1  # one file, exported once, run by both
