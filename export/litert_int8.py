"""INT8 LiteRT files with ai-edge-quantizer: full integer (calibrated) or dynamic range, with the precision
policy and the sensitivity-guided float fallback.

Full integer (``int8_mode=full``): ``static_wi8_ai8`` (per-channel symmetric int8 weights, int8 activations
with min-max ranges from the calibration images, int8 input and output). The quantizer takes a recipe of
regular expressions over op output tensors, and an op a rule names with ``no_quantize`` stays float, with
Quantize/Dequantize ops at its borders. litert-torch names each tensor after the module that made it, so
the precision policy maps to rules:

* every SOFTMAX with the element-wise ops feeding it (bias, scale), every BATCH_MATMUL (the attention's
  activation-by-activation products) and the ops inside a normalisation module (LayerNorm, GroupNorm: its
  statistics) stay float (as
  :mod:`edgezoo.export.fp32_policy` keeps them for ONNX and :mod:`edgezoo.export.executorch` for ExecuTorch,
  whose quantizer leaves matmuls float);
* inside a block that declares ``fp32_ops`` (:func:`edgezoo.blocks.linear_attention.fp32_regions`), the
  ops of those kinds stay float.

Then the sensitivity fallback (option ``int8_fallback``: ``auto``, a count, or ``0``), on the first
:data:`~edgezoo.export.quantize.FALLBACK_IMAGES` calibration images only. Bypassing each activation in turn,
as the ONNX fallback does, would quantise the file once per op (hundreds of times); instead one pass runs
the float and the int8 file with every tensor kept and scores each op by the error it *adds*: the relative
error of its output minus the largest of its inputs'. The ops are tried in that order, in prefixes of
1, 2, 4, ... up to :data:`~edgezoo.export.int8_fallback.MAX_FRACTION` of them, each prefix quantised and
measured on the logits; ``auto`` stops at the first prefix that halves the all-int8 logit error
(:data:`~edgezoo.export.int8_fallback.TARGET`) and keeps the best prefix only if it cuts the error by
:data:`~edgezoo.export.executorch.MIN_CUT` (as ExecuTorch's does); below
:data:`~edgezoo.export.executorch.AUTO_FLOOR` nothing is searched. The figures go to
``job.notes["int8_fallback"]``.

Weighted (``int8_mode=weighted``): the same recipe on the convs and fully connected layers only (their
weights and the activations they read); every other op is added to the float ops, as ONNX's
``int8_scheme=weighted`` places Q/DQ. Digits-trained SHViT-S1 at 48 px agreed 99.4% with fp32 so, 98.1%
in full integer; EfficientViT-M0 98.6% and 98.3% (2026-12-07, ``experiments/litert_int8_scope.py``).

Dynamic range (``int8_mode=dynamic``): ``dynamic_wi8_afp32``, int8 weights whose kernels quantise their
float input per call; no calibration, input and output stay float.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from edgezoo.export.base import ExportJob
from edgezoo.export.quantize import fallback_setting

__all__ = ["WEIGHTED_OPS", "module_path", "module_paths", "op_graph", "policy_tensors", "quantize", "static_quantizer",
           "widen_constant_ranges"]

#: TFLite ops -> the names blocks use in ``fp32_ops`` (:mod:`edgezoo.blocks.linear_attention`)
_POLICY_OPS = {"ADD": "add", "SUB": "sub", "MUL": "mul", "DIV": "div", "BATCH_MATMUL": "matmul", "SUM": "sum",
               "MEAN": "mean", "SOFTMAX": "softmax", "POW": "pow", "SQRT": "norm", "RSQRT": "norm", "ELU": "elu",
               "EXP": "softplus", "LOG": "softplus"}


#: ops kept float in every int8 file: the attention's softmax and its activation-by-activation matmuls (the
#: XNNPACK quantizer ExecuTorch uses never quantises those either)
_ALWAYS_FLOAT = ("SOFTMAX", "BATCH_MATMUL")
#: element-wise ops between a softmax and the matmul producing its input, kept float with it
_SOFTMAX_FEEDERS = ("ADD", "SUB", "MUL", "DIV")


def module_path(tensor: str) -> tuple[str, list[str]]:
    """The module of ``job.model`` that made a tensor, and the class names along the way, from litert-torch's
    name: ``edgezoo.export.litert._Input/pkg.Net_model/pkg.Block_blocks/...;3`` -> ``("blocks", ["Net", "Block"])``.
    A fused op's name lists several locations (:func:`module_paths`); this is the first.
    """
    return module_paths(tensor)[0]


def module_paths(tensor: str) -> list[tuple[str, list[str]]]:
    """Every location in a tensor's name, as :func:`module_path` reads one. litert-torch joins the locations of
    the ops it fused into one with ``;;``, in no order that says which is the op's own: EfficientViT-B0's
    classifier FULLY_CONNECTED is named ``...LayerNorm_1;;...AdaptiveAvgPool2d_pool;;...Linear_0;3``."""
    found = []
    for location in [s for s in tensor.split(";") if "/" in s] or [tensor.split(";")[0]]:
        names, classes = [], []
        for seg in location.split("/")[1:]:
            cls, _, attr = seg.rsplit(".", 1)[-1].partition("_")
            names.append(attr)
            classes.append(cls)
        found.append((".".join(names[1:]), classes))  # names[0] is the wrapper's attribute ``model``
    return found


def op_graph(content: bytes) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """The ops of a flatbuffer's main graph and ``{tensor index: name}``."""
    from edgezoo.export.litert import interpreter

    interp = interpreter(content, 1, xnnpack=False)
    return interp._get_ops_details(), {t["index"]: t["name"] for t in interp.get_tensor_details()}


