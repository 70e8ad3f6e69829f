"""ONNX: torch's dynamo exporter, onnxslim, fp16 with the fp32 policy, int8 QDQ; gated in onnxruntime CPU.

* fp32: ``torch.onnx.export(..., dynamo=True)`` at the chosen opset (18 by default); if the dynamo
  exporter fails, the TorchScript exporter runs instead and the result says so. Dynamic batch,
  and dynamic height/width when the model's graph allows (tried first, else batch only, with a
  warning). Simplified with onnxslim, checked with ``onnx.checker`` (full check).
* fp16: onnxruntime's float16 converter with fp32 inputs/outputs and the nodes of
  :mod:`edgezoo.export.fp32_policy` kept fp32 (Cast nodes at their borders).
* int8: :mod:`edgezoo.export.quantize` (onnxruntime static QDQ quantisation).
* ``plugins=true`` (fp32 ONNX; TensorRT fp16 engines build from it): the blocks run their fused ops
  (``kernel_mode="triton"``) and each op is written as a TensorRT plugin node in domain ``edgezoo``
  (:mod:`edgezoo.kernels.onnx_plugins`); the parity gate runs those nodes with the ops' reference
  semantics (onnxruntime-extensions Python ops). By default the blocks run their reference path, so
  the graph holds standard ONNX ops only.

Metadata: the model's ``metadata_props`` (one string per key, lists JSON-encoded), plus
``edgezoo.fp32_nodes`` for backends that pin layer precision (TensorRT).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from edgezoo.errors import InvalidArgumentError
from edgezoo.export.base import ExportJob, Format, NotRunnable, Option, parse_bool, register_format
from edgezoo.export.quantize import ACTIVATIONS, SCHEMES, int8_session, parse_fallback

__all__ = ["DEFAULT_OPSET", "OnnxFormat", "build_onnx", "export_graph", "ort_session", "session_options"]

DEFAULT_OPSET = 18


def _dynamic_shapes(hw: bool) -> tuple[dict[int, str], ...]:
    return ({0: "batch", 2: "height", 3: "width"},) if hw else ({0: "batch"},)


def _is_dynamic(proto: Any, axis: int) -> bool:
    dim = proto.graph.input[0].type.tensor_type.shape.dim[axis]
    return bool(dim.dim_param) or not dim.HasField("dim_value")


def _other_size_fault(proto: Any, job: ExportJob) -> str | None:
    """Why a graph exported with symbolic height/width does not compute PyTorch's result at another
    size (a shape the exporter specialised would fail or differ here, not in the user's hands), or
    ``None`` where it does. A mismatch within the model's own fp32 rounding at that size is named as
    such: the graph may be right, but this check cannot tell."""
    from edgezoo.export.parity import fp32_instability

    if not (_is_dynamic(proto, 2) and _is_dynamic(proto, 3)):
        return "the graph's height/width came out static"
    _, h, w = job.input_size
    x = job.example_input(batch=1, size=(h + 32, w + 64))
    try:
        out = _session(proto).run(None, {"input": x.numpy()})[0]
    except Exception:  # onnxruntime raises its own Fail/RuntimeException types
        return "the graph does not run at another height/width"
    with torch.no_grad():
        ref = job.model(x).numpy()
    rel = float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-6))
    if rel <= 1e-3:
        return None
    noise = fp32_instability(job.model, [x])
    if noise is not None and noise > 1e-4:
        return (f"at {h + 32}x{w + 64} it differs from PyTorch by {rel:.1e}, but PyTorch's own fp32 output is "
                f"{noise:.1e} from float64 there: the model is numerically unstable at that size")
    return f"the graph differs from PyTorch at another height/width (relative error {rel:.1e})"


def _session(proto: Any) -> Any:
    """An onnxruntime CPU session of ``proto``; plugin nodes get the ops' reference semantics."""
    from edgezoo.kernels.onnx_plugins import plugin_nodes, reference_session

    return reference_session(proto) if plugin_nodes(proto) else ort_session(proto.SerializeToString())


def _dynamo(model: torch.nn.Module, x: torch.Tensor, opset: int, dynamic_shapes: Any, plugins: bool = False) -> Any:
    from edgezoo.kernels import kernel_mode

    table = None
    if plugins:
        from edgezoo.kernels.onnx_plugins import translation_table

        table = translation_table()
    with warnings.catch_warnings(), kernel_mode(model, "triton" if plugins else "reference"):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (x,), input_names=["input"], output_names=["logits"], dynamo=True,
                                    opset_version=opset, dynamic_shapes=dynamic_shapes, verbose=False,
                                    optimize=True, custom_translation_table=table)
    return program.model_proto


