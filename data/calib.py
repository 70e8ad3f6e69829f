"""Calibration and held-out images for INT8 export, pushed through the model's own eval transform.

``digits`` is scikit-learn's bundled handwritten digits (the training split calibrates, the
validation split is held out); a folder is searched recursively for images, shuffled with a
fixed seed, and split into the first ``n`` for calibration and up to ``held_out`` more for
measuring agreement with fp32. The transform is timm's eval transform with the model's input
size, interpolation, crop and mean/std, as ``edgezoo validate`` uses.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from edgezoo.errors import InvalidArgumentError

__all__ = ["CalibrationSet", "load_calibration"]

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass
class CalibrationSet:
    """``calib`` (N, C, H, W) calibrates; ``held_out`` (M, C, H, W) measures agreement; ``source`` names them."""

    calib: torch.Tensor
    held_out: torch.Tensor
    source: str

    def batches(self, batch: int) -> list[torch.Tensor]:
        """The calibration images in batches of ``batch`` (the last may be smaller)."""
        return list(self.calib.split(batch))


def _transform(source: Any, crop_pct: float | None = None) -> Any:
    from timm.data import create_transform

    _, h, w = source.input_size
    return create_transform(input_size=(3, h, w), is_training=False, interpolation=source.interpolation,
                            mean=source.mean, std=source.std, crop_pct=crop_pct or source.crop_pct)


def _stack(images: list[Any], transform: Any, chans: int) -> torch.Tensor:
    batch = torch.stack([transform(img.convert("RGB")) for img in images]) if images else torch.empty(0)
    if chans == 1 and batch.numel():
        batch = batch.mean(1, keepdim=True)
    return batch


def _digits(source: Any, n: int, held_out: int) -> CalibrationSet:
    from edgezoo.data.datasets import DigitsDataset

    _, h, _ = source.input_size
    transform = _transform(source, crop_pct=1.0)  # as configs/digits.yaml trains and validates
    train = DigitsDataset("train", h)
    val = DigitsDataset("val", h)
    order = list(range(len(train)))
    random.Random(0).shuffle(order)
    calib = [train[i][0] for i in order[:n]]
    held = [val[i][0] for i in range(min(held_out, len(val)))]
    chans = source.input_size[0]
    return CalibrationSet(_stack(calib, transform, chans), _stack(held, transform, chans),
                          f"digits ({len(calib)} train images calibrate, {len(held)} val images held out)")


def _folder(source: Any, root: Path, n: int, held_out: int) -> CalibrationSet:
    from PIL import Image

    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise InvalidArgumentError(f"no images under {root} (looked for {', '.join(_IMAGE_SUFFIXES)}): pass "
                                   f"--calib digits or a folder of images")
    random.Random(0).shuffle(files)
    transform = _transform(source)
    calib, held = files[:n], files[n:n + held_out]
    chans = source.input_size[0]
    load = lambda paths: [Image.open(p) for p in paths]  # noqa: E731
    return CalibrationSet(_stack(load(calib), transform, chans), _stack(load(held), transform, chans),
                          f"{root} ({len(calib)} images calibrate, {len(held)} held out)")


def load_calibration(spec: str, source: Any, n: int = 64, held_out: int = 512) -> CalibrationSet:
    """Calibration images for ``source`` (an :class:`edgezoo.export.source.Source`) from ``spec``.

    ``spec`` is ``"digits"`` or a folder of images (searched recursively).
    """
    if n < 1:
        raise InvalidArgumentError(f"calib_size must be at least 1, got {n}")
    if spec == "digits":
        return _digits(source, n, held_out)
    root = Path(spec).expanduser()
    if not root.is_dir():
        raise InvalidArgumentError(f"calibration data {spec!r} is neither 'digits' nor a folder of images")
    return _folder(source, root, n, held_out)
