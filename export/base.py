"""The contract every export format implements, and the job object the pipeline hands it.

A format is a subclass of :class:`Format` decorated with :func:`register_format` in its own
module (``export/onnx.py``, ``export/coreml.py``, ...). It declares its name, file suffix, the
pip extra it needs, the precisions and options it supports and how its parity is checked; the
pipeline (:func:`edgezoo.export.export`) does everything common around it: it resolves and
fuses the model, validates options, prepares calibration data, calls :meth:`Format.convert`
inside a temporary folder, runs the parity gate with :meth:`Format.run` where a runtime here
can execute the artifact, and moves the artifact into place only after the gate passed.
"""

from __future__ import annotations

import importlib.util
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from edgezoo.errors import MissingDependencyError

__all__ = [
    "PRECISIONS",
    "ExportJob",
    "Format",
    "NotRunnable",
    "Option",
    "get_format",
    "list_formats",
    "parse_bool",
    "register_format",
]

#: Numeric precisions an artifact can have; each format supports a subset.
PRECISIONS = ("fp32", "fp16", "int8")


class NotRunnable(RuntimeError):
    """Raised by :meth:`Format.run` when no runtime on this machine can execute the artifact."""


def parse_bool(value: str | bool) -> bool:
    """A boolean option from the CLI: true/false, yes/no, on/off, 1/0."""
    if isinstance(value, bool):
        return value
    key = str(value).strip().lower()
    if key in ("1", "true", "yes", "on", "y"):
        return True
    if key in ("0", "false", "no", "off", "n"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


@dataclass(frozen=True)
class Option:
    """A format-specific option: default, one-line help, allowed values (``None``: any) and type."""

    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    type: Callable[[str], Any] = str


@dataclass
class ExportJob:
    """Everything :meth:`Format.convert` needs; built by the pipeline, one per artifact.

    ``model`` is the deploy form (eval mode, :func:`edgezoo.fuse` applied, fp32, CPU).
    ``work_dir`` is a private temporary folder: write the artifact there, under :attr:`stem`
    plus the format's suffix; the pipeline moves it into place after the parity gate.
    """

    model: nn.Module
    name: str
    input_size: tuple[int, int, int]
    batch: int
    dynamic: bool
    precision: str
    options: dict[str, Any]
    metadata: dict[str, Any]
    work_dir: Path
    calibration: Any = None  # edgezoo.data.calib.CalibrationSet when int8 needs it
    trained: bool = True  # the weights are trained (int8 agreement is gated), not a fresh random init
    warnings: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)  # extra figures for the result (nodes left float...)
    log: Callable[[str], None] = lambda msg: None

    @property
    def stem(self) -> str:
        """File name without suffix: ``<model>`` plus ``_fp16`` / ``_int8`` for those precisions."""
        return self.name if self.precision == "fp32" else f"{self.name}_{self.precision}"

    def example_input(self, batch: int | None = None, size: tuple[int, int] | None = None) -> torch.Tensor:
        """A fixed, seeded input of the export shape (or another batch / spatial size)."""
        c, h, w = self.input_size
        h, w = size or (h, w)
        gen = torch.Generator().manual_seed(0)
        return torch.randn(batch or self.batch, c, h, w, generator=gen)

    def metadata_strings(self) -> dict[str, str]:
        """The metadata as ``{key: str}`` for formats whose slot holds strings (lists JSON-encoded)."""
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in self.metadata.items()}

    def warn(self, message: str) -> None:
        """Record a warning for the result and show it in the progress output."""
        self.warnings.append(message)
        self.log(f"warning: {message}")


class Format(ABC):
    """One export target. Subclasses set the class attributes and implement ``convert`` and ``run``."""

    #: registry name, e.g. ``"onnx"``
    name: ClassVar[str]
    #: artifact suffix, e.g. ``".onnx"``, ``".mlpackage"`` (a folder), ``".pte"``
    suffix: ClassVar[str]
    #: the pip extra that installs what :attr:`modules` names: ``pip install "edgezoo[<extra>]"``
    extra: ClassVar[str]
    #: modules needed to convert (import names)
    modules: ClassVar[tuple[str, ...]]
    #: supported precisions; the first is the default
    precisions: ClassVar[tuple[str, ...]]
    #: format-specific options
    options: ClassVar[dict[str, Option]] = {}
    #: whether a dynamic batch (and, where the model allows, height/width) can be exported
    supports_dynamic: ClassVar[bool] = False
    #: one line: where and how parity is checked
    parity: ClassVar[str]
    #: one line for ``edgezoo export --list-formats``
    description: ClassVar[str] = ""

    def missing(self) -> str | None:
        """The first module of :attr:`modules` that is not installed, else ``None``."""
        for module in self.modules:
            if importlib.util.find_spec(module.split(".")[0]) is None:
                return module
        return None

    def require(self) -> None:
        """Raise :class:`MissingDependencyError` naming the extra when a module is missing."""
        module = self.missing()
        if module is not None:
            raise MissingDependencyError(
                f"format {self.name!r} needs {module}, which is not installed: pip install \"edgezoo[{self.extra}]\""
            )

    def runtime_reason(self) -> str | None:
        """Why no runtime on this machine can execute this format's artifacts (``None``: one can)."""
        return None

    @abstractmethod
    def convert(self, job: ExportJob) -> Path:
        """Write the artifact into ``job.work_dir`` and return its path."""

    @abstractmethod
    def run(self, path: Path, inputs: np.ndarray, job: ExportJob) -> np.ndarray:
        """Execute the artifact on ``inputs`` (NCHW float32) and return the logits as float32.

        Raise :class:`NotRunnable` when the runtime is not available here.
        """

    def extra_parity(self, path: Path, inputs: list[np.ndarray], ref: np.ndarray, out: np.ndarray,
                     job: ExportJob) -> dict[str, Any]:
        """Figures beyond the gate's, e.g. from a second way of running the artifact; ``ref`` and
        ``out`` are PyTorch's and :meth:`run`'s logits for ``inputs``. Reported in
        ``ExportResult.parity``; a format whose gate has a second half (LiteRT: without its delegate too)
        returns ``passed: False`` and a ``reason`` when that half fails. Default: none."""
        return {}


_FORMATS: dict[str, Format] = {}


def register_format(cls: type[Format]) -> type[Format]:
    """Class decorator: add a :class:`Format` to the registry under ``cls.name``."""
    for attr in ("name", "suffix", "extra", "modules", "precisions", "parity"):
        if not hasattr(cls, attr):
            raise TypeError(f"format {cls.__name__} does not define {attr}")
    unknown = set(cls.precisions) - set(PRECISIONS)
    if unknown:
        raise TypeError(f"format {cls.name}: unknown precisions {sorted(unknown)}")
    _FORMATS[cls.name] = cls()
    return cls


def list_formats() -> list[str]:
    """Names of the registered formats, in registration order."""
    return list(_FORMATS)


def get_format(name: str) -> Format:
    """The registered format called ``name``; an unknown name raises an error naming close ones."""
    from edgezoo.errors import lookup

    return lookup(_FORMATS, name, "export format")  # type: ignore[return-value]
