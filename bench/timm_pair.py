"""``--compare-timm``: timm's model of the same architecture, carrying the same weights as edgezoo's.

timm's model is built and its weights randomised (:func:`edgezoo.weights.calibrate_bn_`: timm's init zeroes
branches that converters fold away), its state dict is mapped into the edgezoo model by the
family's checkpoint mapping (:func:`edgezoo.load_checkpoint`'s ``filter_fn``: the same code that
loads timm checkpoints), and the two are checked to give the same outputs before anything is timed.
edgezoo's model is then benchmarked in its deploy form (:func:`edgezoo.fuse`), timm's as timm ships
it (eval mode), both through the same exporter and runtime.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from edgezoo.errors import InvalidArgumentError

__all__ = ["Pair", "counterpart", "make_pair"]


def _timm_resnet(depth: int, attn: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from timm.models.resnet import BasicBlock, Bottleneck, ResNet

        block, layers = (BasicBlock, [2, 2, 2, 2]) if depth == 18 else (Bottleneck, [3, 4, 6, 3])
        return ResNet(block, layers, block_args={"attn_layer": attn})

    return build


#: edgezoo models whose timm counterpart is not simply the name without ``ez_``: (label, builder).
_SPECIAL: dict[str, tuple[str, Callable[[], nn.Module]]] = {
    **{f"ez_resnet{d}_se": (f"seresnet{d}", _timm_resnet(d, "se")) for d in (18, 50)},
    **{f"ez_resnet{d}_{a}": (f"timm ResNet-{d}(attn_layer={a})", _timm_resnet(d, a))
       for d in (18, 50) for a in ("eca", "cbam")},
}


def counterpart(name: str) -> str | None:
    """The timm model (name or label) that has edgezoo model ``name``'s architecture, or ``None``."""
    import timm

    if name in _SPECIAL:
        return _SPECIAL[name][0]
    bare = name.removeprefix("ez_")
    return bare if bare != name and timm.is_model(bare) else None


def _create(build: Callable[..., nn.Module], img_size: int | None) -> nn.Module:
    """``build(img_size=...)`` where the model takes an image size, else ``build()``."""
    if img_size is not None:
        try:
            return build(img_size=img_size)
        except TypeError as err:
            if "img_size" not in str(err):
                raise
    return build()


@dataclass
class Pair:
    """edgezoo's model (weights mapped from timm's) and timm's; ``rel_err``: their outputs' relative max error."""

    ez: nn.Module
    timm: nn.Module
    timm_name: str
    rel_err: float

    @property
    def timm_slug(self) -> str:
        """``timm_name`` as a file-name-safe model name, e.g. ``timm_ResNet_18_attn_layer_eca``."""
        slug = re.sub(r"[^A-Za-z0-9_]+", "_", self.timm_name).strip("_")
        return slug if slug.startswith("timm") else f"timm_{slug}"


def make_pair(name: str, img_size: int | None = None, tolerance: float = 1e-4) -> Pair:
    """Build edgezoo's ``name`` and its timm counterpart with the same weights (see the module docstring)."""
    import timm

    import edgezoo
    from edgezoo.weights import calibrate_bn_

    label = counterpart(name)
    if label is None:
        raise InvalidArgumentError(f"{name} has no timm counterpart of the same architecture: drop --compare-timm "
                                   f"for it (counterparts: ez_efficientvit_m*, ez_shvit_s*, ez_focalnet_*_srf/lrf, "
                                   f"ez_efficientvit_b*/l*, timm-width ResNets with SE/ECA/CBAM)")
    build = _SPECIAL[name][1] if name in _SPECIAL else (lambda **kw: timm.create_model(label, **kw))
    ref = _create(build, img_size)
    # randomised, not timm's init: that zeroes branches converters then fold away (a smaller graph to time)
    cfg = getattr(ref, "pretrained_cfg", None) or {}
    calibrate_bn_(ref, size=img_size or int(cfg.get("input_size", (3, 224, 224))[-1]))
    ez = _create(lambda **kw: edgezoo.create_model(name, **kw), img_size).eval()
    spec = edgezoo.get_spec(name)
    state = ref.state_dict()
    if spec.filter_fn is not None:
        state = spec.filter_fn(state, ez)
    try:
        ez.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = next((ln.strip() for ln in str(err).splitlines()[1:] if ln.strip()), str(err))
        raise InvalidArgumentError(f"{label}'s weights do not map into {name} ({first[:160]}): not the same "
                                   f"architecture; drop --compare-timm for it") from None
    size = img_size or ez.pretrained_cfg["input_size"][-1]
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ez(x), ref(x)
    rel = float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
    if rel > tolerance:
        raise InvalidArgumentError(f"{name} and {label} differ (relative max error {rel:.1e} > {tolerance:g}) with "
                                   f"the same weights: not the same architecture at {size} px")
    return Pair(ez=ez, timm=ref, timm_name=label, rel_err=rel)
