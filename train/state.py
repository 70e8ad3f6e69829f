"""Training checkpoints that ``torch.load(weights_only=True)`` reads back, and exact resumes.

A checkpoint holds the model (and EMA) weights, optimizer, scheduler and grad-scaler states,
the completed epoch and update count, the metric history, the resolved config, and every
process's RNG states (Python, NumPy, torch CPU and CUDA) as tensors and plain types. Files are
written with :func:`edgezoo.save_atomic` (temp file + rename): a kill at any moment leaves the
previous complete file in place.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgezoo.errors import CheckpointError

__all__ = ["clean_stale_temp_files", "get_rng_state", "load_training_state", "save_training_state", "set_rng_state"]


def get_rng_state() -> dict[str, Any]:
    """This process's RNG states, as tensors and plain Python types only."""
    version, mt, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": str(np_kind), "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically (see :func:`edgezoo.save_atomic`)."""
    from edgezoo import save_atomic

    save_atomic(state, path)


def load_training_state(path: Path) -> dict[str, Any]:
    """Read a training checkpoint with ``weights_only=True``."""
    if not path.is_file():
        raise CheckpointError(f"--resume: no checkpoint at {path}; train without --resume first")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise CheckpointError(f"cannot read {path}: {type(err).__name__}: {str(err).splitlines()[0][:200]}") from err
    if not isinstance(state, dict) or "optimizer" not in state or "epoch" not in state:
        raise CheckpointError(f"{path} is not an edgezoo training checkpoint (no optimizer/epoch state)")
    return state


def clean_stale_temp_files(folder: Path) -> list[Path]:
    """Remove ``.<name>.*.tmp`` files a killed run left behind (never a finished checkpoint)."""
    stale = [p for p in folder.glob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
