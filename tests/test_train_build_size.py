"""A size-dependent model is built for the size it trains at, and every loader builds it alike.

EfficientViT-M's attention windows are ``min(7, each stage's feature size)`` at the size it is built
for (Liu et al., CVPR 2023). Built for 224 px and trained on digits at 48 px, every 3x3 stage map was
padded to a 7x7 window; ``model.img_size: data`` (configs/digits.yaml) builds it for 48 px, the
checkpoint records ``model_kwargs`` and validation, export and ``load_checkpoint`` follow it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import edgezoo
from edgezoo.blocks.cascaded import CascadedGroupAttention
from edgezoo.errors import CheckpointError, ConfigError
from edgezoo.train import resolve_config, train_digits, validate_checkpoint
from edgezoo.train.engine import model_kwargs
from edgezoo.train.resume import config_differences
from tests.train_helpers import TINY


def _windows(model: torch.nn.Module) -> list[int]:
    return [m.window_size for m in model.modules() if isinstance(m, CascadedGroupAttention)]


def test_model_kwargs_follow_the_recipe():
    def kwargs(model: str, size: int, *sets: str) -> dict:
        return model_kwargs(resolve_config(model=model, data="digits", data__img_size=size, overrides=list(sets)))

    assert kwargs("ez_efficientvit_m0", 48) == {"img_size": 48}  # digits.yaml: model.img_size = data
    assert kwargs("ez_efficientvit_m0", 224) == {}  # the model's own default: nothing to pass
    assert kwargs("ez_efficientvit_m0", 48, "model.img_size=null") == {}  # built for 224 px as timm builds it
    assert kwargs("ez_efficientvit_m0", 48, "model.img_size=96") == {"img_size": 96}
    assert kwargs(TINY, 48) == {} and kwargs("ez_resnet18_eca", 48) == {}  # no img_size argument: not size-dependent
    with pytest.raises(ConfigError, match=r"model\.img_size must be"):
        resolve_config(model="ez_efficientvit_m0", data="digits", overrides=["model.img_size=big"])


def test_a_recipe_saved_before_a_key_existed_had_its_default():
    now = resolve_config(model=TINY, data="digits", overrides=["model.img_size=null"]).to_dict()
    saved = {s: dict(v) for s, v in now.items()}
    del saved["model"]["img_size"]
    assert config_differences(saved, now) == []
    now["model"]["img_size"] = "data"
    assert config_differences(saved, now) == ["model.img_size (None there, 'data' now)"]


def test_efficientvit_m_trained_at_48px_has_48px_windows_and_loads_as_trained(tmp_path: Path):
    out = tmp_path / "m0"
    res = train_digits("ez_efficientvit_m0", epochs=1, img_size=48, output=str(out), run__progress=False,
                       run__threads=1)
    ckpt = out / "last.pth"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["model_kwargs"] == {"img_size": 48}
    # validation builds the net as trained, even when it validates at another size
    assert validate_checkpoint("ez_efficientvit_m0", ckpt, "digits", output=tmp_path)["top1"] == pytest.approx(
        res["val_top1"])
    assert validate_checkpoint("ez_efficientvit_m0", ckpt, "digits", img_size=64, output=tmp_path)["count"] == 360

    from edgezoo.export.source import resolve_source

    src = resolve_source(ckpt)
    assert _windows(src.model) == [3, 2, 2, 1, 1, 1] and src.input_size[1:] == (48, 48)
    reference = edgezoo.create_model("ez_efficientvit_m0", num_classes=10, img_size=48)
    reference.load_state_dict(state["model"])
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(src.model(x), edgezoo.fuse(reference.eval())(x), rtol=1e-4, atol=1e-5)

    # a net built for 224 px would take the 3x3 bias tables bicubic-resized to 7x7: refused, with the fix
    default = edgezoo.create_model("ez_efficientvit_m0", num_classes=10)
    assert _windows(default) == [7, 7, 7, 4, 4, 4]
    with pytest.raises(CheckpointError, match=r"built with img_size=48.*create_model\(name, img_size=48\)"):
        edgezoo.load_checkpoint(default, ckpt)
