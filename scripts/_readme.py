"""Splice generated text between two HTML-comment markers of a README (shared by the table scripts)."""

from __future__ import annotations


def splice(text: str, body: str, start: str, end: str) -> str:
    """``text`` with whatever lies between ``start`` and ``end`` replaced by ``body``."""
    if start not in text or end not in text:
        raise SystemExit(f"README lacks the markers {start} ... {end}")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"
