"""The mixer sweep's models (edgezoo.mix) and its full-fidelity mixers.

tests/test_models.py runs the shared model checks on every ``ez_mix_*`` model (two in the fast suite, all
in ``make test-all``). Here: every model within 3% of its size's MACs target with only the mixer changing,
each full-fidelity mixer equal to a reference written from its paper's equations on the same weights,
the simplifications still available by name, and export.
"""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import edgezoo
from edgezoo.blocks import linear_attention as la
from edgezoo.blocks.inline_attention import InLineAttention
from edgezoo.blocks.mixers import MIXERS, NARROW, create_mixer
from edgezoo.mix import SIZES, TARGET_MACS
from edgezoo.profile import count_macs
from tests.util import randomize_, rel_err

SLOW = pytest.mark.slow


def _meta(name: str) -> nn.Module:
    with torch.device("meta"):
        return timm.create_model(name)


# ---------------------------------------------------------------------------------------------
# Registry and sizes
# ---------------------------------------------------------------------------------------------


def test_every_mixer_and_size_is_registered() -> None:
    names = edgezoo.list_models("ez_mix_*")
    assert names == sorted(f"ez_mix_{m}_{s}" for m in MIXERS for s in SIZES)
    assert len(MIXERS) == 13 and {"none", "pool", "eca", "cbam", "inline", "mhsa"} <= set(MIXERS)


@pytest.mark.parametrize("size", ["s", pytest.param("m", marks=SLOW)])
def test_macs_within_three_percent_and_only_the_mixer_differs(size: str) -> None:
    base = _meta(f"ez_mix_none_{size}")
    base_keys = {k for k in base.state_dict() if ".mixer." not in k}
    for mixer in MIXERS:
        model = _meta(f"ez_mix_{mixer}_{size}")
        macs = count_macs(model, (3, 224, 224))
        assert abs(macs / TARGET_MACS[size] - 1) <= 0.03, (mixer, macs)
        # the macro (everything outside the mixers) is the same module tree with the same shapes
        outside = {k: v.shape for k, v in model.state_dict().items() if ".mixer." not in k}
        assert set(outside) == base_keys, mixer
        assert all(base.state_dict()[k].shape == s for k, s in outside.items()), mixer


def test_unknown_mixer_suggests_names() -> None:
    with pytest.raises(ValueError, match="did you mean flatten"):
        create_mixer("flaten", 32, 16)


@pytest.mark.parametrize("name", list(NARROW))
def test_attention_mixers_keep_shape_at_odd_sizes(name: str) -> None:
    mixer = randomize_(create_mixer(name, 24, 32, size=4)).eval()
    x = torch.randn(2, 24, 5, 7)
    with torch.no_grad():
        assert mixer(x).shape == x.shape


def test_efficientvit_b1_combinations_keep_the_named_simplifications() -> None:
    for mixer, absent in (("flatten", "k_pos"), ("agent", "ah_bias"), ("mala", "gate.")):
        keys = _meta(f"ez_efficientvit_b1_{mixer}").state_dict()
        assert not any(absent in k for k in keys), mixer
        full = _meta(f"ez_mix_{mixer}_s").state_dict()
        assert any(absent in k for k in full), mixer


# ---------------------------------------------------------------------------------------------
# Full-fidelity mixers against their papers' equations
# ---------------------------------------------------------------------------------------------


