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
from edgezoo.blocks.cnn_attention import SqueezeExcite, eca_kernel_size
from edgezoo.errors import InvalidArgumentError
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


def test_ela_group_count_must_divide_and_variant_is_explicit() -> None:
    """The paper's code refuses GroupNorm groups that do not divide C; edgezoo too, naming the fix."""
    with pytest.raises(InvalidArgumentError, match="GroupNorm groups 32 does not divide 24; pass gn_groups="):
        ELA(24, variant="t")
    assert ELA(144, variant="t", gn_groups=16).norm.num_groups == 16
    with pytest.raises(InvalidArgumentError, match="ELA needs variant="):
        create_attn("ela", 32)
    assert create_attn("ela", 32, variant="b").conv.kernel_size == (7,)
    # the models name their variant: ELA-B in ResNets, ELA-T in MobileNetV2 with deliberate groups
    resnet = timm.create_model("ez_resnet18_ela")
    assert {m.conv.kernel_size for m in resnet.modules() if isinstance(m, ELA)} == {(7,)}
    mbv2 = timm.create_model("ez_mobilenetv2_ela")
    groups = {m.conv.in_channels: m.norm.num_groups for m in mbv2.modules() if isinstance(m, ELA)}
    assert groups == {96: 32, 144: 16, 192: 32, 384: 32, 576: 32, 960: 32}


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


@pytest.mark.parametrize(("attn", "layout", "block", "layers"), [
    ("se", "timm", BasicBlock, (2, 2, 2, 2)),
    ("eca", "timm", BasicBlock, (2, 2, 2, 2)),
    ("cbam", "paper", BasicBlock, (2, 2, 2, 2)),
    ("se", "timm", Bottleneck, (3, 4, 6, 3)),
])
def test_resnet_loads_timm_attention_resnet(tmp_path, attn: str, layout: str, block, layers) -> None:
    """timm's ResNet with timm's SE/ECA/CBAM -> checkpoint -> ez model (timm's widths/kernels): same outputs."""
    trunk = "resnet18" if block is BasicBlock else "resnet50"
    ref = randomize_(ResNet(block, list(layers), block_args={"attn_layer": attn})).eval()
    path = tmp_path / "timm.pth"
    torch.save(ref.state_dict(), path)
    model = timm.create_model(f"ez_{trunk}_{attn}", layout=layout).eval()
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


# --- published figures --------------------------------------------------------------------------

RESNET18, RESNET50, MOBILENETV2 = 11_689_512, 25_557_032, 3_504_872  # timm/torchvision counts


def _params(name: str) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in timm.create_model(name).parameters())


@pytest.mark.parametrize(("name", "published"), [
    ("ez_resnet50_se", "28.09M"),  # SENet
    ("ez_resnet50_cbam", "28.09M"),  # CBAM
    ("ez_resnet50_triplet", "25.56M"),  # triplet-attention, k=7
    ("ez_mobilenetv2_triplet", "3.506M"),  # triplet-attention's release, k=3
    ("ez_mobilenetv2_se", "3.89M"),  # CA paper: SE at reduction 24 on the expanded width
    ("ez_mobilenetv2_cbam", "3.89M"),  # CA paper
    ("ez_mobilenetv2_ca", "3.95M"),  # CA paper
])
def test_params_match_published(name: str, published: str) -> None:
    """Equal to the published figure at the precision it is printed with (3.89M: within 0.005M)."""
    decimals = len(published[:-1].split(".")[1])
    assert abs(_params(name) / 1e6 - float(published[:-1])) <= 0.5 * 10**-decimals, f"{name}: {_params(name)}"


@pytest.mark.parametrize(("name", "trunk", "added"), [
    ("ez_resnet50_eca", RESNET50, 3 * 3 + 4 * 5 + 6 * 5 + 3 * 7),  # eca_resnet50_k3557: the paper's "80"
    ("ez_resnet18_eca", RESNET18, 2 * (3 + 5 + 7 + 7)),  # eca_resnet18_k3577
    ("ez_mobilenetv2_eca", MOBILENETV2, 13 * 1 + 4 * 3),  # k=1 on the 13 blocks of <= 96 channels, else 3
])
def test_eca_adds_exactly_the_released_kernels(name: str, trunk: int, added: int) -> None:
    assert _params(name) - trunk == added
    assert _params("ez_resnet50_eca") - RESNET50 == 80


def test_papers_hidden_widths() -> None:
    """SE and CBAM use ``C // r`` (SENet, CBAM); timm's rounding to 8 only for timm's layouts."""
    assert SqueezeExcite(144, 16).fc1.out_channels == 9
    assert SqueezeExcite(576, 16).fc1.out_channels == 36
    assert CBAM(24, 16).fc1.out_channels == 1
    assert SqueezeExcite(144, 16, divisor=8).fc1.out_channels == 8  # timm's seresnet width
    assert timm.create_model("ez_resnet18_se").layer1[0].se.fc1.out_channels == 4  # 64 // 16
    assert timm.create_model("ez_resnet18_se", layout="timm").layer1[0].se.fc1.out_channels == 8


def test_mobilenetv2_first_block_attention() -> None:
    """The CA paper's MobileNetV2s have no attention in the t=1 block; ECA's and triplet's have one."""
    for attn, slot, has in (("se", "se", False), ("cbam", "se", False), ("ca", "se", False),
                            ("eca", "attn", True), ("triplet", "attn", True)):
        first = timm.create_model(f"ez_mobilenetv2_{attn}").stages[0][0]
        assert isinstance(getattr(first, slot), torch.nn.Identity) != has, attn


def test_official_initialisation() -> None:
    """CBAM's spatial BN: momentum 0.01, gamma 0; triplet: only the H-W gate's gamma 0; no zero_init_last."""
    cbam = CBAM(32).spatial.conv.bn
    assert cbam.momentum == 0.01 and torch.all(cbam.weight == 0)
    t = TripletAttention(32)
    assert [g.conv.bn.weight.item() for g in (t.gate_cw, t.gate_hc, t.gate_hw)] == [1.0, 1.0, 0.0]
    assert {g.conv.bn.momentum for g in (t.gate_cw, t.gate_hc, t.gate_hw)} == {0.01}
    model = timm.create_model("ez_resnet50_se")
    assert all(torch.all(b.bn3.weight == 1) for b in model.modules() if isinstance(b, Bottleneck))


def test_macs_match_published() -> None:
    from edgezoo.profile import profile_model

    assert math.isclose(profile_model("ez_resnet50_se").macs, 4.11e9, rel_tol=0.03)
    assert math.isclose(profile_model("ez_mobilenetv2_eca").macs, 0.32e9, rel_tol=0.07)
