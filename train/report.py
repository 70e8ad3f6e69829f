"""Run records: ``metrics.jsonl`` (one line per epoch), curve and confusion-matrix PNGs (matplotlib, Agg)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["append_metrics", "plot_confusion", "plot_curves", "write_metrics"]


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    """Append one epoch's metrics as a JSON line (flushed and synced)."""
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def write_metrics(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Rewrite the whole file atomically (on resume: the checkpoint's history is the truth)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)


def _pyplot():
    from edgezoo.errors import require

    matplotlib = require("matplotlib", "train")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(path: Path, rows: Sequence[dict[str, Any]], title: str = "") -> None:
    """Loss, top-1 and learning-rate curves over epochs."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    axes[0].plot(epochs, [r["val_loss"] for r in rows], "o-", label="val")
    axes[1].plot(epochs, [r["val_top1"] for r in rows], "o-", label="top-1")
    axes[1].plot(epochs, [r["val_top5"] for r in rows], "o-", label="top-5")
    if rows and "ema_val_top1" in rows[0]:
        axes[0].plot(epochs, [r["ema_val_loss"] for r in rows], "o--", label="val (EMA)")
        axes[1].plot(epochs, [r["ema_val_top1"] for r in rows], "o--", label="top-1 (EMA)")
    axes[2].plot(epochs, [r["lr"] for r in rows], "o-")
    for ax, name in zip(axes, ("loss", "val accuracy (%)", "learning rate (end of epoch)"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_confusion(path: Path, matrix: Any, classes: Sequence[str], title: str = "") -> None:
    """Row-normalised confusion matrix (rows: true class, columns: predicted)."""
    plt = _pyplot()
    m = matrix.float()
    norm = m / m.sum(dim=1, keepdim=True).clamp_min(1)
    n = len(classes)
    size = min(4 + 0.35 * n, 30)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    if n <= 50:
        ax.set_xticks(range(n), labels=classes, rotation=90)
        ax.set_yticks(range(n), labels=classes)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if m[i, j] > 0:
                    ax.text(j, i, int(m[i, j]), ha="center", va="center",
                            color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _save(fig: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)
