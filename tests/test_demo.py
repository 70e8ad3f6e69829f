"""``edgezoo demo``: the pipeline end to end on digits, its report and charts, --resume, bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgezoo.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def _valid_png(path: Path) -> None:
    from PIL import Image

    assert path.read_bytes()[:8] == PNG, path
    with Image.open(path) as img:
        img.verify()
        assert img.size[0] > 200 and img.size[1] > 200


def _table_row(report: str, model: str) -> dict[str, str]:
    lines = [line for line in report.splitlines() if line.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    row = next(line for line in lines[2:] if f"`{model}`" in line)
    return dict(zip(head, [c.strip() for c in row.strip("|").split("|")], strict=True))


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory) -> tuple[Path, dict, float]:
    """One family, one epoch on 40% of digits, no exports, torch timed: the cheapest whole run (in this process)."""
    from edgezoo.pipelines.demo import run_demo

    out = tmp_path_factory.mktemp("demo")
    kwargs = dict(families=["focal_modulation"], epochs=1, formats=[], jobs=0, progress=False,
                  sets=["data.val_fraction=0.6"], protocol={"warmup": 2, "runs": 20, "max_seconds": 0.5})
    done = run_demo(out, **kwargs)
    return out, {"done": done, "kwargs": kwargs}, _best(out).stat().st_mtime_ns


def _best(out: Path) -> Path:
    """The demo's checkpoint: ``runs/<model>-<px>px-<epochs>ep-<digest of the recipe overrides>/best.pth``."""
    (run_dir,) = (out / "runs").glob("ez_focalnet_edge_xs-32px-1ep-*")
    return run_dir / "best.pth"


def test_report_holds_the_measured_values(tiny_demo) -> None:
    from edgezoo.train import validate_checkpoint

    out, run, _ = tiny_demo
    assert not run["done"]["failed"]
    report = (out / "report.md").read_text()
    row = _table_row(report, "ez_focalnet_edge_xs")
    saved = json.loads((out / "report.json").read_text())["results"][0]
    ckpt = _best(out)
    again = validate_checkpoint("ez_focalnet_edge_xs", ckpt, "digits", use_ema=saved["use_ema"],
                                output=out / "check")
    assert row["val top-1"] == f"{again['top1']:.2f}%"
    assert again["top1"] > 50  # ten classes: chance is 10%
    assert row["family"] == "focal modulation" and row["params"].endswith("K")
    timed = next(r for r in saved["bench"]["records"] if r["runtime"] == "torch")
    assert timed["status"] == "ok" and row["`torch fp32` ms"] == f"{timed['latency_ms']['p50']:.2f}"
    assert len(saved["train"]["history"]) == 1
    for name in ("accuracy_latency", "training_curves", "latency_runtimes"):
        _valid_png(out / f"{name}.png")
        assert f"({name}.png)" in report
    _valid_png(out / "models" / "ez_focalnet_edge_xs" / "confusion.png")


def test_resume_reuses_every_finished_stage(tiny_demo) -> None:
    """Run again with ``--resume``: the runner's records stand for training and benchmark (same settings, same
    inputs), so nothing runs again and the checkpoint is untouched; a changed setting redoes its stage."""
    from edgezoo.pipelines.demo import run_demo

    out, run, mtime = tiny_demo
    log = out / "models" / "ez_focalnet_edge_xs" / "train.log"
    before = log.read_text()
    done = run_demo(out, resume=True, **run["kwargs"])
    assert not done["failed"]
    assert _best(out).stat().st_mtime_ns == mtime and log.read_text() == before
    saved = json.loads((out / "report.json").read_text())["results"][0]
    assert saved["train"]["reused"] is True and len(saved["train"]["history"]) == 1
    state = {p.stem: json.loads(p.read_text())["finished"] for p in (out / ".plan").glob("*.json")}
    run_demo(out, resume=True, **{**run["kwargs"], "protocol": {"warmup": 2, "runs": 10, "max_seconds": 0.5}})
    after = {p.stem: json.loads(p.read_text())["finished"] for p in (out / ".plan").glob("*.json")}
    changed = {k for k in after if after[k] != state.get(k)}
    assert changed == {"ez_focalnet_edge_xs__bench"}, changed  # only the stage whose settings changed


@pytest.mark.parametrize("args, words", [
    (["--families", "focal_modulaton"], "unknown demo family name 'focal_modulaton': did you mean focal_modulation"),
    (["--formats", "onnx,tflite"], "unknown demo format 'tflite'"),
    (["--epochs", "0"], "--epochs: expected a whole number >= 1, got 0"),
])
def test_bad_input_is_one_line(args, words, capsys, tmp_path) -> None:
    assert main(["demo", "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgezoo: error: ") and words in err[0], err
    assert not (tmp_path / "o").exists()


def test_out_that_is_a_file_is_one_line(capsys, tmp_path) -> None:
    target = tmp_path / "report.md"
    target.write_text("x")
    assert main(["demo", "--out", str(target), "--quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file: give a folder" in err[0]


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path) -> None:
    """`edgezoo demo --quick` as a user runs it: worker processes, the quick formats through their gates.
    Stopped (SIGTERM) once its training is recorded, the same command with ``--resume`` does not train again
    and finishes the rest; run a third time it runs nothing again."""
    cmd = [sys.executable, "-m", "edgezoo.cli", "demo", "--quick", "--out", str(tmp_path), "-q"]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 1800
    trained = None
    while trained is None and first.poll() is None and time.monotonic() < deadline:
        time.sleep(1)
        trained = next((p for p in (tmp_path / ".plan").glob("*train*.json")
                        if json.loads(p.read_text() or "{}").get("status") == "done"), None)
    assert trained is not None, "the demo did not record its training"
    first.terminate()  # mid-plan: the exports and the benchmark are unfinished or not started
    first.communicate(timeout=120)
    stamp = trained.read_text()
    proc = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert trained.read_text() == stamp  # not trained again
    assert re.search(r"report .*report\.md", proc.stdout)
    saved = json.loads((tmp_path / "report.json").read_text())["results"]
    assert len(saved) == 1 and saved[0]["val"]["top1"] > 80  # two epochs: about 90%
    assert saved[0]["train"]["reused"] is True
    for key, res in saved[0]["exports"].items():
        assert res["status"] in ("verified", "converted"), (key, res.get("error"))
    assert saved[0]["exports"]["onnx-int8"]["parity"]["top1_agreement"] >= 0.95
    runtimes = {r["runtime"] for r in saved[0]["bench"]["records"] if r["status"] == "ok"}
    assert {"torch", "ort", "ort-int8"} <= runtimes
    # finished, the same command with --resume runs nothing again: every stage's record stands
    records = {p.name: p.read_text() for p in (tmp_path / ".plan").glob("*.json")}
    assert len(records) == 1 + 2 + 1  # train, the ONNX-graph formats together, CoreML, bench
    again = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=1800)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p.name: p.read_text() for p in (tmp_path / ".plan").glob("*.json")} == records
