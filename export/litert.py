"""LiteRT (TensorFlow Lite): ``litert-torch`` converts the deploy form to a ``.tflite`` flatbuffer, gated in
``ai-edge-litert``'s interpreter with the XNNPACK delegate (what Android's CPU path runs) and without it.

* fp32: ``litert_torch.convert`` of the deploy form behind a one-input wrapper, so the signature's input is
  called ``input`` (its output is ``output_0``, the name the sidecar JSON records).
* fp16: the fp32 file with fp16 weights (ai-edge-quantizer's float casting of conv, depthwise-conv and
  fully-connected weights, each followed by a Dequantize op): half the size, fp32 compute, so the precision
  policy holds by construction.
* int8 (:mod:`edgezoo.export.litert_int8`): ``int8_mode=full`` (default) quantises weights and activations
  with ranges calibrated on the ``--calib`` images (input and output int8 as well, their scale and zero
  point in the file); ``int8_mode=dynamic`` quantises weights only and lets the kernels quantise activations
  at run time (no calibration); ``int8_mode=weighted`` quantises only the convs and fully connected layers
  (weights and the activations they read) and leaves every other op float, as ONNX's ``int8_scheme=weighted``
  (digits-trained SHViT-S1 at 48 px: 99.4% top-1 agreement against full integer's 98.1%, 2026-12-07,
  ``experiments/litert_int8_scope.py``). Full and weighted honour the precision policy and the sensitivity
  fallback.
* ``layout=nhwc``: the file takes NHWC input (what Android camera pipelines hand over); the permute to the
  model's NCHW is inside the graph. The gate feeds it the same images transposed.
* ``--dynamic``: the batch dimension is symbolic where the converter can lower it (CNNs); where it cannot
  (reshapes of the batch in attention blocks), the export fails with the converter's one-line reason.

Metadata: the whole metadata as one JSON string in the flatbuffer's ``metadata`` table under
:data:`METADATA_KEY` (written with the ``flatbuffers`` package and the schema ``ai-edge-litert`` ships;
:func:`read_metadata` reads it back), and in ``<artifact>.json`` beside the file.

A model the converter cannot take fails with the op it has no lowering for (``aten.histc.default``...),
and, as for every format, leaves no file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from edgezoo.blocks.focal import native_gelu
from edgezoo.export.base import ExportJob, Format, NotRunnable, Option, register_format
from edgezoo.export.quantize import parse_fallback

__all__ = ["BUILTIN_DEPTHWISE_MAX", "INT8_MODES", "LAYOUTS", "METADATA_KEY", "XNNPACK_FLOAT_ONLY", "LitertFormat",
           "builtin_stalls", "interpreter", "litert_runner", "read_metadata", "write_metadata", "xnnpack_partitions"]

#: name of the flatbuffer metadata entry that holds edgezoo's metadata (one JSON string)
METADATA_KEY = "edgezoo_metadata"
LAYOUTS = {"nchw": "NCHW float input, as PyTorch", "nhwc": "NHWC float input, as Android camera pipelines hand over"}
INT8_MODES = {"full": "int8 weights and activations, calibrated on --calib (full integer, int8 input/output)",
              "weighted": "int8 convs and fully connected layers (weights and their input activations, "
                          "calibrated), every other op float: ONNX's weighted placement",
              "dynamic": "int8 weights, activations quantised at run time by the kernels (no calibration)"}


class _Input(nn.Module):
    """The deploy form behind one argument named ``input`` (the signature's input name), NHWC when asked."""

    def __init__(self, model: nn.Module, nhwc: bool) -> None:
        super().__init__()
        self.model, self.nhwc = model, nhwc

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.model(input.permute(0, 3, 1, 2) if self.nhwc else input)


def _op_of(err: BaseException) -> str | None:
    """The aten op a conversion error is about (``aten.histc.default``), if it names one."""
    text = str(err)
    for pattern in (r"Lowering not found: (\S+)", r"target=torch\.ops\.([\w.]+)"):
        found = re.search(pattern, text)
        if found:
            return found.group(1)
    return None


def _convert_fp32(job: ExportJob, nhwc: bool) -> bytes:
    """The fp32 flatbuffer of ``job.model`` (static batch, or dynamic where ``job.dynamic``)."""
    import litert_torch

    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    x = job.example_input(batch=max(job.batch, 2) if job.dynamic else job.batch)
    if nhwc:
        x = x.permute(0, 2, 3, 1).contiguous()
    shapes = {"input": {0: torch.export.Dim("batch", min=1, max=1024)}} if job.dynamic else None
    wrapper = _Input(job.model, nhwc).eval()
    try:
        with native_gelu():  # LiteRT's GELU op, not the erf pattern written for onnxruntime's fusion
            edge = litert_torch.convert(wrapper, sample_kwargs={"input": x}, dynamic_shapes=shapes)
    except Exception as err:  # the converter raises many kinds; the op it stopped at is what the user needs
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        op = _op_of(err)
        if job.dynamic:
            version = getattr(litert_torch, "__version__", "")
            raise RuntimeError(f"litert-torch {version} cannot lower this model with a symbolic batch "
                               f"({first[:80]}...): export a static --batch") from err
        if op:
            raise RuntimeError(f"the LiteRT converter cannot take op {op}: {first}") from err
        raise
    return edge.model_content()


#: the fp32 flatbuffer this process converted last: (digest of model and settings, content). The fp16 and int8
#: exports of a model after its fp32 one skip the converter, most of their time.
_LAST: list[tuple[str, bytes]] = []


def _digest(job: ExportJob, nhwc: bool) -> str:
    import hashlib

    h = hashlib.sha256(repr((type(job.model).__qualname__, tuple(job.input_size), job.batch, job.dynamic, nhwc,
                             torch.__version__)).encode())
    for name, t in job.model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _fp32(job: ExportJob, nhwc: bool) -> bytes:
    """:func:`_convert_fp32`, once per process for one model and settings."""
    key = _digest(job, nhwc)
    if _LAST and _LAST[0][0] == key:
        job.notes["graph_reused"] = True
        return _LAST[0][1]
    content = _convert_fp32(job, nhwc)
    _LAST[:] = [(key, content)]
    return content


def _fp16_weights(fp32: bytes) -> bytes:
    """``fp32`` with its conv and fully-connected weights stored in fp16 (dequantised to fp32 in the graph)."""
    from ai_edge_quantizer import qtyping, quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    q = quantizer.Quantizer(bytearray(fp32))
    q.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                             algorithm_key=AlgorithmName.FLOAT_CASTING)
    return bytes(q.quantize(enable_progress_report=False).quantized_model)


