"""FocalNet (focal modulation): timm/official checkpoints, paper options, sizes, export, speed."""

from __future__ import annotations

import re
import warnings

import pytest
import timm
import torch
from timm.layers import LayerScale2d
from timm.models.focalnet import FocalNet as TimmFocalNet

import edgezoo
from edgezoo.blocks.focal import FocalModulation, FocalNetBlock
from edgezoo.errors import CheckpointError, ConfigError
from edgezoo.focalnet import FocalNet, checkpoint_filter_fn
from edgezoo.profile import count_macs, count_params
from tests.util import randomize_, rel_err

PAPER = ["tiny_srf", "tiny_lrf", "small_srf", "small_lrf", "base_srf", "base_lrf"]
EDGE = ["edge_xs", "edge_s", "edge_m"]

#: models.md: params (M) and MACs (G) published for the paper variants.
PUBLISHED = {
    "tiny_srf": (28.4, 4.4), "tiny_lrf": (28.6, 4.5), "small_srf": (49.9, 8.6), "small_lrf": (50.3, 8.7),
    "base_srf": (88.1, 15.3), "base_lrf": (88.7, 15.4),
}

#: Every option of the paper at once, tiny widths: timm's and edgezoo's FocalNet take the same kwargs.
OPTIONS = {
    "embed_dim": 16, "depths": (1, 2, 1, 1), "focal_levels": (2, 3, 1, 2), "focal_windows": (3, 5, 3, 1),
    "use_overlap_down": True, "use_post_norm": True, "use_post_norm_in_modulation": True,
    "normalize_modulator": True, "layerscale_value": 0.5, "num_classes": 10,
}


def _slow_unless(variants: list[str], fast: set[str]) -> list:
    return [v if v in fast else pytest.param(v, marks=pytest.mark.slow) for v in variants]


