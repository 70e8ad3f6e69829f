"""``edgezoo.fuse``: the inference (deploy) form of any edgezoo model.

The deploy form is the eval-mode model with every BatchNorm that follows a conv (or precedes
a linear) folded into it, re-parameterisable branches collapsed, and drop-path / dropout
removed. Outputs equal the eval-mode model within float rounding.

One mechanism does the work, timm's: ``timm.models.reparameterize_model`` walks the module tree
and replaces each child that has a ``fuse()`` with what it returns (and calls ``reparameterize()``
/ ``switch_to_deploy()`` where a module has those instead). Every edgezoo module that holds a
conv -> BN pair has a ``fuse()`` (:mod:`edgezoo.blocks.conv_bn` says how each kind of holder
does it), so timm's ``reparameterize_model`` (what ``--reparam`` in timm's scripts runs) and this
function give the same model; this one also sets eval mode and drops the drop-path and dropout
modules (identities at inference).
"""

from __future__ import annotations

import copy

from timm.layers import DropPath
from timm.models import reparameterize_model
from torch import nn

__all__ = ["fuse"]


def _drop_identities(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, (DropPath, nn.Dropout)):
            setattr(module, name, nn.Identity())
        else:
            _drop_identities(child)


def fuse(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return the deploy form of ``model`` (a copy unless ``inplace``), in eval mode."""
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    reparameterize_model(model, inplace=True)
    _drop_identities(model)
    return model.eval()  # layers created while fusing start in training mode
