"""The training recipe: typed sections, YAML layers and command-line overrides.

A recipe resolves in layers, each a YAML file validated against the dataclasses below (an
unknown key or a wrongly typed value is a :class:`~edgezoo.errors.ConfigError` naming the key
and the file it came from)::

    configs/base.yaml                  the shared ImageNet recipe
    configs/<family>.yaml              the family paper's differences
    configs/models/<model>.yaml        optional, one model's differences
    configs/digits.yaml                only with ``--data digits``: small-data settings
    CONFIG                             the user's file, if given
    --epochs/--img-size/... flags      the CLI's shortcuts
    --set key=value ...                any key, last

A model that is not an edgezoo model (any timm name) gets base (and the overlays) only.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgezoo.errors import ConfigError

__all__ = [
    "AugCfg",
    "DataCfg",
    "DistillCfg",
    "EmaCfg",
    "ModelCfg",
    "OptimCfg",
    "RunCfg",
    "SchedCfg",
    "TrainConfig",
    "config_dir",
    "config_layers",
    "load_config",
    "resolve_config",
]


@dataclass
class ModelCfg:
    """Which network to train and how to initialise it."""

    name: str = ""
    pretrained: bool = False  # timm/edgezoo pretrained weights (classifier re-initialised if classes differ)
    checkpoint: str | None = None  # initial weights to fine-tune from (non-strict: a new classifier is fine)
    drop_path: float | None = None  # stochastic depth rate; None = the model's default
    drop_rate: float | None = None  # dropout before the classifier; None = the model's default
    # The input side a size-dependent model is built for (EfficientViT-M's attention windows are
    # min(7, each stage's feature size at it)): an int, "data" (= data.img_size), or None (the model's
    # default, 224, as timm and the papers' code build it). Models without one ignore it.
    img_size: int | str | None = None


@dataclass
class DataCfg:
    """Dataset and loader.

    ``path`` is ``digits``, an ImageFolder root holding train/ and val/, ``wds/DIR`` (WebDataset
    shards with an ``_info.json``), or ``hfds/NAME`` / ``hfids/NAME`` (a Hugging Face dataset,
    map-style / streaming); the last three go through timm's ``create_dataset``.
    """

    path: str = ""
    root: str | None = None  # hfds/hfids: the datasets cache folder (None = the datasets default)
    num_classes: int | None = None  # streams only, when _info.json names no classes
    img_size: int | None = None  # None = the model's pretrained_cfg input size
    batch_size: int = 128  # per process
    workers: int = 4
    crop_pct: float | None = None  # eval resize = img_size / crop_pct; None = the model's
    interpolation: str | None = None  # None = the model's
    mean: list[float] | None = None  # None = the model's
    std: list[float] | None = None
    train_split: str = "train"
    val_split: str = "val"
    val_fraction: float = 0.2  # digits only: stratified held-out share


@dataclass
class AugCfg:
    """Augmentation and label-side regularisation (timm's create_transform, Mixup, RandomErasing)."""

    auto_augment: str | None = "rand-m9-mstd0.5-inc1"
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])
    hflip: float = 0.5
    color_jitter: float = 0.4
    reprob: float = 0.25
    remode: str = "pixel"
    recount: int = 1
    mixup: float = 0.8
    cutmix: float = 1.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: str = "batch"
    smoothing: float = 0.1


@dataclass
class OptimCfg:
    """Optimizer (timm's create_optimizer_v2). ``lr`` None = lr_base * global batch / lr_base_size."""

    opt: str = "adamw"
    lr: float | None = None
    lr_base: float = 1e-3
    lr_base_size: int = 1024
    weight_decay: float = 0.05
    momentum: float = 0.9
    betas: list[float] | None = None
    eps: float | None = None
    layer_decay: float | None = None
    clip_grad: float | None = None
    clip_mode: str = "norm"
    accum_steps: int = 1


@dataclass
class SchedCfg:
    """Learning-rate schedule (timm's create_scheduler_v2, stepped every optimizer update)."""

    name: str = "cosine"
    epochs: int = 300
    warmup_epochs: int = 5
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    cooldown_epochs: int = 0


@dataclass
class EmaCfg:
    """Exponential moving average of the weights (timm's ModelEmaV3)."""

    enable: bool = True
    decay: float = 0.9998
    warmup: bool = False  # ramp the decay up from 0 (for short runs)


@dataclass
class DistillCfg:
    """DeiT-style logit distillation from a timm or edgezoo teacher."""

    kind: str = "none"  # none | soft | hard
    teacher: str | None = None
    teacher_pretrained: bool = True
    teacher_checkpoint: str | None = None
    alpha: float = 0.5  # weight of the distillation term
    tau: float = 1.0  # soft-distillation temperature