def to_official(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's FocalNet state dict rewritten in microsoft/FocalNet's layout (its key names and shapes)."""
    out = {}
    for key, value in state_dict.items():
        key = key.replace("stem.", "patch_embed.", 1) if key.startswith("stem.") else key
        key = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) - 1}.downsample.", key)
        key = re.sub(r"\.ls([12])\.gamma$", r".gamma_\1", key)
        key = re.sub(r"\.norm([12])_post\.", r".norm\1.", key)  # official reuses norm1/norm2 as post-norms
        key = key.replace(".modulation.norm.", ".modulation.ln.")
        key = re.sub(r"^head\.fc\.", "head.", key)
        if re.search(r"\.(modulation\.(f|proj)|mlp\.fc[12])\.weight$", key):
            value = value.flatten(1)  # official uses nn.Linear where timm uses 1x1 convs
        out[key] = value
    return out


def _load(model: torch.nn.Module, state_dict: dict, tmp_path, name: str = "ckpt.pth") -> None:
    path = tmp_path / name
    torch.save(state_dict, path)
    edgezoo.load_checkpoint(model, path)


def _check_against_timm(ref: torch.nn.Module, ez: torch.nn.Module, size: int, tol: float = 1e-5) -> None:
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref_out, ref_feats = ref.forward_intermediates(x)
        ez_out, ez_feats = ez.forward_intermediates(x)
        assert rel_err(ez.forward_head(ez_out), ref.forward_head(ref_out)) <= tol
    assert len(ez_feats) == len(ref_feats) == 4
    for a, b in zip(ez_feats, ref_feats, strict=True):
        assert rel_err(a, b) <= tol


# ---------------------------------------------------------------------------------------------
# Checkpoints: timm's and the official layout give timm's outputs
# ---------------------------------------------------------------------------------------------


def _uninitialised(name: str, **kwargs) -> torch.nn.Module:
    """``timm.create_model`` without paying for weight init: every value is set afterwards."""
    with torch.device("meta"):
        model = timm.create_model(name, **kwargs)
    return model.to_empty(device="cpu").eval()


@pytest.mark.parametrize("variant", _slow_unless(PAPER, {"tiny_srf", "tiny_lrf"}))
def test_timm_and_official_checkpoints_match_timm(variant: str, tmp_path) -> None:
    ref = randomize_(_uninitialised(f"focalnet_{variant}"))
    ez = _uninitialised(f"ez_focalnet_{variant}")
    _load(ez, ref.state_dict(), tmp_path)  # strict: every key of ez is overwritten
    _check_against_timm(ref, ez, 64)
    _load(ez, {"model": to_official(ref.state_dict())}, tmp_path, "official.pth")
    _check_against_timm(ref, ez, 64)


def test_all_paper_options_match_timm_in_both_layouts_and_fuse(tmp_path) -> None:
    """Post-norm, post-norm in modulation, normalised modulator, layer scale, overlapping
    embeddings and per-stage levels/windows: same outputs as timm, from both layouts."""
    ref = randomize_(TimmFocalNet(**OPTIONS)).eval()
    for layout in (ref.state_dict(), {"model": to_official(ref.state_dict())}):
        ez = FocalNet(**OPTIONS).eval()
        ez.load_state_dict(checkpoint_filter_fn(layout.get("model", layout), ez))
        _check_against_timm(ref, ez, 64)

    fused = edgezoo.fuse(ez)
    assert not any(isinstance(m, LayerScale2d) for m in fused.modules())
    assert not any(m.normalize_modulator for m in fused.modules() if isinstance(m, FocalModulation))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert rel_err(fused(x), ez(x)) <= 1e-5


def test_layer_scale_folds_into_pre_norm_projections() -> None:
    block = randomize_(FocalNetBlock(16, focal_level=2, layerscale_value=0.3, normalize_modulator=True)).eval()
    x = torch.randn(2, 16, 7, 7)
    with torch.no_grad():
        expected = block(x)
        fused = edgezoo.fuse(torch.nn.Sequential(block))[0]
        got = fused(x)
    assert isinstance(fused.ls1, torch.nn.Identity) and isinstance(fused.ls2, torch.nn.Identity)
    assert rel_err(got, expected) <= 1e-5


def test_wrong_checkpoint_names_the_problem(tmp_path) -> None:
    small = {"embed_dim": 8, "depths": (1, 1, 1, 1)}
    ref = TimmFocalNet(focal_levels=(3, 3, 3, 3), **small)  # lrf weights into an srf model
    ez = timm.create_model("ez_focalnet_tiny_srf", **small)
    path = tmp_path / "lrf.pth"
    torch.save(ref.state_dict(), path)
    with pytest.raises(CheckpointError, match="wrongly shaped"):
        edgezoo.load_checkpoint(ez, path)


def test_bad_arguments_name_the_fix() -> None:
    with pytest.raises(ConfigError, match="one embed_dim, focal_level and focal_window per stage"):
        FocalNet(depths=(2, 2, 6, 2), focal_levels=(2, 2))
    with pytest.raises(ValueError, match="odd kernel size"):
        FocalModulation(16, focal_window=4)
    with pytest.raises(ValueError, match="focal_level must be >= 1"):
        FocalModulation(16, focal_level=0)


# ---------------------------------------------------------------------------------------------
# Sizes and docs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", PAPER)
def test_params_and_macs_match_published(variant: str) -> None:
    with torch.device("meta"):
        model = timm.create_model(f"ez_focalnet_{variant}")
    params, macs = count_params(model) / 1e6, count_macs(model, (3, 224, 224)) / 1e9
    want_params, want_macs = PUBLISHED[variant]
    assert abs(params - want_params) / want_params <= 0.01, params
    assert abs(macs - want_macs) / want_macs <= 0.03, macs


@pytest.mark.parametrize(("variant", "target"), [("edge_xs", 1.0), ("edge_s", 3.0), ("edge_m", 6.0)])
def test_edge_variants_are_edge_sized_and_say_they_are_new(variant: str, target: float) -> None:
    name = f"ez_focalnet_{variant}"
    with torch.device("meta"):
        model = timm.create_model(name)
    assert abs(count_params(model) / 1e6 - target) / target <= 0.15
    doc = timm.models.model_entrypoint(name).__doc__
    assert "NEW" in doc.split("\n\n")[0] and "no published accuracy" in doc
    assert "no published accuracy" in model.pretrained_cfg["notes"]


def test_pretrained_cfg_is_complete() -> None:
    for name in edgezoo.list_models("focalnet"):
        cfg = timm.models.get_pretrained_cfg(name).to_dict()
        for key in ("num_classes", "input_size", "pool_size", "crop_pct", "interpolation", "mean", "std",
                    "first_conv", "classifier", "license", "paper_name"):
            assert cfg.get(key) not in (None, ""), (name, key)
        assert edgezoo.get_spec(name).family == "focal_modulation"


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", _slow_unless(PAPER + EDGE, {"edge_xs"}))
def test_torch_export_and_onnx_match_pytorch(variant: str, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    model = edgezoo.fuse(randomize_(timm.create_model(f"ez_focalnet_{variant}")))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = model(x)
        exported = torch.export.export(model, (x,))
        assert rel_err(exported.module()(x), expected) <= 1e-5
    path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(exported, (x,), path, opset_version=18, dynamo=True, verbose=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert rel_err(torch.from_numpy(got), expected) <= 1e-4
