"""INT8 ONNX: onnxruntime static quantisation to a QDQ graph, calibrated on real images.

Per-channel symmetric int8 weights and symmetric int8 activations (the QDQ form TensorRT's
explicit quantisation also reads), min-max calibration on ``job.calibration``. The nodes of the
precision policy (:func:`edgezoo.export.fp32_policy.int8_float_nodes`: linear-attention
normalisers, LayerNorm, softmax and its input) stay float; their names are recorded in
``job.notes["float_nodes"]``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edgezoo.export.base import ExportJob

__all__ = ["quantize_qdq"]


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


def quantize_qdq(fp32_path: Path, job: ExportJob) -> Any:
    """Quantise the fp32 ONNX file at ``fp32_path``; return the int8 QDQ ``ModelProto``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgezoo.export.fp32_policy import int8_float_nodes

    if job.calibration is None:
        raise ValueError("int8 export needs calibration data")
    pre = fp32_path.with_name("pre.onnx")
    out = fp32_path.with_name("int8.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quant_pre_process(str(fp32_path), str(pre), skip_optimization=False, skip_symbolic_shape=True)
    pre_proto = onnx.load(str(pre))
    names = {n.name for n in pre_proto.graph.node}
    keep = [n for n in int8_float_nodes(pre_proto, job.notes.get("fp32_nodes", [])) if n in names]
    job.notes["float_nodes"] = keep
    quantize_static(
        str(pre), str(out), _reader(job),
        quant_format=QuantFormat.QDQ, per_channel=True,
        weight_type=QuantType.QInt8, activation_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=keep,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    proto = onnx.load(str(out))
    for p in (pre, out):
        p.unlink(missing_ok=True)
    q = sum(n.op_type == "QuantizeLinear" for n in proto.graph.node)
    job.log(f"{job.name}: int8 QDQ graph with {q} quantised tensors; {len(keep)} node(s) left float")
    return proto
