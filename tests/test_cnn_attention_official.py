"""Every foreign layout the CNN-attention models load: randomised source network -> file -> same outputs.

The sources are the papers' official networks re-written in ``tests/official_refs.py`` and timm's
own models; every parameter and BatchNorm statistic is randomised first, so a wrong mapping,
a wrong kernel size or a wrong stride cannot go unnoticed.
"""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import edgezoo
from edgezoo import CheckpointError
from edgezoo.errors import InvalidArgumentError
from tests.official_refs import (
    CbamRef,
    CoordAttMobileNetV2Ref,
    EcaLayer,
    ResNetRef,
    TripletRef,
    torchvision_mbv2_with,
)
from tests.util import randomize_, rel_err

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))

#: Kernel sizes per stage of the released ECA-Net checkpoints (their file names say k3577, k3557).
ECA_K = {18: (3, 5, 7, 7), 50: (3, 5, 5, 7)}


def _save_official(model: nn.Module, path) -> None:
    """Save as the official training scripts do: DDP ``module.`` keys nested under ``state_dict``."""
    torch.save({"epoch": 90, "arch": "x", "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}},
               path)


def _load_and_compare(name: str, source: nn.Module, tmp_path, tol: float = 1e-5, **kwargs) -> None:
    source = randomize_(source).eval()
    _save_official(source, tmp_path / "official.pth.tar")
    model = timm.create_model(name, **kwargs).eval()
    edgezoo.load_checkpoint(model, tmp_path / "official.pth.tar")  # strict: every key, every shape
    with torch.no_grad():
        assert rel_err(model(X), source(X)) <= tol, name


@pytest.mark.parametrize(("name", "depth", "attn_name", "attn_fn"), [
    ("ez_resnet18_eca", 18, "eca", lambda c, i: EcaLayer(ECA_K[18][i])),
    pytest.param("ez_resnet50_eca", 50, "eca", lambda c, i: EcaLayer(ECA_K[50][i]), marks=pytest.mark.slow),
    pytest.param("ez_resnet50_cbam", 50, "cbam", lambda c, i: CbamRef(c, 16), marks=pytest.mark.slow),
    pytest.param("ez_resnet50_triplet", 50, "triplet_attention", lambda c, i: TripletRef(7), marks=pytest.mark.slow),
    ("ez_resnet18_cbam", 18, "cbam", lambda c, i: CbamRef(c, 16)),
    ("ez_resnet18_triplet", 18, "triplet_attention", lambda c, i: TripletRef(7)),
])
def test_official_resnets(tmp_path, name: str, depth: int, attn_name: str, attn_fn) -> None:
    """ECA-Net's released ECA-ResNet-18/50 (per-stage k), CBAM's and triplet-attention's ResNets."""
    _load_and_compare(name, ResNetRef(depth, attn_name, attn_fn), tmp_path)


@pytest.mark.parametrize(("name", "attn_fn"), [
    ("ez_mobilenetv2_eca", lambda c: EcaLayer(1 if c <= 96 else 3)),
    ("ez_mobilenetv2_triplet", lambda c: TripletRef(3)),
])
def test_official_mobilenetv2s(tmp_path, name: str, attn_fn) -> None:
    """ECA-Net's and triplet-attention's MobileNetV2 (torchvision's layout, attention after the projection)."""
    _load_and_compare(name, torchvision_mbv2_with(attn_fn), tmp_path)


def test_official_coord_attention_mobilenetv2(tmp_path) -> None:
    """The CA release's flat MobileNetV2; its conv1 bias is folded into BN's running mean on load.

    Same outputs in eval mode; in training mode (where BN's batch mean absorbs the bias) too,
    and the running statistics that step updates stay consistent (eval again after it).
    """
    source = randomize_(CoordAttMobileNetV2Ref()).eval()
    _save_official(source, tmp_path / "mbv2_ca.pth")
    model = timm.create_model("ez_mobilenetv2_ca", drop_rate=0.0).eval()
    edgezoo.load_checkpoint(model, tmp_path / "mbv2_ca.pth")
    source.classifier[0].p = 0.0
    with torch.no_grad():
        assert rel_err(model(X), source(X)) <= 1e-5
        assert rel_err(model.train()(X), source.train()(X)) <= 1e-3  # batch statistics of 2 images
        assert rel_err(model.eval()(X), source.eval()(X)) <= 1e-4


def test_cadene_layout_loads_only_into_caffe_strides(tmp_path) -> None:
    """timm's legacy_seresnet50 (Cadene's SE-ResNet-50): same outputs with layout='cadene', refused otherwise."""
    source = randomize_(timm.create_model("legacy_seresnet50")).eval()
    path = tmp_path / "se_resnet50.safetensors"
    edgezoo.save_atomic(source.state_dict(), path)
    with pytest.raises(CheckpointError, match="layout='cadene'"):  # any other model: refused before shapes
        edgezoo.load_checkpoint(timm.create_model("ez_resnet18_se"), path)
    overlay = {"file": str(path)}
    model = timm.create_model("ez_resnet50_se", layout="cadene", pretrained=True, pretrained_cfg_overlay=overlay)
    with torch.no_grad():
        assert rel_err(model.eval()(X), source(X)) <= 1e-5


def test_layouts_a_model_lacks_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="ReLU before SE"):
        timm.create_model("ez_resnet18_se", layout="cadene")
    with pytest.raises(InvalidArgumentError, match=r"choose from paper$"):
        timm.create_model("ez_resnet18_triplet", layout="timm")
    with pytest.raises(InvalidArgumentError, match="no layout 'timm'"):
        timm.create_model("ez_mobilenetv2_se", layout="timm")


def test_released_eca_checkpoint_does_not_fit_timm_kernels(tmp_path) -> None:
    """ECA-Net's released ECA-ResNet-18 has other kernels than timm's formula: a clear shape error."""
    source = ResNetRef(18, "eca", lambda c, i: EcaLayer(ECA_K[18][i]))
    _save_official(source, tmp_path / "eca.pth")
    with pytest.raises(CheckpointError, match=r"layer3\.0\.se\.conv\.weight \(1, 1, 7\) vs model \(1, 1, 5\)") as err:
        edgezoo.load_checkpoint(timm.create_model("ez_resnet18_eca", layout="timm"), tmp_path / "eca.pth")
    assert "layout='timm'; timm's seresnet/ecaresnet checkpoints need 'timm', the papers' released ones 'paper'" in str(
        err.value)
