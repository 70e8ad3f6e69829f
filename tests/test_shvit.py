"""SHViT: timm and official (ysj9909/SHViT) checkpoints, any resolution, deploy form, export.

Weights are random everywhere (every parameter and BN statistic); BN scales are then damped
(x0.7) because an undamped random 20-block network amplifies fp32 rounding by ~1e8 through
its softmaxes, which would hide nothing but make the 1e-5 gate meaningless. Every stage's
output is compared, so an error in an early block cannot be washed out downstream.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

import edgezoo
from tests.util import randomize_, rel_err

TOL = 1e-5
SHAPES = [(2, 3, 224, 224), (1, 3, 160, 288), (2, 3, 96, 64)]  # batch > 1, non-square, small


def randomize_damped_(model: nn.Module, seed: int = 0) -> nn.Module:
    randomize_(model, seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.mul_(0.7)
    return model


def max_stage_err(model: nn.Module, ref: nn.Module, x: torch.Tensor) -> float:
    """Largest relative error over every stage output and the logits."""
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        ref_final, ref_inter = ref.forward_intermediates(x)
        errs = [rel_err(a, b) for a, b in zip(inter, ref_inter, strict=True)]
        errs.append(rel_err(model.forward_head(final), ref.forward_head(ref_final)))
    return max(errs)


def load_from_file(name: str, state_dict: dict[str, torch.Tensor], tmp_path: Path, **kwargs) -> nn.Module:
    path = tmp_path / "weights.pth"
    torch.save(state_dict, path)
    model = edgezoo.create_model(name, **kwargs)
    edgezoo.load_checkpoint(model, path)  # strict
    return model.eval()


def official_shvit_state_dict(timm_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ``shvit_*`` keys -> the official repository's keys (``blocks1..3``, downsample first)."""
    out = {}
    for key, value in timm_sd.items():
        m = re.match(r"^stages\.(\d+)\.(downsample|blocks)\.(\d+)\.(.*)$", key)
        if m:
            s, part, j, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
            if part == "downsample":  # flat (0..4) -> (0.{0,1}, 1, 2.{0,1})
                j_off = {0: "0.0", 1: "0.1", 2: "1", 3: "2.0", 4: "2.1"}[j]
            else:
                j_off = str(j + (3 if s > 0 else 0))
            key = f"blocks{s + 1}.{j_off}.{rest}"
        out[key] = value
    return out


@pytest.mark.parametrize("variant", ["s1", pytest.param("s2", marks=pytest.mark.slow),
                                     pytest.param("s3", marks=pytest.mark.slow),
                                     pytest.param("s4", marks=pytest.mark.slow)])
def test_timm_checkpoint_equal_any_resolution(variant: str, tmp_path: Path) -> None:
    ref = randomize_damped_(timm.create_model(f"shvit_{variant}")).eval()
    model = load_from_file(f"ez_shvit_{variant}", ref.state_dict(), tmp_path)
    fused = edgezoo.fuse(model)
    for shape in SHAPES:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        assert max_stage_err(model, ref, x) <= TOL, shape
        assert max_stage_err(fused, ref, x) <= TOL, f"fused {shape}"


def test_official_layout_with_distillation_head(tmp_path: Path) -> None:
    ref = randomize_damped_(timm.create_model("shvit_s1")).eval()
    dist = randomize_damped_(timm.create_model("shvit_s1"), seed=1).head.eval()  # a second BN+Linear
    sd = official_shvit_state_dict(ref.state_dict())
    sd.update({f"head_dist.{k}": v for k, v in dist.state_dict().items()})
    assert any(k.startswith("blocks2.1.conv1.c.") for k in sd)  # really the official layout
    model = load_from_file("ez_shvit_s1", {"model": sd}, tmp_path)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        feats = ref.forward_head(ref.forward_features(x), pre_logits=True)
        expected = (ref.head(feats) + dist(feats)) / 2  # the official model's inference output
        assert rel_err(model(x), expected) <= TOL
        assert rel_err(edgezoo.fuse(model)(x), expected) <= TOL


def test_shsa_fuse_folds_norm_and_scale() -> None:
    from edgezoo.blocks.single_head import SHSA

    block = randomize_(SHSA(64, 24)).eval()
    fused = edgezoo.fuse(nn.Sequential(block))[0]  # fuse() replaces children, so wrap the block
    assert not fused.pre_norm.affine and isinstance(fused.qkv, nn.Conv1d) and isinstance(fused.proj, nn.Conv2d)
    x = torch.randn(2, 64, 5, 9)
    with torch.no_grad():
        assert rel_err(fused(x), block(x)) <= TOL


def test_export_and_trace_at_a_non_square_size() -> None:
    """torch.export and jit.trace; ONNX at non-square sizes: tests/test_export_onnx.py."""
    model = edgezoo.fuse(randomize_damped_(edgezoo.create_model("ez_shvit_s1")))
    x = torch.randn(1, 3, 160, 224)
    with torch.no_grad():
        ref = model(x)
        exported = torch.export.export(model, (x,))
        assert rel_err(exported.module()(x), ref) <= TOL
        traced = torch.jit.trace(model, x)
        assert rel_err(traced(x), ref) <= TOL


def onnx_ok(model: nn.Module, x: torch.Tensor, ref: torch.Tensor, tmp_path: Path, ort) -> None:
    path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), opset_version=18, dynamo=True, verbose=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert rel_err(torch.from_numpy(out), ref) <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["s1", "s2", "s3", "s4"])
def test_onnx_every_variant(variant: str, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    model = edgezoo.fuse(randomize_damped_(edgezoo.create_model(f"ez_shvit_{variant}")))
    size = model.pretrained_cfg["input_size"][-1]
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        ref = model(x)
    onnx_ok(model, x, ref, tmp_path, ort)
