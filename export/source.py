"""What to export: a registered name, an ``nn.Module`` or a checkpoint, resolved to one :class:`Source`.

* a registered edgezoo (or timm) name builds the model with *randomised* weights (every parameter drawn,
  BatchNorm statistics taken from random images at the export size: :func:`edgezoo.weights.calibrate_bn_`),
  for structure and speed work. Not timm's fresh init: it zeroes some scales and biases, and converters
  fold those branches away, so a gate or a timing would see a smaller graph than a trained model's
  (timm's EfficientViT-M0 as initialised ran 0.58 ms in LiteRT against 2.17 ms randomised, 224 px);
* an ``nn.Module`` is taken as it is (its ``pretrained_cfg`` gives the input size and mean/std);
* a checkpoint path (``edgezoo train``'s ``last.pth``/``best.pth``, or any layout
  :func:`edgezoo.load_checkpoint` reads) builds the model it records (``arch``), with its number
  of classes, class names, input size and normalisation; other checkpoints need ``model=``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgezoo.errors import InvalidArgumentError

__all__ = ["Source", "resolve_source"]

_CKPT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")
#: Files edgezoo writes that are not checkpoints (named so the error says what to pass instead).
_ARTIFACT_SUFFIXES = (".onnx", ".pte", ".mlpackage", ".mlmodel", ".engine", ".tflite", ".json")


@dataclass
class Source:
    """A model ready to export and what the exporters need to know about it."""

    model: nn.Module
    name: str
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    crop_pct: float
    num_classes: int
    classes: list[str] | None
    origin: str  # "random weights" (randomised, see the module docstring), "nn.Module", or the checkpoint path
    trained: bool  # weights come from a checkpoint or the caller (not a fresh random init)


def _cfg(model: nn.Module) -> dict[str, Any]:
    return dict(getattr(model, "pretrained_cfg", None) or {})


def _from_model(model: nn.Module, name: str | None, img_size: int | None, origin: str, trained: bool,
                data: dict[str, Any] | None = None, classes: list[str] | None = None) -> Source:
    cfg, data = _cfg(model), data or {}
    c, h, w = tuple(cfg.get("input_size", (3, 224, 224)))
    if img_size:
        h = w = int(img_size)
    num_classes = int(getattr(model, "num_classes", 0) or cfg.get("num_classes") or 0)
    return Source(
        model=model,
        name=name or cfg.get("architecture") or type(model).__name__,
        input_size=(int(getattr(model, "in_chans", c) or c), int(h), int(w)),
        mean=tuple(data.get("mean") or cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(data.get("std") or cfg.get("std", (0.229, 0.224, 0.225))),
        interpolation=data.get("interpolation") or cfg.get("interpolation", "bilinear"),
        crop_pct=float(data.get("crop_pct") or cfg.get("crop_pct", 0.875)),
        num_classes=num_classes,
        classes=classes,
        origin=origin,
        trained=trained,
    )


def _looks_like_path(obj: Any) -> bool:
    if isinstance(obj, os.PathLike):
        return True
    return isinstance(obj, str) and (obj.endswith(_CKPT_SUFFIXES + _ARTIFACT_SUFFIXES) or os.sep in obj
                                     or Path(obj).exists())


def _read_training_meta(path: Path) -> dict[str, Any]:
    """``arch``, ``num_classes``, ``classes``, ``img_size`` and the data config an edgezoo checkpoint records."""
    from edgezoo.checkpoint import read_checkpoint

    if path.suffix == ".safetensors":
        read_checkpoint(path)  # a one-line error when it is not one; safetensors hold no training metadata
        return {}
    obj = read_checkpoint(path, mmap=True)
    if not isinstance(obj, dict):
        return {}
    meta = {k: obj[k] for k in ("arch", "num_classes", "classes", "img_size", "model_kwargs") if k in obj}
    config = obj.get("config")
    if isinstance(config, dict) and isinstance(config.get("data"), dict):
        meta["data"] = config["data"]
    return meta


def _from_checkpoint(path: Path, model_name: str | None, img_size: int | None, use_ema: bool) -> Source:
    from edgezoo import create_model, load_checkpoint
    from edgezoo.checkpoint import read_state_dict
    from edgezoo.paths import existing_file

    if not path.exists():
        existing_file(path, "checkpoint" if path.suffix in _CKPT_SUFFIXES else "file")
    if path.suffix in _ARTIFACT_SUFFIXES or path.is_dir():
        raise InvalidArgumentError(f"{path} is not a checkpoint: pass a model name or a checkpoint (.pth, "
                                   f".safetensors) to build the model from")
    existing_file(path, "checkpoint")
    meta = _read_training_meta(path)
    name = model_name or meta.get("arch")
    if not name:
        raise InvalidArgumentError(f"{path} does not record which model it holds: pass model=NAME (--model NAME)")
    kwargs: dict[str, Any] = dict(meta.get("model_kwargs") or {})  # built as it was trained (e.g. img_size)
    num_classes = meta.get("num_classes")
    if num_classes is None:  # a foreign checkpoint: take the class count from its classifier
        with torch.device("meta"):
            probe = create_model(name)
        head = probe.pretrained_cfg.get("classifier", "head")
        state = read_state_dict(path, use_ema=use_ema)
        weight = state.get(f"{head}.weight")
        num_classes = int(weight.shape[0]) if weight is not None else None
    if num_classes is not None:
        kwargs["num_classes"] = int(num_classes)
    model = create_model(name, **kwargs)
    load_checkpoint(model, path, strict=True, use_ema=use_ema)  # raises a one-line CheckpointError listing keys
    model.eval()
    which = f"{path} (EMA)" if use_ema else str(path)
    return _from_model(model, model.pretrained_cfg.get("architecture") or name, img_size or meta.get("img_size"),
                       which, True, meta.get("data"), meta.get("classes"))


def resolve_source(obj: str | os.PathLike | nn.Module, model: str | None = None, img_size: int | None = None,
                   use_ema: bool = False, classes: list[str] | None = None) -> Source:
    """Resolve what :func:`edgezoo.export.export` was given (see the module docstring)."""
    if img_size is not None and int(img_size) < 1:
        raise InvalidArgumentError(f"image size must be a whole number of pixels >= 1, got {img_size}")
    if isinstance(obj, nn.Module):
        return _from_model(obj, model, img_size, "nn.Module", True, classes=classes)
    if _looks_like_path(obj):
        src = _from_checkpoint(Path(obj).expanduser(), model, img_size, use_ema)
        src.classes = classes or src.classes
        return src
    if not isinstance(obj, str):
        raise InvalidArgumentError(f"cannot export a {type(obj).__name__}: pass a model name, an nn.Module or "
                                   f"a checkpoint path")
    import timm

    from edgezoo import create_model
    from edgezoo.errors import UnknownModelError
    from edgezoo.registry import resolve_name
    from edgezoo.weights import calibrate_bn_

    try:
        net = create_model(resolve_name(obj))
    except UnknownModelError:
        if not timm.is_model(obj):
            raise
        net = timm.create_model(obj)
    size = int(img_size or _cfg(net).get("input_size", (3, 224, 224))[-1])
    # statistics at the size the model will run: EfficientViT-M0 with them taken at 128 px drifted 1.3e-1 from
    # float64 at 224 px in fp32 (every exporter's gate refused it), 6e-7 with them taken at 224 px
    calibrate_bn_(net, size=size)
    return _from_model(net.eval(), None, img_size, "random weights", False, classes=classes)
