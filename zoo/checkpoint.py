"""Reading checkpoints safely and loading them into edgezoo models.

``load_checkpoint`` accepts what people actually have on disk: ``.pth``/``.pt``/``.bin`` files
(read with ``torch.load(weights_only=True)``, never unpickling code) and ``.safetensors``; a
bare state dict or one nested under ``state_dict`` / ``model`` / ``model_ema`` / ...; keys
prefixed by ``module.`` (DDP) or ``_orig_mod.`` (torch.compile). Foreign layouts (timm's,
the papers' official repositories') are mapped by the model family's ``filter_fn``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgezoo.errors import CheckpointError
from edgezoo.registry import find_spec

__all__ = ["CheckpointError", "load_checkpoint", "read_checkpoint", "read_state_dict", "save_atomic"]

#: Keys under which training scripts nest the weights, most specific first.
_NESTED_KEYS = ("state_dict", "model", "module", "net", "network", "params")
_EMA_KEYS = ("model_ema", "state_dict_ema", "ema")
_PREFIXES = ("module.", "_orig_mod.", "model.")


def read_checkpoint(path: str | os.PathLike, mmap: bool = False) -> Any:
    """The object a checkpoint file holds (``torch.load`` with ``weights_only=True``, or safetensors' tensors),
    else a one-line :class:`CheckpointError` saying the file is missing or is not a checkpoint.

    ``mmap``: map a zip-format file instead of reading it (fast for reading a few metadata keys).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        if mmap:
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except Exception:  # a legacy (non-zip) file cannot be mapped: read it whole below
                pass
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch and safetensors raise many types for a bad file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path} ({path.stat().st_size} bytes): it is truncated, corrupt, "
            f"or not a PyTorch/safetensors weights file [{type(err).__name__}: {first[:200]}]"
        ) from err


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _strip_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _PREFIXES:
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


def read_state_dict(path: str | os.PathLike, use_ema: bool = False) -> dict[str, torch.Tensor]:
    """Read a checkpoint file and return its weights as a flat ``{key: tensor}`` dict."""
    return _weights(read_checkpoint(path), path, use_ema)


def _weights(obj: Any, path: str | os.PathLike, use_ema: bool) -> dict[str, torch.Tensor]:
    keys = (_EMA_KEYS + _NESTED_KEYS) if use_ema else _NESTED_KEYS
    while isinstance(obj, Mapping) and not _is_state_dict(obj):
        inner = next((obj[k] for k in keys if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            found = ", ".join(map(str, list(obj)[:8]))
            raise CheckpointError(
                f"no weights found in {path}: top-level keys are [{found}]; expected a state dict or one "
                f"nested under {', '.join(keys)}"
            )
        obj = inner
    if not _is_state_dict(obj):
        raise CheckpointError(f"no weights found in {path}: it holds a {type(obj).__name__}, not a state dict")
    return _strip_prefixes(dict(obj))


def _remap(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    arch = getattr(model, "pretrained_cfg", {}).get("architecture")
    spec = find_spec(arch) if arch else None
    if spec is not None and spec.filter_fn is not None:
        return spec.filter_fn(state_dict, model)
    return state_dict


def _check_built_alike(state_dict: dict[str, torch.Tensor], model: nn.Module, built: Mapping[str, Any],
                       path: str | os.PathLike) -> None:
    """Refuse a checkpoint whose model was built with ``built`` (e.g. ``img_size=48``: smaller attention
    windows) when ``model``'s same-named weights have other shapes: the family's remap would resize them."""
    expected = model.state_dict()
    shapes = [f"{k} {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
              for k, v in state_dict.items() if k in expected and v.shape != expected[k].shape]
    if shapes:
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(built.items()))
        how = f"create_model(name, {args})" if args else "create_model(name) with the default img_size"
        raise CheckpointError(f"{path} was trained on a model built with {args or 'its defaults'}, which this "
                              f"one is not ({len(shapes)} wrongly shaped [{_summarise(shapes, 2)}]): build it "
                              f"with {how}")


def _summarise(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... (+{len(keys) - limit} more)" if len(keys) > limit else shown


def _check_keys(state_dict: dict[str, torch.Tensor], model: nn.Module, name: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k} {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing [{_summarise(missing)}]")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected [{_summarise(unexpected)}]")
    if shapes:
        parts.append(f"{len(shapes)} wrongly shaped [{_summarise(shapes, 3)}]")
    layout = getattr(model, "attn_layout", None)  # CNN-attention models: which variant's widths/kernels
    hint = (f" or layout= (this one is layout={layout!r}; timm's seresnet/ecaresnet checkpoints need 'timm', "
            f"the papers' released ones 'paper')" if layout and shapes else "")
    raise CheckpointError(
        f"checkpoint does not match {name}: {'; '.join(parts)}. Check the model name and num_classes{hint}, "
        f"or pass strict=False to load only the matching keys"
    )


def load_checkpoint(
    model: nn.Module,
    path: str | os.PathLike,
    strict: bool = True,
    use_ema: bool = False,
    remap: bool = True,
) -> dict[str, list[str]]:
    """Load weights from ``path`` into ``model`` (in place).

    Args:
        model: an edgezoo (or any timm) model.
        path: ``.pth``/``.pt``/``.bin`` (read with ``weights_only=True``) or ``.safetensors``.
        strict: raise :class:`CheckpointError` listing missing, unexpected and wrongly shaped
            keys on any mismatch. With ``strict=False`` matching keys load and wrongly shaped
            ones are skipped (e.g. a classifier for another number of classes).
        use_ema: prefer EMA weights (``model_ema``/``state_dict_ema``) when the file has them.
        remap: apply the model family's key mapping for timm and official checkpoint layouts.

    Returns:
        ``{"missing": [...], "unexpected": [...], "skipped": [...]}`` (all empty when strict).
    """
    obj = read_checkpoint(Path(path))
    state_dict = _weights(obj, path, use_ema)
    built = obj.get("model_kwargs") if isinstance(obj, Mapping) else None
    if strict and isinstance(built, Mapping):  # edgezoo's training checkpoint: a resize in _remap changes its function
        _check_built_alike(state_dict, model, built, path)
    if remap:
        state_dict = _remap(state_dict, model)
    name = getattr(model, "pretrained_cfg", {}).get("architecture") or type(model).__name__
    if strict:
        _check_keys(state_dict, model, name)
        model.load_state_dict(state_dict, strict=True)
        return {"missing": [], "unexpected": [], "skipped": []}
    expected = model.state_dict()
    skipped = [k for k, v in state_dict.items() if k in expected and v.shape != expected[k].shape]
    state_dict = {k: v for k, v in state_dict.items() if k not in skipped}
    result = model.load_state_dict(state_dict, strict=False)
    return {"missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys), "skipped": skipped}


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` (or safetensors for a ``.safetensors`` path) to a temp file, then rename.

    A reader sees either the old file or the complete new one, never a partial write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in obj.items()}, tmp)
        else:
            torch.save(obj, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
