"""The mixer sweep's macro-architecture: one four-stage backbone whose token mixer is the only variable.

MetaFormer's point (Yu et al., "MetaFormer Is Actually What You Need for Vision", CVPR 2022) is that a
block's general form matters as much as its token mixer; papers on efficient mixers each report theirs in
their own macro-architecture with their own recipe, so their numbers do not compare. Here every mixer of
:mod:`edgezoo.blocks.mixers` sits in the same network:

* stem: 3x3 stride-2 Conv-BN-GELU;
* stages 1-2 (stride 4, 8): MBConv (expansion 4, GELU) blocks, the first one strided;
* stages 3-4 (stride 16, 32): a 3x3 stride-2 Conv-BN, then MetaFormer blocks
  ``x + mixer(LN(x))``, ``x + MLP(LN(x))`` (LayerNorm over channels, 1x1-conv MLP ratio 4, GELU);
* neck LayerNorm, global average pool, linear classifier.

Two sizes, ``s`` (0.30 GMACs at 224 px) and ``m`` (1.00 GMACs); each model is within 3% of its size's target.
Widths, depths, norms and MLPs are fixed per size; what changes per mixer is the mixer alone, and the
attention mixers' own width (:data:`MIXER_WIDTHS`) is set so the totals match. ``ez_mix_<mixer>_<size>``.
None of these models has pretrained weights.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, LayerNorm2d, SelectAdaptivePool2d, calculate_drop_path_rates
from timm.models import build_model_with_cfg, generate_default_cfgs
from torch import nn

from edgezoo._base import StagedBackbone, feature_cfg
from edgezoo.blocks.focal import GELU
from edgezoo.blocks.mbconv import ConvNormAct, MBConv, Residual
from edgezoo.blocks.mixers import MIXERS, create_mixer
from edgezoo.errors import ConfigError, InvalidArgumentError
from edgezoo.registry import register

__all__ = ["MIXER_WIDTHS", "SIZES", "TARGET_MACS", "MacroCfg", "MetaBlock", "MixNet"]

FAMILY = "mixer_sweep"


@dataclass(frozen=True)
class MacroCfg:
    """Stem width, four stage widths and depths."""

    widths: tuple[int, int, int, int, int]
    depths: tuple[int, int, int, int]


SIZES: dict[str, MacroCfg] = {
    "s": MacroCfg(widths=(16, 32, 64, 128, 268), depths=(2, 2, 4, 2)),
    "m": MacroCfg(widths=(24, 48, 96, 216, 388), depths=(2, 3, 6, 3)),
}
#: MACs target of each size at 224x224.
TARGET_MACS: dict[str, float] = {"s": 0.30e9, "m": 1.00e9}
#: Width of each attention mixer per size: the largest (in steps of 8, or of a 16-channel head) that keeps
#: the model within +2.5% of its target. The macro without a mixer (``none``) sits at -2.5% (s) and -2.7%
#: (m), so every mixer has about 5% of the MACs to spend; the 1x1 convs into and out of its width cost most.
MIXER_WIDTHS: dict[str, dict[str, int]] = {
    "s": {"shvit": 24, "cga": 24, "focal": 32, "mhsa": 16, "litemla": 16, "flatten": 32, "agent": 16, "mala": 32,
          "inline": 32},
    "m": {"shvit": 56, "cga": 56, "focal": 48, "mhsa": 32, "litemla": 32, "flatten": 48, "agent": 32, "mala": 48,
          "inline": 48},
}


class MetaBlock(nn.Module):
    """MetaFormer block: ``x + mixer(norm1(x))`` then ``x + mlp(norm2(x))`` (stochastic depth on both)."""

    def __init__(self, dim: int, mixer: nn.Module, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = LayerNorm2d(dim)
        self.mixer = mixer
        self.norm2 = LayerNorm2d(dim)
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), GELU(), nn.Conv2d(hidden, dim, 1))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.mixer(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def _mbconv(in_chs: int, out_chs: int, stride: int) -> MBConv:
    return MBConv(in_chs, out_chs, stride=stride, expand_ratio=4.0, act_layer=(GELU, GELU, None))


class MixNet(StagedBackbone):
    """The sweep's backbone (see the module docstring).

    Args:
        mixer: a name of :data:`edgezoo.blocks.mixers.MIXERS`.
        size: ``"s"`` or ``"m"`` (widths and depths, :data:`SIZES`).
        mixer_width: the attention mixer's own width (default: :data:`MIXER_WIDTHS`).
        img_size: the input side the position tables, windows and agents are sized for.
    """

    def __init__(self, mixer: str = "none", size: str = "s", mixer_width: int | None = None, img_size: int = 224,
                 num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        if mixer not in MIXERS:
            raise ConfigError(f"unknown mixer {mixer!r}: pass mixer= one of {', '.join(MIXERS)}")
        if size not in SIZES:
            raise ConfigError(f"unknown size {size!r}: pass size= one of {', '.join(SIZES)}")
        cfg = SIZES[size]
        width = mixer_width or MIXER_WIDTHS[size].get(mixer)
        self.mixer, self.size, self.num_classes, self.drop_rate = mixer, size, num_classes, drop_rate
        w = cfg.widths
        self.stem = ConvNormAct(in_chans, w[0], 3, 2, act_layer=GELU)
        n_meta = cfg.depths[2] + cfg.depths[3]
        dpr = calculate_drop_path_rates(drop_path_rate, n_meta)
        stages, self.feature_info, chs, stride = [], [], w[0], 2
        for i, (out_chs, depth) in enumerate(zip(w[1:], cfg.depths, strict=True)):
            stride *= 2
            if i < 2:
                blocks = [_mbconv(chs, out_chs, 2)] + [Residual(_mbconv(out_chs, out_chs, 1)) for _ in range(depth - 1)]
                stage = nn.Sequential(*blocks)
            else:
                side = max(img_size // stride, 1)
                rates = dpr[:depth] if i == 2 else dpr[cfg.depths[2]:]
                stage = nn.Sequential(OrderedDict(
                    down=ConvNormAct(chs, out_chs, 3, 2, act_layer=None),
                    blocks=nn.Sequential(*(MetaBlock(out_chs, create_mixer(mixer, out_chs, width, side),
                                                     drop_path=r) for r in rates)),
                ))
            stages.append(stage)
            chs = out_chs
            self.feature_info.append({"num_chs": chs, "reduction": stride, "module": f"stages.{i}", "stage": i})
        self.stages = nn.Sequential(*stages)
        self.neck = LayerNorm2d(chs)
        self.num_features = self.head_hidden_size = chs
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(chs * self.global_pool.feat_mult(), num_classes) if num_classes else nn.Identity()

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Position tables and biases of the mixers (FLatten's k encoding, agent biases, CGA's table)."""
        keys = ("k_pos", "_bias", "attention_biases", "main.scale", "mixer.scale")
        return {n for n, _ in self.named_parameters() if n.endswith(keys) and "." in n}

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))
        device = next(self.parameters()).device
        feat = self.num_features * self.global_pool.feat_mult()
        self.head = nn.Linear(feat, num_classes, device=device) if num_classes else nn.Identity()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.head(x)


