"""TensorRT: an ``.engine`` built from edgezoo's ONNX graph with the fp32 policy pinned; gated on a CUDA GPU.

Written against the TensorRT >= 10.9 Python API (``pip install "edgezoo[tensorrt]"`` on a machine
with an NVIDIA GPU). What :meth:`TensorrtFormat.convert` does:

1. :func:`edgezoo.export.onnx.build_onnx` writes the ONNX graph TensorRT parses: fp32 for fp32 and
   fp16 (TensorRT lowers precision itself), the int8 QDQ graph for int8 (explicit quantisation,
   calibrated on the same calibration set as the ``onnx`` format's int8).
2. ``trt.Builder`` -> ``create_network(0)`` (explicit batch is the only mode in TensorRT 10) ->
   ``trt.OnnxParser.parse_from_file`` (parser errors reported in one line).
3. Builder config (:func:`builder_flags`): workspace pool limit; fp32 clears ``TF32`` so fp32 engines
   compute in IEEE fp32 (TensorRT enables TF32 by default, which would miss the 1e-4 gate); fp16
   sets ``FP16``; int8 sets ``INT8`` and ``FP16`` (Q/DQ layers run int8, the rest may run fp16). For
   fp16 and int8, ``OBEY_PRECISION_CONSTRAINTS`` and every layer built from an fp32-policy ONNX node
   (:mod:`edgezoo.export.fp32_policy`; in int8 also the nodes the quantiser left float) gets
   ``layer.precision = float32`` and ``set_output_type(i, float32)`` (:func:`pin_fp32_layers`). The
   number pinned is ``job.notes["fp32_layers"]``.
4. An optimisation profile when the export is dynamic (:func:`profile_shapes`): batch 1 /
   ``job.batch`` / ``max_batch``; height/width static unless the ONNX graph has them dynamic.
5. Timing cache (option ``timing_cache``): loaded when the file exists, saved after the build.
6. ``build_serialized_network``; the plan is written to ``<stem>.engine``.

**Which TensorRT layer comes from which ONNX node.** TensorRT's ONNX parser names a layer after
its node; a node that becomes several layers gives the extra ones the node name plus ``_<n>``
(a parser-wide counter), and it records ``[ONNX Layer: <node>]`` in ``layer.metadata``. A layer's
node is read from its metadata when present, else its exact name when that is a node of the
graph, else its name with trailing ``_<n>`` suffixes stripped until it is one (never a bare
prefix match, so ``node_add_1`` does not claim ``node_add_12``). Only layers whose outputs are all
floating point are pinned (shape and index computations keep their integer types).

**Metadata.** The pipeline writes ``<stem>.engine.json`` beside the engine. With the option
``embed_metadata=true`` the engine file also carries it the way Ultralytics does: a 4-byte
little-endian length, the metadata JSON, then the serialized plan (:func:`pack_engine`). Such a
file is not a bare plan: ``trtexec --loadEngine`` and Triton cannot read it, which is why it is off
by default. :meth:`TensorrtFormat.run` and :func:`read_engine` read both layouts.

**Runtime.** :meth:`TensorrtFormat.run` deserializes with ``trt.Runtime``, sets the input shape on
an execution context, binds CUDA torch tensors with ``set_tensor_address`` and runs
``execute_async_v3`` on a side stream. :meth:`TensorrtFormat.runtime_reason` says why it cannot
run here (TensorRT missing, no CUDA GPU); the export is then ``converted``, not ``verified``.

**Plugins** (option ``plugins=true``, CLI ``--plugins``): the ONNX graph carries the edgezoo fused ops
as plugin nodes (:mod:`edgezoo.kernels.onnx_plugins`) and :func:`edgezoo.kernels.tensorrt_plugins.register_plugins`
defines them as quickly-deployable plugins before parsing, their Triton kernels compiled to PTX
for the build GPU (AOT: the engine runs without Python, except the channel-attention plugins).

TensorRT 11 removes the weakly typed precision flags (``FP16``, ``INT8``,
``OBEY_PRECISION_CONSTRAINTS``); fp16 and int8 builds then stop with a one-line error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgezoo.errors import InvalidArgumentError, MissingDependencyError
from edgezoo.export.base import ExportJob, Format, NotRunnable, Option, parse_bool, register_format
from edgezoo.export.onnx import DEFAULT_OPSET

__all__ = [
    "TensorrtFormat",
    "builder_flags",
    "layer_onnx_node",
    "pack_engine",
    "parser_error_line",
    "pin_fp32_layers",
    "profile_shapes",
    "read_engine",
    "unpack_engine",
]

_INSTALL_HINT = 'pip install "edgezoo[tensorrt]" on a machine with an NVIDIA GPU'
_GIB = 1 << 30


# ---------------------------------------------------------------------------------------------
# Pure decisions (plain values or duck-typed objects; unit-tested without TensorRT)
# ---------------------------------------------------------------------------------------------

def builder_flags(precision: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(set, clear)``: the ``trt.BuilderFlag`` names to set and to clear for ``precision``.

    fp32 clears ``TF32`` (on by default; its 10-bit mantissa products miss the fp32 gate). fp16
    sets ``FP16``; int8 (a QDQ graph: explicit quantisation) sets ``INT8`` and ``FP16`` so the
    unquantised layers may run in half precision. Both obey the per-layer fp32 constraints.
    """
    if precision == "fp32":
        return (), ("TF32",)
    if precision == "fp16":
        return ("FP16", "OBEY_PRECISION_CONSTRAINTS"), ()
    if precision == "int8":
        return ("INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS"), ()
    raise InvalidArgumentError(f"TensorRT exports fp32, fp16 or int8, not {precision!r}")


