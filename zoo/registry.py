"""What edgezoo knows about each model, on top of timm's registry.

Every edgezoo model is a timm model: a family module defines ``default_cfgs`` and decorates
its entrypoints with :func:`register`, which registers them with timm (so
``timm.create_model("ez_...")`` works after ``import edgezoo``) and records the family and
the checkpoint key-remapping hook that :func:`edgezoo.load_checkpoint` applies.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import timm
from timm.models import register_model
from torch import nn

from edgezoo.errors import InvalidArgumentError, UnknownModelError
from edgezoo.kernels import check_mode, set_kernels

__all__ = [
    "FAMILIES",
    "ModelSpec",
    "UnknownModelError",
    "create_model",
    "find_spec",
    "get_spec",
    "list_models",
    "model_doc",
    "register",
    "resolve_name",
]

StateDict = dict[str, Any]
FilterFn = Callable[[StateDict, nn.Module], StateDict]

#: The five block families, in the order the docs list them.
FAMILIES: dict[str, str] = {
    "cnn_attention": "channel/spatial CNN attention (SE, CBAM, ECA, Triplet, ELA, CA)",
    "single_head_vit": "single-head ViT (SHViT)",
    "cascaded_group": "cascaded group attention (EfficientViT-M)",
    "focal_modulation": "focal modulation (FocalNet)",
    "linear_vit": "linear-attention ViT (EfficientViT-B/L, FLatten, Agent, MALA)",
    "mixer_sweep": "one MetaFormer macro, every token mixer (ez_mix_<mixer>_<size>)",
}


@dataclass(frozen=True)
class ModelSpec:
    """Registry entry of one edgezoo model."""

    name: str
    family: str
    module: str
    filter_fn: FilterFn | None = None


_SPECS: dict[str, ModelSpec] = {}


def register(family: str, filter_fn: FilterFn | None = None) -> Callable[[Callable], Callable]:
    """Register a model entrypoint with timm and record its edgezoo metadata.

    The entrypoint's module must define ``default_cfgs`` holding a cfg for the name, as timm
    expects; ``filter_fn(state_dict, model)`` maps foreign checkpoint layouts to this model's.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {sorted(FAMILIES)}")

    def decorator(fn: Callable) -> Callable:
        name = fn.__name__
        if not name.startswith("ez_"):
            raise ValueError(f"edgezoo model names start with 'ez_', got {name!r}")
        _SPECS[name] = ModelSpec(name=name, family=family, module=fn.__module__, filter_fn=filter_fn)
        return register_model(_with_kernels(fn))

    return decorator


def _with_kernels(fn: Callable) -> Callable:
    """``fn`` taking ``kernel_mode="auto" | "triton" | "reference"`` too: the fused-op mode of every block of
    the model it builds (:func:`edgezoo.kernels.set_kernels`).

    ``kernels=`` stays the model's own argument (EfficientViT-M's per-head kernel sizes, the paper's config
    name); a mode given there, or a mode that is not one, is a one-line error naming the right keyword.
    """

    @functools.wraps(fn)
    def entrypoint(*args: Any, kernel_mode: str = "auto", **kwargs: Any) -> nn.Module:
        sizes = kwargs.get("kernels")
        if isinstance(sizes, str):
            raise InvalidArgumentError(
                f"kernels={sizes!r}: kernels= is EfficientViT-M's per-head kernel sizes, e.g. kernels=(7, 5, 3, 3); "
                f"the fused-op mode is kernel_mode={sizes!r}")
        try:
            check_mode(kernel_mode)
        except ValueError as err:
            raise InvalidArgumentError(str(err)) from None
        return set_kernels(fn(*args, **kwargs), kernel_mode)

    return entrypoint


def list_models(filter: str = "", family: str | None = None) -> list[str]:
    """Names of registered edgezoo models, sorted; ``filter`` is a substring or a glob."""
    import fnmatch

    if family is not None and family not in FAMILIES:
        raise InvalidArgumentError(f"unknown family {family!r}; choose one of: {', '.join(FAMILIES)}")
    names = sorted(_SPECS)
    if family:
        names = [n for n in names if _SPECS[n].family == family]
    if filter:
        pattern = filter if any(c in filter for c in "*?[") else f"*{filter}*"
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def resolve_name(name: str) -> str:
    """Return ``name`` if registered, else raise :class:`UnknownModelError` naming close matches."""
    if name in _SPECS:
        return name
    if f"ez_{name}" in _SPECS:
        return f"ez_{name}"
    close = difflib.get_close_matches(name, list(_SPECS), n=5, cutoff=0.6)
    if not close:
        close = [n for n in _SPECS if name.lower().removeprefix("ez_") in n][:5]
    hint = f"; did you mean: {', '.join(close)}?" if close else "; run `edgezoo list` to see all models"
    raise UnknownModelError(f"unknown model {name!r}{hint}")


def find_spec(name: str) -> ModelSpec | None:
    """The :class:`ModelSpec` of ``name`` when it is a registered edgezoo model, else None (no error)."""
    return _SPECS.get(name)


def model_doc(name: str) -> str:
    """The first paragraph of a registered model's entrypoint docstring, on one line."""
    from timm.models import get_arch_name, model_entrypoint

    doc = (model_entrypoint(get_arch_name(name)).__doc__ or "").strip()
    return " ".join(doc.split("\n\n")[0].split())


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a registered model (close names suggested when unknown)."""
    return _SPECS[resolve_name(name)]


def create_model(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` for edgezoo names, with a helpful error for unknown ones."""
    return timm.create_model(resolve_name(name), pretrained=pretrained, **kwargs)
