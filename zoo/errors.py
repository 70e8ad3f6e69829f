"""Errors edgezoo raises for bad input. Each message is one line naming the problem and the fix.

The ``edgezoo`` CLI prints any :class:`EdgezooError` as ``edgezoo: error: <message>`` and
exits with status 2, without a traceback.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "EdgezooError",
    "InvalidArgumentError",
    "MissingDependencyError",
    "UnknownModelError",
    "lookup",
]


class EdgezooError(Exception):
    """Base class of errors caused by the caller's input or environment."""


class UnknownModelError(EdgezooError, KeyError):
    """An edgezoo model name that is not registered; the message suggests close names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class InvalidArgumentError(EdgezooError, ValueError):
    """An argument outside its allowed values (the message lists them)."""


class CheckpointError(EdgezooError, RuntimeError):
    """A checkpoint that cannot be read, or whose keys do not match the model."""


class ConfigError(EdgezooError, ValueError):
    """A recipe/config problem: unknown key, wrong type, missing file."""


class MissingDependencyError(EdgezooError, ImportError):
    """An optional runtime is not installed; the message names the pip extra."""


def require(module: str, extra: str):
    """Import an optional dependency or raise :class:`MissingDependencyError` naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingDependencyError(
            f"{module} is not installed: pip install 'edgezoo[{extra}]' (or pip install {module})"
        ) from err


def lookup(table: dict, name: str, what: str, extra: str = "") -> object:
    """``table[name]`` (case- and space-insensitive), else an :class:`InvalidArgumentError` naming close keys.

    ``what`` names the kind of thing (``"export format"``); ``extra`` is appended to the list of choices.
    """
    import difflib

    key = name.strip().lower()
    if key in table:
        return table[key]
    close = difflib.get_close_matches(key, list(table), n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise InvalidArgumentError(f"unknown {what} {name!r}: {hint}{what.split()[-1]}s: {', '.join(table)}{extra}")
