"""INT8 ONNX: onnxruntime static quantisation to a QDQ graph, calibrated on real images.

Per-channel symmetric int8 weights, min-max calibration on ``job.calibration``. Activations
(:data:`ACTIVATIONS`, ONNX option ``int8_activations``) are asymmetric uint8 by default: onnxruntime's
x86 int8 kernels multiply u8 activations by s8 weights (VNNI's ``vpdpbusd``), and a graph with s8
activations ran 1.6-4.3x slower there than the same graph with u8 ones (at 128 px, s8 -> u8 against
onnxruntime fp32: ResNet-18-ECA 0.64x -> 2.76x, SHViT-S1 0.68x -> 1.53x, EfficientViT-M0 0.48x ->
0.77x; ``experiments/int8_activations.py``, 2026-12-02, EPYC with VNNI).
TensorRT's explicit quantisation takes only symmetric int8 (zero point 0), so its graph is built
with ``s8`` whatever the ONNX option says. Where the QuantizeLinear/DequantizeLinear pairs go is
the ONNX option ``int8_scheme`` (:data:`SCHEMES`):

``full``
    every op onnxruntime quantises, outputs included: onnxruntime's CPU provider fuses each
    ``DQ -> op -> Q`` into an int8 kernel (QLinearConv, ...), the fastest form there.
``weighted``
    the activation inputs of the weighted ops only (Conv, Gemm, MatMul), outputs float: the
    placement TensorRT's explicit quantisation documents, and the more accurate one for attention
    models, whose residual adds and attention matmuls lose the most when quantised.

In both, the nodes of the precision policy (:func:`edgezoo.export.fp32_policy.int8_float_nodes`:
linear-attention normalisers, LayerNorm, softmax and its input) stay float; their names are
recorded in ``job.notes["float_nodes"]``.

Then the sensitivity-guided fallback (:mod:`edgezoo.export.int8_fallback`, ONNX option
``int8_fallback``: ``auto`` by default, a count, or ``0`` for none) leaves float the few activation
tensors whose quantisation costs the logits most on the calibration images; their consumers join
``float_nodes`` and the figures go to ``job.notes["int8_fallback"]``.

Two ways to run the same file (:func:`int8_session`): ``reference`` executes every Q/DQ pair as
written (onnxruntime with graph optimisations off), which is what the file specifies and what any
int8 engine with int32 accumulation computes; ``kernels`` lets onnxruntime fuse its x86 int8
kernels. On x86 CPUs without VNNI those multiply u8 x s8 pairs with ``vpmaddubsw``, whose int16
sums saturate (onnxruntime's quantisation docs), so ``kernels`` can agree less with fp32 than
``reference``; ``reduce_range=true`` (7-bit weights) avoids the saturation at some accuracy cost.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edgezoo.export.base import ExportJob

__all__ = ["ACTIVATIONS", "SCHEMES", "fallback_setting", "int8_session", "parse_fallback", "quantize_qdq",
           "reference_session"]

SCHEMES = {
    "full": "every quantisable op, outputs included (onnxruntime CPU fuses int8 kernels)",
    "weighted": "inputs of Conv/Gemm/MatMul only (TensorRT's placement; most accurate for attention models)",
}
ACTIVATIONS = {
    "u8": "asymmetric uint8 activations: onnxruntime's and OpenVINO's fast x86 int8 kernels (default)",
    "s8": "symmetric int8 activations (zero point 0): TensorRT's explicit quantisation needs these",
}
_WEIGHTED_OPS = ["Conv", "Gemm", "MatMul"]
#: calibration images the fallback ranks tensors on (the first of ``job.calibration.calib``)
FALLBACK_IMAGES = 16


def parse_fallback(value: str | int) -> str | int:
    """``int8_fallback``: ``auto`` or a whole number of activation tensors to keep float (0: none)."""
    if str(value).strip().lower() == "auto":
        return "auto"
    try:
        count = int(value)
    except ValueError:
        count = -1
    if count < 0:
        raise ValueError(f"int8_fallback is 'auto' or a whole number >= 0, got {value!r}")
    return count


def fallback_setting(job: ExportJob) -> str | int:
    """The job's ``int8_fallback``: ``auto``, a count, or 0. ``auto`` on random weights is 0, said in
    ``job.notes["int8_fallback_skipped"]``: the search keeps a trained model's accuracy, random weights have none
    to keep, and it is most of an int8 export's time (EfficientViT-M0 at 224 px with random weights, ONNX:
    72 of 76 s, 2026-12-07). A count still runs on any weights."""
    setting = parse_fallback(job.options.get("int8_fallback", "auto"))
    if setting == "auto" and not job.trained:
        job.notes["int8_fallback_skipped"] = "random weights: auto searches trained weights only (int8_fallback=N " \
                                             "forces N)"
        return 0
    return setting


def _reader(job: ExportJob) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        """Feeds the calibration images in batches of the exported (static) batch size."""

        def __init__(self) -> None:
            size = job.batch
            images = job.calibration.calib
            self.batches = iter([images[i:i + size].numpy() for i in range(0, len(images) - size + 1, size)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch.astype(np.float32)}

    return Reader()


def _scheme_arguments(scheme: str, activations: str) -> dict[str, Any]:
    if activations not in ACTIVATIONS:
        raise ValueError(f"unknown int8 activation type {activations!r}: choose one of {', '.join(ACTIVATIONS)}")
    extra: dict[str, Any] = {"ActivationSymmetric": activations == "s8", "WeightSymmetric": True}
    if scheme == "full":
        return {"extra_options": extra}
    if scheme == "weighted":
        extra["OpTypesToExcludeOutputQuantization"] = _WEIGHTED_OPS
        return {"extra_options": extra, "op_types_to_quantize": _WEIGHTED_OPS}
    raise ValueError(f"unknown int8 scheme {scheme!r}: choose one of {', '.join(SCHEMES)}")


def quantize_qdq(fp32_path: Path, job: ExportJob) -> Any:
    """Quantise the fp32 ONNX file at ``fp32_path``; return the int8 QDQ ``ModelProto``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgezoo.export.fp32_policy import int8_float_nodes

    if job.calibration is None:
        raise ValueError("int8 export needs calibration data")
    scheme = job.options.get("int8_scheme", "full")
    activations = job.options.get("int8_activations") or "s8"  # formats without the option (TensorRT): symmetric
    pre = fp32_path.with_name("pre.onnx")
    out = fp32_path.with_name("int8.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quant_pre_process(str(fp32_path), str(pre), skip_optimization=False, skip_symbolic_shape=True)
    pre_proto = onnx.load(str(pre))
    names = {n.name for n in pre_proto.graph.node}
    keep = [n for n in int8_float_nodes(pre_proto, job.notes.get("fp32_nodes", [])) if n in names]
    job.notes["float_nodes"] = keep
    job.notes["int8_scheme"] = scheme
    job.notes["int8_activations"] = activations
    quantize_static(
        str(pre), str(out), _reader(job),
        quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=bool(job.options.get("reduce_range")),
        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8 if activations == "u8" else QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=keep,
        **_scheme_arguments(scheme, activations),
    )
    proto = onnx.load(str(out))
    for p in (pre, out):
        p.unlink(missing_ok=True)
    proto = _fallback(proto, job, pre_proto)
    q = sum(n.op_type == "QuantizeLinear" for n in proto.graph.node)
    job.log(f"{job.name}: int8 QDQ graph ({scheme}, {activations} activations) with {q} quantised tensors; "
            f"{len(job.notes['float_nodes'])} node(s) left float")
    return proto


def _fallback(proto: Any, job: ExportJob, fp32: Any) -> Any:
    """Apply the ``int8_fallback`` option: bypass the most sensitive activations (figures in ``job.notes``); the
    convs and matmuls that then read a float input get their float weights from ``fp32``, the graph quantised."""
    import torch

    from edgezoo.export.int8_fallback import bypass, choose_fallback

    setting = fallback_setting(job)
    if setting == 0:
        return proto
    images = job.calibration.calib[:max(FALLBACK_IMAGES, job.batch)]
    batches = [images[i:i + job.batch] for i in range(0, len(images) - job.batch + 1, job.batch)]
    with torch.inference_mode():
        reference = torch.cat([job.model(x) for x in batches]).numpy()
    fb = choose_fallback(proto, [x.numpy() for x in batches], reference,
                         None if setting == "auto" else setting, log=job.log, fp32=fp32)
    job.notes["int8_fallback"] = fb.as_notes()
    job.notes["float_nodes"] = [*job.notes["float_nodes"], *fb.nodes]
    job.log(f"{job.name}: int8 fallback kept {len(fb.tensors)} of {fb.candidates} activations float "
            f"(logit error {fb.error_int8:.3g} -> {fb.error_after:.3g}, {fb.seconds:.0f} s)")
    return bypass(proto, set(fb.tensors), fp32)[0] if fb.tensors else proto


def reference_session(proto: Any) -> Any:
    """An onnxruntime CPU session running the in-memory QDQ ``proto`` with reference semantics."""
    return int8_session(proto.SerializeToString())


def int8_session(path: Path | str | bytes, semantics: str = "reference") -> Any:
    """An onnxruntime CPU session running a QDQ file (or serialised model) with ``reference`` or ``kernels``
    semantics."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if semantics == "reference":
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    elif semantics != "kernels":
        raise ValueError(f"semantics is 'reference' or 'kernels', got {semantics!r}")
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
