"""SIGTERM handling and the mid-epoch checkpoint clock.

Schedulers (SLURM, Kubernetes, spot instances) send SIGTERM some seconds before they kill a job.
:class:`Preemption` turns it into a flag that the training loop reads after its next optimizer
update: it writes ``last.pth`` there and returns, so the process exits cleanly and the same
command with ``--resume`` continues exactly.
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType
from typing import Any

__all__ = ["Preemption"]


class Preemption:
    """A context manager holding the SIGTERM flag and the ``run.save_every`` clock (minutes)."""

    def __init__(self, save_every_min: float = 0.0) -> None:
        self.requested = False
        self.period = save_every_min * 60.0
        self.last_save = time.monotonic()
        self._previous: Any = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():  # signals only reach the main thread
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def save_due(self) -> bool:
        """Whether ``run.save_every`` minutes have passed since the last checkpoint."""
        return self.period > 0 and time.monotonic() - self.last_save >= self.period

    def saved(self) -> None:
        self.last_save = time.monotonic()