def profile_shapes(input_shape: Sequence[int], input_size: Sequence[int], batch: int, max_batch: int,
                   dynamic: bool) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:
    """``(min, opt, max)`` shapes of the optimisation profile, or ``None`` when none is needed.

    ``input_shape`` is the network input's shape as TensorRT reports it (``-1`` for a dynamic
    axis), ``input_size`` the export's ``(C, H, W)``. A dynamic batch spans ``1 .. max_batch``
    with ``batch`` as the optimum; a dynamic height/width spans ``min(32, H) .. 2 H`` around
    ``H`` (the parity gate checks ``H + 32``). A static export of a static graph needs no profile.
    """
    if batch < 1 or (dynamic and max_batch < batch):
        raise InvalidArgumentError(f"TensorRT option max_batch={max_batch} must be at least the batch ({batch})")
    shape = list(input_shape)
    if len(shape) != 4:
        raise InvalidArgumentError(f"TensorRT export expects an NCHW input, the network has shape {tuple(shape)}")
    if all(d >= 0 for d in shape) and not dynamic:
        return None
    c, h, w = (int(v) for v in input_size)
    if not dynamic:  # a static export whose graph still has symbolic axes: pin them to the export shape
        fixed = (batch, c, h, w)
        return fixed, fixed, fixed
    lo, opt, hi = [1, c, h, w], [batch, c, h, w], [max_batch, c, h, w]
    for axis, size in ((2, h), (3, w)):
        if shape[axis] < 0:
            lo[axis], hi[axis] = min(32, size), 2 * size
    if shape[0] >= 0:  # the graph's batch is static after all: the profile cannot widen it
        lo[0] = opt[0] = hi[0] = shape[0]
    return tuple(lo), tuple(opt), tuple(hi)


_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]]+)\]")
_SUFFIX = re.compile(r"_\d+$")


def layer_onnx_node(name: str, metadata: str | None, node_names: set[str]) -> str | None:
    """The ONNX node a TensorRT layer was built from (see the module docstring), or ``None``."""
    for found in _ONNX_LAYER.findall(metadata or ""):
        if found in node_names:
            return found
    candidate = name
    while candidate not in node_names:
        stripped = _SUFFIX.sub("", candidate)
        if stripped == candidate:
            return None
        candidate = stripped
    return candidate


