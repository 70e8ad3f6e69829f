"""CoreML: ``torch.export`` -> coremltools ML Program (``.mlpackage``), fp16 with the fp32 policy; gated on macOS.

* Conversion follows coremltools' recommended PyTorch route since 8.0: ``torch.export.export``,
  ``.run_decompositions({})`` (the inference ATen dialect), then ``ct.convert(exported_program,
  convert_to="mlprogram")``, with float32 input and output at every precision (coremltools would
  make them fp16 in an fp16 program for iOS 16+). The older ``torch.jit.trace`` route fails for the
  EfficientViT models with coremltools 9; the exported-program route converts every registered
  model (``aten.__and__`` on masks is renamed ``logical_and`` first). The batch is static.
* fp16 (the default, CoreML's native precision on the GPU and Neural Engine) is
  ``ct.transform.FP16ComputePrecision(op_selector=...)`` with the precision policy of
  :mod:`edgezoo.export.fp32_policy` kept fp32: every ``layer_norm``, and inside the blocks'
  :func:`~edgezoo.blocks.linear_attention.fp32_regions` the MIL ops that the block's ``fp32_ops``
  name (:data:`MIL_OPS`), plus the data-movement ops between them (a transpose of an fp32 sum would
  otherwise round-trip through fp16 and overflow). MIL ops are traced back to the PyTorch module that
  made them through the ``debug_handle`` that coremltools copies from each ``torch.fx`` node's meta
  into the op's ``EXIR_DEBUG_HANDLE`` scope (kept through its graph passes, as ExecuTorch relies on):
  each node of the exported graph gets a unique handle, and the nodes whose ``nn_module_stack`` holds
  a region module give the set of handles to keep fp32. Op names are not used: graph passes rename ops.
* ``image_input=True`` makes the input a ``ct.ImageType`` (RGB, 0..255 pixels, ``scale=1/255``) with
  the model's mean/std folded into the graph as an exact ``(x - mean) / std`` module, as Ultralytics'
  CoreML export does; ImageType's own per-channel bias with one scalar scale cannot express a
  per-channel std exactly. The parity reference is then PyTorch on the same 8-bit pixels.
* Metadata: ``user_defined_metadata`` (one string per key, lists JSON-encoded), ``author``,
  ``version``, ``short_description`` and the input/output descriptions.

coremltools converts on Linux but predicts on macOS only, so off macOS the status is ``converted``.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from edgezoo.errors import InvalidArgumentError
from edgezoo.export.base import ExportJob, Format, NotRunnable, Option, parse_bool, register_format

__all__ = ["ALWAYS_FP32", "LAYOUT_OPS", "MIL_OPS", "TARGETS", "CoremlFormat", "Fp32Selector", "region_handles"]

#: ``minimum_deployment_target`` choices (ML Programs need iOS 15 / macOS 12 or newer).
TARGETS = ("iOS15", "iOS16", "iOS17", "iOS18", "macOS12", "macOS13", "macOS14", "macOS15")

#: ``fp32_ops`` names (torch op names) -> the MIL op types they convert to. ``div`` includes ``mul``
#: because coremltools' ``divide_to_multiply`` pass turns a division by a constant into one.
MIL_OPS: dict[str, tuple[str, ...]] = {
    "matmul": ("matmul", "linear", "einsum"),
    "sum": ("reduce_sum",),
    "add": ("add",),
    "sub": ("sub",),
    "mul": ("mul",),
    "div": ("real_div", "inverse", "mul"),
    "pow": ("pow", "square"),
    "norm": ("reduce_l2_norm", "reduce_sum_square", "pow", "square", "reduce_sum", "sqrt", "real_div"),
    "mean": ("reduce_mean",),
    "softplus": ("softplus",),
    "elu": ("elu",),
    "softmax": ("softmax",),
    "layer_norm": ("layer_norm", "reduce_mean", "sub", "mul", "pow", "square", "sqrt", "rsqrt", "real_div", "add"),
}

#: MIL op types kept fp32 wherever they are (LayerNorm statistics).
ALWAYS_FP32 = frozenset({"layer_norm"})

#: Ops that only move data: kept fp32 inside a region when an input comes from an op kept fp32.
LAYOUT_OPS = frozenset({"transpose", "reshape", "expand_dims", "squeeze", "slice_by_index", "slice_by_size",
                        "split", "concat", "tile", "identity"})

_RUNTIME_REASON = "CoreML runs on macOS only (coremltools converts on Linux but cannot predict)"


def _target(value: str) -> str:
    """Parse a deployment target case-insensitively (``ios17`` -> ``iOS17``)."""
    for name in TARGETS:
        if name.lower() == str(value).strip().lower():
            return name
    raise ValueError(f"unknown deployment target {value!r}: choose one of {', '.join(TARGETS)}")


class _ImageInput(nn.Module):
    """``(x - mean) / std`` on a 0..1 RGB input, then the model: the normalisation, folded in exactly."""

    def __init__(self, model: nn.Module, mean: Iterable[float], std: Iterable[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def _to_pixels(x: torch.Tensor | np.ndarray, mean: Iterable[float], std: Iterable[float]) -> np.ndarray:
    """Normalised NCHW floats -> the uint8 NCHW pixels they come from (rounded, clipped to 0..255)."""
    x = np.asarray(x, dtype=np.float32)
    m = np.asarray(list(mean), dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(list(std), dtype=np.float32).reshape(1, -1, 1, 1)
    return np.clip(np.rint((x * s + m) * 255.0), 0, 255).astype(np.uint8)


class _PixelReference(nn.Module):
    """The parity reference of an image-input artifact: the deploy model on the same 8-bit pixels."""

    def __init__(self, model: nn.Module, mean: Iterable[float], std: Iterable[float]) -> None:
        super().__init__()
        self.mean, self.std = tuple(mean), tuple(std)
        self.wrapped = _ImageInput(model, self.mean, self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = torch.from_numpy(_to_pixels(x.detach().cpu().numpy(), self.mean, self.std))
        return self.wrapped(pixels.float() / 255.0)


def _region_of(path: str, regions: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """The fp32 ops of the region holding the module ``path`` (itself or an ancestor), else ``()``."""
    while path:
        if path in regions:
            return regions[path]
        path = path.rpartition(".")[0]
    return ()


def region_handles(program: Any, regions: dict[str, tuple[str, ...]]) -> dict[int, frozenset[str]]:
    """Give every node of ``program`` (a ``torch.export.ExportedProgram``) a unique ``debug_handle`` and
    return ``{handle: MIL op types to keep fp32}`` for the nodes made inside a region module.

    ``regions`` is :func:`~edgezoo.blocks.linear_attention.fp32_regions` of the exported module; a
    node's ``nn_module_stack`` lists the qualified names of the modules it was traced in.
    """
    keep: dict[int, frozenset[str]] = {}
    for handle, node in enumerate(program.graph_module.graph.nodes, start=1):
        node.meta["debug_handle"] = handle
        if node.op != "call_function":
            continue
        ops: set[str] = set()
        for entry in (node.meta.get("nn_module_stack") or {}).values():
            for op in _region_of(str(entry[0]), regions):
                ops.update(MIL_OPS.get(op, ()))
        if ops:
            keep[handle] = frozenset(ops)
    return keep


class Fp32Selector:
    """``op_selector`` of ``ct.transform.FP16ComputePrecision``: ``False`` (keep fp32) for the ops of the
    precision policy, ``True`` (fp16) for the rest. ``handles`` comes from :func:`region_handles`.

    coremltools' ``add_fp16_cast`` pass calls it once per op in topological order, which lets data
    movement ops follow their fp32 producers. :attr:`kept` lists ``(op type, op name)`` kept fp32.
    """

    def __init__(self, handles: dict[int, frozenset[str]]) -> None:
        self.handles = handles
        self.kept: list[tuple[str, str]] = []
        self.traced = 0  # ops traced back to a region (kept or not)
        self._fp32_vars: set[str] = set()

    def _types(self, op: Any) -> frozenset[str]:
        from coremltools.converters.mil.mil.scope import ScopeSource

        found: set[str] = set()
        for handle in op.scopes.get(ScopeSource.EXIR_DEBUG_HANDLE, None) or ():
            found.update(self.handles.get(handle, ()))
        return frozenset(found)

    def _inputs_fp32(self, op: Any) -> bool:
        for value in op.inputs.values():
            for var in value if isinstance(value, (list, tuple)) else (value,):
                if getattr(var, "name", None) in self._fp32_vars:
                    return True
        return False

    def keep_fp32(self, op: Any) -> bool:
        """Whether ``op`` stays fp32 under the policy."""
        if op.op_type in ALWAYS_FP32:
            return True
        types = self._types(op)
        if not types:
            return False
        self.traced += 1
        return op.op_type in types or (op.op_type in LAYOUT_OPS and self._inputs_fp32(op))

    def __call__(self, op: Any) -> bool:
        if self.keep_fp32(op):
            self.kept.append((op.op_type, op.name))
            self._fp32_vars.update(v.name for v in op.outputs)
            return False
        return True


def _boolean_ops() -> dict[Any, Any]:
    """``aten.__and__`` & co. -> ``aten.logical_*``: coremltools 9 looks ``aten.__and__.Tensor`` up as
    ``__and__`` and finds no converter; on bool tensors (masks) the logical ops are the same."""
    aten = torch.ops.aten
    return {aten.__and__.Tensor: aten.logical_and.default, aten.__or__.Tensor: aten.logical_or.default,
            aten.__xor__.Tensor: aten.logical_xor.default}


def _exported_program(model: nn.Module, x: torch.Tensor) -> Any:
    """``torch.export`` the model and lower it to the inference ATen dialect coremltools reads."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(model, (x,)).run_decompositions({})
    swap = _boolean_ops()
    changed = False
    for node in program.graph_module.graph.nodes:
        val = node.meta.get("val")
        if node.op == "call_function" and node.target in swap and getattr(val, "dtype", None) is torch.bool:
            node.target, changed = swap[node.target], True
    if changed:
        program.graph_module.recompile()
    return program


