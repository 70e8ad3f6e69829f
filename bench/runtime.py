"""The runtime-adapter contract and registry, and the artifacts the adapters time.

An adapter (one small module each: ``rt_torch``, ``rt_ort``, ``rt_executorch``, ``rt_openvino``,
``rt_tensorrt``, ``rt_coreml``) subclasses :class:`Runtime`, decorates it with
:func:`register_runtime` and implements :meth:`Runtime.load`, which returns a *runner*: a
callable taking an NCHW float32 array and returning the logits as a numpy array. The adapters never
convert anything themselves: :class:`Artifacts` makes every file with :func:`edgezoo.export.export`
(the same exporters, options and parity gates as ``edgezoo export``), once per format, precision
and batch.

``edgezoo.bench`` sits above ``edgezoo.export`` (it times what export made) and below the pipelines.
"""

from __future__ import annotations

import functools
import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgezoo.errors import InvalidArgumentError

__all__ = ["Artifacts", "BenchFailure", "BenchItem", "Runner", "Runtime", "get_runtime", "list_runtimes",
           "parse_runtimes", "register_runtime"]

Runner = Callable[[np.ndarray], np.ndarray]


class BenchFailure(RuntimeError):
    """A runtime could not produce or run the artifact (the export failed its gate, the runtime raised...)."""


@functools.cache
def _code_digest() -> str:
    """sha256 of the code that decides what an export writes: the exporters and the blocks (outside the benchmark).

    A file made before an exporter or a block changed is stale even with the same weights and settings
    (the 2026-12-03 ExecuTorch rewrites changed FocalNet's program, not its version string).
    """
    import hashlib

    import edgezoo.blocks
    import edgezoo.export
    import edgezoo.kernels

    h = hashlib.sha256()
    for package in (edgezoo.export, edgezoo.blocks, edgezoo.kernels):
        root = Path(package.__file__).parent
        for path in sorted(root.rglob("*.py")):
            if "bench" not in path.relative_to(root).parts:
                h.update(str(path.relative_to(root)).encode())
                h.update(path.read_bytes())
    return h.hexdigest()


class Artifacts:
    """Exported files of one :class:`edgezoo.export.Source`, made on first request and reused.

    ``get("onnx", "int8", 1)`` returns the path of the static-batch-1 int8 ONNX file, exported with
    :func:`edgezoo.export.export`; a failed export raises :class:`BenchFailure` with its summary.
    Each successful export leaves ``<artifact>.bench.json`` beside it, keyed by a digest of the
    deploy model's tensors and every export setting (:meth:`digest`): a later benchmark with the same
    work folder (``edgezoo bench --work DIR``) reuses the file instead of exporting it again.
    """

    def __init__(self, src: Any, work_dir: Path, calib: str = "digits", calib_size: int | None = None,
                 log: Callable[[str], None] = lambda m: None) -> None:
        from edgezoo.export.api import CALIB_SIZE

        calib_size = calib_size or CALIB_SIZE  # the files `edgezoo export` makes by default
        self.src, self.work_dir, self.calib, self.calib_size, self.log = src, Path(work_dir), calib, calib_size, log
        self._done: dict[tuple[str, str, int, frozenset], Any] = {}
        self._model_digest: str | None = None

    def digest(self, fmt: str, precision: str, batch: int, options: dict[str, Any]) -> str:
        """sha256 of the model's parameters and buffers and of what the export of this artifact depends on."""
        import hashlib

        import torch

        import edgezoo

        if self._model_digest is None:
            h = hashlib.sha256()
            for name, t in [*self.src.model.state_dict().items()]:
                h.update(name.encode())
                h.update(t.detach().contiguous().cpu().to(torch.float32).numpy().tobytes())
            self._model_digest = h.hexdigest()
        from edgezoo.export import get_format

        # the format's defaults too: a new option (or a changed default) makes a new artifact
        effective = {**{k: o.default for k, o in get_format(fmt).options.items()}, **options}
        settings = repr((self._model_digest, type(self.src.model).__name__, self.src.name, tuple(self.src.input_size),
                         fmt, precision, batch, sorted(effective.items()), self.calib, self.calib_size,
                         getattr(edgezoo, "__version__", ""), torch.__version__, _code_digest()))
        return hashlib.sha256(settings.encode()).hexdigest()

    def get(self, fmt: str, precision: str, batch: int, **options: Any) -> Path:
        from edgezoo.export import export

        key = (fmt, precision, batch, frozenset(options.items()))
        if key not in self._done:
            _, h, _ = self.src.input_size
            out = self.work_dir / f"{self.src.name}-{h}px-b{batch}"
            digest = self.digest(fmt, precision, batch, options)
            res = _reuse(out, digest)
            if res is None:
                res = export(self.src, fmt, out, batch=batch, precision=precision, calib=self.calib,
                             calib_size=self.calib_size, log=self.log, **options)
                if res.ok:
                    _remember(res, digest)
            else:
                self.log(f"{self.src.name} {fmt} {precision} b{batch}: reusing {res.path}")
            self._done[key] = res
        res = self._done[key]
        if not res.ok:
            raise BenchFailure(f"export failed: {res.summary()}")
        return Path(res.path)

    def parity(self, fmt: str, precision: str, batch: int) -> dict[str, Any]:
        """The parity figures of an artifact already made (``{}`` if none)."""
        res = next((r for (f, p, b, _), r in self._done.items() if (f, p, b) == (fmt, precision, batch)), None)
        return dict(res.parity) if res is not None else {}


