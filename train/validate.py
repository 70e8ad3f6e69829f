"""Evaluate a checkpoint on a dataset: top-1, top-5, loss, per-class accuracy, confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from edgezoo.train.config import TrainConfig

__all__ = ["validate_checkpoint"]


def validate_checkpoint(
    model: str,
    checkpoint: str | Path,
    data: str,
    img_size: int | None = None,
    batch_size: int = 64,
    workers: int = 0,
    use_ema: bool = False,
    output: str | Path | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Validate ``checkpoint`` (an edgezoo training checkpoint or any weights file) for ``model``.

    The number of classes and the input size come from an edgezoo checkpoint when it records
    them, else from the data and the model. Writes ``confusion.png`` to ``output`` (default:
    next to the checkpoint) and returns the metrics with ``per_class`` accuracies (%).
    """
    from edgezoo import load_checkpoint
    from edgezoo.data.datasets import build_data, resolve_data_cfg
    from edgezoo.errors import CheckpointError
    from edgezoo.train.config import _check_model
    from edgezoo.train.distributed import setup, teardown
    from edgezoo.train.engine import create_train_model, evaluate
    from edgezoo.train.report import plot_confusion

    ckpt = Path(checkpoint)
    if not ckpt.is_file():
        raise CheckpointError(f"checkpoint not found: {ckpt}")
    meta = _read_meta(ckpt)
    cfg = TrainConfig()
    cfg.model.name = _check_model(model)
    cfg.data.path, cfg.data.batch_size, cfg.data.workers = data, batch_size, workers
    cfg.data.img_size = img_size or meta.get("img_size")
    cfg.data.num_classes = meta.get("num_classes")  # a stream whose _info.json names no classes
    if data == "digits":
        cfg.data.crop_pct = 1.0  # as configs/digits.yaml trains
    ctx = setup(device)
    try:
        built = meta.get("model_kwargs", {})  # built as trained, whatever size it is validated at
        dcfg = resolve_data_cfg(cfg, create_train_model(cfg, meta=True, built=built))
        bundle = build_data(cfg, dcfg, ctx.rank, ctx.world, train=False)
        classes = meta.get("classes") or bundle.classes
        num_classes = int(meta.get("num_classes") or bundle.num_classes)
        if num_classes != bundle.num_classes:
            raise CheckpointError(f"{ckpt} predicts {num_classes} classes but {data} has {bundle.num_classes}")
        net = create_train_model(cfg, num_classes, built=built)
        load_checkpoint(net, ckpt, strict=True, use_ema=use_ema)
        net.to(ctx.device)
        result = evaluate(net, bundle.val, ctx, num_classes, confusion=True)
    finally:
        teardown(ctx)
    matrix = result.pop("confusion")
    totals = matrix.sum(dim=1).clamp_min(1)
    result["per_class"] = {c: 100.0 * matrix[i, i].item() / totals[i].item() for i, c in enumerate(classes)}
    out = Path(output) if output else ckpt.parent
    out.mkdir(parents=True, exist_ok=True)
    result["confusion_png"] = str(out / "confusion.png")
    which = " (EMA)" if use_ema else ""
    plot_confusion(out / "confusion.png", matrix, classes, title=f"{cfg.model.name}: {ckpt.name}{which} on {data}")
    result["confusion"] = matrix.tolist()
    return result


def _read_meta(path: Path) -> dict[str, Any]:
    """``num_classes``, ``classes``, ``img_size`` and ``model_kwargs`` recorded in an edgezoo training checkpoint."""
    if path.suffix == ".safetensors":
        return {}
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # load_checkpoint reports unreadable files with a clear message
        return {}
    if not isinstance(obj, dict):
        return {}
    return {k: obj[k] for k in ("num_classes", "classes", "img_size", "model_kwargs") if k in obj}