def _describe(mlmodel: Any, job: ExportJob, image: bool, fp32_ops: list[str]) -> None:
    """Stamp the metadata, author, version and descriptions on ``mlmodel``."""
    meta = job.metadata
    c, h, w = job.input_size
    for key, value in job.metadata_strings().items():
        mlmodel.user_defined_metadata[key] = value
    mlmodel.user_defined_metadata["edgezoo.input_type"] = "image" if image else "tensor"
    mlmodel.user_defined_metadata["edgezoo.fp32_ops"] = json.dumps(fp32_ops)
    mlmodel.author = "edgezoo"
    mlmodel.version = str(meta.get("edgezoo_version", ""))
    mlmodel.short_description = (f"{job.name} ({meta.get('num_classes')} classes, {h}x{w}, {job.precision}) "
                                 f"exported by edgezoo {meta.get('edgezoo_version', '')}")
    if image:
        mlmodel.input_description["input"] = f"RGB image {w}x{h}, 0..255 pixels (mean/std applied inside)"
    else:
        mlmodel.input_description["input"] = (f"float32 {job.batch}x{c}x{h}x{w} (NCHW), normalised with "
                                              f"mean {list(meta.get('mean', []))} and std {list(meta.get('std', []))}")
    mlmodel.output_description["logits"] = f"float32 {job.batch}x{meta.get('num_classes')} class logits"


