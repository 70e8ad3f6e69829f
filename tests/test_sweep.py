"""``edgezoo sweep`` (edgezoo.pipelines.sweep): the tables and charts it writes, how it launches trainings, and
(slow) a real sweep of two mixers for one epoch on digits, resumed."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from edgezoo.errors import InvalidArgumentError
from edgezoo.pipelines import sweep as sw
from edgezoo.pipelines.sweep_report import pareto_charts, write_tables

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(mixer: str, top1: float, ort: float) -> dict:
    return {"mixer": mixer, "model": f"ez_mix_{mixer}_s", "params": 2.4e6, "macs_224": 3.0e8, "macs": 6.0e6,
            "img_size": 32, "top1": top1, "top1_ema": None, "latency_ms": {"ort fp32": ort, "torch fp32": 2 * ort},
            "peak_train_mb": 1000.0, "train_seconds": 60.0}


def _record(model: str, runtime: str, p50: float) -> dict:
    return {"model": model, "runtime": runtime, "precision": "fp32", "batch": 1, "status": "ok", "img_size": 224,
            "macs": 3.0e8, "latency_ms": {"p50": p50}}


def test_tables_and_pareto_charts(tmp_path: Path) -> None:
    rows = [_row("none", 90.0, 3.0), _row("mala", 95.0, 4.0)]
    paths = write_tables(rows, tmp_path, {"img_size": 32, "note": "digits is not ImageNet"})
    table = json.loads(paths["json"].read_text())
    assert [r["mixer"] for r in table["rows"]] == ["none", "mala"] and table["img_size"] == 32
    with paths["csv"].open() as fh:
        lines = list(csv.reader(fh))
    assert lines[0][:3] == ["mixer", "params (M)", "GMACs @224"] and "ort fp32 p50 (ms)" in lines[0]
    assert lines[2][0] == "mala" and lines[2][lines[0].index("ort fp32 p50 (ms)")] == "4.000"
    md = paths["md"].read_text()
    assert md.count("\n| ") == 2 and md.startswith("| mixer |") and "digits is not ImageNet" in md
    records = [_record(f"ez_mix_{m}_s", rt, t) for m, t in (("none", 3.0), ("mala", 4.0)) for rt in ("ort", "torch")]
    charts = pareto_charts(records, {"cpu": "test cpu", "threads": 2}, rows, tmp_path)
    assert sorted(p.name for p in charts) == ["pareto-ort-fp32.png", "pareto-torch-fp32.png"]
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in charts)


def test_one_process_on_cpu_torchrun_on_many_gpus(tmp_path: Path) -> None:
    args = {"model": "ez_mix_none_s", "data": "digits", "epochs": 1, "img_size": 32, "batch_size": None, "set": []}
    single = sw._train_command(args, tmp_path, 0)
    assert single[:3] == [sys.executable, "-m", "edgezoo.pipelines.sweep"] and "--epochs" in single
    assert "--batch-size" not in single
    multi = sw._train_command(args, tmp_path, 4)
    assert multi[1:3] == ["-m", "torch.distributed.run"] and "--nproc_per_node=4" in multi
    assert multi[multi.index("edgezoo.pipelines.sweep") - 1] == "-m"


def test_present_runtimes_leave_out_compile_and_absent_ones() -> None:
    from edgezoo.bench import get_runtime

    names = sw.present_runtimes().split(",")
    assert "ort" in names and "compile" not in names
    assert all(get_runtime(n).absent() is None for n in names)


def test_unknown_mixer_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"unknown sweep mixer .flaten.: did you mean flatten"):
        sw.sweep(mixers=["flaten"], output=tmp_path)


@pytest.mark.slow
def test_sweep_two_mixers_one_epoch_on_digits(tmp_path: Path) -> None:
    kwargs = {"size": "s", "mixers": ["none", "mala"], "data": "digits", "output": tmp_path, "epochs": 1,
              "img_size": 32, "batch_size": 64, "runtimes": "ort", "bench_size": 64, "log": lambda m: None}
    result = sw.sweep(**kwargs)
    table = json.loads((tmp_path / "sweep.json").read_text())
    assert [r["mixer"] for r in table["rows"]] == ["none", "mala"]
    for row in table["rows"]:
        assert row["params"] > 1e6 and row["macs_224"] > 2.8e8 and 0 <= row["top1"] <= 100
        assert row["latency_ms"]["ort fp32"] > 0 and row["peak_train_mb"] > 100 and row["onnx"] == "verified"
        assert (tmp_path / row["mixer"] / "best.pth").is_file()
    assert (tmp_path / "sweep.csv").is_file() and "| mala |" in (tmp_path / "sweep.md").read_text()
    assert (tmp_path / "pareto-ort-fp32.png").read_bytes()[:8] == PNG_MAGIC
    assert result["paths"]["charts"] == [str(tmp_path / "pareto-ort-fp32.png")]
    assert set(result["stages"].values()) == {"done"}
    again = sw.sweep(**kwargs)  # resumable: the runner's records stand for every stage, nothing runs again
    assert set(again["stages"].values()) == {"reused"}
