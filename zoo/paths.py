"""Checks on the files and folders a user names, made before any long work starts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from edgezoo.errors import InvalidArgumentError

__all__ = ["existing_file", "writable_dir"]


def writable_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """``path`` when it is, or can become, a folder that accepts files, else a one-line error.

    Nothing is created: the nearest folder that exists on the way to ``path`` is probed with a temporary file
    (removed at once), so bad input found later leaves no empty folder behind.
    """
    folder = Path(path).expanduser()
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise InvalidArgumentError(f"{flag} {path}: {probe} is a file, not a folder: choose a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".edgezoo-write-check-"):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise InvalidArgumentError(f"{flag} {path}: cannot write there ({reason}): choose a folder you can write to"
                                   ) from None
    return folder


def existing_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` when it is a readable file, else a one-line error naming it."""
    file = Path(path).expanduser()
    if not file.exists():
        raise InvalidArgumentError(f"{what} not found: {path} (check the path)")
    if not file.is_file():
        raise InvalidArgumentError(f"{path} is a folder, not a {what}")
    if not os.access(file, os.R_OK):
        raise InvalidArgumentError(f"{path}: permission denied reading the {what}")
    return file
