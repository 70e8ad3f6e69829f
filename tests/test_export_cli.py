"""``edgezoo export``: the bad-input table (one line, exit 2, nothing written), gates, checkpoints, the matrix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

import edgezoo
from edgezoo.cli import main
from edgezoo.export import export
from edgezoo.export.onnx import OnnxFormat
from tests.util import calibrate_bn_


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["export", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("edgezoo: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(("argv", "expected"), [
    (["ez_shvit_s1", "--format", "onxx"], "did you mean onnx"),
    (["ez_shvit_s11", "--format", "onnx"], "did you mean"),
    (["ez_shvit_s1", "--format", "onnx", "--option", "target=iOS17"], "no requested format takes option 'target'"),
    (["ez_shvit_s1", "--format", "onnx", "--opset", "5"], "opset=5"),
    (["ez_shvit_s1", "--format", "onnx", "--half", "--int8"], "choose one of --half and --int8"),
    (["ez_shvit_s1", "--format", "onnx", "--batch", "2", "--dynamic"], "choose one of --batch"),
    (["ez_shvit_s1", "--format", "tensorrt"], 'pip install "edgezoo[tensorrt]"'),
    (["missing.pth", "--format", "onnx"], "checkpoint not found"),
    (["ez_shvit_s1", "--format", "onnx", "--int8", "--calib", "/no/such/folder"], "neither 'digits' nor a folder"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, expected, capsys, tmp_path) -> None:
    out_dir = tmp_path / "out"
    code, _, err = _run(capsys, *argv, "--out", str(out_dir))
    assert code == 2
    assert expected in _one_line_error(err)
    assert not out_dir.exists() or not any(out_dir.rglob("*"))


def test_missing_package_names_the_extra(monkeypatch, capsys, tmp_path) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxslim" else real(name, *a))
    code, _, err = _run(capsys, "ez_shvit_s1", "--format", "onnx", "--out", str(tmp_path))
    assert code == 2 and 'pip install "edgezoo[export]"' in _one_line_error(err)


def test_checkpoint_that_does_not_fit_lists_the_keys(capsys, tmp_path) -> None:
    ckpt = tmp_path / "other.pth"
    torch.save({"arch": "ez_efficientvit_m0", "model": timm.create_model("ez_shvit_s1").state_dict()}, ckpt)
    code, _, err = _run(capsys, str(ckpt), "--out", str(tmp_path / "out"))
    line = _one_line_error(err)
    assert code == 2 and "does not match ez_efficientvit_m0" in line and "missing" in line and "unexpected" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_foreign_checkpoint_needs_the_model_name(capsys, tmp_path) -> None:
    ckpt = tmp_path / "weights.safetensors"
    edgezoo.save_atomic(timm.create_model("ez_efficientvit_m0", num_classes=7).state_dict(), ckpt)
    code, _, err = _run(capsys, str(ckpt), "--out", str(tmp_path / "out"))
    assert code == 2 and "--model NAME" in _one_line_error(err)
    code, out, _ = _run(capsys, str(ckpt), "--model", "ez_efficientvit_m0", "--img-size", "64",
                        "--out", str(tmp_path / "out"))
    assert code == 0 and "verified" in out
    meta = json.loads((tmp_path / "out" / "ez_efficientvit_m0.onnx.json").read_text())
    assert meta["num_classes"] == 7 and meta["source"] == str(ckpt)


def test_a_failed_gate_exits_1_prints_figures_and_leaves_nothing(monkeypatch, capsys, tmp_path) -> None:
    real_run = OnnxFormat.run
    monkeypatch.setattr(OnnxFormat, "run", lambda self, p, x, job: real_run(self, p, x, job) * 1.01)
    code, out, _ = _run(capsys, "ez_efficientvit_m0", "--img-size", "64", "--out", str(tmp_path))
    assert code == 1
    assert "failed" in out and "relative max error" in out
    assert not list(tmp_path.iterdir()), "a failed export must leave nothing at the destination"


def test_trained_checkpoint_exports_with_its_classes_and_size(digits_checkpoint, tmp_path) -> None:
    """A checkpoint written by ``edgezoo train`` carries the model, classes and input size."""
    trained = digits_checkpoint("cnn")
    res = export(trained["checkpoint"], "onnx", tmp_path / "out", use_ema=True)
    size = trained["img_size"]
    assert res.status == "verified" and res.model == trained["model"]
    assert res.metadata["classes"] == [str(i) for i in range(10)]
    assert res.metadata["input_size"] == [3, size, size] and "(EMA)" in res.metadata["source"]
    assert res.metadata["crop_pct"] == 1.0  # the digits recipe's eval transform, from the checkpoint's config


def test_multiple_formats_and_json(capsys, tmp_path) -> None:
    code, _, _ = _run(capsys, "ez_efficientvit_m0", "--img-size", "64", "--format", "onnx,tensorrt",
                        "--out", str(tmp_path))
    assert code == 2  # TensorRT is missing here: checked before anything is converted
    assert not list(tmp_path.iterdir())
    path = tmp_path / "r.json"
    code, _, _ = _run(capsys, "ez_shvit_s1", "--img-size", "64", "--half", "--json", str(path),
                        "--out", str(tmp_path))
    rows = json.loads(path.read_text())
    assert code == 0 and rows[0]["precision"] == "fp16" and rows[0]["status"] == "verified"
    assert Path(rows[0]["path"]).name == "ez_shvit_s1_fp16.onnx"


def test_list_formats(capsys) -> None:
    assert main(["export", "--list-formats"]) == 0
    out = capsys.readouterr().out
    assert "onnx" in out and "tensorrt" in out and "--option opset" in out


def test_matrix_table_json_resume_and_docs_table(tmp_path, capsys) -> None:
    from edgezoo.pipelines.matrix import markdown_table

    argv = ("--all", "--models", "ez_shvit_s1", "--precisions", "fp32,fp16", "--img-size", "64", "--out",
            str(tmp_path), "--jobs", "0", "-q")
    code, out, _ = _run(capsys, *argv)
    assert code == 0
    matrix = json.loads((tmp_path / "export-matrix.json").read_text())
    cells = {(r["model"], r["format"], r["precision"]): r["status"] for r in matrix["results"]}
    assert cells == {("ez_shvit_s1", "onnx", "fp32"): "verified", ("ez_shvit_s1", "onnx", "fp16"): "verified"}
    assert "onnx fp32" in out and "verified" in out and matrix["fingerprint"]["id"]
    made = {p: p.stat().st_mtime_ns for p in (tmp_path / "ez_shvit_s1").iterdir()}
    code, out, _ = _run(capsys, *argv)  # run again: every cell is recorded, nothing is exported again
    assert code == 0 and json.loads((tmp_path / "export-matrix.json").read_text())["results"] == matrix["results"]
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "ez_shvit_s1").iterdir()} == made
    shutil.rmtree(tmp_path / ".plan")  # a fresh clone: the published JSON, no plan records
    code, out, _ = _run(capsys, *argv)
    assert code == 0 and "2 cells taken from" in out
    assert json.loads((tmp_path / "export-matrix.json").read_text())["results"] == matrix["results"]
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "ez_shvit_s1").iterdir()} == made
    text = markdown_table(matrix)
    assert "| `ez_shvit_s1` | verified" in text and matrix["fingerprint"]["id"] in text
    assert "Filled so far: 2 of 2 cells, 1 of 1 models complete" in text  # how far a piecewise matrix has got
    failed = {**matrix, "results": [*matrix["results"], {**matrix["results"][0], "format": "litert", "status":
                                                          "failed", "error": "aten.foo is not supported\nmore"}]}
    assert "- `ez_shvit_s1` litert fp32: aten.foo is not supported" in markdown_table(failed)  # why, listed


@torch.no_grad()
def test_exported_file_matches_the_module_it_came_from(tmp_path) -> None:
    """An nn.Module in, its own weights out: the ONNX file reproduces it (not a fresh model)."""
    from edgezoo.export.onnx import ort_session

    model = calibrate_bn_(timm.create_model("ez_shvit_s1", num_classes=5), 64)
    res = export(model, "onnx", tmp_path, img_size=64, classes=list("abcde"))
    x = torch.randn(1, 3, 64, 64)
    out = ort_session(res.path).run(None, {"input": x.numpy()})[0]
    ref = edgezoo.fuse(model)(x).numpy()
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()
    assert res.metadata["classes"] == list("abcde") and res.metadata["num_classes"] == 5