@register_format
class CoremlFormat(Format):
    name = "coreml"
    suffix = ".mlpackage"
    extra = "export"
    modules = ("coremltools",)
    precisions = ("fp16", "fp32")
    supports_dynamic = False
    options: ClassVar[dict[str, Option]] = {
        "target": Option("iOS16", "minimum deployment target (coremltools ct.target)", choices=TARGETS, type=_target),
        "image_input": Option(False, "input is an RGB image of 0..255 pixels with mean/std folded into the model",
                              choices=(False, True), type=parse_bool),
    }
    parity = "Core ML (macOS only) against PyTorch"
    description = "Core ML ML Program (.mlpackage, torch.export), fp16 with the fp32 policy / fp32"

    def runtime_reason(self) -> str | None:
        return None if sys.platform == "darwin" else _RUNTIME_REASON

    def convert(self, job: ExportJob) -> Path:
        """Convert ``job.model`` with coremltools and save ``<stem>.mlpackage`` in ``job.work_dir``."""
        import coremltools as ct

        from edgezoo.blocks.linear_attention import fp32_regions

        image = bool(job.options.get("image_input"))
        target = _target(job.options.get("target") or "iOS16")
        if image and (job.batch != 1 or job.input_size[0] != 3):
            raise InvalidArgumentError("coreml image_input needs batch 1 and 3-channel (RGB) input; "
                                       f"got batch {job.batch}, {job.input_size[0]} channels")
        mean, std = job.metadata["mean"], job.metadata["std"]
        model = _ImageInput(job.model, mean, std).eval() if image else job.model
        x = job.example_input()
        if image:
            x = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
        job.log(f"{job.name}: torch.export")
        program = _exported_program(model, x)
        selector = Fp32Selector(region_handles(program, fp32_regions(model)))
        if job.precision == "fp16":
            precision = ct.transform.FP16ComputePrecision(op_selector=selector)
        else:
            precision = ct.precision.FLOAT32
        if image:
            inputs = [ct.ImageType(name="input", shape=tuple(x.shape), scale=1.0 / 255.0, bias=[0.0, 0.0, 0.0],
                                   color_layout=ct.colorlayout.RGB)]
        else:
            inputs = [ct.TensorType(name="input", shape=tuple(x.shape), dtype=np.float32)]
        job.log(f"{job.name}: coremltools {ct.__version__} -> mlprogram ({target}, {job.precision})")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mlmodel = ct.convert(program, convert_to="mlprogram", inputs=inputs,
                                 outputs=[ct.TensorType(name="logits", dtype=np.float32)],
                                 minimum_deployment_target=getattr(ct.target, target),
                                 compute_precision=precision)
        job.notes.update(exporter="torch.export", target=target, input_type="image" if image else "tensor",
                         coremltools=ct.__version__)
        if job.precision == "fp16":
            job.notes["fp32_ops"] = len(selector.kept)
            if selector.handles and not selector.traced:
                job.warn("fp32 policy: no Core ML op traced back to the fp32 regions; only layer_norm kept fp32")
        _describe(mlmodel, job, image, [name for _, name in selector.kept])
        if image:  # compare against PyTorch on the pixels the artifact will see
            job.model = _PixelReference(job.model, mean, std).eval()
            job.notes["parity_reference"] = "PyTorch on the same 8-bit pixels"
        path = job.work_dir / f"{job.stem}{self.suffix}"
        mlmodel.save(str(path))
        return path

    def run(self, path: Path, inputs: np.ndarray, job: ExportJob) -> np.ndarray:
        """Predict with Core ML (macOS only); an image-input artifact gets PIL images of the same pixels."""
        if sys.platform != "darwin":
            raise NotRunnable(_RUNTIME_REASON)
        import coremltools as ct

        key = str(path)
        if _MODELS.get("key") != key:
            _MODELS.update(key=key, model=ct.models.MLModel(key))
        mlmodel = _MODELS["model"]
        if job.options.get("image_input"):
            from PIL import Image

            pixels = _to_pixels(inputs, job.metadata["mean"], job.metadata["std"])
            images = [Image.fromarray(np.ascontiguousarray(p.transpose(1, 2, 0))) for p in pixels]  # HWC uint8: RGB
            outs = [mlmodel.predict({"input": image})["logits"] for image in images]
            return np.concatenate([np.asarray(o, dtype=np.float32).reshape(1, -1) for o in outs])
        out = mlmodel.predict({"input": np.ascontiguousarray(inputs, dtype=np.float32)})["logits"]
        return np.asarray(out, dtype=np.float32)


_MODELS: dict[str, Any] = {}