def pin_fp32_layers(network: Any, keep: Iterable[str], node_names: Iterable[str], float32: Any,
                    float_types: Iterable[Any], skip_types: Iterable[Any] = ()) -> list[str]:
    """Constrain the layers of ``network`` built from the ONNX nodes in ``keep`` to fp32.

    ``network`` is duck-typed like ``trt.INetworkDefinition`` (``num_layers``, ``get_layer(i)``;
    layers with ``name``, ``metadata``, ``type``, ``num_outputs``, ``get_output(i).dtype``,
    ``precision``, ``set_output_type``). ``node_names`` are all node names of the parsed ONNX
    graph; ``float32`` is ``trt.float32``; a layer is pinned only when every output has a dtype in
    ``float_types`` and its type is not in ``skip_types`` (constants). Returns the pinned names.
    """
    keep, names = set(keep), set(node_names) | set(keep)
    float_types, skip_types = tuple(float_types), tuple(skip_types)
    pinned = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if getattr(layer, "type", None) in skip_types:
            continue
        node = layer_onnx_node(layer.name, getattr(layer, "metadata", ""), names)
        if node not in keep:
            continue
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if not outputs or any(out.dtype not in float_types for out in outputs):
            continue
        layer.precision = float32
        for j in range(len(outputs)):
            layer.set_output_type(j, float32)
        pinned.append(layer.name)
    return pinned


def parser_error_line(parser: Any, onnx_name: str) -> str:
    """One line describing why ``trt.OnnxParser`` rejected a graph (duck-typed ``num_errors`` /
    ``get_error(i)`` with ``desc()`` and, where this TensorRT has them, ``node_name()`` and
    ``node_operator()``)."""
    count = int(getattr(parser, "num_errors", 0))
    if count == 0:
        return f"TensorRT's ONNX parser rejected {onnx_name} without saying why"
    err = parser.get_error(0)
    where = ""
    node = err.node_name() if hasattr(err, "node_name") else ""
    if node:
        op = err.node_operator() if hasattr(err, "node_operator") else ""
        where = f" at node {node}" + (f" ({op})" if op else "")
    desc = " ".join(str(err.desc()).split())
    more = f" (+{count - 1} more error(s))" if count > 1 else ""
    return f"TensorRT's ONNX parser rejected {onnx_name}{where}: {desc}{more}"


def pack_engine(metadata: dict[str, Any], plan: bytes) -> bytes:
    """The Ultralytics layout: 4-byte little-endian metadata length, metadata JSON (UTF-8), plan."""
    blob = json.dumps(metadata, default=str).encode("utf-8")
    return len(blob).to_bytes(4, byteorder="little", signed=True) + blob + bytes(plan)


def unpack_engine(data: bytes) -> tuple[dict[str, Any] | None, bytes]:
    """``(metadata, plan)`` of an engine file in either layout: a bare plan gives ``(None, data)``."""
    if len(data) > 6:
        size = int.from_bytes(data[:4], byteorder="little", signed=True)
        if 2 <= size <= len(data) - 4 and data[4:5] == b"{":
            try:
                meta = json.loads(data[4:4 + size].decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                meta = None
            if isinstance(meta, dict):
                return meta, data[4 + size:]
    return None, data


def read_engine(path: str | Path) -> tuple[dict[str, Any] | None, bytes]:
    """``(metadata, plan)`` of an engine file: embedded metadata, else the ``.json`` sidecar, else ``None``."""
    path = Path(path)
    meta, plan = unpack_engine(path.read_bytes())
    sidecar = path.with_name(path.name + ".json")
    if meta is None and sidecar.is_file():
        meta = json.loads(sidecar.read_text())
    return meta, plan


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3]) or (0,)


# ---------------------------------------------------------------------------------------------
# TensorRT calls
# ---------------------------------------------------------------------------------------------

def _import_trt() -> Any:
    """``tensorrt``, or a one-line :class:`MissingDependencyError` (a stub or broken install included)."""
    try:
        import tensorrt as trt
    except Exception as err:  # the registry's stub raises on import; a CUDA mismatch raises OSError
        raise MissingDependencyError(f"TensorRT cannot be imported ({type(err).__name__}): {_INSTALL_HINT}") from err
    if not hasattr(trt, "Builder"):
        raise MissingDependencyError(f"the installed tensorrt package has no Builder (a stub?): {_INSTALL_HINT}")
    if _version(getattr(trt, "__version__", "0"))[0] < 10:
        raise MissingDependencyError(f"edgezoo's tensorrt format needs TensorRT >= 10.9, found {trt.__version__}: "
                                     f'pip install -U "edgezoo[tensorrt]"')
    return trt


