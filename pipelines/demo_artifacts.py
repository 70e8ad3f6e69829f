"""The artifacts ``edgezoo demo`` benchmarks: the files its export stage already made, not new exports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgezoo.bench import Artifacts, BenchFailure

__all__ = ["Exported"]


class Exported(Artifacts):
    """:class:`~edgezoo.bench.Artifacts` that hands out the demo's own exports first (batch 1, made with
    the demo's options, e.g. its int8 settings), keyed by (format, precision); anything else is exported as
    ``edgezoo bench`` would export it."""

    def __init__(self, src: Any, work_dir: Path, exports: dict[str, dict[str, Any]]) -> None:
        super().__init__(src, work_dir)
        self.made = {(r["format"], r["precision"]): r for r in exports.values() if r.get("format")}

    def get(self, fmt: str, precision: str, batch: int, **options: Any) -> Path:
        row = self.made.get((fmt, precision))
        if row is None or batch != 1 or options:
            return super().get(fmt, precision, batch, **options)
        if row["status"] not in ("verified", "converted"):
            raise BenchFailure(f"the demo's {fmt} {precision} export is {row['status']}: {row.get('error') or ''}")
        return Path(row["path"])
