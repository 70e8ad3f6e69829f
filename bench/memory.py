"""Peak resident memory of loading and running one artifact, from Linux's ``/proc/self``.

:class:`PeakRss` resets the kernel's peak-RSS counter (``echo 5 > /proc/self/clear_refs``), and
reports how far the peak rose above the resident size at the start: what the runtime allocated
for the weights, its arena and activations. ``None`` where the kernel offers no such counter
(macOS, Windows, old kernels).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["PeakRss"]

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def _kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class PeakRss:
    """``with PeakRss() as peak: ...``; then ``peak.mb`` is the rise of the peak RSS in MB (or ``None``)."""

    def __init__(self) -> None:
        self.mb: float | None = None
        self._base: int | None = None

    def __enter__(self) -> PeakRss:
        try:
            _CLEAR.write_text("5")
            self._base = _kib("VmRSS")
        except OSError:
            self._base = None
        return self

    def __exit__(self, *exc: object) -> None:
        peak = _kib("VmHWM")
        if self._base is not None and peak is not None:
            self.mb = round(max(peak - self._base, 0) * 1024 / 1e6, 1)
