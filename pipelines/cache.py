"""A worker's prepared models: the runner sends a model's stages to the worker that ran its last one, so the
checkpoint is loaded and fused once there and handed from stage to stage instead of being read again."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

__all__ = ["prepared"]


@functools.lru_cache(maxsize=2)
def _prepared(source: str, stamp: int, model: str | None, img_size: int | None, use_ema: bool) -> Any:
    from edgezoo.export import prepare

    return prepare(source, model=model, img_size=img_size, use_ema=use_ema)


def prepared(source: str | os.PathLike, model: str | None = None, img_size: int | None = None,
             use_ema: bool = False) -> Any:
    """:func:`edgezoo.export.prepare` of ``source`` (a checkpoint or a model name), kept for the next stage of the
    same model in this process; a checkpoint rewritten since (another modification time) is prepared again.
    The :class:`~edgezoo.export.source.Source` is shared: stages read it and do not change its model."""
    path = Path(source)
    stamp = path.stat().st_mtime_ns if path.is_file() else 0
    return _prepared(str(source), stamp, model, img_size, use_ema)
