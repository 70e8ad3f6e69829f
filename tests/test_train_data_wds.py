"""WebDataset shards through timm's reader (``--data wds/DIR``), made from digits inside the test."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch

from edgezoo.data.datasets import source_of
from edgezoo.train import resolve_config, run, validate_checkpoint
from edgezoo.train.config import config_dir
from tests.train_helpers import TINY, Stop, load_last, rows, stop_after_mid_epoch_save, without_time

pytest.importorskip("webdataset")


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def write_digits_shards(root: Path, img_size: int = 32, train_shards: int = 4, limit: int | None = None) -> Path:
    """digits' stratified train/val split as WebDataset tar shards (``KEY.png`` + ``KEY.cls``) and _info.json.

    ``limit`` keeps the first images of each split only (a quicker stream for the resume test).
    """
    from PIL import Image

    from edgezoo.data.datasets import DigitsDataset

    root.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, shards in (("train", train_shards), ("val", 1)):
        ds = DigitsDataset(split, img_size)
        names, lengths = [], []
        count = min(len(ds), limit or len(ds))
        for shard in range(shards):
            part = range(shard, count, shards)
            name = f"digits-{split}-{shard:04d}.tar"
            with tarfile.open(root / name, "w") as tar:
                for i in part:
                    img, label = ds[i]
                    png = io.BytesIO()
                    Image.Image.save(img, png, format="PNG")
                    _add(tar, f"{split}{i:05d}.png", png.getvalue())
                    _add(tar, f"{split}{i:05d}.cls", str(label).encode())
            names.append(name)
            lengths.append(len(part))
        splits[split] = {"name": split, "num_samples": sum(lengths), "filenames": names, "shard_lengths": lengths}
    (root / "_info.json").write_text(json.dumps({"name": "digits", "classes": [str(c) for c in range(10)],
                                                 "splits": splits}))
    return root


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_digits_shards(tmp_path_factory.mktemp("wds") / "digits-wds")


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """256 train images in 3 shards (8 steps of 32), 64 val images, 16 px."""
    return write_digits_shards(tmp_path_factory.mktemp("wds") / "digits-wds-small", 16, 3, limit=256)


def wds_cfg(shards: Path, out: Path, epochs: int, *sets: str):
    """The digits recipe (configs/digits.yaml as the user's file) on the shards."""
    return resolve_config(config_dir() / "digits.yaml", model=TINY, data=f"wds/{shards}", sched__epochs=epochs,
                          data__img_size=32, run__output=str(out),
                          overrides=["run.progress=false", "run.threads=1", *sets])


def test_source_prefixes():
    assert source_of("wds//data/in1k") == ("wds", "/data/in1k")
    assert source_of("hfds/timm/mini-imagenet") == ("hfds", "timm/mini-imagenet")
    assert source_of("/data/imagenet") == ("folder", "/data/imagenet") and source_of("digits") == ("digits", "")


def test_wds_mid_epoch_resume_replays_the_stream_exactly(small_shards: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch):
    """A stream has no index to seek to: the resumed run re-reads the consumed batches and drops them."""
    shards = small_shards
    run(wds_cfg(shards, tmp_path / "a", 2, "data.img_size=16"))
    stop_after_mid_epoch_save(monkeypatch)  # a run killed right after its first mid-epoch checkpoint
    with pytest.raises(Stop):
        run(wds_cfg(shards, tmp_path / "b", 2, "data.img_size=16", "run.save_every_steps=11"))
    monkeypatch.undo()
    state = load_last(tmp_path / "b")
    assert (state["epoch"], state["position"]["step"]) == (1, 3)  # 11 updates: epoch 1 (8 steps) + 3
    res = run(wds_cfg(shards, tmp_path / "b", 2, "data.img_size=16"), resume=True)
    assert without_time(rows(tmp_path / "b")) == without_time(rows(tmp_path / "a"))
    weights, expected = load_last(tmp_path / "b")["model"], load_last(tmp_path / "a")["model"]
    assert all(torch.equal(weights[k], expected[k]) for k in expected)
    assert len(rows(tmp_path / "b")) == 2 and res["val_top1"] > 10.0


@pytest.mark.slow
def test_wds_digits_shards_train_above_90(shards: Path, tmp_path: Path):
    res = run(wds_cfg(shards, tmp_path / "run", 3))
    ckpt = load_last(tmp_path / "run")
    assert ckpt["classes"] == [str(c) for c in range(10)]
    assert ckpt["num_updates"] == 3 * 45  # timm pads a stream to whole batches: 1440 samples, 45 steps
    print(f"\nwds digits shards: val top-1 {res['val_top1']:.2f} (EMA {res['ema_val_top1']:.2f}), "
          f"{res['epoch_time']:.1f}s/epoch")
    assert max(res["val_top1"], res["ema_val_top1"]) > 90.0
    assert [r["epoch"] for r in rows(tmp_path / "run")] == [1, 2, 3]
    val = validate_checkpoint(TINY, tmp_path / "run" / "best.pth", f"wds/{shards}", output=tmp_path)
    assert val["count"] == 360 and val["top1"] > 80.0  # its eval crop (the model's 0.875) differs from training's
