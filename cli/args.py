"""Argument types and the parser every ``edgezoo`` command uses, so bad input is caught in one way.

A value argparse rejects (``--img-size -5``, ``--runs x``, an unknown flag) becomes an
:class:`~edgezoo.errors.InvalidArgumentError`, which :func:`edgezoo.cli.main.main` prints as one line with exit
status 2, like every other bad input.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from edgezoo.errors import InvalidArgumentError

__all__ = ["Parser", "non_negative_int", "positive_float", "positive_int"]


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are raised, not printed with the usage block (subparsers inherit it)."""

    def error(self, message: str) -> NoReturn:
        raise InvalidArgumentError(f"{self.prog}: {message} (see {self.prog} --help)")


def _number(text: str, kind: type, minimum: float, what: str) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1 (sizes, batches, runs, threads, epochs)."""
    return int(_number(text, int, 1, "a whole number >= 1"))


def non_negative_int(text: str) -> int:
    """A whole number >= 0 (warm-up runs, image counts, workers)."""
    return int(_number(text, int, 0, "a whole number >= 0"))


def positive_float(text: str) -> float:
    """A number > 0 (seconds, minutes)."""
    value = float(_number(text, float, 0, "a number > 0"))
    if value == 0:
        raise argparse.ArgumentTypeError("expected a number > 0, got 0")
    return value
