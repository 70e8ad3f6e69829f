"""``edgezoo.export.export``: one model, one format, one precision -> one artifact behind its gate.

The pipeline, the same for every format:

1. resolve what to export (name, ``nn.Module`` or checkpoint: :mod:`edgezoo.export.source`);
2. eval mode and :func:`edgezoo.fuse` (the deploy form);
3. calibration images when the precision is int8 (:mod:`edgezoo.data.calib`);
4. the format converts into a private temporary folder beside the destination;
5. the parity gate (:mod:`edgezoo.export.parity`) runs where a runtime here executes the
   artifact: ``verified`` or ``failed``; where none does, ``converted``;
6. the artifact and its metadata JSON (``<artifact>.json``) move into place, replacing an older
   pair, only when the gate did not fail. A failed export leaves nothing at the destination.

Bad input (unknown format or option, missing package, unfit checkpoint) raises an
:class:`edgezoo.EdgezooError` with a one-line message; a conversion or gate failure is a
result with status ``failed`` and its figures.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgezoo.errors import EdgezooError, InvalidArgumentError
from edgezoo.export.base import PRECISIONS, ExportJob, Format, NotRunnable, get_format
from edgezoo.export.parity import GATES, compare, fp32_instability
from edgezoo.export.source import Source, resolve_source

__all__ = ["ExportResult", "export", "prepare"]

#: Images in the fixed parity batch (run in chunks of the static batch size).
PARITY_IMAGES = 8
#: int8 calibration images when the caller names no number (``edgezoo export --calib-size``, the benchmark's files)
CALIB_SIZE = 64


@dataclass
class ExportResult:
    """What one export produced. ``status`` is ``verified``, ``converted`` or ``failed``."""

    model: str
    format: str
    precision: str
    status: str
    path: str | None = None
    size_bytes: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """The artifact exists and did not fail its gate."""
        return self.status in ("verified", "converted")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line: status, path, size, parity figures or the error."""
        parts = [f"{self.model} {self.format} {self.precision}: {self.status}"]
        if self.path:
            parts.append(f"{self.path} ({(self.size_bytes or 0) / 1e6:.2f} MB, {self.seconds:.1f} s)")
        p = self.parity
        if "max_rel_err" in p:
            parts.append(f"rel err {p['max_rel_err']:.1e}, top-1 agreement {p['top1_agreement']:.1%} "
                         f"on {p['images']} images")
        if "decisive_flips" in p:
            parts.append(f"{p['top1_flips']} flip(s), {p['decisive_flips']} decisive")
        if "top1_agreement_ort_cpu_kernels" in p:
            parts.append(f"onnxruntime int8 CPU kernels here: {p['top1_agreement_ort_cpu_kernels']:.1%}")
        if p.get("reason"):
            parts.append(p["reason"])
        if self.error:
            parts.append(self.error)
        return "; ".join(parts)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def _move_into_place(src: Path, dst: Path) -> None:
    """Replace ``dst`` by ``src`` (a file or a folder such as ``.mlpackage``) on the same file system."""
    if dst.is_dir() and src.is_dir():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        if dst.is_dir():
            shutil.rmtree(dst)
        os.replace(src, dst)


def _check_options(fmt: Format, options: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(fmt.options))
    if unknown:
        allowed = ", ".join(fmt.options) or "none"
        raise InvalidArgumentError(f"format {fmt.name!r} does not support option(s) {', '.join(unknown)}; "
                                   f"its options: {allowed}")
    resolved = {}
    for key, opt in fmt.options.items():
        value = options.get(key, opt.default)
        if value is not None and key in options and isinstance(value, str) and opt.type is not str:
            try:
                value = opt.type(value)
            except ValueError as err:
                raise InvalidArgumentError(f"option {key}={value!r} of format {fmt.name!r}: {err}") from err
        if opt.choices is not None and value not in opt.choices:
            raise InvalidArgumentError(f"option {key}={value!r} of format {fmt.name!r}: choose one of "
                                       f"{', '.join(map(str, opt.choices))}")
        resolved[key] = value
    return resolved


def _precision(fmt: Format, precision: str | None, half: bool, int8: bool) -> str:
    if half and int8:
        raise InvalidArgumentError("choose one of --half and --int8")
    precision = "fp16" if half else "int8" if int8 else (precision or fmt.precisions[0])
    if precision not in PRECISIONS:
        raise InvalidArgumentError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision not in fmt.precisions:
        raise InvalidArgumentError(f"format {fmt.name!r} does not export {precision}; it exports "
                                   f"{', '.join(fmt.precisions)}")
    return precision


def metadata_for(src: Source, fmt: Format, precision: str, batch: int, dynamic: bool) -> dict[str, Any]:
    """The metadata every artifact carries in its format's slot and in ``<artifact>.json``."""
    import edgezoo

    meta: dict[str, Any] = {
        "model": src.name,
        "format": fmt.name,
        "precision": precision,
        "input_name": "input",
        "output_name": "logits",
        "input_size": list(src.input_size),
        "batch": "dynamic" if dynamic else batch,
        "mean": list(src.mean),
        "std": list(src.std),
        "interpolation": src.interpolation,
        "crop_pct": src.crop_pct,
        "num_classes": src.num_classes,
        "source": src.origin,
        "edgezoo_version": edgezoo.__version__,
        "torch_version": torch.__version__.split("+")[0],
    }
    if src.classes:
        meta["classes"] = list(src.classes)
    return meta