def _cfg(**kwargs) -> dict:
    return {
        "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7), "crop_pct": 0.95,
        "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.conv", "classifier": "head", "license": "apache-2.0",
        "paper_name": "MetaFormer Is Actually What You Need for Vision (the block form); edgezoo's mixer sweep",
        "paper_ids": "arXiv:2111.11418", "notes": ("edgezoo's mixer-sweep macro: no published accuracy or weights",),
        **kwargs,
    }


default_cfgs = generate_default_cfgs({f"ez_mix_{m}_{s}": _cfg() for s in SIZES for m in MIXERS})


def _make_entrypoint(mixer: str, size: str):
    name = f"ez_mix_{mixer}_{size}"

    def entrypoint(pretrained: bool = False, **kwargs) -> MixNet:
        if pretrained:
            raise InvalidArgumentError(f"{name} has no pretrained weights (train it: `edgezoo sweep`)")
        return build_model_with_cfg(MixNet, name, False, feature_cfg=feature_cfg(4),
                                    **{"mixer": mixer, "size": size, **kwargs})

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = (f"Mixer-sweep backbone, size {size} ({TARGET_MACS[size] / 1e9:.2f} GMACs at 224), "
                          f"token mixer {mixer!r} in stages 3-4.")
    return register(FAMILY)(entrypoint)


for _size in SIZES:
    for _mixer in MIXERS:
        _make_entrypoint(_mixer, _size)