def _x(c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _tokens(t: torch.Tensor, heads: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, heads, N, d)``."""
    B, C, H, W = t.shape
    return t.reshape(B, heads, C // heads, H * W).transpose(-1, -2)


def _untokens(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    B, heads, _, d = t.shape
    return t.transpose(-1, -2).reshape(B, heads * d, h, w)


def test_flatten_with_positional_encoding_on_k_is_the_paper() -> None:
    """FLatten (Han et al., ICCV 2023), eq. (5)-(6): O_i = sum_j f(q_i) f(k_j + P_j)^T v_j / sum_j f(q_i) f(k_j + P_j)^T
    with f(x) = ||x|| / ||x^p|| x^p on relu(x)/softplus(s), plus DWC(V)."""
    mixer = randomize_(la.FocusedLinearAttention(24, head_dim=8, pos_size=5)).double().eval()
    x = _x(24, 5, 5)
    q, k, v = mixer.qkv(x).reshape(2, 3, 24, 5, 5).unbind(1)
    k = k + mixer.k_pos  # the learned absolute encoding, one vector per position

    def focus(t: torch.Tensor) -> torch.Tensor:
        t = (t.relu() + 1e-6) / F.softplus(mixer.scale.reshape(1, 24, 1, 1))
        return t.norm(dim=1, keepdim=True) / (t**3).norm(dim=1, keepdim=True) * t**3

    fq, fk, vh = _tokens(focus(q), 3), _tokens(focus(k), 3), _tokens(v, 3)
    scores = fq @ fk.transpose(-1, -2)
    out = (scores @ vh) / (scores.sum(-1, keepdim=True) + 25 * 1e-6)
    rank = mixer.dwc(v.reshape(6, 8, 5, 5)).reshape(2, 24, 5, 5)
    expected = mixer.proj(_untokens(out, 5, 5) + rank)
    with torch.no_grad():
        assert rel_err(mixer(x), expected) < 1e-9
    assert la.FocusedLinearAttention(24, head_dim=8, k_pos=False).k_pos is None


def test_agent_attention_with_row_column_biases_is_the_paper() -> None:
    """Agent attention (Han et al., ECCV 2024), eq. (3): O = sigma(Q A^T + B2) sigma(A K^T + B1) V + DWC(V),
    A = pool(Q); B1 = interp(an) + ah (per row) + aw (per column), B2 likewise from na, ha, wa."""
    torch.manual_seed(0)
    mixer = randomize_(la.AgentAttention(24, head_dim=8, agent_size=3, feature_size=6)).double().eval()
    x = _x(24, 6, 6)
    q, k, v = mixer.qkv(x).reshape(2, 3, 24, 6, 6).unbind(1)
    agents = _tokens(F.adaptive_avg_pool2d(q, 3), 3)  # (B, h, A, d)
    qh, kh, vh = _tokens(q, 3), _tokens(k, 3), _tokens(v, 3)
    A, N = 9, 36
    b1 = torch.empty(3, A, 6, 6, dtype=torch.float64)
    b2 = torch.empty(3, A, 6, 6, dtype=torch.float64)
    an = F.interpolate(mixer.an_bias, size=(6, 6), mode="bilinear")
    na = F.interpolate(mixer.na_bias, size=(6, 6), mode="bilinear")
    for r in range(6):
        for c in range(6):
            b1[:, :, r, c] = an[:, :, r, c] + mixer.ah_bias[:, :, r, 0] + mixer.aw_bias[:, :, 0, c]
            b2[:, :, r, c] = na[:, :, r, c] + mixer.ha_bias[:, :, r, 0] + mixer.wa_bias[:, :, 0, c]
    scale = 8**-0.5
    agent_v = torch.softmax(agents @ kh.transpose(-1, -2) * scale + b1.reshape(3, A, N), -1) @ vh
    out = torch.softmax(qh @ agents.transpose(-1, -2) * scale + b2.reshape(3, A, N).transpose(-1, -2), -1) @ agent_v
    expected = mixer.proj(_untokens(out, 6, 6) + mixer.dwc(v))
    with torch.no_grad():
        assert rel_err(mixer(x), expected) < 1e-12
    plain = la.AgentAttention(24, head_dim=8, rc_bias=False)
    assert not any("ah_bias" in n for n, _ in plain.named_parameters())


def _rotation(h: int, w: int, d: int, base: float = 10000.0) -> torch.Tensor:
    """``(N, d, d)`` block-diagonal 2-D RoPE rotation per token: pair i of the first half turns by y*theta_i,
    pair i of the second half by x*theta_i, theta_i = base^(-i/(d/4))."""
    quarter = d // 4
    rot = torch.zeros(h * w, d, d, dtype=torch.float64)
    for y in range(h):
        for x in range(w):
            for half, pos in ((0, y), (1, x)):
                for i in range(quarter):
                    a = pos * base ** (-i / quarter)
                    j = 2 * (half * quarter + i)
                    rot[y * w + x, j:j + 2, j:j + 2] = torch.tensor([[math.cos(a), -math.sin(a)],
                                                                     [math.sin(a), math.cos(a)]], dtype=torch.float64)
    return rot


def test_mala_with_rope_and_output_gate_is_the_paper() -> None:
    """MALA (Fan et al., ICCV 2025), eq. (8): O_i = sum_j (beta_i phi(q_i)^T phi(k_j) - gamma_i) v_j with
    beta = 1 + 1/z, gamma = z/N, z = phi(q_i)^T mean phi(k) (scaled by d^-1/2), RoPE on the similarity term
    only, + LePE(V); output proj((O + LePE) * o)."""
    mixer = randomize_(la.MagnitudeAwareLinearAttention(16, head_dim=8)).double().eval()
    x = _x(16, 4, 3)
    xn = F.layer_norm(x.permute(0, 2, 3, 1), (16,), mixer.norm.weight, mixer.norm.bias, 1e-6).permute(0, 3, 1, 2)
    q, k, v = mixer.qkv(xn).reshape(2, 3, 16, 4, 3).unbind(1)
    pq, pk, vh = _tokens(F.elu(q) + 1, 2), _tokens(F.elu(k) + 1, 2), _tokens(v, 2)  # (B, h, N, d)
    rot = _rotation(4, 3, 8)
    rq = torch.einsum("nij,bhnj->bhni", rot, pq)
    rk = torch.einsum("nij,bhnj->bhni", rot, pk)
    n, s = 12, 8**-0.5
    z = s * pq @ pk.mean(2, keepdim=True).transpose(-1, -2)  # (B, h, N, 1), unrotated
    weights = (1 + 1 / (z + 1e-6)) * (s / n) * (rq @ rk.transpose(-1, -2)) - z / n
    out = _untokens(weights @ vh, 4, 3) + mixer.lepe(v)
    expected = mixer.proj(out * mixer.gate(xn))
    with torch.no_grad():
        assert rel_err(mixer(x), expected) < 1e-9
    # RoPE makes the similarity a function of the offset: (R_a u) . (R_b w) = u . (R_a^T R_b w)
    assert torch.allclose(rot[0].T @ rot[4], rot[4].T @ rot[8], atol=1e-12)  # (0,0)->(1,1) and (1,1)->(2,2)
    simple = la.MagnitudeAwareLinearAttention(16, head_dim=8, rope=False, output_gate=False)
    assert simple.gate is None and not simple.rope


def test_inline_attention_is_the_paper() -> None:
    """InLine attention (Han et al., NeurIPS 2024), eq. (7): InL(Q_i, K_j) = phi(Q_i)^T phi(K_j) -
    mean_s phi(Q_i)^T phi(K_s) + 1/N (the centred term averaged over the N keys), plus the local attention
    residual sum_{j in 3x3(i)} r_j V_j with r predicted from the pooled input."""
    mixer = randomize_(InLineAttention(16, head_dim=8)).double().eval()
    x = _x(16, 5, 4)
    q, k, v = mixer.qkv(x).reshape(2, 3, 16, 5, 4).unbind(1)
    qh, kh, vh = _tokens(q, 2), _tokens(k, 2), _tokens(v, 2)
    n = 20
    sim = qh @ kh.transpose(-1, -2)
    weights = 1 / n + (sim - sim.mean(-1, keepdim=True)) / n
    assert torch.allclose(weights.sum(-1), torch.ones((), dtype=torch.float64))
    glob = _untokens(weights @ vh, 5, 4)
    r = mixer.residual(x.mean((2, 3), keepdim=True)).reshape(2, 2, 9)  # per head, per offset
    patches = F.unfold(v, 3, padding=1).reshape(2, 2, 8, 9, 20)  # (B, h, d, offset, N)
    local = torch.einsum("bhdon,bho->bhdn", patches, r).reshape(2, 16, 5, 4)
    with torch.no_grad():
        assert rel_err(mixer(x), mixer.proj(glob + local)) < 1e-10
        # injective: scaling the queries changes the output (plain normalised linear attention would not)
        assert rel_err(mixer.attend(*(_tokens(t, 2).transpose(-1, -2) for t in (3 * q, k, v))),
                       mixer.attend(*(_tokens(t, 2).transpose(-1, -2) for t in (q, k, v)))) > 1e-2
    assert InLineAttention(16, head_dim=8, local_residual=False).residual is None


def test_softmax_attention_equals_explicit_softmax() -> None:
    mixer = randomize_(create_mixer("mhsa", 16, 32)).double().eval().mixer
    x = _x(32, 3, 4)
    q, k, v = (_tokens(t, 2) for t in mixer.qkv(x).reshape(2, 3, 32, 3, 4).unbind(1))
    out = torch.softmax(q @ k.transpose(-1, -2) / 4.0, -1) @ v
    with torch.no_grad():
        assert rel_err(mixer(x), mixer.proj(_untokens(out, 3, 4))) < 1e-12


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


def _onnx_matches(model: nn.Module, x: torch.Tensor, tol: float = 1e-4) -> None:
    ort = pytest.importorskip("onnxruntime")
    model.eval()
    with torch.no_grad():
        expected = model(x)
    program = torch.onnx.export(model, (x,), dynamo=True, opset_version=18, verbose=False)
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert rel_err(torch.from_numpy(out), expected) <= tol


@pytest.mark.parametrize("name", ["mala", *(pytest.param(n, marks=SLOW) for n in ("agent", "inline", "flatten",
                                                                                   "mhsa", "cga", "shvit"))])
def test_full_fidelity_mixers_export_to_onnx(name: str) -> None:
    _onnx_matches(randomize_(create_mixer(name, 24, 32, size=7)), torch.randn(1, 24, 7, 7))


@SLOW
@pytest.mark.parametrize("mixer", MIXERS)
def test_fused_model_exports_to_onnx(mixer: str) -> None:
    model = edgezoo.fuse(randomize_(timm.create_model(f"ez_mix_{mixer}_s", num_classes=10)).eval())
    _onnx_matches(model, torch.randn(1, 3, 64, 64))
