"""load_checkpoint / save_atomic: formats, nesting, prefixes and the errors users see."""

from __future__ import annotations

import pytest
import timm
import torch

import edgezoo
from edgezoo import CheckpointError
from tests.util import randomize_, rel_err

NAME = "ez_resnet18_eca"


@pytest.fixture(scope="module")
def source() -> torch.nn.Module:
    return randomize_(timm.create_model(NAME, num_classes=10)).eval()


def _check_same(model: torch.nn.Module, source: torch.nn.Module) -> None:
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), source(x))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_round_trip(tmp_path, source, suffix: str) -> None:
    path = tmp_path / f"w{suffix}"
    edgezoo.save_atomic(source.state_dict(), path)
    model = timm.create_model(NAME, num_classes=10)
    assert edgezoo.load_checkpoint(model, path) == {"missing": [], "unexpected": [], "skipped": []}
    _check_same(model, source)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


@pytest.mark.parametrize("wrap", ["state_dict", "model", "model_ema"])
def test_nested_and_prefixed(tmp_path, source, wrap: str) -> None:
    sd = {f"module.{k}": v for k, v in source.state_dict().items()}
    zeros = {k: torch.zeros_like(v) for k, v in sd.items()}
    payload = {"epoch": 3, wrap: sd} if wrap != "model_ema" else {"model": zeros, "model_ema": sd}
    torch.save(payload, tmp_path / "ckpt.pth")
    model = timm.create_model(NAME, num_classes=10)
    edgezoo.load_checkpoint(model, tmp_path / "ckpt.pth", use_ema=wrap == "model_ema")
    _check_same(model, source)


def test_timm_pretrained_overlay(tmp_path, source) -> None:
    path = tmp_path / "w.safetensors"
    edgezoo.save_atomic(source.state_dict(), path)
    # timm drops the classifier when num_classes differs from the cfg's, so the overlay says 10
    overlay = {"file": str(path), "num_classes": 10}
    model = timm.create_model(NAME, pretrained=True, num_classes=10, pretrained_cfg_overlay=overlay)
    _check_same(model, source)


def test_truncated_file_is_a_clear_error(tmp_path, source) -> None:
    for suffix in (".pth", ".safetensors"):
        path = tmp_path / f"w{suffix}"
        edgezoo.save_atomic(source.state_dict(), path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError, match="truncated, corrupt"):
            edgezoo.load_checkpoint(timm.create_model(NAME, num_classes=10), path)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        edgezoo.load_checkpoint(timm.create_model(NAME), tmp_path / "nope.pth")


def test_mismatch_lists_missing_unexpected_and_shapes(tmp_path, source) -> None:
    sd = dict(source.state_dict())
    del sd["layer1.0.conv1.weight"]
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "bad.pth")
    model = timm.create_model(NAME, num_classes=1000)
    with pytest.raises(CheckpointError) as err:
        edgezoo.load_checkpoint(model, tmp_path / "bad.pth")
    msg = str(err.value)
    assert "\n" not in msg
    assert "1 missing [layer1.0.conv1.weight]" in msg
    assert "1 unexpected [extra.weight]" in msg
    assert "fc.weight (10, 512) vs model (1000, 512)" in msg and "strict=False" in msg
    # non-strict: matching keys load, the 10-class head is skipped, the rest reported
    result = edgezoo.load_checkpoint(model, tmp_path / "bad.pth", strict=False)
    assert result["missing"] == ["layer1.0.conv1.weight", "fc.weight", "fc.bias"]
    assert result["unexpected"] == ["extra.weight"]
    assert result["skipped"] == ["fc.weight", "fc.bias"]
    torch.testing.assert_close(model.layer2[0].conv1.weight, source.layer2[0].conv1.weight)


def test_not_a_state_dict(tmp_path) -> None:
    torch.save({"epoch": 1, "optimizer": {"lr": 0.1}}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="no weights found"):
        edgezoo.load_checkpoint(timm.create_model(NAME), tmp_path / "x.pth")


def test_pickled_code_is_refused(tmp_path) -> None:
    """weights_only=True: a checkpoint carrying arbitrary objects is not unpickled."""
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": rel_err}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="cannot read"):
        edgezoo.read_state_dict(tmp_path / "evil.pth")