def write_metadata(content: bytes, metadata: dict[str, Any]) -> bytes:
    """``content`` (a ``.tflite`` flatbuffer) with ``metadata`` as JSON under :data:`METADATA_KEY` (replaced if
    present)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(content, 0))
    for buf in model.buffers or []:  # data stored after the flatbuffer (the quantizer's output): moved inside it
        if buf.offset and buf.offset > 1:
            buf.data = np.frombuffer(content, dtype=np.uint8, count=buf.size, offset=buf.offset)
            buf.offset = buf.size = 0
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata, default=str).encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_KEY, len(model.buffers) - 1
    kept = [m for m in (model.metadata or []) if _text(m.name) != METADATA_KEY]
    model.metadata = [*kept, entry]
    builder = flatbuffers.Builder(len(content) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _text(name: str | bytes | None) -> str:
    return name.decode() if isinstance(name, bytes) else str(name or "")


def read_metadata(path: str | Path | bytes) -> dict[str, Any]:
    """The edgezoo metadata embedded in a ``.tflite`` file (``{}`` if it has none)."""
    from ai_edge_litert import schema_py_generated as schema

    content = path if isinstance(path, bytes) else Path(path).read_bytes()
    model = schema.Model.GetRootAsModel(content, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if _text(entry.Name()) == METADATA_KEY:
            return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes().decode())
    return {}


def interpreter(content: bytes, threads: int = 1, xnnpack: bool = True, keep_tensors: bool = False) -> Any:
    """An ai-edge-litert ``Interpreter`` of ``content``: with its default XNNPACK delegate, or with the builtin
    kernels only; ``keep_tensors`` keeps every intermediate tensor readable (builtin kernels only)."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except Exception as err:  # ImportError, or the native library failing to load
        raise NotRunnable(f"the LiteRT interpreter cannot be loaded here ({type(err).__name__}: {err})") from err
    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    return Interpreter(model_content=content, num_threads=threads, experimental_op_resolver_type=resolver,
                       experimental_preserve_all_tensors=keep_tensors)


Runner = Callable[[np.ndarray], np.ndarray]

#: The most output channels ai-edge-litert 2.3.0's builtin float DEPTHWISE_CONV_2D kernel returns for: one more
#: and ``invoke`` never returns. Measured: a 3x3 depthwise conv of 4832 channels ran in 0.3 ms on a 2x2 map, one
#: of 4833 channels was still running after 40 s (4864 channels on a 1x1 map: 240 s); fp32 and fp16-weight files
#: alike, full-integer and dynamic-range int8 files run (2026-12-07, ``amd-epyc-2c-avx512-vnni-bf16-9963a7``,
#: ``docs/notes/2026-12-07-litert-builtin-depthwise.md``). 4832 is the size of the kernel's accumulator buffer,
#: which holds no output pixel once the depth exceeds it. EfficientViT-L's first 1/32-stage block expands 256 to
#: 6144 channels. The XNNPACK delegate runs these convs (0.0-0.4 ms above).
BUILTIN_DEPTHWISE_MAX = 4832


