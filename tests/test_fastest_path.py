"""The fastest-path benchmark is a stage of the one runner: it times the checkpoints it is given on a runtime,
with top-1 agreement on every held-out digit, writes the report, and times again on every run (the trainings
it follows are reused from their records; a measurement is not)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import edgezoo
from edgezoo.pipelines import fastest_path
from edgezoo.weights import calibrate_bn_


def test_bench_stage_runs_through_the_runner_and_times_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    model = calibrate_bn_(edgezoo.create_model("ez_mobilenetv2_eca", num_classes=10), size=32)
    ckpt = tmp_path / "m.pth"
    torch.save({"arch": "ez_mobilenetv2_eca", "num_classes": 10, "img_size": 32, "model": model.state_dict()}, ckpt)
    report = tmp_path / "report.json"
    argv = ["fastest_path", "--checkpoints", str(ckpt), "--runtime", "torch", "--runs", "5", "--threads", "1",
            "--json", str(report), "--work", str(tmp_path / "work")]
    monkeypatch.setattr(sys, "argv", argv)
    assert fastest_path.main() == 0
    first = json.loads(report.read_text())
    (rec,) = [r for r in first["records"] if r.get("status") == "ok"]
    assert rec["model"] == "ez_mobilenetv2_eca" and rec["runtime"] == "torch" and rec["img_size"] == 32
    assert rec["agreement"]["images"] == 360 and rec["agreement"]["top1_agreement"] == 1.0  # torch against itself
    assert "JSON: " + str(report) in capsys.readouterr().out
    assert (tmp_path / "work" / ".plan-int8" / "bench-digits.json").is_file()  # recorded by the runner
    assert fastest_path.main() == 0  # run again: measured again, not the recorded result
    assert json.loads(report.read_text())["started"] > first["started"]
