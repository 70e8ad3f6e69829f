"""Repeated passes of a benchmark: one record from several passes, and ratios as the median of per-pass ratios.

    report = bench(models, runtimes, protocol=Protocol(runs=100, repeat=5), interleave_runtimes=True)
    ratio(ort_record, executorch_record)      # Ratio(median=1.63, low=1.30, high=2.20, passes=5)

Interleaving makes a ratio come from one stretch of time, but on a shared virtual machine the ratio
itself still moves from one stretch to the next: EfficientViT-M0 at 48 px, ExecuTorch int8 against
onnxruntime fp32, gave 1.30x to 2.20x in nine runs of one command within an hour (2026-12-04, AVX2-only
EPYC), each run interleaved and internally consistent. One run's ratio is then a draw, not a result.
With ``Protocol(repeat=R)`` :func:`edgezoo.bench.bench` runs its whole plan R times, every
runtime loaded again in each pass, so a record's passes are minutes apart when several models are
benchmarked; a record's ``latency_ms`` is then the median of its passes' figures (``min``: the least
of them), ``pass_p50_ms`` keeps each pass's p50, and a ratio of two records timed together is the
median of their per-pass ratios, reported with its range.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

__all__ = ["Ratio", "combine", "ratio"]


def combine(passes: list[dict[str, Any]], run: str | None = None) -> dict[str, Any]:
    """One record from the records of one measurement in successive passes (the first pass's fields kept).

    The first pass measures what is measured once (top-1 agreement, peak memory, the op profile); a
    measurement whose first pass did not run (absent, failed to load) is that record. Later passes
    that failed are left out of the figures and counted in ``failed_passes``. ``run`` names the run the
    passes belong to (``passes_of``): only records of one run are compared pass by pass.
    """
    first = dict(passes[0])
    ok = [p for p in passes if p["status"] == "ok"]
    if first["status"] != "ok" or len(passes) == 1:
        return first
    lat = [p["latency_ms"] for p in ok]
    runs = sum(p["runs"] for p in ok)
    p50 = statistics.median(x["p50"] for x in lat)
    first["latency_ms"] = {"p50": round(p50, 4), "p90": round(statistics.median(x["p90"] for x in lat), 4),
                           "min": min(x["min"] for x in lat),
                           "mean": round(sum(x["mean"] * p["runs"] for x, p in zip(lat, ok, strict=True)) / runs, 4)}
    first.update(runs=runs, seconds=round(sum(p["seconds"] for p in ok), 3),
                 throughput_ips=round(first["batch"] * 1e3 / p50, 2), pass_p50_ms=[x["p50"] for x in lat],
                 passes_of=run)
    if len(ok) < len(passes):
        first["failed_passes"] = len(passes) - len(ok)
    return first


@dataclass(frozen=True)
class Ratio:
    """``num / den`` of two records' p50: the median over their common passes, and its range."""

    median: float
    low: float
    high: float
    passes: int

    def text(self) -> str:
        """``1.63x`` for one pass, ``1.63x (1.30-2.20, 9 passes)`` for several."""
        if self.passes < 2:
            return f"{self.median:.2f}x"
        return f"{self.median:.2f}x ({self.low:.2f}-{self.high:.2f}, {self.passes} passes)"


def ratio(num: dict[str, Any], den: dict[str, Any]) -> Ratio:
    """``num``'s p50 over ``den``'s: per pass when both were timed in the same passes (one run's
    :func:`combine`, as long), else the two records' own p50 (e.g. one of them merged from another run)."""
    a, b = num.get("pass_p50_ms"), den.get("pass_p50_ms")
    same_run = num.get("passes_of") == den.get("passes_of")
    if a and b and same_run and len(a) == len(b) > 1:
        each = [x / y for x, y in zip(a, b, strict=True)]
        return Ratio(statistics.median(each), min(each), max(each), len(each))
    r = num["latency_ms"]["p50"] / den["latency_ms"]["p50"]
    return Ratio(r, r, r, 1)
