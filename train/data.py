"""Datasets and loaders: an ImageFolder root (timm's reader) or the built-in ``digits``.

``digits`` is scikit-learn's bundled ``load_digits`` (1,797 8x8 grey images of 10 classes),
split deterministically and stratified into train/val, and upsampled to the input size, so a
training run needs nothing downloaded. Both kinds go through timm's ``create_transform``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from edgezoo.errors import ConfigError

__all__ = ["DataBundle", "DigitsDataset", "ShardSampler", "build_data", "build_dataset", "resolve_data_cfg"]


class DigitsDataset(Dataset):
    """scikit-learn's handwritten digits as RGB PIL images of ``img_size`` (stratified split)."""

    def __init__(self, split: str, img_size: int, val_fraction: float = 0.2, transform: Any = None) -> None:
        from edgezoo.errors import require

        require("sklearn", "train")
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        index = list(range(len(digits.target)))
        train_idx, val_idx = train_test_split(
            index, test_size=val_fraction, stratify=digits.target, random_state=0, shuffle=True
        )
        keep = sorted(train_idx if split == "train" else val_idx)
        images = torch.as_tensor(digits.images[keep] * (255.0 / 16.0)).round().to(torch.uint8)
        self.images = images  # (N, 8, 8) uint8
        self.targets = [int(t) for t in digits.target[keep]]
        self.classes = [str(c) for c in range(10)]
        self.img_size = img_size
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        from PIL import Image

        img = Image.fromarray(self.images[i].numpy(), mode="L")
        img = img.resize((self.img_size, self.img_size), Image.BILINEAR).convert("RGB")
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[i]


