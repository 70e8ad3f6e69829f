"""The training engine, in-process on tiny runs (timm's test_resnet on digits at 32 px).

Exact resume, the NaN stop, the engine options (mixup, bf16, channels_last, accumulation,
clipping, distillation), distillation maths and checkpoint validation.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgezoo.errors import ConfigError
from edgezoo.train import resolve_config, run, train_digits, validate_checkpoint
from edgezoo.train.engine import Trainer, TrainingDivergedError
from edgezoo.train.losses import DistillationLoss
from tests.train_helpers import TINY, tiny
from tests.train_helpers import rows as _rows

STEPS = 1437 // 32  # digits train images / batch 32 (drop_last)


class _Stop(Exception):
    pass


def test_resume_continues_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    straight = run(tiny(tmp_path / "a"))
    save = Trainer._save

    def save_then_stop(self, improved):  # a run killed right after its first checkpoint
        save(self, improved)
        raise _Stop

    monkeypatch.setattr(Trainer, "_save", save_then_stop)
    with pytest.raises(_Stop):
        run(tiny(tmp_path / "b"))
    monkeypatch.undo()
    ckpt = torch.load(tmp_path / "b" / "last.pth", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["num_updates"] == STEPS and "model_ema" in ckpt
    with pytest.raises(Exception, match="already holds a run"):
        run(tiny(tmp_path / "b"))
    resumed = run(tiny(tmp_path / "b"), resume=True)
    a, b = _rows(tmp_path / "a"), _rows(tmp_path / "b")
    assert [r["epoch"] for r in b] == [1, 2]
    for ra, rb in zip(a, b, strict=True):
        ra.pop("epoch_time"), rb.pop("epoch_time")
        assert ra == rb  # bit-identical: same batches, augmentations, dropout, EMA, schedule
    assert resumed["val_top1"] == straight["val_top1"]
    assert (tmp_path / "b" / "curves.png").stat().st_size > 0


def test_stop_at_top1_ends_the_run_once_reached_and_resume_respects_it(tmp_path: Path):
    """``run.stop_at_top1``: the run ends at the first epoch whose top-1 reaches it (1% is reached at once),
    ``--resume`` then calls it finished; resumed with the target off it trains its remaining epochs."""
    out = tmp_path / "t"
    res = run(tiny(out, 3, "run.stop_at_top1=1"))
    assert [r["epoch"] for r in _rows(out)] == [1] and res["best_top1"] >= 1.0 and res["best_epoch"] == 1
    assert torch.load(out / "last.pth", weights_only=True)["epoch"] == 1 and (out / "best.pth").is_file()
    again = run(tiny(out, 3, "run.stop_at_top1=1"), resume=True)
    assert again["finished"] and len(_rows(out)) == 1
    run(tiny(out, 3), resume=True)
    assert [r["epoch"] for r in _rows(out)] == [1, 2, 3]
    with pytest.raises(ConfigError, match=r"run\.stop_at_top1 must be a top-1 in percent"):
        tiny(tmp_path / "bad", 1, "run.stop_at_top1=150")


def test_nan_loss_stops_with_last_good_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import edgezoo.train.losses as losses

    build = losses.build_criterion
    calls = [0]

    class Poisoned(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, out, y):
            calls[0] += 1
            loss = self.inner(x, out, y)
            return loss * float("nan") if calls[0] > STEPS + 3 else loss

    monkeypatch.setattr(losses, "build_criterion", lambda *a, **k: Poisoned(build(*a, **k)))
    out = tmp_path / "nan"
    with pytest.raises(TrainingDivergedError, match=r"nan at epoch 2, step 4.*last\.pth \(epoch 1\) is intact"):
        run(tiny(out))
    ckpt = torch.load(out / "last.pth", weights_only=True)
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert len(_rows(out)) == 1 and not list(out.glob(".*.tmp"))


def test_engine_options(tmp_path: Path):
    """Mixup/CutMix, bf16 autocast, channels_last, accumulation, clipping and soft distillation together."""
    cfg = tiny(tmp_path / "o", 1, "aug.mixup=0.8", "aug.cutmix=1.0", "run.amp=bf16", "run.channels_last=true",
               "optim.accum_steps=2", "optim.clip_grad=1.0", "data.batch_size=16", "distill.kind=soft",
               f"distill.teacher={TINY}", "distill.teacher_pretrained=false", "ema.enable=false")
    res = run(cfg)
    assert math.isfinite(res["train_loss"]) and 0 <= res["val_top1"] <= 100 and "ema_val_top1" not in res
    ckpt = torch.load(tmp_path / "o" / "last.pth", weights_only=True)
    assert ckpt["num_updates"] == math.ceil((1437 // 16) / 2)
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(res["lr"])


def test_distillation_losses():
    torch.manual_seed(0)
    teacher = nn.Linear(6, 4).eval()
    x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
    s = torch.randn(8, 4)
    t = teacher(x).detach()
    hard = DistillationLoss(nn.CrossEntropyLoss(), teacher, "hard", alpha=0.5, tau=1.0)(x, s, y)
    expected = 0.5 * F.cross_entropy(s, y).item() + 0.5 * F.cross_entropy(s, t.argmax(1)).item()
    assert hard.item() == pytest.approx(expected)
    tau = 3.0
    soft = DistillationLoss(nn.CrossEntropyLoss(), teacher, "soft", alpha=0.7, tau=tau)(x, s, y)
    pt, ps = F.softmax(t / tau, 1), F.log_softmax(s / tau, 1)
    kl = (pt * (pt.log() - ps)).sum(1).mean() * tau * tau
    assert soft.item() == pytest.approx(0.3 * F.cross_entropy(s, y).item() + 0.7 * kl.item(), rel=1e-5)
    # a (class, distillation) head pair: base on the first, distillation on the second
    pair = DistillationLoss(nn.CrossEntropyLoss(), teacher, "hard", alpha=1.0, tau=1.0)(x, (s, t), y)
    assert pair.item() == pytest.approx(F.cross_entropy(t, t.argmax(1)).item())


def test_validate_matches_training_metrics(tmp_path: Path):
    out = tmp_path / "v"
    res = train_digits(TINY, epochs=1, img_size=32, output=str(out), run__progress=False, run__threads=1)
    assert res["epoch"] == 1 and res["output"] == str(out)
    plain = validate_checkpoint(TINY, out / "last.pth", "digits", output=tmp_path)
    ema = validate_checkpoint(TINY, out / "last.pth", "digits", use_ema=True, output=tmp_path)
    assert plain["count"] == 360
    assert plain["top1"] == pytest.approx(res["val_top1"]) and plain["loss"] == pytest.approx(res["val_loss"])
    assert ema["top1"] == pytest.approx(res["ema_val_top1"])
    per_class = torch.tensor(plain["confusion"]).diag().sum().item() / 360 * 100
    assert per_class == pytest.approx(plain["top1"]) and len(plain["per_class"]) == 10
    assert (tmp_path / "confusion.png").stat().st_size > 0
    # resume=True on a finished run returns its final metrics without training (without it: refused)
    again = train_digits(TINY, epochs=1, img_size=32, output=str(out), resume=True, run__progress=False,
                         run__threads=1)
    assert again.get("finished") and again["val_top1"] == pytest.approx(res["val_top1"])
    with pytest.raises(ConfigError, match="pass --resume"):
        train_digits(TINY, epochs=1, img_size=32, output=str(out), run__progress=False, run__threads=1)


def test_image_folder_dataset(tmp_path: Path):
    """An ImageFolder root (timm's folder reader): classes from train/, the same map for val/."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from edgezoo.errors import ConfigError

    digits = load_digits()
    root = tmp_path / "folder"
    for label, name in enumerate(("zero", "one", "two")):
        idx = [i for i, t in enumerate(digits.target) if t == label]
        for split, part in (("train", idx[:16]), ("val", idx[16:22])):
            (root / split / name).mkdir(parents=True)
            for i in part:
                Image.fromarray((digits.images[i] * 15).astype("uint8")).save(root / split / name / f"{i}.png")
    cfg = resolve_config(model=TINY, data=str(root), sched__epochs=1, data__img_size=32, data__batch_size=8,
                         run__output=str(tmp_path / "run"), overrides=["run.progress=false", "run.threads=1",
                                                                       "data.workers=0"])
    res = run(cfg)
    ckpt = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    assert ckpt["classes"] == ["one", "two", "zero"] and ckpt["num_classes"] == 3
    assert ckpt["num_updates"] == 48 // 8 and math.isfinite(res["val_loss"])
    val = validate_checkpoint(TINY, tmp_path / "run" / "last.pth", str(root), output=tmp_path)
    assert val["count"] == 18 and set(val["per_class"]) == {"zero", "one", "two"}
    import shutil

    shutil.rmtree(root / "val")
    with pytest.raises(ConfigError, match="has no val/ folder"):
        run(resolve_config(model=TINY, data=str(root), run__output=str(tmp_path / "run2")))
    assert not (tmp_path / "run2").exists()


def test_randaugment_posterize_at_full_magnitude():
    """timm's inc1 posterize keeps 0 bits at magnitude 10; the recipe must not crash on newer Pillow."""
    from PIL import Image
    from timm.data import auto_augment

    from edgezoo.data.datasets import _posterize_zero_bits_safe

    _posterize_zero_bits_safe()
    img = Image.new("RGB", (8, 8), (200, 120, 40))
    out = auto_augment.AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10)(img)
    assert out.getextrema() == ((0, 0), (0, 0), (0, 0))
    kept = auto_augment.AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=0)(img)  # 4 bits kept
    assert kept.getpixel((0, 0)) == (192, 112, 32)
