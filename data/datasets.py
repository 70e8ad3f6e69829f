"""Datasets and loaders: an ImageFolder root, the built-in ``digits``, WebDataset shards, Hugging Face datasets.

``digits`` is scikit-learn's bundled ``load_digits`` (1,797 8x8 grey images of 10 classes),
split deterministically and stratified into train/val, and upsampled to the input size, so a
training run needs nothing downloaded. ``wds/DIR``, ``hfds/NAME`` and ``hfids/NAME`` go through
timm's ``create_dataset`` (sharded and streaming readers). Every kind uses timm's ``create_transform``.

Training data is resumable at any batch: a map-style dataset's order comes from a seeded
:class:`ResumableSampler` and each sample's augmentation from its own seed (:class:`SeededSamples`);
a stream's transform runs on a private per-epoch stream (:class:`StreamTransform`) and is replayed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, Sampler

from edgezoo.errors import ConfigError

__all__ = ["STREAM_SOURCES", "DataBundle", "DigitsDataset", "ResumableSampler", "SeededSamples", "ShardSampler",
           "StreamTransform", "build_data", "build_dataset", "resolve_data_cfg", "source_of"]


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


class ResumableSampler(DistributedSampler):
    """DistributedSampler's seeded shuffle and sharding (also for one process), able to start part-way.

    It yields ``(index, epoch)`` keys for :class:`SeededSamples`; :meth:`set_position` picks the
    epoch and how many of this process's samples to skip (those a resumed run already trained on).
    """

    def __init__(self, dataset: Dataset, rank: int, world: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
        self.skip = 0

    def set_position(self, epoch: int, skip: int = 0) -> None:
        self.set_epoch(epoch)
        self.skip = min(max(skip, 0), self.num_samples)

    def __iter__(self):
        for index in itertools.islice(super().__iter__(), self.skip, None):
            yield index, self.epoch

    def __len__(self) -> int:
        return self.num_samples - self.skip


class SeededSamples(Dataset):
    """A map-style dataset whose sample ``(index, epoch)`` draws its augmentation from its own seed.

    The same image gets the same augmentation in the same epoch whatever the number of loader
    workers or processes and wherever a run resumed; the caller's generators are left untouched.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        from edgezoo.rng import derive_seed, seeded

        index, epoch = key
        with seeded(derive_seed(self.seed, epoch, index)):
            return self.dataset[index]


class StreamTransform:
    """The transform of a streaming dataset, on a private random stream per (seed, epoch, rank, worker).

    Replaying a stream from the start of an epoch gives the same augmentations, so a resumed run
    can fast-forward through the batches it already trained on; the caller's generators are untouched.
    """

    def __init__(self, transform: Any, seed: int) -> None:
        self.transform, self.seed = transform, seed
        self.epoch, self.rank = 0, 0
        self._state: Any = None

    def start(self, epoch: int, rank: int) -> None:
        self.epoch, self.rank, self._state = epoch, rank, None

    def __call__(self, img: Any) -> Any:
        from torch.utils.data import get_worker_info

        from edgezoo.rng import derive_seed, isolated_rng, seeded_state

        if self._state is None:  # first sample of the epoch in this process (a loader worker or the main one)
            info = get_worker_info()
            self._state = seeded_state(derive_seed(self.seed, self.epoch, self.rank, info.id if info else 0))
        with isolated_rng(self._state) as box:
            out = self.transform(img)
        self._state = box[0]
        return out


def _seed_worker(worker_id: int) -> None:
    """NumPy in a loader worker follows torch's per-worker seed; SIGTERM is the main process's to handle.

    A scheduler's SIGTERM reaches the whole process group: the workers ignore it, so that the main
    process can finish its step and write a checkpoint (the workers exit with it).
    """
    import signal

    import numpy as np

    np.random.seed(torch.initial_seed() % 2**32)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@dataclass