def policy_tensors(content: bytes, model: torch.nn.Module) -> list[str]:
    """Output tensors of the ops the precision policy keeps float (see the module docstring)."""
    from edgezoo.blocks.linear_attention import fp32_regions

    regions = fp32_regions(model)
    ops, names = op_graph(content)
    producer = {i: op for op in ops for i in op["outputs"]}
    keep: dict[str, None] = {}
    for op in ops:
        for index in op["outputs"]:
            name = names.get(index, "")
            path, _ = module_path(name)
            kind = _POLICY_OPS.get(op["op_name"])
            inside = [r for r in regions if path == r or path.startswith(r + ".")]
            if (op["op_name"] in _ALWAYS_FLOAT or _within(op["op_name"], name, _is_norm)
                    or (kind and any(kind in regions[r] for r in inside))):
                keep[name] = None
        if op["op_name"] == "SOFTMAX":  # and the element-wise chain feeding it (bias, scale)
            todo = list(op["inputs"])
            while todo:
                feeder = producer.get(todo.pop())
                if feeder is not None and feeder["op_name"] in _SOFTMAX_FEEDERS:
                    keep.update({names.get(i, ""): None for i in feeder["outputs"]})
                    todo.extend(feeder["inputs"])
    return list(keep)


def _within(op: str, tensor: str, kind: Callable[[str], bool]) -> bool:
    """Whether an op is part of a module of ``kind`` (a test on its class name): not a weighted op, and every
    location its name gives inside such a module. A fused name can start with a norm's location although the
    op is the Linear after it: reading the first location kept EfficientViT-B0's 1.3M-weight classifier float
    (its int8 file 0.75x the fp32 size, 0.30x without)."""
    return op not in WEIGHTED_OPS and all(any(kind(c) for c in classes) for _, classes in module_paths(tensor))


def _is_norm(cls: str) -> bool:
    """A normalisation module whose statistics run as ops (LayerNorm, GroupNorm, RMSNorm; BatchNorm is folded
    into the conv before conversion). SHViT-S1's GroupNorm(1) left int8 added a relative error of 0.9 at its
    MEAN ops (digits-trained, 48 px, 2026-12-07), and its file agreed 98.3% with fp32 against ExecuTorch's
    99.2%, whose quantizer leaves the norm float."""
    return any(kind in cls for kind in ("LayerNorm", "GroupNorm", "RMSNorm"))


