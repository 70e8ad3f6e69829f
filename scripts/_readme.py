"""Splice generated text between two HTML-comment markers of a README (shared by the table scripts)."""

from __future__ import annotations

from pathlib import Path


def splice(text: str, body: str, start: str, end: str) -> str:
    """``text`` with whatever lies between ``start`` and ``end`` replaced by ``body``."""
    if start not in text or end not in text:
        raise SystemExit(f"README lacks the markers {start} ... {end}")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def emit(text: str, readme: Path | None, start: str, end: str) -> None:
    """Splice ``text`` into ``readme`` between the markers, or print it when no README is given."""
    if readme:
        readme.write_text(splice(readme.read_text(), text, start, end))
    else:
        print(text)