def _stamp(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".bench.json")


def _remember(res: Any, digest: str) -> None:
    """Write ``<artifact>.bench.json``: the digest it was made for and its export result."""
    import json

    row = res.to_dict()
    row.pop("metadata", None)
    _stamp(res.path).write_text(json.dumps({"digest": digest, "result": row}, default=str))


def _reuse(out: Path, digest: str) -> Any:
    """The :class:`ExportResult` of an artifact under ``out`` made for ``digest``, or ``None``."""
    import json

    from edgezoo.export.api import ExportResult

    for stamp in sorted(out.glob("*.bench.json")) if out.is_dir() else []:
        try:
            saved = json.loads(stamp.read_text())
        except (OSError, ValueError):
            continue
        row = saved.get("result", {})
        if saved.get("digest") == digest and row.get("path") and Path(row["path"]).exists():
            known = set(ExportResult.__dataclass_fields__)
            return ExportResult(**{k: v for k, v in row.items() if k in known})
    return None


@dataclass
class BenchItem:
    """One model at one input size, ready to load into runtimes (its deploy form and its artifacts)."""

    src: Any  # edgezoo.export.source.Source, model in deploy form
    artifacts: Artifacts
    threads: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.src.name

    def example(self, batch: int) -> np.ndarray:
        """A fixed, seeded input of ``batch`` images at the item's size."""
        c, h, w = self.src.input_size
        return np.random.default_rng(0).standard_normal((batch, c, h, w), dtype=np.float32)


class Runtime(ABC):
    """One way of executing a model. Subclasses set the class attributes and implement ``load``."""

    #: registry name used by ``--runtime``, e.g. ``"ort-int8"``
    name: ClassVar[str]
    #: precisions it runs; the first is the default
    precisions: ClassVar[tuple[str, ...]]
    #: the pip extra that installs it
    extra: ClassVar[str] = "export"
    #: import names it needs
    modules: ClassVar[tuple[str, ...]] = ()
    #: one line for ``edgezoo bench --list-runtimes``
    description: ClassVar[str] = ""
    #: whether the peak-RSS figure means anything (host memory), else ``None`` is reported
    host_memory: ClassVar[bool] = True

    def absent(self) -> str | None:
        """Why this runtime cannot run here (not installed, no GPU, not macOS); ``None``: it can."""
        for module in self.modules:
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed (pip install \"edgezoo[{self.extra}]\")"
        return None

    def precision_absent(self, precision: str) -> str | None:
        """Why ``precision`` cannot run on this machine (e.g. bf16 without AMX/AVX512-BF16); ``None``: it can."""
        return None

    @abstractmethod
    def load(self, item: BenchItem, precision: str, batch: int) -> Runner:
        """Make (via :class:`Artifacts`) and load the artifact; return a runner for ``batch`` images."""


_RUNTIMES: dict[str, Runtime] = {}


def register_runtime(cls: type[Runtime]) -> type[Runtime]:
    """Class decorator: add a :class:`Runtime` under ``cls.name``."""
    for attr in ("name", "precisions"):
        if not hasattr(cls, attr):
            raise TypeError(f"runtime {cls.__name__} does not define {attr}")
    _RUNTIMES[cls.name] = cls()
    return cls


def list_runtimes() -> list[str]:
    """Registered runtime names, in registration order."""
    return list(_RUNTIMES)


def get_runtime(name: str) -> Runtime:
    """The runtime called ``name``; an unknown name raises an error naming close ones."""
    from edgezoo.errors import lookup

    return lookup(_RUNTIMES, name, "runtime", ", or all")  # type: ignore[return-value]


def parse_runtimes(spec: str) -> list[tuple[Runtime, list[str]]]:
    """``"torch,ort,openvino:bf16"`` or ``"all"`` -> ``[(runtime, [precisions])]`` (a precision after ``:``)."""
    items = [s.strip() for s in spec.split(",") if s.strip()]
    if not items:
        raise InvalidArgumentError("--runtime is empty: name runtimes, e.g. --runtime torch,ort, or all")
    if items == ["all"]:
        return [(rt, list(rt.precisions)) for rt in _RUNTIMES.values()]
    out: dict[str, tuple[Runtime, list[str]]] = {}
    for item in items:
        name, _, prec = item.partition(":")
        rt = get_runtime(name)
        if prec and prec not in rt.precisions:
            raise InvalidArgumentError(f"runtime {rt.name!r} runs {', '.join(rt.precisions)}, not {prec!r}")
        entry = out.setdefault(rt.name, (rt, []))
        for p in [prec] if prec else rt.precisions:
            if p not in entry[1]:
                entry[1].append(p)
    return list(out.values())