def _torchscript(model: torch.nn.Module, x: torch.Tensor, opset: int, dynamic: bool, path: Path) -> Any:
    import onnx

    from edgezoo.kernels import kernel_mode

    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings(), kernel_mode(model, "reference"):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["logits"], dynamo=False,
                          opset_version=opset, dynamic_axes=axes)
    return onnx.load(str(path))


def export_graph(job: ExportJob, path: Path) -> Any:
    """Export ``job.model`` to an fp32 ONNX ``ModelProto`` (not yet simplified) and record in
    ``job.notes`` the exporter used, whether height/width are dynamic and the fp32-policy nodes."""
    from edgezoo.export.fp32_policy import fp32_nodes

    opset = int(job.options.get("opset") or DEFAULT_OPSET)
    plugins = wants_plugins(job)
    # torch.export specialises a dimension whose example size is 0 or 1: trace a dynamic batch at 2
    x = job.example_input(batch=max(job.batch, 2) if job.dynamic else job.batch)
    proto, exporter = None, "dynamo"
    attempts = [True, False] if job.dynamic else [None]
    errors = []
    for hw in attempts:
        try:
            proto = _dynamo(job.model, x, opset, _dynamic_shapes(hw) if hw is not None else None, plugins)
            fault = _other_size_fault(proto, job) if hw else None
            if fault:
                proto = None
                errors.append(fault)
                continue
            job.notes["dynamic_hw"] = bool(hw)
            break
        except Exception as err:  # torch.export raises many kinds for unsupported dynamism
            errors.append(f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}")
    if job.dynamic and not job.notes.get("dynamic_hw") and proto is not None:
        job.warn(f"height/width exported static ({errors[0]}); batch is dynamic")
    if proto is None and plugins:
        raise RuntimeError(f"plugin nodes need the dynamo exporter, which failed: {errors[-1]}")
    if proto is None:
        job.warn(f"dynamo exporter failed ({errors[-1]}); fell back to the TorchScript exporter")
        proto, exporter = _torchscript(job.model, x, opset, job.dynamic, path), "torchscript"
        job.notes["dynamic_hw"] = False
    job.notes["exporter"] = exporter
    job.notes["opset"] = opset
    job.notes["fp32_nodes"] = fp32_nodes(proto, job.model) if exporter == "dynamo" else []
    if plugins:
        from edgezoo.kernels.onnx_plugins import plugin_nodes

        job.notes["plugins"] = sorted({n.op_type for n in plugin_nodes(proto)})
    return proto


#: The fp32 graphs this process exported last, raw and simplified: (key, slim) -> (proto, export_graph's notes)
_GRAPHS: dict[tuple[str, bool], tuple[Any, dict[str, Any]]] = {}
_GRAPH_NOTES = ("exporter", "opset", "dynamic_hw", "fp32_nodes", "plugins")


def graph_key(job: ExportJob) -> str:
    """sha256 of what the fp32 graph depends on: the model's class, parameters and buffers, the input,
    batch, dynamic axes, opset and plugins (not the precision: fp32, fp16 and int8 share the graph)."""
    import hashlib

    settings = (type(job.model).__qualname__, tuple(job.input_size), job.batch, job.dynamic,
                job.options.get("opset") or DEFAULT_OPSET, wants_plugins(job), torch.__version__)
    h = hashlib.sha256(repr(settings).encode())
    for name, t in job.model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _fp32_graph(job: ExportJob, raw: Path, slim: bool) -> Any:
    """:func:`export_graph` of ``job`` (then onnxslim where ``slim``, never on plugin graphs: it does not
    know their shapes), once per process for one model: the int8 (or fp16) export after the fp32 one
    skips the exporter, most of its time."""
    key = graph_key(job)
    if (key, slim) in _GRAPHS:
        proto, notes = _GRAPHS[key, slim]
        job.notes.update(notes, graph_reused=True)
        return _copy(proto)
    if (key, False) in _GRAPHS:
        proto, notes = _GRAPHS[key, False]
        job.notes.update(notes, graph_reused=True)
        proto = _copy(proto)
    else:
        _GRAPHS.clear()  # the graphs of one model only
        proto = export_graph(job, raw)
        _GRAPHS[key, False] = _copy(proto), {k: job.notes[k] for k in _GRAPH_NOTES if k in job.notes}
    if slim and not job.notes.get("plugins"):
        proto = _slim(proto)
        _GRAPHS[key, True] = _copy(proto), _GRAPHS[key, False][1]
    return proto


def _copy(proto: Any) -> Any:
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out


def wants_plugins(job: ExportJob) -> bool:
    """Whether ``job`` asks for plugin nodes (option ``plugins``); int8 cannot have them."""
    plugins = parse_bool(job.options.get("plugins", False))
    if plugins and job.precision == "int8":
        raise InvalidArgumentError("plugins=true takes fp32 or fp16, not int8 (the QDQ quantiser does not know the "
                                   "plugin nodes): drop --plugins or --int8")
    return plugins


