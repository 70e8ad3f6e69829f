"""edgezoo.bench: one latency protocol for every runtime, and ``edgezoo bench``.

    from edgezoo.bench import bench, parse_runtimes
    report = bench(["ez_efficientvit_m0"], parse_runtimes("torch,ort,ort-int8"), batches=[1, 16])

Runtimes (one adapter module each; importing them registers them): ``torch`` and ``compile``
(:mod:`.rt_torch`), ``ort``, ``ort-int8``, ``ort-cuda`` (:mod:`.rt_ort`), ``executorch``
(:mod:`.rt_executorch`), ``openvino`` (:mod:`.rt_openvino`), ``tensorrt`` and ``coreml``
(:mod:`.rt_format`). Every artifact they time is made by :func:`edgezoo.export.export`.

On a target reached over ssh or adb, :func:`edgezoo.bench.remote.bench_remote` (``edgezoo bench --remote``)
times the same artifacts with the same protocol (:mod:`.remote_runner`, :mod:`.native`, :mod:`.targets`).
"""

from edgezoo.bench.protocol import Protocol, Stats, measure, summarise
from edgezoo.bench.run import SCHEMA, bench, smallest_per_family
from edgezoo.bench.runtime import (
    Artifacts,
    BenchFailure,
    BenchItem,
    Runtime,
    get_runtime,
    list_runtimes,
    parse_runtimes,
    register_runtime,
)

# Adapters: importing them registers them (their heavy imports happen inside their methods).
from edgezoo.bench import rt_torch, rt_ort, rt_executorch, rt_openvino, rt_format  # noqa: F401  isort: skip

__all__ = [
    "SCHEMA",
    "Artifacts",
    "BenchFailure",
    "BenchItem",
    "Protocol",
    "Runtime",
    "Stats",
    "bench",
    "get_runtime",
    "list_runtimes",
    "measure",
    "parse_runtimes",
    "register_runtime",
    "smallest_per_family",
    "summarise",
]
