"""A Hugging Face dataset through timm's reader (``--data hfds/NAME``): a local parquet dataset of digits.

Runs where the ``hub`` extra (``datasets``) is installed; nothing is downloaded (a local folder is
a dataset name to ``datasets.load_dataset``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgezoo.train import run
from tests.train_helpers import Stop, load_last, rows, stop_after_mid_epoch_save, tiny, without_time

datasets = pytest.importorskip("datasets")


def write_digits_parquet(root: Path, count: int = 256, img_size: int = 16) -> Path:
    """``train.parquet`` / ``validation.parquet``: the first ``count`` / ``count // 4`` digits, ClassLabel targets."""
    from edgezoo.data.datasets import DigitsDataset

    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=[f"digit{c}" for c in range(10)])})
    root.mkdir(parents=True)
    for split, name, n in (("train", "train", count), ("val", "validation", count // 4)):
        ds = DigitsDataset(split, img_size)
        items = [ds[i] for i in range(n)]
        table = datasets.Dataset.from_dict({"image": [img for img, _ in items], "label": [y for _, y in items]},
                                           features=features)
        table.to_parquet(str(root / f"{name}.parquet"))
    return root


@pytest.mark.slow
def test_hfds_trains_and_resumes_mid_epoch_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    source = write_digits_parquet(tmp_path / "digits-hf")
    sets = ("data.img_size=16", "data.val_split=validation", f"data.root={tmp_path / 'cache'}")

    def cfg(out: Path, *more: str):
        c = tiny(out, 2, *sets, *more)
        c.data.path = f"hfds/{source}"
        return c

    run(cfg(tmp_path / "a"))
    ckpt = load_last(tmp_path / "a")
    assert ckpt["classes"] == [f"digit{c}" for c in range(10)] and ckpt["num_updates"] == 2 * (256 // 32)
    stop_after_mid_epoch_save(monkeypatch)  # a run killed right after its first mid-epoch checkpoint
    with pytest.raises(Stop):
        run(cfg(tmp_path / "b", "run.save_every_steps=5"))
    monkeypatch.undo()
    run(cfg(tmp_path / "b"), resume=True)
    assert without_time(rows(tmp_path / "b")) == without_time(rows(tmp_path / "a"))
    weights = load_last(tmp_path / "b")["model"]
    assert all(torch.equal(weights[k], v) for k, v in ckpt["model"].items())