def _slim(proto: Any) -> Any:
    import onnxslim

    return onnxslim.slim(proto)


def _to_fp16(proto: Any, keep_fp32: list[str]) -> Any:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = convert_float_to_float16(proto, keep_io_types=True, node_block_list=keep_fp32, disable_shape_infer=False)
    return drop_fp16_round_trips(proto)


def drop_fp16_round_trips(proto: Any) -> Any:
    """Removes, in place, every Cast to fp16 whose value is only cast back to fp32 (and those casts back).

    onnxruntime's converter casts each kept-fp32 node's output to fp16 and each kept-fp32 node's input to
    fp32, even between two kept nodes: the value crosses fp16 for nothing, and where it exceeds 65504 it
    becomes inf. EfficientViT-B1's linear-attention numerator reached 1.5e5 at 224 px (random weights)
    between its fp32 MatMul and fp32 Div, and 3 of 8 gate images came out NaN. The consumers of a cast back
    read the fp32 value itself; a Cast to fp16 that something in fp16 still reads is kept.
    """
    from onnx import TensorProto

    graph = proto.graph
    producer = {out: node for node in graph.node for out in node.output}

    def cast_to(node: Any) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    dropped = set()
    for node in graph.node:
        if cast_to(node) != TensorProto.FLOAT or node.output[0] in outputs:
            continue
        source = producer.get(node.input[0])
        if source is not None and cast_to(source) == TensorProto.FLOAT16:
            rename[node.output[0]] = source.input[0]
            dropped.add(id(node))
    if not rename:
        return proto
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    used = {name for node in graph.node if id(node) not in dropped for name in node.input} | outputs
    dropped |= {id(node) for node in graph.node if cast_to(node) == TensorProto.FLOAT16 and node.output[0] not in used}
    kept = [node for node in graph.node if id(node) not in dropped]
    del graph.node[:]
    graph.node.extend(kept)
    live = {out for node in kept for out in node.output}
    stale = [v for v in graph.value_info if v.name not in live]
    for v in stale:
        graph.value_info.remove(v)
    return proto


def _stamp(proto: Any, job: ExportJob) -> None:
    import onnx

    meta = job.metadata_strings()
    meta["edgezoo.fp32_nodes"] = json.dumps(job.notes.get("fp32_nodes", []))
    onnx.helper.set_model_props(proto, meta)
    proto.doc_string = f"{job.name} exported by edgezoo {job.metadata['edgezoo_version']}"
    proto.producer_name = "edgezoo"


def _save_checked(proto: Any, path: Path) -> Path:
    import onnx

    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    return path


def build_onnx(job: ExportJob, path: Path, precision: str | None = None) -> Path:
    """Write the simplified, stamped and checked ONNX file of ``job`` at ``path`` in ``precision``
    (default ``job.precision``): fp32, fp16 (fp32 policy kept) or int8 QDQ. TensorRT builds from it."""
    precision = precision or job.precision
    if precision == "fp16" and wants_plugins(job):
        raise InvalidArgumentError("plugin graphs are written in fp32 (the fp16 converter cannot place casts around "
                                   "plugin nodes): for fp16 plugins use --format tensorrt --half --plugins, which "
                                   "builds from the fp32 graph")
    raw = path.with_name(f".{path.stem}.raw.onnx")
    if precision == "fp16":  # converted before onnxslim: after it, the converter's casts break the order
        proto = _fp32_graph(job, raw, slim=False)
        proto = _to_fp16(proto, job.notes["fp32_nodes"])
        proto = proto if job.notes.get("plugins") else _slim(proto)
    else:
        proto = _fp32_graph(job, raw, slim=True)
    _stamp(proto, job)
    if precision == "int8":
        from edgezoo.export.quantize import quantize_qdq

        proto = quantize_qdq(_save_checked(proto, raw), job)
        _stamp(proto, job)
    raw.unlink(missing_ok=True)
    return _save_checked(proto, path)


_SESSIONS: dict[tuple[str, str], Any] = {}


def _run(path: Path, inputs: np.ndarray, semantics: str) -> np.ndarray:
    """Run ``path`` on ``inputs``; one cached session per (file, semantics)."""
    key = (str(path), semantics)
    if key not in _SESSIONS:
        if not any(k[0] == key[0] for k in _SESSIONS):
            _SESSIONS.clear()  # keep the sessions of one file only
        if semantics == "plugins":
            _SESSIONS[key] = _plugin_session(path)
        else:
            _SESSIONS[key] = ort_session(path) if semantics == "default" else int8_session(path, semantics)
    return _SESSIONS[key].run(None, {"input": inputs.astype(np.float32)})[0]