class DataBundle:
    """What the engine needs from the data."""

    train: DataLoader | None
    val: DataLoader
    num_classes: int
    classes: list[str]
    img_size: int
    train_images: int = 0
    val_images: int = 0
    seed: int = 0
    rank: int = 0

    @property
    def steps_per_epoch(self) -> int:
        """Full batches per process in one epoch (the last partial batch is dropped)."""
        assert self.train is not None
        sampler = self.train.sampler
        if isinstance(sampler, ResumableSampler):
            return sampler.num_samples // self.train.batch_size
        return len(self.train.dataset) // self.train.batch_size

    def epoch_batches(self, epoch: int, skip: int = 0) -> tuple[int, Iterator[Any]]:
        """``(first step, batches)`` of ``epoch``, skipping this process's first ``skip`` samples.

        A map-style dataset starts its sampler part-way; a stream is replayed from the epoch's start
        and the skipped batches are read and dropped (same shards, shuffles and augmentations).
        """
        from edgezoo.rng import derive_seed

        loader = self.train
        assert loader is not None
        loader.generator.manual_seed(derive_seed(self.seed, epoch, self.rank))  # the workers' seeds
        steps = self.steps_per_epoch
        if isinstance(loader.sampler, ResumableSampler):
            loader.sampler.set_position(epoch, skip)
            return steps - len(loader), iter(loader)
        ds = loader.dataset
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(epoch)
        if isinstance(getattr(ds, "transform", None), StreamTransform):
            ds.transform.start(epoch, self.rank)
        reader = getattr(ds, "reader", None)
        if loader.num_workers == 0 and hasattr(reader, "ds") and hasattr(reader, "worker_seed"):
            reader.ds, reader.worker_seed = None, derive_seed(self.seed, epoch, self.rank) % 2**31  # fresh stream
        first = min(skip // loader.batch_size, steps)
        batches = iter(loader)
        for _ in range(first):
            next(batches)
        return first, batches


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


#: ``--data`` prefixes handed to timm's ``create_dataset`` (WebDataset shards, Hugging Face datasets).
STREAM_SOURCES = ("wds", "hfds", "hfids")


def source_of(path: str) -> tuple[str, str]:
    """``(kind, rest)`` of a ``--data`` value: digits, folder (an ImageFolder root), wds, hfds or hfids.

    ``wds/DIR`` is a folder of WebDataset shards (``DIR`` may be absolute: ``wds//data/in1k``),
    ``hfds/NAME`` and ``hfids/NAME`` a Hugging Face dataset (map-style / streaming).
    """
    if path == "digits":
        return "digits", ""
    prefix, sep, rest = path.partition("/")
    if sep and prefix.lower() in STREAM_SOURCES:
        if not rest:
            raise ConfigError(f"--data {path}: name the shard folder or dataset after the prefix, e.g. "
                              f"{prefix}/{'/data/imagenet-wds' if prefix.lower() == 'wds' else 'timm/mini-imagenet'}")
        return prefix.lower(), rest
    return "folder", path


def _check_folder(root: Path, split: str) -> Path:
    if not root.exists():
        raise ConfigError(f"dataset not found: {root} (pass --data digits, an ImageFolder root with "
                          f"train/ and val/ class folders, wds/SHARDS_DIR or hfds/NAME)")
    folder = root / split
    if not folder.is_dir():
        raise ConfigError(f"dataset {root} has no {split}/ folder: an ImageFolder root needs train/ and val/, "
                          f"each with one folder per class")
    return folder


def _timm_source(cfg: Any, kind: str, rest: str, split: str, training: bool, transform: Any,
                 class_map: dict[str, int] | None) -> Dataset:
    """A WebDataset or Hugging Face dataset through timm's ``create_dataset``."""
    from timm.data import create_dataset

    from edgezoo.errors import require

    if kind == "wds":
        require("webdataset", "train")
        root = Path(rest).expanduser()
        if not root.exists():
            raise ConfigError(f"WebDataset shard folder not found: {root} (--data wds/DIR)")
        name, where = "wds/", str(root)
    else:
        require("datasets", "hub")
        name, where = f"{kind}/{rest}", cfg.data.root
    if training and kind != "hfds":  # hfds is map-style: SeededSamples seeds it
        transform = StreamTransform(transform, cfg.run.seed)
    try:
        return create_dataset(name, root=where, split=split, is_training=training, batch_size=cfg.data.batch_size,
                              seed=cfg.run.seed, class_map=class_map or None, transform=transform)
    except (RuntimeError, KeyError, ValueError, FileNotFoundError) as err:
        hint = (" (a shard folder needs _info.json listing splits: name, num_samples, filenames, shard_lengths; "
                "or set data.train_split='train-{000..009}.tar|SAMPLES')") if kind == "wds" else ""
        raise ConfigError(f"--data {cfg.data.path}, split {split!r}: {err}{hint}") from err


def build_dataset(cfg: Any, split: str, dcfg: dict[str, Any], training: bool,
                  class_map: dict[str, int] | None = None) -> Dataset:
    """One split (``cfg.data.train_split`` or ``val_split``) with its timm transform."""
    transform = _transform(cfg, dcfg, training)
    if not cfg.data.path:
        raise ConfigError("no dataset given: pass --data digits or --data PATH (an ImageFolder root)")
    kind, rest = source_of(cfg.data.path)
    if kind == "digits":
        which = "train" if split == cfg.data.train_split else "val"
        return DigitsDataset(which, dcfg["img_size"], cfg.data.val_fraction, transform=transform)
    if kind != "folder":
        return _timm_source(cfg, kind, rest, split, training, transform, class_map)
    from timm.data import create_dataset

    root = Path(cfg.data.path).expanduser()
    folder = _check_folder(root, split)
    ds = create_dataset("", root=str(folder), split=split, search_split=False, class_map=class_map or "",
                        is_training=training, transform=transform)
    if len(ds) == 0:
        raise ConfigError(f"no images found under {folder}: expected {folder}/<class>/<image>.jpg|png")
    return ds


def _classes(ds: Dataset, cfg: Any) -> list[str]:
    """Class names: the dataset's, else (streams) the shard folder's _info.json or data.num_classes."""
    if hasattr(ds, "classes"):
        return list(ds.classes)
    reader = ds.reader
    if reader.class_to_idx:
        return [name for name, _ in sorted(reader.class_to_idx.items(), key=lambda kv: kv[1])]
    info = getattr(reader, "info", None) or {}
    if info.get("classes"):
        return [str(c) for c in info["classes"]]
    count = cfg.data.num_classes or info.get("num_classes")
    if not count:
        raise ConfigError(f"--data {cfg.data.path} does not say how many classes it has: set data.num_classes, "
                          f"or add \"num_classes\" (or a \"classes\" list) to its _info.json")
    return [str(c) for c in range(int(count))]


def _size(ds: Dataset) -> int:
    """Images in a split (for a stream: its declared sample count)."""
    reader = getattr(ds, "reader", None)
    return int(getattr(reader, "num_samples", 0) or 0) if isinstance(ds, IterableDataset) else len(ds)


def _loader(ds: Dataset, cfg: Any, training: bool, sampler: Sampler | None = None) -> DataLoader:
    if isinstance(ds, IterableDataset) and hasattr(ds, "set_loader_cfg"):
        ds.set_loader_cfg(num_workers=cfg.data.workers)  # timm's streams split shards over workers
    return DataLoader(ds, batch_size=cfg.data.batch_size, sampler=sampler, drop_last=training,
                      num_workers=cfg.data.workers, pin_memory=torch.cuda.is_available(),
                      worker_init_fn=_seed_worker, generator=torch.Generator())  # fresh workers each epoch


def build_data(cfg: Any, dcfg: dict[str, Any], rank: int = 0, world: int = 1, train: bool = True) -> DataBundle:
    """Train (shuffled by a seeded ResumableSampler, also for one process, or a stream) and val loaders."""
    kind, _ = source_of(cfg.data.path) if cfg.data.path else ("", "")
    # Check both folders before reading either, so a missing val/ is reported up front.
    if kind == "folder":
        root = Path(cfg.data.path).expanduser()
        if train:
            _check_folder(root, cfg.data.train_split)
        _check_folder(root, cfg.data.val_split)
    train_loader, class_map, classes, train_images = None, None, None, 0
    if train:
        train_ds = build_dataset(cfg, cfg.data.train_split, dcfg, training=True)
        classes = _classes(train_ds, cfg)
        class_map = {c: i for i, c in enumerate(classes)} if kind in ("folder", "digits") else None
        train_images = _size(train_ds)
        if train_images < cfg.data.batch_size * world:
            raise ConfigError(f"the training set has {train_images} images, fewer than one global batch "
                              f"({cfg.data.batch_size} x {world} processes): lower --batch-size")
        if isinstance(train_ds, IterableDataset):
            train_loader = _loader(train_ds, cfg, training=True)
        else:
            sampler = ResumableSampler(train_ds, rank, world, cfg.run.seed)
            train_loader = _loader(SeededSamples(train_ds, cfg.run.seed), cfg, True, sampler)
    val_ds = build_dataset(cfg, cfg.data.val_split, dcfg, training=False, class_map=class_map)
    classes = classes or _classes(val_ds, cfg)
    val_sampler = None if isinstance(val_ds, IterableDataset) else ShardSampler(len(val_ds), rank, world)
    val_loader = _loader(val_ds, cfg, training=False, sampler=val_sampler)
    return DataBundle(train=train_loader, val=val_loader, num_classes=len(classes), classes=classes,
                      img_size=dcfg["img_size"], train_images=train_images, val_images=_size(val_ds),
                      seed=cfg.run.seed, rank=rank)
