"""The channel/spatial attention family: modules against references, models against timm."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

import edgezoo
from edgezoo.blocks import CBAM, ECA, ELA, CoordAttention, TripletAttention, create_attn
from edgezoo.blocks.cnn_attention import eca_kernel_size
from tests.util import randomize_, rel_err

X = torch.randn(2, 32, 9, 7, generator=torch.Generator().manual_seed(1))


def _bn(x: torch.Tensor, bn: torch.nn.BatchNorm2d) -> torch.Tensor:
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _gate_ref(x: torch.Tensor, gate) -> torch.Tensor:
    """Spatial gate written from the paper: [max, mean] over dim 1 -> conv -> BN -> sigmoid."""
    pooled = torch.stack([x.max(dim=1).values, x.mean(dim=1)], dim=1)
    conv = gate.conv.conv
    return x * torch.sigmoid(_bn(F.conv2d(pooled, conv.weight, padding=conv.padding), gate.conv.bn))


def test_triplet_matches_reference() -> None:
    m = randomize_(TripletAttention(32)).eval()
    # rotate so each branch's "channel" axis is H, W, and C in turn, gate, rotate back
    cw = _gate_ref(X.transpose(1, 2), m.gate_cw).transpose(1, 2)
    hc = _gate_ref(X.transpose(1, 3), m.gate_hc).transpose(1, 3)
    ref = (cw + hc + _gate_ref(X, m.gate_hw)) / 3
    with torch.no_grad():
        assert rel_err(m(X), ref) < 1e-6
    assert sum(p.numel() for p in m.parameters()) == 3 * (2 * 49 + 2)


@pytest.mark.parametrize("variant", ["t", "b", "s", "l"])
def test_ela_matches_reference(variant: str) -> None:
    m = randomize_(ELA(32, variant=variant)).eval()
    k, per_group, gn = ELA.VARIANTS[variant]
    assert m.conv.kernel_size == (k,) and m.conv.groups == 32 // per_group and m.norm.num_groups == gn

    def gate(strip: torch.Tensor) -> torch.Tensor:
        y = F.conv1d(strip, m.conv.weight, padding=k // 2, groups=m.conv.groups)
        return torch.sigmoid(F.group_norm(y, gn, m.norm.weight, m.norm.bias, m.norm.eps))

    ref = X * gate(X.mean(3))[..., None] * gate(X.mean(2))[:, :, None, :]
    with torch.no_grad():
        assert rel_err(m(X), ref) < 1e-6


def test_ela_group_count_falls_back_to_gcd() -> None:
    assert ELA(24, variant="t").norm.num_groups == 8  # 32 does not divide 24


def test_coord_attention_matches_reference() -> None:
    m = randomize_(CoordAttention(32)).eval()
    h = X.shape[2]
    y = torch.cat([X.mean(3, keepdim=True), X.mean(2, keepdim=True).permute(0, 1, 3, 2)], dim=2)
    y = F.hardswish(_bn(F.conv2d(y, m.reduce.conv.weight), m.reduce.bn))
    a_h = torch.sigmoid(F.conv2d(y[:, :, :h], m.conv_h.weight, m.conv_h.bias))
    a_w = torch.sigmoid(F.conv2d(y[:, :, h:].permute(0, 1, 3, 2), m.conv_w.weight, m.conv_w.bias))
    with torch.no_grad():
        assert rel_err(m(X), X * a_h * a_w) < 1e-6
    assert m.reduce.conv.out_channels == 8  # max(8, 32 // 32)


def test_cbam_spatial_pool_order_is_max_then_mean() -> None:
    m = randomize_(CBAM(32)).eval()
    with torch.no_grad():
        gate = torch.sigmoid(m.fc2(F.relu(m.fc1(X.mean((2, 3), keepdim=True))))
                             + m.fc2(F.relu(m.fc1(X.amax((2, 3), keepdim=True)))))
        assert rel_err(m(X), _gate_ref(X * gate, m.spatial)) < 1e-6


@pytest.mark.parametrize(("channels", "k"), [(64, 3), (256, 5), (512, 5), (1024, 5), (2048, 7)])
def test_eca_adaptive_kernel(channels: int, k: int) -> None:
    assert eca_kernel_size(channels) == k
    assert ECA(channels).conv.kernel_size == (k,)


def test_create_attn_unknown_name_suggests() -> None:
    with pytest.raises(ValueError, match="did you mean cbam"):
        create_attn("cbma", 16)


# --- models against timm's own ResNet with timm's attention modules --------------------------


@pytest.mark.parametrize(("attn", "timm_attn", "block", "layers"), [
    ("se", "se", BasicBlock, (2, 2, 2, 2)),
    ("eca", "eca", BasicBlock, (2, 2, 2, 2)),
    ("cbam", "cbam", BasicBlock, (2, 2, 2, 2)),
    ("se", "se", Bottleneck, (3, 4, 6, 3)),
])
def test_resnet_loads_timm_attention_resnet(tmp_path, attn: str, timm_attn: str, block, layers) -> None:
    """timm's ResNet with timm's SE/ECA/CBAM -> checkpoint -> ez model: same outputs."""
    trunk = "resnet18" if block is BasicBlock else "resnet50"
    ref = randomize_(ResNet(block, list(layers), block_args={"attn_layer": timm_attn})).eval()
    path = tmp_path / "timm.pth"
    torch.save(ref.state_dict(), path)
    model = timm.create_model(f"ez_{trunk}_{attn}").eval()
    edgezoo.load_checkpoint(model, path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert rel_err(model(x), ref(x)) <= 1e-5


def test_seresnet50_timm_checkpoint_via_pretrained_overlay(tmp_path) -> None:
    ref = randomize_(timm.create_model("seresnet50")).eval()
    path = tmp_path / "seresnet50.safetensors"
    edgezoo.save_atomic(ref.state_dict(), path)
    model = timm.create_model("ez_resnet50_se", pretrained=True, pretrained_cfg_overlay={"file": str(path)}).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert rel_err(model(x), ref(x)) <= 1e-5


def test_mobilenetv2_trunk_matches_timm_and_torchvision(tmp_path) -> None:
    from torchvision.models import mobilenet_v2

    from edgezoo.cnn_attention import MobileNetV2, checkpoint_filter_fn

    x = torch.randn(2, 3, 64, 64)
    for ref in (timm.create_model("mobilenetv2_100"), mobilenet_v2()):
        ref = randomize_(ref).eval()
        model = MobileNetV2().eval()
        sd = checkpoint_filter_fn(ref.state_dict(), model)
        model.load_state_dict(sd, strict=True)
        with torch.no_grad():
            assert rel_err(model(x), ref(x)) <= 1e-5, type(ref).__name__


def test_official_layouts_load(tmp_path) -> None:
    """ECA-Net (`.eca.`), CBAM (`.cbam.ChannelGate.mlp.N` Linear) and triplet-attention key names."""
    x = torch.randn(1, 3, 64, 64)
    renames = {
        "eca": lambda k, v: (k.replace(".se.", ".eca."), v),
        "cbam": lambda k, v: (k.replace(".se.fc1.", ".cbam.ChannelGate.mlp.1.")
                              .replace(".se.fc2.", ".cbam.ChannelGate.mlp.3.")
                              .replace(".se.spatial.conv.", ".cbam.SpatialGate.spatial."),
                              v.flatten(1) if ".se.fc" in k and k.endswith("weight") else v),
        "triplet": lambda k, v: (k.replace(".se.gate_cw.conv.", ".triplet_attention.ChannelGateH.spatial.")
                                 .replace(".se.gate_hc.conv.", ".triplet_attention.ChannelGateW.spatial.")
                                 .replace(".se.gate_hw.conv.", ".triplet_attention.SpatialGate.spatial."), v),
    }
    for attn, rename in renames.items():
        src = randomize_(timm.create_model(f"ez_resnet18_{attn}")).eval()
        official = dict(rename(k, v) for k, v in src.state_dict().items())
        assert official.keys() != src.state_dict().keys()
        path = tmp_path / f"{attn}.pth"
        torch.save({"state_dict": {f"module.{k}": v for k, v in official.items()}}, path)
        model = timm.create_model(f"ez_resnet18_{attn}").eval()
        edgezoo.load_checkpoint(model, path)
        with torch.no_grad():
            assert rel_err(model(x), src(x)) <= 1e-6, attn


# --- published figures --------------------------------------------------------------------------

RESNET50 = 25_557_032  # timm/torchvision resnet50


@pytest.mark.parametrize(("name", "published"), [
    ("ez_resnet50_se", 28.09e6),
    ("ez_resnet50_cbam", 28.09e6),
    ("ez_resnet50_triplet", 25.56e6),
    ("ez_resnet50_eca", RESNET50 + 80),
    ("ez_mobilenetv2_triplet", 3.51e6),
])
def test_params_match_published(name: str, published: float) -> None:
    with torch.device("meta"):
        params = sum(p.numel() for p in timm.create_model(name).parameters())
    assert math.isclose(params, published, rel_tol=0.01), f"{name}: {params} vs {published}"


def test_eca_adds_a_handful_of_parameters() -> None:
    """ECA's point: a few dozen weights on top of ResNet-50 (80 in the paper; 86 with its adaptive k)."""
    with torch.device("meta"):
        params = sum(p.numel() for p in timm.create_model("ez_resnet50_eca").parameters())
    assert 0 < params - RESNET50 <= 100


def test_macs_match_published() -> None:
    from edgezoo.profile import profile_model

    assert math.isclose(profile_model("ez_resnet50_se").macs, 4.11e9, rel_tol=0.03)
    assert math.isclose(profile_model("ez_mobilenetv2_eca").macs, 0.32e9, rel_tol=0.07)
