"""edgezoo.export: ship a model. One format registry drives the Python API and ``edgezoo export``.

    from edgezoo.export import export
    result = export("ez_efficientvit_m0", "onnx", "out/", dynamic=True)
    result.status            # "verified" (ran here and matched PyTorch), "converted" or "failed"

Formats (one module each, registered on import): ``onnx`` (fp32 / fp16 / int8 QDQ),
``coreml``, ``executorch``, ``tensorrt``, ``litert``. :func:`list_formats` lists them; adding a runtime is
adding one module that subclasses :class:`Format` and decorates it with :func:`register_format`.
"""

from edgezoo.export.api import ExportResult, export, prepare
from edgezoo.export.base import (
    PRECISIONS,
    ExportJob,
    Format,
    NotRunnable,
    Option,
    get_format,
    list_formats,
    register_format,
)

# Formats: importing them registers them (their heavy imports happen inside their methods).
from edgezoo.export import onnx, coreml, executorch, tensorrt, litert  # noqa: F401  isort: skip

__all__ = [
    "PRECISIONS",
    "ExportJob",
    "ExportResult",
    "Format",
    "NotRunnable",
    "Option",
    "export",
    "get_format",
    "list_formats",
    "prepare",
    "register_format",
]