def builtin_stalls(content: bytes) -> str | None:
    """Why the builtin kernels (no delegate) never finish ``content``, or None when they can run it."""
    interp = interpreter(content, 1, xnnpack=False)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    depths = [int(tensors[op["outputs"][0]]["shape"][-1]) for op in interp._get_ops_details()
              if op["op_name"] == "DEPTHWISE_CONV_2D"
              and all(tensors[i]["dtype"] == np.float32 for i in op["inputs"][:2])]  # float input and filter
    big = [d for d in depths if d > BUILTIN_DEPTHWISE_MAX]
    if not big:
        return None
    return (f"{len(big)} float DEPTHWISE_CONV_2D op(s) with up to {max(big)} channels, where ai-edge-litert's "
            f"builtin kernel never returns above {BUILTIN_DEPTHWISE_MAX}: run the file with the XNNPACK delegate "
            f"(the interpreter's default) or export int8")


def litert_runner(path: str | Path | bytes, threads: int = 1, xnnpack: bool = True) -> Runner:
    """A callable running a ``.tflite`` file on NCHW float32 images and returning float32 logits.

    It does what an app does around the interpreter: transposes to NHWC where the file's metadata says so,
    quantises an int8 input with the file's scale and zero point and dequantises an int8 output, and resizes
    the input when the batch differs from the last call (a dynamic-batch file). ``xnnpack``: with
    ai-edge-litert's default XNNPACK delegate, or with its builtin kernels only (``NotRunnable`` where
    :func:`builtin_stalls` says they never finish the file).
    """
    content = path if isinstance(path, bytes) else Path(path).read_bytes()
    nhwc = read_metadata(content).get("layout") == "NHWC"
    if not xnnpack and (stall := builtin_stalls(content)):
        raise NotRunnable(f"the builtin kernels cannot run this file: {stall}")
    interp = interpreter(content, threads, xnnpack)
    interp.allocate_tensors()
    state = {"shape": tuple(interp.get_input_details()[0]["shape"])}

    def run(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1) if nhwc else x, dtype=np.float32)
        inp = interp.get_input_details()[0]
        if tuple(x.shape) != state["shape"]:
            interp.resize_tensor_input(inp["index"], list(x.shape), strict=True)
            interp.allocate_tensors()
            state["shape"] = tuple(x.shape)
            inp = interp.get_input_details()[0]
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(inp["dtype"])
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        out = interp.get_output_details()[0]
        y = interp.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return np.array(y, dtype=np.float32)

    return run


_RUNNERS: dict[tuple[str, bool], Runner] = {}


def _run(path: Path, inputs: np.ndarray, xnnpack: bool) -> np.ndarray:
    key = (f"{path}:{Path(path).stat().st_mtime_ns}", xnnpack)
    if key not in _RUNNERS:
        if not any(k[0] == key[0] for k in _RUNNERS):
            _RUNNERS.clear()  # the runners of one file only
        _RUNNERS[key] = litert_runner(path, threads=1, xnnpack=xnnpack)
    return _RUNNERS[key](inputs)


