"""EfficientViT-B/L and the linear token mixers (edgezoo.efficientvit_mit, edgezoo.blocks.linear_attention).

The shared model test covers forward/backward, fuse equivalence, features_only and
forward_intermediates for every model; these tests cover what is specific to this family:
published sizes, timm and official checkpoints, each mixer against a direct (quadratic)
evaluation of its formula, the fp32 precision policy, and export.
"""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models.efficientvit_mit import EfficientVit, EfficientVitLarge
from torch import nn

import edgezoo
from edgezoo.blocks import linear_attention as la
from edgezoo.efficientvit_mit import EfficientViT
from edgezoo.errors import ConfigError
from edgezoo.profile import count_macs, count_params
from tests.util import randomize_, rel_err

SLOW = pytest.mark.slow
ALL = ["b0", "b1", "b2", "b3", "l1", "l2", "b1_flatten", "b1_agent", "b1_mala"]
MIXERS = list(la.TOKEN_MIXERS)

#: models.md: (params, MACs at 224) as published (the precision is the published one).
PUBLISHED = {"b0": ("3.4", "0.10"), "b1": ("9.1", "0.52"), "b2": ("24", "1.6"), "b3": ("49", "4.0"),
             "l1": ("53", "5.3"), "l2": ("64", "6.9")}


def _tolerance(published: str, rel: float) -> float:
    """``rel``, or half a unit of the published figure's last digit when that is coarser (B2's "24M"
    is 24.33M: a 2-significant-digit figure only pins the count to +-2%)."""
    half_unit = float(Decimal(1).scaleb(Decimal(published).as_tuple().exponent)) / 2
    return max(rel, half_unit / float(published))