def _exact(names: list[str]) -> str:
    """A recipe regex naming exactly the ops whose output is one of ``names`` (the quantizer's op scope is its
    output names, each followed by ``;``)."""
    return "^(?:" + "|".join(re.escape(n) for n in names) + ");$"


def static_quantizer(content: bytes, floats: list[str]) -> Any:
    from ai_edge_quantizer import qtyping, quantizer, recipe
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    q = quantizer.Quantizer(bytearray(content), recipe.static_wi8_ai8())
    if floats:
        q.update_quantization_recipe(regex=_exact(floats), operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                     algorithm_key=AlgorithmName.NO_QUANTIZE)
    return q


def _inputs(images: torch.Tensor, batch: int, nhwc: bool) -> list[np.ndarray]:
    out = []
    for i in range(0, len(images) - batch + 1, batch):
        x = images[i:i + batch].float().numpy()
        out.append(np.ascontiguousarray(x.transpose(0, 2, 3, 1) if nhwc else x, dtype=np.float32))
    return out


#: the ops ``int8_mode=weighted`` quantises (with the activations they read); every other op stays float
WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")


def _unweighted(content: bytes) -> list[str]:
    """Output tensors of every op that is not a conv or fully connected layer."""
    ops, names = op_graph(content)
    return [names.get(i, "") for op in ops if op["op_name"] not in WEIGHTED_OPS for i in op["outputs"]]


#: calibrated ranges narrower than this are "constant" (:func:`widen_constant_ranges`)
CONSTANT_SPAN = 1e-6


def widen_constant_ranges(calibration: dict[str, dict[str, Any]]) -> list[str]:
    """Widens, in place, every range that was constant on all the calibration images; returns their tensors.

    A tensor that never changed (the bottleneck of a squeeze-excitation whose ReLU is dead for every
    calibration image: ResNet-18-SE's first SE block on digits) gets a scale near zero, and the ops around
    it requantisation factors of 1e7 and 1e-11. The builtin kernels run that; XNNPACK refuses the whole
    file ("failed to prepare"). The range becomes ``[min(c, 0), max(c, 0)]`` stretched to a span of at least
    1 (scale 1/255): the constant stays exact (zero is always representable), and an input that moves it at
    run time is clipped, not wrapped.
    """
    widened = []
    for name, stats in calibration.items():
        if not {"min", "max"} <= set(stats):
            continue
        lo, hi = np.asarray(stats["min"]), np.asarray(stats["max"])
        flat = hi - lo < CONSTANT_SPAN
        if lo.dtype.kind != "f" or not flat.any():
            continue
        new_lo = np.where(flat, np.minimum(lo, 0.0), lo)
        new_hi = np.where(flat, np.maximum(np.maximum(hi, 0.0), new_lo + 1.0), hi)
        stats["min"], stats["max"] = new_lo.astype(lo.dtype), new_hi.astype(hi.dtype)
        widened.append(name)
    return widened


def _full(content: bytes, job: ExportJob, nhwc: bool, weighted_only: bool = False) -> bytes:
    from edgezoo.export.litert import interpreter

    if job.calibration is None:
        raise ValueError("int8 export needs calibration data")
    signatures = interpreter(content, 1, xnnpack=False).get_signature_list()
    key = next(iter(signatures))
    input_name = signatures[key]["inputs"][0]
    batches = _inputs(job.calibration.calib, job.batch, nhwc)
    if not batches:
        raise ValueError(f"int8 export needs at least {job.batch} calibration images (the static batch)")
    floats = policy_tensors(content, job.model)
    if weighted_only:
        floats = list(dict.fromkeys([*floats, *_unweighted(content)]))
    q = static_quantizer(content, floats)
    start = time.perf_counter()
    calibration = q.calibrate({key: [{input_name: x} for x in batches]}, num_threads=1)
    job.notes["calibrate_s"] = round(time.perf_counter() - start, 2)
    widened = widen_constant_ranges(calibration)
    if widened:
        job.notes["constant_ranges_widened"] = widened
    quantized = bytes(q.quantize(calibration, enable_progress_report=False).quantized_model)
    job.notes["policy_float_tensors"] = len(floats)
    setting = fallback_setting(job)
    if setting != 0:
        quantized = _fallback(content, quantized, job, nhwc, floats, calibration, setting)
    return quantized