def _plugin_session(path: Path) -> Any:
    import onnx

    try:
        import onnxruntime_extensions  # noqa: F401
    except ImportError as err:
        raise NotRunnable("a plugin graph runs here only with its nodes given reference semantics: "
                          "pip install onnxruntime-extensions") from err
    return _session(onnx.load(str(path)))


def cpu_has_vnni() -> bool | None:
    """Whether this x86 CPU has VNNI int8 dot products (AVX512-VNNI, AVX-VNNI or AMX); ``None``: unknown."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return None
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags))


def session_options(threads: int = 0) -> Any:
    """onnxruntime session options: ``threads`` intra-op threads (0: onnxruntime's default), quiet logs,
    and the thread pool's spin-wait stopped when each ``run`` returns.

    onnxruntime's workers otherwise keep spinning after a run; on a machine with no spare core that
    spin steals the core from whatever runs next: another session, another runtime, the caller.
    Timing two sessions interleaved on 2 cores (SHViT-S1, 224 px, 2 threads each), the spin made
    every run 2.6x slower (p50 7.6 ms against 3.0 ms stopped), and a single session is no slower with it stopped.
    The workers still spin *during* a run, between its operators.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.force_spinning_stop", "1")
    return opts


def ort_session(path: Path | str | bytes, threads: int = 0, providers: list[str] | None = None) -> Any:
    """An onnxruntime CPU session (``threads`` 0: onnxruntime's default) with :func:`session_options`."""
    import onnxruntime as ort

    opts = session_options(threads)
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, opts, providers=providers or ["CPUExecutionProvider"])


@register_format
class OnnxFormat(Format):
    name = "onnx"
    suffix = ".onnx"
    extra = "export"
    modules = ("onnx", "onnxruntime", "onnxscript", "onnxslim")
    precisions = ("fp32", "fp16", "int8")
    supports_dynamic = True
    options: ClassVar[dict[str, Option]] = {
        # 18 is the dynamo exporter's floor: converting its graphs down to 17 fails on Reduce* axes
        "opset": Option(DEFAULT_OPSET, "ONNX opset", choices=tuple(range(18, 24)), type=int),
        "int8_scheme": Option("full", "int8 QDQ placement: " + "; ".join(f"{k}: {v}" for k, v in SCHEMES.items()),
                              choices=tuple(SCHEMES)),
        "int8_activations": Option("u8", "int8 activation type: "
                                   + "; ".join(f"{k}: {v}" for k, v in ACTIVATIONS.items()),
                                   choices=tuple(ACTIVATIONS)),
        "plugins": Option(False, "write the edgezoo fused ops as TensorRT plugin nodes (domain edgezoo; fp32 only); "
                                 "gated with their reference semantics", choices=(False, True), type=parse_bool),
        "int8_fallback": Option("auto", "int8: activations left float by sensitivity on the calibration images: "
                                        "auto (shortest set that halves the logit error, <= 5% of them; none for "
                                        "random weights), a count, or 0", type=parse_fallback),
        "reduce_range": Option(False, "int8 with 7-bit weights: avoids onnxruntime's u8s8 saturation on x86 CPUs "
                                      "without VNNI, at some accuracy cost", choices=(False, True), type=parse_bool),
    }
    parity = "onnxruntime CPU against PyTorch"
    description = "ONNX (dynamo exporter, onnxslim), fp32 / fp16 / int8 QDQ"

    def convert(self, job: ExportJob) -> Path:
        return build_onnx(job, job.work_dir / f"{job.stem}{self.suffix}")

    def run(self, path: Path, inputs: np.ndarray, job: ExportJob) -> np.ndarray:
        """fp32/fp16 as onnxruntime optimises them; int8 with reference QDQ semantics (each Q/DQ as written)."""
        if parse_bool(job.options.get("plugins", False)):
            return _run(path, inputs, "plugins")
        return _run(path, inputs, "reference" if job.precision == "int8" else "default")

    def extra_parity(self, path: Path, inputs: list[np.ndarray], ref: np.ndarray, out: np.ndarray,
                     job: ExportJob) -> dict[str, Any]:
        """int8: agreement of onnxruntime's fused x86 int8 kernels on this CPU too (they may saturate)."""
        if job.precision != "int8":
            return {}
        fused = np.concatenate([_run(path, x, "kernels") for x in inputs])
        agree = float((fused.argmax(1) == ref.argmax(1)).mean())
        reference = float((out.argmax(1) == ref.argmax(1)).mean())
        if agree < reference - 0.01:
            job.warn(f"onnxruntime's int8 CPU kernels on this CPU agree {agree:.1%} with fp32 against {reference:.1%} "
                     f"for the QDQ graph itself: without VNNI their u8 x s8 products saturate; deploy on a VNNI "
                     f"CPU or a GPU, or export with --option reduce_range=true")
        return {"top1_agreement_ort_cpu_kernels": agree, "cpu_int8_vnni": cpu_has_vnni()}