def _meta_model(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return timm.create_model(f"ez_efficientvit_{name}", **kwargs)


# ---------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(PUBLISHED))
def test_params_and_macs_match_published_and_timm(variant: str) -> None:
    model = _meta_model(variant)
    with torch.device("meta"):
        reference = timm.create_model(f"efficientvit_{variant}")
    params, macs = count_params(model), count_macs(model, (3, 224, 224))
    assert params == count_params(reference)
    pub_params, pub_macs = PUBLISHED[variant]
    assert abs(params / 1e6 - float(pub_params)) / float(pub_params) <= _tolerance(pub_params, 0.01)
    assert abs(macs / 1e9 - float(pub_macs)) / float(pub_macs) <= _tolerance(pub_macs, 0.03)


def test_mixer_variants_change_only_the_token_mixer() -> None:
    base = {k: v.shape for k, v in _meta_model("b1").state_dict().items() if ".context_module." not in k}
    for mixer in ("flatten", "agent", "mala"):
        model = _meta_model(f"b1_{mixer}")
        assert {k: v.shape for k, v in model.state_dict().items() if ".context_module." not in k} == base
        mixers = [m for m in model.modules() if isinstance(m, la.TokenMixer)]
        assert len(mixers) == 3 + 4 and all(type(m) is la.TOKEN_MIXERS[mixer] for m in mixers)
        assert "no published accuracy" in model.pretrained_cfg["notes"][0]


@pytest.mark.parametrize("variant", ALL)
def test_fuse_folds_every_batchnorm(variant: str) -> None:
    fused = edgezoo.fuse(_meta_model(variant))
    assert not [n for n, m in fused.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_unknown_mixer_is_a_config_error_with_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"unknown token mixer 'flaten'; did you mean flatten\?"):
        _meta_model("b1", mixer="flaten")


# ---------------------------------------------------------------------------------------------
# Checkpoints: timm's layout (edgezoo's names) and the official repository's
# ---------------------------------------------------------------------------------------------

#: Small B and L architectures both code bases can build, to test every layout in make test.
TINY = {
    "b": {"widths": (8, 16, 16, 32, 32), "depths": (1, 2, 2, 1, 2), "head_dim": 8, "head_widths": (48, 64)},
    "l": {"widths": (8, 16, 16, 32, 32), "depths": (1, 1, 2, 1, 2), "head_dim": 8, "head_widths": (48, 64)},
}


def _to_official(state_dict: dict[str, torch.Tensor], large: bool) -> dict[str, torch.Tensor]:
    """timm's keys -> mit-han-lab/efficientvit's ``EfficientViTCls`` keys (written from its backbone.py,
    cls.py and nn/ops.py: ``OpSequential.op_list``, B's ``input_stem``, L's stem as ``stages.0``)."""
    stem = "backbone.stages.0.op_list" if large else "backbone.input_stem.op_list"
    rules = [
        (r"^stem\.in_conv\.", f"{stem}.0."),
        (r"^stem\.res(\d+)\.", lambda m: f"{stem}.{int(m.group(1)) + 1}."),
        (r"^stages\.(\d+)\.blocks\.", lambda m: f"backbone.stages.{int(m.group(1)) + int(large)}.op_list."),
        (r"^head\.in_conv\.", "head.op_list.0."),
        (r"^head\.classifier\.0\.", "head.op_list.2.linear."),
        (r"^head\.classifier\.1\.", "head.op_list.2.norm."),
        (r"^head\.classifier\.4\.", "head.op_list.3.linear."),
    ]
    out = {}
    for key, value in state_dict.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def _check_load(ez: nn.Module, reference: nn.Module, state_dict: dict, path, size: int = 64) -> None:
    """Save ``state_dict``, load it with edgezoo (strict), compare features, pre-logits and logits."""
    torch.save(state_dict, path)
    edgezoo.load_checkpoint(ez, path)
    ez.eval()
    reference.eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats, ref_feats = ez.forward_features(x), reference.forward_features(x)
        assert rel_err(feats, ref_feats) <= 1e-5
        for pre_logits in (True, False):
            out = ez.forward_head(feats, pre_logits=pre_logits)
            assert rel_err(out, reference.forward_head(ref_feats, pre_logits=pre_logits)) <= 1e-5


@pytest.mark.parametrize("variant", ["b0", "b1", *(pytest.param(v, marks=SLOW) for v in ("b2", "b3", "l1", "l2"))])
def test_timm_checkpoint_loads_with_equal_outputs(variant: str, tmp_path) -> None:
    reference = randomize_(timm.create_model(f"efficientvit_{variant}"))
    ez = timm.create_model(f"ez_efficientvit_{variant}")
    _check_load(ez, reference, reference.state_dict(), tmp_path / "timm.pth")


@pytest.mark.parametrize("arch", ["b", "l"])
def test_tiny_timm_and_official_layouts_load(arch: str, tmp_path) -> None:
    cls = EfficientVitLarge if arch == "l" else EfficientVit
    reference = randomize_(cls(num_classes=7, **TINY[arch]))
    ez = EfficientViT(arch=arch, num_classes=7, **TINY[arch])
    ez.pretrained_cfg = {"architecture": f"ez_efficientvit_{arch}1"}  # selects this family's key mapping
    _check_load(ez, reference, reference.state_dict(), tmp_path / "timm.pth")
    official = _to_official(reference.state_dict(), large=arch == "l")
    _check_load(randomize_(ez, seed=3), reference, {"state_dict": official}, tmp_path / "official.pth")


@pytest.mark.parametrize("variant", ["b0", pytest.param("b1", marks=SLOW), pytest.param("l1", marks=SLOW)])
def test_official_checkpoint_loads_with_equal_outputs(variant: str, tmp_path) -> None:
    reference = randomize_(timm.create_model(f"efficientvit_{variant}"))
    official = _to_official(reference.state_dict(), large=variant[0] == "l")
    known = {  # key names as the official repository writes them
        "b0": ["backbone.input_stem.op_list.0.conv.weight", "backbone.input_stem.op_list.1.main.depth_conv.norm.bias",
               "backbone.stages.0.op_list.0.main.inverted_conv.conv.weight",
               "backbone.stages.2.op_list.1.context_module.main.aggreg.0.1.weight",
               "backbone.stages.3.op_list.2.local_module.main.point_conv.norm.running_var",
               "head.op_list.0.norm.weight", "head.op_list.2.linear.weight", "head.op_list.2.norm.bias",
               "head.op_list.3.linear.bias"],
        "b1": ["backbone.stages.3.op_list.4.context_module.main.proj.norm.weight"],
        "l1": ["backbone.stages.0.op_list.1.main.conv1.conv.weight",
               "backbone.stages.1.op_list.0.main.spatial_conv.conv.weight",
               "backbone.stages.4.op_list.6.context_module.main.qkv.conv.weight"],
    }[variant]
    assert set(known) <= set(official)
    ez = randomize_(timm.create_model(f"ez_efficientvit_{variant}"), seed=5)
    _check_load(ez, reference, {"state_dict": official}, tmp_path / "official.pth")


# ---------------------------------------------------------------------------------------------
# The mixers against a direct evaluation of their formulas
# ---------------------------------------------------------------------------------------------


def _qkv(B: int = 2, h: int = 3, d: int = 8, n: int = 20, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(B, h, d, n, generator=gen, dtype=torch.float64) for _ in range(3)]


def test_litemla_attend_equals_quadratic_relu_attention() -> None:
    mixer = la.LiteMLA(24, head_dim=8).double()
    q, k, v = (t.relu() if i < 2 else t for i, t in enumerate(_qkv()))
    scores = q.transpose(-1, -2) @ k  # (B, h, N, N): q_i . k_j
    expected = (scores @ v.transpose(-1, -2)) / (scores.sum(-1, keepdim=True) + mixer.eps)
    assert rel_err(mixer.attend(q, k, v), expected.transpose(-1, -2)) < 1e-12


def test_flatten_attend_equals_focused_quadratic_attention() -> None:
    mixer = la.FocusedLinearAttention(24, head_dim=8).double()
    with torch.no_grad():
        mixer.scale.normal_()
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 24, 20, generator=gen, dtype=torch.float64) for _ in range(3))

    def focus(x: torch.Tensor) -> torch.Tensor:  # f(x) = ||x|| / ||x^3|| x^3 over all channels of a token
        x = (x.relu() + 1e-6) / F.softplus(mixer.scale)
        return (x.norm(dim=1, keepdim=True) / (x**3).norm(dim=1, keepdim=True) * x**3).reshape(2, 3, 8, 20)

    fq, fk, vh = focus(q), focus(k), v.reshape(2, 3, 8, 20)
    scores = fq.transpose(-1, -2) @ fk
    expected = (scores @ vh.transpose(-1, -2)) / (scores.sum(-1, keepdim=True) + 20 * 1e-6)
    assert rel_err(mixer.attend(q, k, v, mixer.scale), expected.transpose(-1, -2)) < 1e-9