def _run_all(content: bytes, inputs: list[np.ndarray]) -> np.ndarray:
    from edgezoo.export.litert import litert_runner

    run = litert_runner(content, threads=1, xnnpack=True)
    return np.concatenate([run(x) for x in inputs])


def _logit_error(out: np.ndarray, ref: np.ndarray) -> float:
    """Relative squared logit error, as the ONNX and ExecuTorch fallbacks measure it."""
    from edgezoo.export.pt2e_fallback import logit_error

    return logit_error(torch.from_numpy(out).double(), torch.from_numpy(ref).double())


def _tensors(content: bytes, inputs: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Every named float or int8 tensor of ``content`` on ``inputs`` (int8 dequantised), by name."""
    import warnings

    from edgezoo.export.litert import interpreter

    with warnings.catch_warnings():  # "intended for debugging": keeping every tensor is what the ranking needs
        warnings.simplefilter("ignore", UserWarning)
        # builtin kernels: a delegate hides its intermediate tensors
        interp = interpreter(content, 1, xnnpack=False, keep_tensors=True)
    interp.allocate_tensors()
    details = [t for t in interp.get_tensor_details() if t["dtype"] in (np.float32, np.int8)]
    found: dict[str, list[np.ndarray]] = {}
    inp = interp.get_input_details()[0]
    for x in inputs:
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            x = np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        for t in details:
            try:
                value = interp.get_tensor(t["index"])
            except ValueError:  # a tensor without data (a constant folded away)
                continue
            if t["dtype"] == np.int8:
                scale, zero = t["quantization"]
                if not scale:
                    continue
                value = (value.astype(np.float32) - zero) * scale
            found.setdefault(t["name"], []).append(np.array(value, dtype=np.float32))
    return found


def _rank(content: bytes, quantized: bytes, inputs: list[np.ndarray], exclude: set[str]) -> list[tuple[str, float]]:
    """Ops of the int8 file's activations, by the relative error each adds (see the module docstring)."""
    ref, got = _tensors(content, inputs), _tensors(quantized, inputs)
    quantized_names = {t["name"] for t in _details(quantized) if t["dtype"] == np.int8}

    def error(name: str) -> float:
        if name not in ref or name not in got or len(ref[name]) != len(got[name]):
            return 0.0
        a = np.concatenate([r.ravel() for r in ref[name]]).astype(np.float64)
        b = np.concatenate([g.ravel() for g in got[name]]).astype(np.float64)
        if a.shape != b.shape:
            return 0.0
        energy = float((a ** 2).mean())
        if not energy > 1e-20:  # an all-zero tensor (x - max(x) of a one-token softmax): nothing int8 can lose
            return 0.0
        with np.errstate(all="ignore"):  # a kept tensor the kernels never wrote holds whatever was in memory
            value = float(((a - b) ** 2).mean() / energy)
        # at most the tensor's own energy: past that the int8 tensor holds nothing of the float one, and an
        # uncapped near-zero tensor (relative error 1.5e7) would outrank every op that does cost accuracy
        return min(value, 1.0) if np.isfinite(value) else 0.0

    ops, names = op_graph(content)
    scores = []
    for op in ops:
        outs = [names.get(i, "") for i in op["outputs"]]
        if not outs or outs[0] in exclude or outs[0] not in quantized_names:
            continue
        inputs_error = max([error(names.get(i, "")) for i in op["inputs"] if i >= 0] or [0.0])
        scores.append((outs[0], error(outs[0]) - inputs_error))
    return sorted(scores, key=lambda s: -s[1])


def _details(content: bytes) -> list[dict[str, Any]]:
    from edgezoo.export.litert import interpreter

    return interpreter(content, 1, xnnpack=False).get_tensor_details()


def _fallback(content: bytes, quantized: bytes, job: ExportJob, nhwc: bool, floats: list[str], calibration: Any,
              setting: str | int) -> bytes:
    from edgezoo.export.executorch import AUTO_FLOOR, MIN_CUT
    from edgezoo.export.int8_fallback import MAX_FRACTION, TARGET
    from edgezoo.export.quantize import FALLBACK_IMAGES

    start = time.perf_counter()
    images = job.calibration.calib[:max(FALLBACK_IMAGES, job.batch)]
    inputs = _inputs(images, job.batch, nhwc)
    with torch.inference_mode():
        reference = torch.cat([job.model(images[i:i + job.batch].float())
                               for i in range(0, len(inputs) * job.batch, job.batch)]).numpy()
    error_int8 = _logit_error(_run_all(quantized, inputs), reference)
    notes: dict[str, Any] = {"error_int8": error_int8, "error_after": error_int8, "tensors": [], "images": len(images)}
    job.notes["int8_fallback"] = notes
    if setting == "auto" and error_int8 <= AUTO_FLOOR:
        notes["seconds"] = round(time.perf_counter() - start, 1)
        return quantized
    ranked = _rank(content, quantized, inputs, set(floats))
    notes.update(candidates=len(ranked), ranked=[[t, round(s, 6)] for t, s in ranked[:10]])
    limit = max(1, int(MAX_FRACTION * len(ranked))) if setting == "auto" else min(int(setting), len(ranked))
    doubling = sorted({min(2 ** k, limit) for k in range(limit.bit_length() + 1)})
    counts = [int(setting)] if setting != "auto" else doubling
    best: tuple[float, int, bytes] = (error_int8, 0, quantized)
    tried = []
    for count in counts:
        if count < 1 or ranked[count - 1][1] <= 0:
            break  # no op left that adds error on its own
        chosen = [t for t, _ in ranked[:count]]
        made = bytes(static_quantizer(content, floats + chosen).quantize(calibration, enable_progress_report=False)
                     .quantized_model)
        error = _logit_error(_run_all(made, inputs), reference)
        tried.append([count, error])
        if error < best[0] or setting != "auto":
            best = (error, count, made)
        if setting == "auto" and error <= TARGET * error_int8:
            break
    if setting == "auto" and best[0] > (1.0 - MIN_CUT) * error_int8:
        best = (error_int8, 0, quantized)  # no prefix pays for its float ops
    error, count, chosen_file = best
    notes.update(tensors=[t for t, _ in ranked[:count]], error_after=error, tried=tried,
                 seconds=round(time.perf_counter() - start, 1))
    job.log(f"{job.name}: int8 fallback kept {count} of {len(ranked)} ops float (logit error {error_int8:.3g} -> "
            f"{error:.3g}, {notes['seconds']:.0f} s)")
    return chosen_file


def quantize(content: bytes, job: ExportJob, nhwc: bool, mode: str = "full") -> bytes:
    """The int8 flatbuffer of the fp32 ``content``: ``full`` integer or ``weighted`` (calibrated), or
    ``dynamic`` range."""
    if mode == "dynamic":
        from ai_edge_quantizer import quantizer, recipe

        job.notes["int8_mode"] = "dynamic"
        return bytes(quantizer.Quantizer(bytearray(content), recipe.dynamic_wi8_afp32())
                     .quantize(enable_progress_report=False).quantized_model)
    job.notes["int8_mode"] = mode
    return _full(content, job, nhwc, weighted_only=mode == "weighted")
