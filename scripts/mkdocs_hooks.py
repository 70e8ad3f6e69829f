"""MkDocs hook: lay the package out as Python imports it, for mkdocstrings' static analysis.

``pyproject.toml`` maps the repository's folders into one namespace (``edgezoo = zoo``, ``edgezoo.export =
export``, ...). griffe, behind mkdocstrings, reads source files from a folder tree shaped like the import
names, so on start-up this hook builds ``build/api-src/edgezoo`` from symbolic links to the mapped folders'
files (a fresh tree each build: nothing is copied, nothing goes stale).
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREE = ROOT / "build" / "api-src"


def on_startup(command: str, dirty: bool) -> None:
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    shutil.rmtree(TREE, ignore_errors=True)
    for name, folder in sorted(mapping.items()):
        target = TREE.joinpath(*name.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for source in (ROOT / folder).glob("*.py"):
            (target / source.name).symlink_to(source)
