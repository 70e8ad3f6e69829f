"""The ``edgezoo`` command line: the top layer, and the one place bad input becomes a one-line error.

``edgezoo = "edgezoo.cli:main"`` is the console script; :func:`edgezoo.cli.main.main` is the boundary.
"""

from edgezoo.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