def test_agent_attention_equals_two_softmax_attentions_with_pooled_agents() -> None:
    torch.manual_seed(0)
    mixer = la.AgentAttention(24, head_dim=8, agent_size=3).double().eval()
    x = torch.randn(2, 24, 7, 5, dtype=torch.float64)
    q, k, v = mixer.qkv(x).reshape(2, 3, 24, 7, 5).unbind(1)
    agents = F.adaptive_avg_pool2d(q, 3).reshape(2, 3, 8, 9).transpose(-1, -2)  # (B, h, A, d)
    qh, kh, vh = (t.reshape(2, 3, 8, 35).transpose(-1, -2) for t in (q, k, v))  # (B, h, N, d)
    an = F.interpolate(mixer.an_bias, size=(7, 5), mode="bilinear").flatten(2)
    na = F.interpolate(mixer.na_bias, size=(7, 5), mode="bilinear").flatten(2).transpose(-1, -2)
    agent_v = torch.softmax(agents @ kh.transpose(-1, -2) / 8**0.5 + an, -1) @ vh
    out = torch.softmax(qh @ agents.transpose(-1, -2) / 8**0.5 + na, -1) @ agent_v  # (B, h, N, d)
    expected = mixer.proj(out.transpose(-1, -2).reshape(2, 24, 7, 5) + mixer.dwc(v))
    with torch.no_grad():
        assert rel_err(mixer(x), expected) < 1e-12


def test_mala_weights_sum_to_one_and_follow_query_magnitude() -> None:
    mixer = la.MagnitudeAwareLinearAttention(24, head_dim=8).double()
    q, k, v = _qkv()
    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1
    n, scale = q.shape[-1], 8**-0.5
    z = scale * phi_q.transpose(-1, -2) @ phi_k.mean(-1, keepdim=True)  # (B, h, N, 1)
    weights = (1 + 1 / (z + 1e-6)) * scale / n * (phi_q.transpose(-1, -2) @ phi_k) - z / n  # (B, h, N, N)
    assert torch.allclose(weights.sum(-1), torch.ones((), dtype=torch.float64), atol=1e-5)
    assert rel_err(mixer.attend(q, k, v), (weights @ v.transpose(-1, -2)).transpose(-1, -2)) < 1e-9
    # Scaling the queries changes MALA's output; plain ReLU linear attention ignores it (the paper's point).
    assert rel_err(mixer.attend(3 * q, k, v), mixer.attend(q, k, v)) > 1e-2
    lite = la.LiteMLA(24, head_dim=8).double()
    assert rel_err(lite.attend(3 * q.relu(), k.relu(), v), lite.attend(q.relu(), k.relu(), v)) < 1e-5


