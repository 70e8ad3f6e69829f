"""Checks every registered edgezoo model must pass: timm's model-test conventions plus fuse.

Parametrised over the registry at collection time, so a new family is covered as soon as it
registers. Inputs are small (32-64 px, batch 2) to keep CI fast; models over
``CI_MAX_PARAMS`` run in ``make test-all`` only (marked slow).
"""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import edgezoo
from tests.util import randomize_, rel_err

SIZE = 64
CI_MAX_PARAMS = 30e6


def _params(name: str) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in timm.create_model(name).parameters())


#: The mixer sweep's 26 models share one macro: two run in the fast suite, all of them in ``make test-all``.
FAST_MIX = ("ez_mix_none_s", "ez_mix_mala_s")


def _slow(name: str) -> bool:
    return _params(name) > CI_MAX_PARAMS or (name.startswith("ez_mix_") and name not in FAST_MIX)


MODELS = [pytest.param(name, marks=pytest.mark.slow) if _slow(name) else name for name in edgezoo.list_models()]
REQUIRED_CFG = ("input_size", "mean", "std", "crop_pct", "num_classes", "first_conv", "classifier",
                "interpolation", "pool_size")


def _input(batch: int = 2, chans: int = 3, size: int = SIZE) -> torch.Tensor:
    return torch.randn(batch, chans, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward(name: str) -> None:
    model = timm.create_model(name, num_classes=10)
    out = model(_input(size=SIZE // 2))
    assert out.shape == (2, 10)
    out.logsumexp(1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads), "some parameters receive no gradient"
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", MODELS)
def test_fuse_matches_eval(name: str) -> None:
    model = randomize_(timm.create_model(name, num_classes=10)).eval()
    fused = edgezoo.fuse(model)
    x = _input(size=SIZE // 2)
    with torch.no_grad():
        ref, out = model(x), fused(x)
    assert rel_err(out, ref) <= 1e-4
    left = [n for n, m in fused.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert not left, f"BatchNorm left unfolded in the deploy form: {left[:5]}"
    assert not any(m.training for m in fused.modules())


@pytest.mark.parametrize("name", MODELS)
def test_features_only_and_intermediates(name: str) -> None:
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    info = model.feature_info
    torch.manual_seed(0)  # same init: features_only builds the same model, then wraps it
    feats_model = timm.create_model(name, features_only=True).eval()
    x = _input()
    with torch.no_grad():
        feats = feats_model(x)
        final, inter = model.forward_intermediates(x)
        ref_final = model.forward_features(x)
    assert len(feats) == len(info) == len(inter)
    for f, i, meta in zip(feats, inter, info, strict=True):
        assert f.shape[1] == meta["num_chs"]
        assert f.shape[-1] == SIZE // meta["reduction"], f"stride of {meta['module']}"
        torch.testing.assert_close(f, i)
    assert feats_model.feature_info.channels() == [m["num_chs"] for m in info]
    torch.testing.assert_close(final, ref_final)
    last = model.forward_intermediates(x, indices=[-1], intermediates_only=True)
    torch.testing.assert_close(last[0], inter[-1])


@pytest.mark.parametrize("name", MODELS)
def test_timm_interface(name: str) -> None:
    model = timm.create_model(name, num_classes=0, in_chans=1).eval()
    x = _input(chans=1)
    with torch.no_grad():
        pooled = model(x)
        # timm: pre-logits width is head_hidden_size where a head has a hidden layer
        assert pooled.shape == (2, getattr(model, "head_hidden_size", None) or model.num_features)
        model.reset_classifier(7)
        assert model(x).shape == (2, 7)
        assert model.forward_head(model.forward_features(x), pre_logits=True).shape == pooled.shape
    cfg = model.pretrained_cfg
    missing = [k for k in REQUIRED_CFG if cfg.get(k) in (None, "")]
    assert not missing, f"pretrained_cfg lacks {missing}"
    assert cfg["architecture"] == name
    first_conv = model.get_submodule(cfg["first_conv"])
    assert first_conv.in_channels == 1  # in_chans reached the stem
    assert isinstance(model.get_submodule(cfg["classifier"]), nn.Module)
    if getattr(model, "head_hidden_size", None) not in (None, model.num_features):
        # a head with a hidden MLP after pooling cannot be unpooled (as in timm): a clear error
        with pytest.raises(edgezoo.EdgezooError, match="global_pool"):
            timm.create_model(name, num_classes=0, global_pool="")
        return
    unpooled = timm.create_model(name, num_classes=0, global_pool="").eval()
    with torch.no_grad():
        assert unpooled(_input()).ndim == 4
