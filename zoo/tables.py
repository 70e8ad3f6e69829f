"""The one table writer: every table edgezoo prints or writes (terminal and Markdown) comes from here.

Standard library only, so the remote benchmark runner and the docs generators share it with the CLI.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["format_count", "markdown_table", "text_table"]


def format_count(n: float) -> str:
    """``1_234_567 -> '1.23M'``: parameter and MAC counts as the tables show them."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def text_table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """A left-aligned plain-text table with a dashed rule under the header."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[object]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def markdown_table(rows: Sequence[Sequence[object]], header: Sequence[str], align: str = "") -> str:
    """A GitHub/MkDocs Markdown table; ``align`` has one letter a column (``l``, ``r``, ``c``; default ``l``)."""
    rule = {"l": "---", "r": "---:", "c": ":---:"}
    aligns = [rule[a] for a in align.ljust(len(header), "l")]

    def line(cells: Sequence[object]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "|".join(aligns) + "|", *map(line, rows)])
