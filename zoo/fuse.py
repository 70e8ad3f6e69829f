"""``edgezoo.fuse``: the inference (deploy) form of any edgezoo model.

The deploy form is the eval-mode model with every BatchNorm that follows a conv (or precedes
a linear) folded into it, re-parameterisable branches collapsed, and drop-path / dropout
removed. Outputs equal the eval-mode model within float rounding.

Two mechanisms do the work, both explicit:

* a module that knows how to fuse itself defines ``fuse() -> nn.Module`` (all edgezoo blocks);
* modules from other libraries get a fuser registered with :func:`register_fuser` that
  folds their layers in place (timm's ResNet blocks, for instance), and an ``nn.Sequential``
  has every ``Conv2d`` directly followed by a ``BatchNorm2d`` folded, since a Sequential's
  order is its forward order.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable

from timm.layers import DropPath
from torch import nn

from edgezoo.blocks.conv_bn import fold_pair

__all__ = ["fold_pair", "fuse", "register_fuser"]

_FUSERS: dict[type[nn.Module], Callable[[nn.Module], None]] = {}


def register_fuser(cls: type[nn.Module]) -> Callable:
    """Register ``fn(module)`` that fuses an instance of ``cls`` in place (exact type match)."""

    def decorator(fn: Callable[[nn.Module], None]) -> Callable[[nn.Module], None]:
        _FUSERS[cls] = fn
        return fn

    return decorator


def _fuse_sequential(seq: nn.Sequential) -> None:
    names = list(seq._modules)
    for first, second in itertools.pairwise(names):
        fold_pair(seq, first, second)


def _fuse_tree(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, (DropPath, nn.Dropout)):
            setattr(module, name, nn.Identity())
            continue
        fuse_self = getattr(child, "fuse", None)
        if callable(fuse_self):
            child = fuse_self()
            setattr(module, name, child)
        elif type(child) in _FUSERS:
            _FUSERS[type(child)](child)
        elif type(child) is nn.Sequential:
            _fuse_sequential(child)
        _fuse_tree(child)


def fuse(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return the deploy form of ``model`` (a copy unless ``inplace``), in eval mode."""
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    if type(model) in _FUSERS:
        _FUSERS[type(model)](model)
    _fuse_tree(model)
    return model.eval()  # layers created while fusing start in training mode
