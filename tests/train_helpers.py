"""Helpers shared by the training tests: the CLI command, metrics rows, checkpoint polling."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

TINY = "test_resnet"  # timm's tiny ResNet: the engine tests need a fast model, not an edgezoo one
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # pytest -n 2: one core per worker


def tiny(out: Path, epochs: int = 2, *sets: str):
    """The tiny recipe: timm's test_resnet on digits at 32 px, one thread, no progress bar."""
    from edgezoo.train import resolve_config

    return resolve_config(model=TINY, data="digits", sched__epochs=epochs, data__img_size=32, run__output=str(out),
                          overrides=["run.progress=false", "run.threads=1", *sets])


def edgezoo_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgezoo.cli", *args]


def torchrun_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def rows(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def without_time(records: list[dict]) -> list[dict]:
    """Metrics rows without the wall-clock field, which no two runs share."""
    return [{k: v for k, v in r.items() if k != "epoch_time"} for r in records]


def load_last(out: Path) -> dict[str, Any] | None:
    """OUTPUT/last.pth, or None while it does not exist."""
    try:
        return torch.load(out / "last.pth", map_location="cpu", weights_only=True)
    except FileNotFoundError:
        return None


def wait_for_checkpoint(out: Path, proc: subprocess.Popen, ok: Any, timeout: float = 300) -> dict[str, Any]:
    """Poll OUTPUT/last.pth until ``ok(state)``; fail if the process ends or time runs out first."""
    deadline, seen = time.time() + timeout, 0.0
    while time.time() < deadline and proc.poll() is None:
        path = out / "last.pth"
        mtime = path.stat().st_mtime if path.exists() else 0.0
        if mtime != seen:
            seen = mtime
            state = load_last(out)
            if state is not None and ok(state):
                return state
        time.sleep(0.05)
    raise AssertionError(f"no matching checkpoint in {out} (process exit code {proc.poll()})")


def pause_mid_epoch(out: Path, proc: subprocess.Popen, ok: Any = lambda s: True) -> dict[str, Any]:
    """Freeze ``proc`` (SIGSTOP) at a moment when OUTPUT/last.pth is a mid-epoch checkpoint matching ``ok``.

    A loaded machine may let the process run on after the checkpoint was seen; while it is stopped
    the file cannot change, so the state returned is the one a kill now would leave behind.
    """
    import signal

    while True:
        wait_for_checkpoint(out, proc, lambda s: s["position"] is not None and ok(s))
        proc.send_signal(signal.SIGSTOP)
        state = load_last(out)
        if state is not None and state["position"] is not None and ok(state):
            return state
        proc.send_signal(signal.SIGCONT)


class Stop(Exception):
    """Raised by :func:`stop_after_mid_epoch_save`: a run "killed" right after a checkpoint."""


def stop_after_mid_epoch_save(monkeypatch: Any) -> None:
    """Make the next mid-epoch checkpoint the last thing a run does (it then raises :class:`Stop`)."""
    from edgezoo.train.engine import Trainer

    save = Trainer._save_position

    def save_then_stop(self: Trainer, *args: Any) -> None:
        save(self, *args)
        raise Stop

    monkeypatch.setattr(Trainer, "_save_position", save_then_stop)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
