"""The latency protocol every runtime is timed with: warm-up, then timed runs until N runs or T seconds.

    stats = measure({"ez": run_ez, "timm": run_timm}, Protocol(runs=200, max_seconds=10))
    stats["ez"].p50_ms / stats["timm"].p50_ms       # a ratio from one run: stable on a shared machine

Several callables are *interleaved*: each round runs every one of them once, in an order that
alternates from round to round, so load from other processes on a shared CPU hits all of them
alike. With ``block=N`` each turn is one untimed call then N timed calls of the same callable:
for callables on *different* runtimes, whose thread pools and working sets must come back after
another runtime ran (the untimed call pays for that, and the N timed calls are the runtime's own
steady state); two files on one runtime interleave call by call (``block=1``).

Timing uses :func:`time.perf_counter_ns` around each call; the statistics are the median
(p50), the 90th and 99th percentiles (p90, p99, linear interpolation), the minimum, the mean and the
standard deviation (population) of the timed runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Protocol", "ProtocolError", "Stats", "measure", "summarise"]


class ProtocolError(ValueError):
    """A protocol setting out of range (standard library only: this module runs on targets without edgezoo;
    the CLI turns it into its one-line error)."""


@dataclass(frozen=True)
class Protocol:
    """How long to warm up and time.

    ``warmup`` untimed calls of each callable first; then rounds until every callable has
    ``runs`` timed calls or ``max_seconds`` of timed rounds have passed, whichever comes first
    (at least ``min_runs`` calls each, so a slow model still gets statistics). A round gives each
    callable a turn of ``block`` timed calls, after one untimed call when ``block`` > 1.
    ``repeat`` is for :func:`edgezoo.bench.bench`: it runs its whole plan that many times
    (:mod:`edgezoo.bench.passes`); :func:`measure` times one pass.
    """

    warmup: int = 10
    runs: int = 100
    max_seconds: float = 10.0
    min_runs: int = 3
    block: int = 1
    repeat: int = 1

    def __post_init__(self) -> None:
        if self.warmup < 0:
            raise ProtocolError(f"warm-up runs must be >= 0, got {self.warmup}")
        if self.runs < 1:
            raise ProtocolError(f"--runs must be >= 1, got {self.runs}")
        if self.max_seconds <= 0:
            raise ProtocolError(f"--seconds must be > 0, got {self.max_seconds}")
        if self.min_runs < 1:
            raise ProtocolError(f"min_runs must be >= 1, got {self.min_runs}")
        if self.block < 1:
            raise ProtocolError(f"--block must be >= 1 timed call per turn, got {self.block}")
        if self.repeat < 1:
            raise ProtocolError(f"--repeat must be >= 1 pass, got {self.repeat}")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class Stats:
    """Statistics of one callable's timed runs (milliseconds)."""

    p50_ms: float
    p90_ms: float
    min_ms: float
    mean_ms: float
    runs: int
    seconds: float  # wall time of this callable's timed calls, summed
    p99_ms: float
    std_ms: float

    def to_dict(self) -> dict[str, float]:
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def summarise(times_s: list[float] | np.ndarray) -> Stats:
    """:class:`Stats` of a list of durations in seconds."""
    t = np.asarray(times_s, dtype=np.float64) * 1e3
    if t.size == 0:
        raise ValueError("no timed runs")
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    return Stats(p50_ms=float(p50), p90_ms=float(p90), min_ms=float(t.min()), mean_ms=float(t.mean()),
                 runs=int(t.size), seconds=float(t.sum() / 1e3), p99_ms=float(p99), std_ms=float(t.std()))


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - start) * 1e-9


def measure(fns: Mapping[str, Callable[[], object]], protocol: Protocol | None = None,
            clock: Callable[[], float] = time.perf_counter) -> dict[str, Stats]:
    """Time each callable of ``fns`` by ``protocol``, interleaved; ``{key: Stats}``."""
    protocol = protocol or Protocol()
    keys = list(fns)
    if not keys:
        return {}
    for key in keys:
        for _ in range(protocol.warmup):
            fns[key]()
    times: dict[str, list[float]] = {k: [] for k in keys}
    block = protocol.block
    start = clock()
    rounds = 0
    while True:
        order = keys if rounds % 2 == 0 else keys[::-1]
        for key in order:
            if block > 1:
                fns[key]()  # untimed: this callable's threads and caches come back after the others ran
            for _ in range(min(block, protocol.runs - len(times[key]))):
                times[key].append(_timed(fns[key]))
        rounds += 1
        done = min(len(t) for t in times.values())
        if done >= protocol.runs:
            break
        if done >= protocol.min_runs and clock() - start >= protocol.max_seconds:
            break
    return {k: summarise(v) for k, v in times.items()}