@register_format
class LitertFormat(Format):
    name = "litert"
    suffix = ".tflite"
    extra = "litert"
    modules = ("litert_torch", "ai_edge_litert", "ai_edge_quantizer")
    precisions = ("fp32", "fp16", "int8")
    supports_dynamic = True
    options: ClassVar[dict[str, Option]] = {
        "layout": Option("nchw", "input layout: " + "; ".join(f"{k}: {v}" for k, v in LAYOUTS.items()),
                         choices=tuple(LAYOUTS)),
        "int8_mode": Option("full", "int8: " + "; ".join(f"{k}: {v}" for k, v in INT8_MODES.items()),
                            choices=tuple(INT8_MODES)),
        "int8_fallback": Option("auto", "int8 full: ops left float by sensitivity on the calibration images: auto "
                                        "(shortest set that halves the logit error, <= 5% of the ops; none for "
                                        "random weights), a count, or 0", type=parse_fallback),
    }
    parity = "LiteRT interpreter, with XNNPACK and with builtin kernels, against PyTorch"
    description = "LiteRT / TFLite flatbuffer (litert-torch), fp32 / fp16 weights / int8 (full or dynamic range)"

    def convert(self, job: ExportJob) -> Path:
        nhwc = job.options.get("layout", "nchw") == "nhwc"
        mode = job.options.get("int8_mode", "full") if job.precision == "int8" else None
        dynamic_int8 = mode == "dynamic"
        content = _fp32(job, nhwc)
        if job.precision == "fp16":
            content = _fp16_weights(content)
        elif job.precision == "int8":
            from edgezoo.export.litert_int8 import quantize

            content = quantize(content, job, nhwc, mode or "full")
        job.metadata.update(input_name="input", output_name="output_0", layout="NHWC" if nhwc else "NCHW")
        if job.precision == "int8":
            job.metadata["int8_mode"] = mode
        job.notes["ops"] = _op_counts(content)
        if stall := builtin_stalls(content):
            job.notes["builtin_kernels"] = stall
            job.warn(f"without the XNNPACK delegate this file never finishes: {stall}")
        if job.precision == "int8":
            _check_delegation(content, job)
        stem = f"{job.stem}_dynamic" if dynamic_int8 else job.stem
        path = job.work_dir / f"{stem}{self.suffix}"
        path.write_bytes(write_metadata(content, job.metadata))
        return path

    def run(self, path: Path, inputs: np.ndarray, job: ExportJob) -> np.ndarray:
        """With the XNNPACK delegate, as Android's CPU path runs it."""
        return _run(path, inputs, xnnpack=True)

    def extra_parity(self, path: Path, inputs: list[np.ndarray], ref: np.ndarray, out: np.ndarray,
                     job: ExportJob) -> dict[str, Any]:
        """The same gate with the builtin kernels (no delegate): the file fails if either fails. Where the builtin
        kernels never finish the file (:func:`builtin_stalls`), that half is not run and says why."""
        from edgezoo.export.parity import compare

        try:
            builtin = np.concatenate([_run(path, x, xnnpack=False) for x in inputs])
        except NotRunnable as err:  # the runner's refusal (builtin_stalls): the XNNPACK half gates the file
            return {"without_xnnpack": {"run": False, "reason": str(err)}}
        figures = compare(ref, builtin, job.precision, job.trained)
        extra: dict[str, Any] = {"without_xnnpack": figures}
        if not figures["passed"]:
            extra.update(passed=False, reason=f"without XNNPACK: {figures['reason']}")
        return extra


#: int8 ops that ai-edge-litert 2.3.0's XNNPACK delegate leaves to the builtin kernels (it takes them in float):
#: each one splits the delegated graph (``tests/test_export_litert.py`` checks the list). int8 HARD_SWISH's
#: builtin kernel is slow: EfficientViT-B0's 24 cost 23.6 ms of its full-integer file's 26.6 ms at 224 px, where
#: the fp32 file runs 3.3 ms (random weights, 1 thread, 2026-12-07, ``amd-epyc-2c-avx512-vnni-bf16-9963a7``).
XNNPACK_FLOAT_ONLY = ("HARD_SWISH", "GELU")


def xnnpack_partitions(content: bytes) -> int:
    """How many parts the XNNPACK delegate takes a file in (1: every op delegated)."""
    interp = interpreter(content, 1, xnnpack=True)
    interp.allocate_tensors()
    return sum(op["op_name"] == "DELEGATE" for op in interp._get_ops_details())


def _check_delegation(content: bytes, job: ExportJob) -> None:
    """Notes the delegated parts of an int8 file and warns of the int8 ops XNNPACK leaves out."""
    interp = interpreter(content, 1, xnnpack=False)
    dtypes = {t["index"]: t["dtype"] for t in interp.get_tensor_details()}
    left: dict[str, int] = {}
    for op in interp._get_ops_details():
        if op["op_name"] in XNNPACK_FLOAT_ONLY and any(dtypes.get(o) == np.int8 for o in op["outputs"]):
            left[op["op_name"]] = left.get(op["op_name"], 0) + 1
    job.notes["xnnpack_partitions"] = parts = xnnpack_partitions(content)
    if left:
        job.notes["int8_outside_xnnpack"] = left
        job.warn(f"{sum(left.values())} int8 op(s) the XNNPACK delegate runs only in float "
                 f"({', '.join(f'{k} x{n}' for k, n in sorted(left.items()))}) run in the builtin kernels between "
                 f"its {parts} parts; on a CPU, int8_mode=weighted keeps them float")


def _op_counts(content: bytes) -> dict[str, int]:
    """``{op name: count}`` of the file's main graph."""
    from collections import Counter

    interp = interpreter(content, 1, xnnpack=False)
    return dict(sorted(Counter(op["op_name"] for op in interp._get_ops_details()).items()))
