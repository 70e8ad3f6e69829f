"""The training recipe: layer resolution, schema validation, overrides (no training here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import edgezoo
from edgezoo.errors import ConfigError, UnknownModelError
from edgezoo.train.config import TrainConfig, _apply, config_dir, config_layers, parse_override, resolve_config

CNN = "ez_resnet18_eca"


def test_base_is_the_shared_imagenet_recipe():
    cfg = resolve_config(model="resnet18")  # a plain timm model: base.yaml only
    assert cfg.optim.opt == "adamw"
    assert cfg.optim.lr_base == pytest.approx(1e-3) and cfg.optim.lr_base_size == 1024
    assert 0.025 <= cfg.optim.weight_decay <= 0.05
    assert cfg.sched.name == "cosine" and cfg.sched.warmup_epochs > 0 and cfg.sched.epochs == 300
    assert cfg.aug.auto_augment.startswith("rand-m9")
    assert (cfg.aug.mixup, cfg.aug.cutmix, cfg.aug.smoothing, cfg.aug.reprob) == (0.8, 1.0, 0.1, 0.25)
    assert cfg.ema.enable


def test_every_model_resolves_through_its_family_file():
    for name in edgezoo.list_models():
        layers = config_layers(name)
        family = edgezoo.get_spec(name).family
        assert layers[0].name == "base.yaml" and layers[1] == config_dir() / f"{family}.yaml", name
        cfg = resolve_config(model=name)
        assert cfg.model.name == name
    for family in edgezoo.FAMILIES:
        assert (config_dir() / f"{family}.yaml").is_file(), family


def test_every_config_file_validates():
    files = sorted(config_dir().glob("*.yaml")) + sorted((config_dir() / "models").glob("*.yaml"))
    assert len(files) >= 7
    for path in files:
        tree = TrainConfig().to_dict()
        _apply(tree, yaml.safe_load(path.read_text()), str(path))
    for path in (config_dir() / "models").glob("*.yaml"):
        assert path.stem in edgezoo.list_models(), f"{path} names no registered model"


def test_layer_order_family_then_digits_then_user_then_flags_then_set(tmp_path: Path):
    full = resolve_config(model=CNN)
    assert full.model.drop_path == 0.05  # cnn_attention.yaml over base's 0.1
    digits = resolve_config(model=CNN, data="digits")
    assert config_layers(CNN, "digits")[-1].name == "digits.yaml"
    assert digits.model.drop_path == 0.0 and digits.aug.mixup == 0.0 and digits.sched.epochs == 10
    assert digits.aug.hflip == 0.0 and digits.sched.warmup_epochs == 1
    user = tmp_path / "mine.yaml"
    user.write_text("sched:\n  epochs: 7\noptim:\n  lr: 1e-3\n")  # YAML reads 1e-3 as a string
    cfg = resolve_config(user, model=CNN, data="digits")
    assert cfg.sched.epochs == 7 and cfg.optim.lr == pytest.approx(1e-3)
    cfg = resolve_config(user, model=CNN, data="digits", sched__epochs=5)
    assert cfg.sched.epochs == 5
    cfg = resolve_config(user, model=CNN, data="digits", overrides=["sched.epochs=3"], sched__epochs=5)
    assert cfg.sched.epochs == 3


def test_model_named_in_the_user_file(tmp_path: Path):
    user = tmp_path / "r.yaml"
    user.write_text(f"model:\n  name: {CNN}\ndata:\n  path: digits\n")
    cfg = resolve_config(user)
    assert cfg.model.name == CNN and cfg.sched.epochs == 10  # digits overlay applied from the file's data.path
    focal = resolve_config(config_dir() / "models" / "ez_focalnet_small_srf.yaml")  # the file names its model
    assert focal.model.name == "ez_focalnet_small_srf" and focal.model.drop_path == 0.3


def test_unknown_key_names_key_and_file(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"optim\.lrr.*bad\.yaml.*did you mean optim\.lr"):
        resolve_config(bad, model=CNN)
    bad.write_text("optimizer:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"'optimizer'.*bad\.yaml.*optim"):
        resolve_config(bad, model=CNN)
    with pytest.raises(ConfigError, match=r"sched\.epoch'.*--set sched\.epoch=3"):
        resolve_config(model=CNN, overrides=["sched.epoch=3"])


def test_wrong_types_are_rejected(tmp_path: Path):
    bad = tmp_path / "t.yaml"
    for text, key in [("optim:\n  lr: fast\n", "optim.lr"), ("sched:\n  epochs: 2.5\n", "sched.epochs"),
                      ("ema:\n  enable: 1\n", "ema.enable"), ("aug:\n  scale: 0.5\n", "aug.scale"),
                      ("run:\n  amp: fp8\n", "run.amp")]:
        bad.write_text(text)
        with pytest.raises(ConfigError, match=rf"{key.replace('.', '[.]')} in .*t\.yaml"):
            resolve_config(bad, model=CNN)
    with pytest.raises(ConfigError, match=r"data\.batch_size must be >= 1"):
        resolve_config(model=CNN, overrides=["data.batch_size=0"])


def test_override_parsing():
    assert parse_override("optim.lr=1e-3") == {"optim": {"lr": "1e-3"}}  # coerced to float by the schema
    assert parse_override("aug.scale=[0.5, 1.0]") == {"aug": {"scale": [0.5, 1.0]}}
    assert parse_override("distill.teacher=null") == {"distill": {"teacher": None}}
    for bad in ("optim.lr", "lr=1", "a.b.c=1"):
        with pytest.raises(ConfigError, match=r"section\.key=value"):
            parse_override(bad)


def test_unknown_model():
    with pytest.raises(UnknownModelError, match="did you mean"):
        resolve_config(model="ez_resnet18_ecca")
    with pytest.raises(ConfigError, match="no model given"):
        resolve_config()