@pytest.mark.parametrize(("size", "out"), [(14, 7), (7, 7), (5, 3), (2, 7), (9, 4)])
def test_adaptive_pool_matrix_equals_adaptive_avg_pool(size: int, out: int) -> None:
    x = torch.randn(3, 4, size, dtype=torch.float64)
    pooled = x @ la.adaptive_pool_matrix(size, out, x).transpose(0, 1)
    assert rel_err(pooled, F.adaptive_avg_pool1d(x, out)) < 1e-12


@pytest.mark.parametrize("name", MIXERS)
def test_mixer_interface(name: str) -> None:
    mixer = la.create_token_mixer(name, 32, head_dim=16).eval()
    x = torch.randn(2, 32, 6, 9)
    assert mixer(x).shape == x.shape
    assert mixer.paper and mixer.fp32_ops
    assert la.fp32_regions(nn.Sequential(mixer)) == {"0": mixer.fp32_ops}
    with pytest.raises(ValueError, match="did you mean"):
        la.create_token_mixer(name + "x", 32)


# ---------------------------------------------------------------------------------------------
# Precision policy: the attention core runs in fp32
# ---------------------------------------------------------------------------------------------


def _no_guard(fn, *tensors):
    return fn(*tensors)


@pytest.mark.parametrize("name", ["litemla", "flatten", "mala"])
def test_fp32_guard_is_what_keeps_fp16_finite(name: str, monkeypatch) -> None:
    torch.manual_seed(0)
    mixer = la.create_token_mixer(name, 32, head_dim=16).eval()
    x = torch.rand(1, 32, 32, 32) * 30
    with torch.no_grad():
        mixer.qkv.conv.weight.mul_(30)  # large q, k, v (MALA normalises its input, so scale after the norm)
        expected = mixer(x)
        guarded = mixer.half()(x.half())
        assert torch.isfinite(guarded).all() and rel_err(guarded, expected) < 2e-2
        monkeypatch.setattr(la, "run_fp32", _no_guard)  # the same math, left in fp16
        assert not torch.isfinite(mixer(x.half())).all()


def test_agent_attention_fp16_stays_finite() -> None:
    mixer = la.create_token_mixer("agent", 32, head_dim=16).eval()
    x = torch.rand(1, 32, 32, 32) * 30
    with torch.no_grad():
        assert rel_err(mixer.half()(x.half()), mixer.float()(x)) < 2e-2


@pytest.mark.parametrize("variant", ["b0", "b1_flatten", "b1_agent", "b1_mala",
                                     *(pytest.param(v, marks=SLOW) for v in ("b1", "b2", "b3", "l1", "l2"))])
def test_bf16_autocast_with_large_inputs_is_finite(variant: str) -> None:
    model = randomize_(timm.create_model(f"ez_efficientvit_{variant}")).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out, big = model(x), model(100 * x)
    assert out.dtype == torch.bfloat16 and torch.isfinite(big).all()
    with torch.no_grad():
        assert rel_err(out, model(x)) < 0.1


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


def _check_export(model: nn.Module, x: torch.Tensor) -> None:
    ort = pytest.importorskip("onnxruntime")
    model.eval()
    with torch.no_grad():
        expected = model(x)
    exported = torch.export.export(model, (x,))
    assert rel_err(exported.module()(x), expected) <= 1e-5
    program = torch.onnx.export(model, (x,), dynamo=True, opset_version=18, verbose=False)
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert rel_err(torch.from_numpy(out), expected) <= 1e-4


@pytest.mark.parametrize("name", MIXERS)
def test_mixer_exports(name: str) -> None:
    mixer = randomize_(la.create_token_mixer(name, 32, head_dim=16))
    _check_export(mixer, torch.randn(1, 32, 7, 9))


@pytest.mark.parametrize("variant", ["b0", *(pytest.param(v, marks=SLOW) for v in ALL[1:])])
def test_model_exports_to_torch_export_and_onnx(variant: str) -> None:
    model = randomize_(timm.create_model(f"ez_efficientvit_{variant}"))
    _check_export(model, torch.randn(1, 3, 96, 96))