class ShardSampler(Sampler[int]):
    """Every ``world``-th index from ``rank``, without padding: sharded evaluation stays exact."""

    def __init__(self, length: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, length, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _seed_worker(worker_id: int) -> None:
    """NumPy in a loader worker follows torch's per-worker seed (itself drawn from the main RNG)."""
    import numpy as np

    np.random.seed(torch.initial_seed() % 2**32)


@dataclass
class DataBundle:
    """What the engine needs from the data."""

    train: DataLoader | None
    val: DataLoader
    num_classes: int
    classes: list[str]
    img_size: int


def resolve_data_cfg(cfg: Any, model: torch.nn.Module) -> dict[str, Any]:
    """Input size, interpolation, mean/std and crop_pct: the config's, else the model's pretrained cfg."""
    pcfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.data.img_size or int(pcfg.get("input_size", (3, 224, 224))[-1])
    return {
        "img_size": size,
        "interpolation": cfg.data.interpolation or pcfg.get("interpolation", "bilinear"),
        "mean": tuple(cfg.data.mean or pcfg.get("mean", (0.485, 0.456, 0.406))),
        "std": tuple(cfg.data.std or pcfg.get("std", (0.229, 0.224, 0.225))),
        "crop_pct": cfg.data.crop_pct or pcfg.get("crop_pct", 0.875),
    }


def _posterize_zero_bits_safe() -> None:
    """Let timm's RandAugment posterize keep 0 bits again (a black image) under Pillow >= 11.

    timm's ``inc1`` policies map magnitude 10 (reached by ``m9-mstd0.5`` noise) to 0 bits, which
    newer Pillow rejects with ValueError mid-epoch; older Pillow returned a black image. Only the
    0-bit case changes; every other call goes to timm's op.
    """
    from PIL import Image, ImageOps
    from timm.data import auto_augment

    try:
        ImageOps.posterize(Image.new("RGB", (1, 1)), 0)
        return  # this Pillow accepts 0 bits
    except ValueError:
        pass
    original = auto_augment.posterize
    if getattr(original, "_edgezoo_zero_safe", False):
        return

    def posterize(img: Any, bits_to_keep: int, **kwargs: Any) -> Any:
        if bits_to_keep <= 0:
            return Image.new(img.mode, img.size)
        return original(img, bits_to_keep, **kwargs)

    posterize._edgezoo_zero_safe = True  # type: ignore[attr-defined]
    for name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
        if auto_augment.NAME_TO_OP.get(name) is original:
            auto_augment.NAME_TO_OP[name] = posterize
    auto_augment.posterize = posterize


def _transform(cfg: Any, dcfg: dict[str, Any], training: bool) -> Any:
    from timm.data import create_transform

    if training and cfg.aug.auto_augment:
        _posterize_zero_bits_safe()

    common = {"input_size": dcfg["img_size"], "interpolation": dcfg["interpolation"], "mean": dcfg["mean"],
              "std": dcfg["std"]}
    if not training:
        return create_transform(is_training=False, crop_pct=dcfg["crop_pct"], **common)
    aug = cfg.aug
    return create_transform(
        is_training=True, scale=tuple(aug.scale), ratio=tuple(aug.ratio), hflip=aug.hflip,
        color_jitter=aug.color_jitter, auto_augment=aug.auto_augment, re_prob=aug.reprob, re_mode=aug.remode,
        re_count=aug.recount, **common,
    )


def _check_folder(root: Path, split: str) -> Path:
    if not root.exists():
        raise ConfigError(f"dataset not found: {root} (pass --data digits, or an ImageFolder root with "
                          f"train/ and val/ class folders)")
    folder = root / split
    if not folder.is_dir():
        raise ConfigError(f"dataset {root} has no {split}/ folder: an ImageFolder root needs train/ and val/, "
                          f"each with one folder per class")
    return folder


def build_dataset(cfg: Any, split: str, dcfg: dict[str, Any], training: bool,
                  class_map: dict[str, int] | None = None) -> Dataset:
    """One split (``cfg.data.train_split`` or ``val_split``) with its timm transform."""
    transform = _transform(cfg, dcfg, training)
    if cfg.data.path == "digits":
        which = "train" if split == cfg.data.train_split else "val"
        return DigitsDataset(which, dcfg["img_size"], cfg.data.val_fraction, transform=transform)
    if not cfg.data.path:
        raise ConfigError("no dataset given: pass --data digits or --data PATH (an ImageFolder root)")
    from timm.data import create_dataset

    root = Path(cfg.data.path).expanduser()
    folder = _check_folder(root, split)
    ds = create_dataset("", root=str(folder), split=split, search_split=False, class_map=class_map or "",
                        is_training=training, transform=transform)
    if len(ds) == 0:
        raise ConfigError(f"no images found under {folder}: expected {folder}/<class>/<image>.jpg|png")
    return ds


def _classes(ds: Dataset) -> list[str]:
    if hasattr(ds, "classes"):
        return list(ds.classes)
    mapping = ds.reader.class_to_idx
    return [name for name, _ in sorted(mapping.items(), key=lambda kv: kv[1])]


def build_data(cfg: Any, dcfg: dict[str, Any], rank: int = 0, world: int = 1, train: bool = True) -> DataBundle:
    """Train (shuffled by a seeded DistributedSampler, also for one process) and val loaders."""
    # Check both folders before reading either, so a missing val/ is reported up front.
    if cfg.data.path not in ("", "digits"):
        root = Path(cfg.data.path).expanduser()
        if train:
            _check_folder(root, cfg.data.train_split)
        _check_folder(root, cfg.data.val_split)
    train_loader, class_map, classes = None, None, None
    if train:
        train_ds = build_dataset(cfg, cfg.data.train_split, dcfg, training=True)
        classes = _classes(train_ds)
        class_map = {c: i for i, c in enumerate(classes)}
        if len(train_ds) < cfg.data.batch_size * world:
            raise ConfigError(f"the training set has {len(train_ds)} images, fewer than one global batch "
                              f"({cfg.data.batch_size} x {world} processes): lower --batch-size")
        sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.run.seed)
        train_loader = DataLoader(train_ds, batch_size=cfg.data.batch_size, sampler=sampler, drop_last=True,
                                  num_workers=cfg.data.workers, pin_memory=torch.cuda.is_available(),
                                  worker_init_fn=_seed_worker)  # fresh workers each epoch: resumes stay exact
    val_ds = build_dataset(cfg, cfg.data.val_split, dcfg, training=False, class_map=class_map)
    classes = classes or _classes(val_ds)
    val_loader = DataLoader(val_ds, batch_size=cfg.data.batch_size, sampler=ShardSampler(len(val_ds), rank, world),
                            num_workers=cfg.data.workers, pin_memory=torch.cuda.is_available())
    return DataBundle(train=train_loader, val=val_loader, num_classes=len(classes), classes=classes,
                      img_size=dcfg["img_size"])