def prepare(source: str | os.PathLike | nn.Module | Source, model: str | None = None, img_size: int | None = None,
            use_ema: bool = False, classes: list[str] | None = None) -> Source:
    """Resolve ``source`` and replace its model by the deploy form (eval, :func:`edgezoo.fuse`)."""
    from edgezoo import fuse
    from edgezoo.kernels import set_kernels

    src = source if isinstance(source, Source) else resolve_source(source, model, img_size, use_ema, classes)
    if getattr(src.model, "_edgezoo_deploy", False):
        return src
    src.model = fuse(src.model).float().cpu()  # fuse works on a copy: the caller's model is untouched
    # every exporter writes standard ops: the blocks' plain-torch path, whatever kernels= the model was built with
    # (the ONNX plugin option switches the fused ops back on for its own graph)
    set_kernels(src.model, "reference")
    src.model._edgezoo_deploy = True  # type: ignore[assignment]
    return src


@torch.no_grad()
def _parity_inputs(job: ExportJob, trained: bool) -> list[torch.Tensor]:
    """Fixed inputs for the gate: int8 uses held-out images; otherwise a seeded batch.

    A static batch runs in chunks of that size; a dynamic export runs a batch size other than
    the one exported, and another height/width where it exported them dynamic.
    """
    if job.precision == "int8" and job.calibration is not None:
        images = job.calibration.held_out
    else:
        images = job.example_input(batch=max(PARITY_IMAGES, job.batch))  # at least one chunk of a static batch
    if job.dynamic:
        extra = []
        if job.notes.get("dynamic_hw"):
            _, h, w = job.input_size
            extra.append(job.example_input(batch=2, size=(h + 32, w - 32 if w > 64 else w + 32)))
        n = job.batch + 2
        return [images[i:i + n] for i in range(0, len(images), n)] + extra
    chunks = [c for c in (images[i:i + job.batch] for i in range(0, len(images), job.batch)) if len(c) == job.batch]
    if not chunks:
        raise InvalidArgumentError(f"the parity gate has {len(images)} held-out images, fewer than the static batch "
                                   f"{job.batch}: export with a smaller --batch or more held-out images")
    return chunks


@torch.no_grad()
def _reference(model: nn.Module, inputs: list[np.ndarray], most: int = 32) -> np.ndarray:
    """PyTorch's outputs on ``inputs`` (chunks of the artifact's batch), run in batches of up to ``most`` images.

    The artifact runs chunk by chunk (its static batch); PyTorch needs no such split, and batching
    its side is most of the int8 gate's time saved (360 held-out images at batch 1).
    """
    outs, i = [], 0
    while i < len(inputs):
        j, n = i, 0
        while j < len(inputs) and inputs[j].shape[1:] == inputs[i].shape[1:] and n + len(inputs[j]) <= max(most, 1):
            n += len(inputs[j])
            j += 1
        j = max(j, i + 1)
        outs.append(model(torch.from_numpy(np.concatenate(inputs[i:j]))).float().numpy())
        i = j
    return np.concatenate(outs)


def _gate(fmt: Format, job: ExportJob, artifact: Path, trained: bool) -> tuple[str, dict[str, Any]]:
    reason = fmt.runtime_reason()
    if reason is not None:
        return "converted", {"passed": None, "reason": f"not run: {reason}"}
    inputs = [x.numpy() for x in _parity_inputs(job, trained)]
    ref = _reference(job.model, inputs)
    try:
        out = np.concatenate([fmt.run(artifact, x, job) for x in inputs])
    except NotRunnable as err:
        return "converted", {"passed": None, "reason": f"not run: {err}"}
    figures = compare(ref, out, job.precision, trained)
    tol = GATES[job.precision].max_rel_err
    if job.precision == "fp16" and not np.isfinite(out).all():
        figures["reason"] += ("; a value exceeds fp16's range (65504) in a node the fp32 policy leaves fp16: declare "
                              "its op in the block's fp32_ops, or export fp32")
    elif job.precision in ("fp32", "fp16") and tol is not None and figures.get("max_rel_err", 0.0) > tol:
        noise = fp32_instability(job.model, inputs)
        figures["torch_fp32_vs_fp64"] = noise
        # fp16's unit roundoff is 2**13 times fp32's: a model that amplifies fp32 rounding to `noise` amplifies
        # fp16 rounding to about 8192 * noise
        expected = None if noise is None else noise * (1.0 if job.precision == "fp32" else 2.0 ** 13)
        if expected is not None and expected > tol / 2:
            said = "" if job.precision == "fp32" else f", which predicts about {expected:.1e} in fp16"
            figures["reason"] += (f"; PyTorch's own fp32 output is {noise:.1e} from float64 on these inputs{said}: "
                                  f"the model is numerically unstable at this size, not the export (check its "
                                  f"weights and BatchNorm statistics at this resolution)")
    extra = fmt.extra_parity(artifact, inputs, ref, out, job)
    if extra.get("passed") is False and figures["passed"]:  # a second half of the gate failed
        figures.update(passed=False, reason=extra.get("reason", ""))
    figures.update({k: v for k, v in extra.items() if k not in ("passed", "reason")})
    return ("verified" if figures["passed"] else "failed"), figures