@dataclass
class RunCfg:
    """Engine settings: where outputs go, precision, memory format, seed."""

    output: str = ""  # "" = runs/<model>-<data>
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "none"  # none | bf16 | fp16
    channels_last: bool = False
    compile: bool = False
    seed: int = 42
    save_every: float = 0.0  # minutes between mid-epoch checkpoints (last.pth); 0 = at epoch ends only
    save_every_steps: int = 0  # also every N optimizer updates (deterministic; for tests and slow steps)
    threads: int = 0  # CPU threads per process; 0 = torch's default (under torchrun: OMP_NUM_THREADS)
    stop_at_top1: float = 0.0  # end the run after the epoch whose val top-1 (weights or EMA) reaches this; 0 = off
    progress: bool = True


@dataclass
class TrainConfig:
    """A complete training recipe."""

    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=DataCfg)
    aug: AugCfg = field(default_factory=AugCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    sched: SchedCfg = field(default_factory=SchedCfg)
    ema: EmaCfg = field(default_factory=EmaCfg)
    distill: DistillCfg = field(default_factory=DistillCfg)
    run: RunCfg = field(default_factory=RunCfg)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


#: Allowed values of the string fields that name a choice.
CHOICES: dict[str, tuple[str, ...]] = {
    "distill.kind": ("none", "soft", "hard"),
    "run.amp": ("none", "bf16", "fp16"),
    "run.device": ("auto", "cpu", "cuda"),
    "optim.clip_mode": ("norm", "value", "agc"),
    "aug.mixup_mode": ("batch", "pair", "elem"),
    "aug.remode": ("const", "rand", "pixel"),
}


# ---------------------------------------------------------------------------------------------
# Validation of one layer
# ---------------------------------------------------------------------------------------------


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints widen to float, '1e-3' strings parse."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key, source)
            except ConfigError:
                continue
        raise _type_error(value, tp, key, source)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise _type_error(value, tp, key, source)
        return [_coerce(v, item, key, source) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str and isinstance(value, str):
        return value
    raise _type_error(value, tp, key, source)


def _type_error(value: Any, tp: Any, key: str, source: str) -> ConfigError:
    return ConfigError(f"{key} in {source} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _apply(tree: dict[str, Any], layer: Any, source: str) -> None:
    """Validate ``layer`` (a parsed YAML mapping) against the schema and merge it into ``tree``."""
    if layer is None:
        return
    if not isinstance(layer, dict):
        raise ConfigError(f"{source} must hold a mapping of sections (model:, data:, optim:, ...), "
                          f"got {type(layer).__name__}")
    sections = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    for section, values in layer.items():
        if section not in sections:
            raise _unknown(str(section), list(sections), source)
        if values is None:
            continue
        cls = _hints(TrainConfig)[section]
        if not isinstance(values, dict):
            raise ConfigError(f"{section} in {source} must be a mapping of keys, got {values!r}")
        hints = _hints(cls)
        for key, value in values.items():
            full = f"{section}.{key}"
            if key not in hints:
                raise _unknown(full, [f"{section}.{k}" for k in hints], source)
            value = _coerce(value, hints[key], full, source)
            if full in CHOICES and value not in CHOICES[full]:
                raise ConfigError(f"{full} in {source} must be one of {', '.join(CHOICES[full])}, got {value!r}")
            tree[section][key] = value


def _unknown(key: str, known: list[str], source: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]}?" if close else f"; known keys: {', '.join(known)}"
    return ConfigError(f"unknown config key {key!r} in {source}{hint}")


# ---------------------------------------------------------------------------------------------
# Files and overrides
# ---------------------------------------------------------------------------------------------


def config_dir() -> Path:
    """The folder holding base.yaml, the family files, digits.yaml and models/."""
    here = Path(__file__).resolve().parent.parent / "configs"
    if (here / "base.yaml").is_file():
        return here
    try:  # a non-editable install ships configs/ as the package data edgezoo.configs
        from importlib.resources import files

        return Path(str(files("edgezoo.configs")))
    except ModuleNotFoundError as err:
        raise ConfigError("edgezoo's configs/ folder is missing from this install; reinstall edgezoo") from err


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise ConfigError(f"cannot parse {path}{where}: {problem}") from err


def parse_override(item: str) -> dict[str, Any]:
    """``"optim.lr=1e-3"`` -> ``{"optim": {"lr": 0.001}}`` (the value parsed as YAML)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or key.count(".") != 1 or not all(key.split(".")):
        raise ConfigError(f"--set expects section.key=value (e.g. optim.lr=1e-3), got {item!r}")
    section, name = key.split(".")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return {section: {name: value}}


def config_layers(model: str, data_path: str = "") -> list[Path]:
    """The recipe files that apply to ``model`` (base, family, model file, digits overlay)."""
    from edgezoo import get_spec, list_models

    root = config_dir()
    layers = [root / "base.yaml"]
    if model in list_models() or f"ez_{model}" in list_models():
        spec = get_spec(model)
        layers.append(root / f"{spec.family}.yaml")
        model_file = root / "models" / f"{spec.name}.yaml"
        if model_file.is_file():
            layers.append(model_file)
    if data_path == "digits":
        layers.append(root / "digits.yaml")
    return layers


def _check_model(name: str) -> str:
    """The canonical model name: an edgezoo model, or any timm model."""
    import timm

    import edgezoo
    from edgezoo.registry import resolve_name

    if not name:
        raise ConfigError("no model given: pass --model NAME (see `edgezoo list`) or set model.name in the config")
    if name in edgezoo.list_models() or f"ez_{name}" in edgezoo.list_models() or not timm.is_model(name):
        return resolve_name(name)  # raises UnknownModelError with suggestions
    return name


def resolve_config(
    config: str | Path | None = None,
    model: str | None = None,
    data: str | None = None,
    overrides: typing.Sequence[str] = (),
    **flags: Any,
) -> TrainConfig:
    """Resolve the full recipe (see the module docstring for the order of layers).

    ``flags`` are CLI shortcuts given as ``section.key`` -> value with ``.`` written ``__``,
    e.g. ``sched__epochs=10``; ``None`` values are ignored.
    """
    user = _read_yaml(Path(config)) if config is not None else None
    user_src = str(config)
    # Validate the user's layers first so that their errors win over missing-model errors.
    scratch = asdict(TrainConfig())
    _apply(scratch, user, user_src)
    sets = [(parse_override(item), f"--set {item}") for item in overrides]
    for layer, src in sets:
        _apply(scratch, layer, src)
    name = model or scratch["model"]["name"]
    if not name and config is not None and Path(config).parent.name == "models":
        name = Path(config).stem  # configs/models/<model>.yaml names its model
    name = _check_model(name)
    data_path = data if data is not None else scratch["data"]["path"]

    tree = asdict(TrainConfig())
    for path in config_layers(name, data_path):
        _apply(tree, _read_yaml(path), str(path))
    _apply(tree, user, user_src)
    cli: dict[str, dict[str, Any]] = {"model": {"name": name}}
    if data is not None:
        cli["data"] = {"path": data}
    for key, value in flags.items():
        if value is not None:
            section, name_ = key.split("__")
            cli.setdefault(section, {})[name_] = value
    _apply(tree, cli, "the command line")
    for layer, src in sets:
        _apply(tree, layer, src)
    tree["model"]["name"] = name
    return _build(tree)


def load_config(path: str | Path) -> TrainConfig:
    """Resolve the recipe for the model a config file names (no CLI flags)."""
    return resolve_config(config=path)


def _build(tree: dict[str, Any]) -> TrainConfig:
    hints = _hints(TrainConfig)
    cfg = TrainConfig(**{section: hints[section](**values) for section, values in tree.items()})
    _check_values(cfg)
    return cfg


def _check_values(cfg: TrainConfig) -> None:
    """Range checks that the types alone cannot express."""
    checks = [
        (cfg.data.batch_size >= 1, "data.batch_size must be >= 1"),
        (cfg.data.workers >= 0, "data.workers must be >= 0"),
        (cfg.run.threads >= 0, "run.threads must be >= 0"),
        (0 <= cfg.run.stop_at_top1 <= 100, "run.stop_at_top1 must be a top-1 in percent, 0-100 (0 = off)"),
        (cfg.run.save_every >= 0, "run.save_every must be >= 0 minutes (0 = only at epoch ends)"),
        (cfg.run.save_every_steps >= 0, "run.save_every_steps must be >= 0 (0 = off)"),
        (cfg.data.num_classes is None or cfg.data.num_classes >= 1, "data.num_classes must be >= 1"),
        (cfg.data.img_size is None or cfg.data.img_size >= 8, "data.img_size must be >= 8"),
        (cfg.model.img_size in (None, "data") or (isinstance(cfg.model.img_size, int) and cfg.model.img_size >= 8),
         f"model.img_size must be a size >= 8, 'data' (the data's img_size) or null, got {cfg.model.img_size!r}"),
        (0.0 < cfg.data.val_fraction < 1.0, "data.val_fraction must be in (0, 1)"),
        (cfg.sched.epochs >= 1, "sched.epochs must be >= 1"),
        (cfg.sched.warmup_epochs >= 0, "sched.warmup_epochs must be >= 0"),
        (cfg.optim.accum_steps >= 1, "optim.accum_steps must be >= 1"),
        (cfg.optim.lr is None or cfg.optim.lr > 0, "optim.lr must be > 0"),
        (0.0 <= cfg.ema.decay < 1.0, "ema.decay must be in [0, 1)"),
        (0.0 <= cfg.distill.alpha <= 1.0, "distill.alpha must be in [0, 1]"),
        (cfg.distill.kind == "none" or bool(cfg.distill.teacher),
         "distill.kind is set but distill.teacher is empty: name a timm/edgezoo teacher or set distill.kind=none"),
        (len(cfg.aug.scale) == 2 and len(cfg.aug.ratio) == 2, "aug.scale and aug.ratio take two numbers"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