def _flag(trt: Any, name: str, precision: str) -> Any:
    flag = getattr(trt.BuilderFlag, name, None)
    if flag is None:
        raise MissingDependencyError(f"TensorRT {trt.__version__} has no BuilderFlag.{name} (TensorRT 11 removed weak "
                                     f"typing): {precision} engines need TensorRT 10.x")
    return flag


def _onnx_node_names(path: Path) -> set[str]:
    import onnx

    return {n.name for n in onnx.load(str(path), load_external_data=False).graph.node}


@register_format
class TensorrtFormat(Format):
    """TensorRT ``.engine`` from the ONNX graph, fp32 policy pinned per layer (module docstring)."""

    name = "tensorrt"
    suffix = ".engine"
    extra = "tensorrt"
    modules = ("tensorrt",)
    precisions = ("fp32", "fp16", "int8")
    supports_dynamic = True
    options: ClassVar[dict[str, Option]] = {
        "workspace": Option(4.0, "builder workspace memory pool limit in GiB", type=float),
        "max_batch": Option(32, "largest batch of the dynamic optimisation profile", type=int),
        "timing_cache": Option(None, "timing cache file: loaded if it exists, saved after the build"),
        "opset": Option(DEFAULT_OPSET, "ONNX opset of the graph TensorRT parses", choices=tuple(range(18, 24)),
                        type=int),
        "builder_optimization_level": Option(3, "TensorRT builder optimisation level (higher: slower build)",
                                             choices=tuple(range(6)), type=int),
        "plugins": Option(False, "edgezoo fused ops as TensorRT plugins (Triton kernels compiled to PTX; fp32/fp16)",
                          choices=(False, True), type=parse_bool),
        "embed_metadata": Option(False, "prefix the engine with its metadata (Ultralytics layout; not a bare plan)",
                                 choices=(False, True), type=parse_bool),
    }
    parity = "TensorRT on a CUDA GPU against PyTorch"
    description = "TensorRT engine (from the ONNX graph; fp16 / int8 QDQ with the fp32 policy pinned per layer)"

    def runtime_reason(self) -> str | None:
        """``None`` when TensorRT imports and a CUDA GPU is visible, else why not."""
        try:
            _import_trt()
        except MissingDependencyError:
            return f"TensorRT is not installed ({_INSTALL_HINT})"
        import torch

        if not torch.cuda.is_available():
            return "no CUDA GPU"
        return None

    def convert(self, job: ExportJob) -> Path:
        """Build the ONNX graph, then the engine (module docstring); return the ``.engine`` path."""
        from edgezoo.export.onnx import build_onnx

        trt = _import_trt()
        opts = job.options
        max_batch = int(opts.get("max_batch") or 32)
        workspace = float(opts.get("workspace") or 4.0)
        if workspace <= 0:
            raise InvalidArgumentError(f"TensorRT option workspace={workspace} must be a positive number of GiB")
        if job.dynamic and max_batch < job.batch:
            raise InvalidArgumentError(f"TensorRT option max_batch={max_batch} must be at least the batch "
                                       f"({job.batch})")
        set_flags, clear_flags = builder_flags(job.precision)

        onnx_path = build_onnx(job, job.work_dir / f"{job.stem}.onnx",
                               precision="int8" if job.precision == "int8" else "fp32")
        if parse_bool(opts.get("plugins", False)):
            from edgezoo.kernels.tensorrt_plugins import register_plugins

            try:
                job.notes["tensorrt_plugins"] = register_plugins()
            except ImportError as err:
                raise MissingDependencyError(str(err)) from err
        job.log(f"{job.name}: TensorRT {trt.__version__} parses {onnx_path.name}")
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            raise RuntimeError(parser_error_line(parser, onnx_path.name))

        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace * _GIB))
        config.builder_optimization_level = int(opts.get("builder_optimization_level", 3))
        for name in set_flags:
            config.set_flag(_flag(trt, name, job.precision))
        for name in clear_flags:
            flag = getattr(trt.BuilderFlag, name, None)
            if flag is not None:
                config.clear_flag(flag)
        job.notes["builder_flags"] = {"set": list(set_flags), "cleared": list(clear_flags)}

        pinned: list[str] = []
        if job.precision != "fp32":
            keep = list(job.notes.get("fp32_nodes", []))
            if job.precision == "int8":
                keep += [n for n in job.notes.get("float_nodes", []) if n not in keep]
            pinned = pin_fp32_layers(network, keep, _onnx_node_names(onnx_path), trt.float32,
                                     (trt.float32, trt.float16), (trt.LayerType.CONSTANT,))
            if keep and not pinned:
                job.warn(f"none of the {len(keep)} fp32-policy ONNX nodes matched a TensorRT layer; "
                         f"{job.precision} may overflow where the policy wanted fp32")
        job.notes["fp32_layers"] = len(pinned)

        inp = network.get_input(0)
        shapes = profile_shapes(tuple(inp.shape), job.input_size, job.batch, max_batch, job.dynamic)
        if shapes is not None:
            profile = builder.create_optimization_profile()
            profile.set_shape(inp.name, *shapes)
            config.add_optimization_profile(profile)
            job.notes["profile"] = {"min": list(shapes[0]), "opt": list(shapes[1]), "max": list(shapes[2])}

        cache_path = Path(opts["timing_cache"]).expanduser() if opts.get("timing_cache") else None
        cache_blob = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
        cache = config.create_timing_cache(cache_blob)
        config.set_timing_cache(cache, False)

        job.log(f"{job.name}: building the {job.precision} engine ({len(pinned)} layer(s) pinned to fp32)")
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise RuntimeError(f"TensorRT could not build a {job.precision} engine from {onnx_path.name} "
                               f"(the builder logged why above)")
        if cache_path is not None:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
        engine = job.work_dir / f"{job.stem}{self.suffix}"
        data = pack_engine(job.metadata, plan) if parse_bool(opts.get("embed_metadata", False)) else bytes(plan)
        engine.write_bytes(data)
        job.notes["tensorrt_version"] = trt.__version__
        return engine

    def run(self, path: Path, inputs: np.ndarray, job: ExportJob) -> np.ndarray:
        """Execute the engine at ``path`` on ``inputs`` (NCHW float32) on the GPU; return the logits."""
        reason = self.runtime_reason()
        if reason is not None:
            raise NotRunnable(reason)
        import tensorrt as trt
        import torch

        engine, context = _load(Path(path), trt)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        ins = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(ins) != 1 or not outs:
            raise RuntimeError(f"{Path(path).name}: expected one input and an output, found {ins} -> {outs}")

        def torch_dtype(name: str) -> torch.dtype:
            return torch.from_numpy(np.empty(0, dtype=trt.nptype(engine.get_tensor_dtype(name)))).dtype

        x = torch.from_numpy(np.ascontiguousarray(inputs)).to("cuda", torch_dtype(ins[0]))
        if not context.set_input_shape(ins[0], tuple(x.shape)):
            raise RuntimeError(f"{Path(path).name}: input shape {tuple(x.shape)} is outside the engine's profile")
        buffers = {ins[0]: x}
        for name in outs:
            shape = tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise RuntimeError(f"{Path(path).name}: output {name} has an unresolved shape {shape}")
            buffers[name] = torch.empty(shape, dtype=torch_dtype(name), device="cuda")
        for name, tensor in buffers.items():
            context.set_tensor_address(name, tensor.data_ptr())
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())  # the input copy was queued on the current stream
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"{Path(path).name}: TensorRT execution failed")
        stream.synchronize()
        return buffers["logits" if "logits" in outs else outs[0]].float().cpu().numpy()


_ENGINES: dict[tuple[str, int, int], tuple[Any, ...]] = {}


def _load(path: Path, trt: Any) -> tuple[Any, Any]:
    """``(engine, context)`` of an engine file, cached while the file is unchanged (the gate runs chunks)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _ENGINES:
        _ENGINES.clear()
        _, plan = unpack_engine(path.read_bytes())
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise RuntimeError(f"TensorRT could not deserialize {path.name} (built by another TensorRT version "
                               f"or for another GPU?)")
        context = engine.create_execution_context()
        _ENGINES[key] = (engine, context, runtime, logger)  # the runtime and logger must outlive the engine
    engine, context = _ENGINES[key][:2]
    return engine, context