def export(
    source: str | os.PathLike | nn.Module | Source,
    format: str = "onnx",
    out_dir: str | os.PathLike = ".",
    *,
    model: str | None = None,
    img_size: int | None = None,
    batch: int = 1,
    dynamic: bool = False,
    precision: str | None = None,
    half: bool = False,
    int8: bool = False,
    calib: str = "digits",
    calib_size: int = CALIB_SIZE,
    use_ema: bool = False,
    classes: list[str] | None = None,
    log: Callable[[str], None] | None = None,
    **options: Any,
) -> ExportResult:
    """Export ``source`` to ``format`` in ``out_dir`` and return an :class:`ExportResult`.

    Args:
        source: a registered model name (random weights), an ``nn.Module``, a checkpoint path, or a
            :class:`Source` from :func:`prepare` (reused across formats without fusing again).
        format: a registered format (:func:`edgezoo.export.list_formats`).
        out_dir: destination folder (created).
        model: the model a checkpoint holds, when the checkpoint does not record it.
        img_size: export resolution (default: the checkpoint's, else the model's).
        batch: static batch size, or the batch of the example input when ``dynamic``.
        dynamic: dynamic batch, and dynamic height/width where the model allows it.
        precision: ``fp32`` (default for most formats), ``fp16`` or ``int8``.
        half: the same as ``precision="fp16"``.
        int8: the same as ``precision="int8"``.
        calib: int8 calibration data, ``digits`` or a folder of images.
        calib_size: how many calibration images.
        use_ema: export a checkpoint's EMA weights.
        classes: class names to embed (default: the checkpoint's).
        log: called with one progress line per stage.
        options: format-specific options (``edgezoo export --list-formats`` shows them).
    """
    log = log or (lambda msg: None)
    fmt = get_format(format)
    fmt.require()
    prec = _precision(fmt, precision, half, int8)
    opts = _check_options(fmt, options)
    if dynamic and not fmt.supports_dynamic:
        raise InvalidArgumentError(f"format {fmt.name!r} exports a static batch only: drop --dynamic")
    if batch < 1:
        raise InvalidArgumentError(f"batch must be >= 1, got {batch}")
    src = prepare(source, model, img_size, use_ema, classes)
    if img_size and isinstance(source, Source) and src.input_size[1:] != (img_size, img_size):
        src.input_size = (src.input_size[0], img_size, img_size)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    meta = metadata_for(src, fmt, prec, batch, dynamic)
    work = Path(tempfile.mkdtemp(prefix=f".{src.name}.{fmt.name}.", dir=out))
    job = ExportJob(model=src.model, name=src.name, input_size=src.input_size, batch=batch, dynamic=dynamic,
                    precision=prec, options=opts, metadata=meta, work_dir=work, log=log, trained=src.trained)
    result = ExportResult(model=src.name, format=fmt.name, precision=prec, status="failed",
                          options={"batch": batch, "dynamic": dynamic, "img_size": src.input_size[1], **opts},
                          metadata=meta)
    try:
        if prec == "int8":
            from edgezoo.data.calib import load_calibration

            log(f"{src.name}: calibration data from {calib}")
            job.calibration = load_calibration(calib, src, calib_size)
            meta["calibration"] = job.calibration.source
        log(f"{src.name}: converting to {fmt.name} {prec}")
        start = time.perf_counter()
        artifact = fmt.convert(job)
        result.seconds = time.perf_counter() - start
        log(f"{src.name}: parity gate ({fmt.parity})")
        status, figures = _gate(fmt, job, artifact, src.trained)
        result.status, result.parity = status, figures
        result.warnings, result.notes = job.warnings, job.notes
        if status == "failed":
            return result
        final = out / artifact.name
        sidecar = work / f"{artifact.name}.json"
        result.size_bytes = _size(artifact)
        result.path = str(final)
        sidecar.write_text(json.dumps({**meta, "export": {k: v for k, v in result.to_dict().items()
                                                          if k != "metadata"}}, indent=2, default=str))
        _move_into_place(artifact, final)
        _move_into_place(sidecar, out / sidecar.name)
        log(f"{src.name}: {status} -> {final}")
        return result
    except EdgezooError:
        raise
    except Exception as err:  # a conversion failure is a result, with the error's first line
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        result.error = f"{type(err).__name__}: {first[:300]}"
        result.warnings, result.notes = job.warnings, job.notes
        result.notes["traceback"] = traceback.format_exc(limit=6)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)
