"""SHViT S1-S4 (Yun & Ro, "SHViT: Single-Head Vision Transformer with Memory Efficient Macro
Design", CVPR 2024), built on the LeViT-style trunk it shares with EfficientViT-M (zoo/_levit.py).

Layout: 16x conv stem -> three stages (stage 0 conv-only, stages 1-2 with single-head attention
on a partial channel slice) -> average pool -> BN + Linear. Every stage after the first starts
with DW -> FFN -> PatchMerging -> DW -> FFN (:class:`edgezoo.blocks.levit_common.StageDownsample`).

Checkpoints: timm's ``shvit_*`` layout and the official ysj9909/SHViT layout (``blocks1..3``,
``Conv2d_BN.c``, ``BN_Linear.l``) load into ``ez_shvit_*``. An official checkpoint trained
with distillation has a second classifier ``head_dist``; the official model averages both
heads' logits at inference, so the two BN+Linear heads are merged into one exactly equivalent
head (BN statistics of the merged head are the identity).
"""

from __future__ import annotations

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import calculate_drop_path_rates
from timm.models import build_model_with_cfg, generate_default_cfgs
from torch import nn

from edgezoo._base import feature_cfg
from edgezoo._levit import LevitStage, LevitStyleNet, levit_state_dict
from edgezoo.blocks.levit_common import SandwichBlock, StageDownsample, Stem16
from edgezoo.blocks.single_head import SHSA
from edgezoo.errors import ConfigError
from edgezoo.registry import register

__all__ = ["SHViT"]

FAMILY = "single_head_vit"
PAPER = "SHViT: Single-Head Vision Transformer with Memory Efficient Macro Design (Yun & Ro, CVPR 2024)"


class SHViT(LevitStyleNet):
    """SHViT: half-sandwich blocks (DW -> SHSA -> FFN); stage type ``"i"`` has no attention."""

    def __init__(
        self,
        embed_dim: tuple[int, ...] = (128, 224, 320),
        partial_dim: tuple[int, ...] = (32, 48, 68),
        depth: tuple[int, ...] = (2, 4, 5),
        types: tuple[str, ...] = ("i", "s", "s"),
        qk_dim: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if not len(embed_dim) == len(partial_dim) == len(depth) == len(types):
            raise ConfigError("SHViT needs embed_dim, partial_dim, depth and types of the same length")
        if set(types) - {"i", "s"}:
            raise ConfigError(f"SHViT stage types are 'i' (conv only) or 's' (single-head attention), got {types}")
        if not global_pool and num_classes > 0:
            raise ConfigError("a classifier needs pooled features: pass global_pool='avg' with num_classes > 0")
        self.in_chans = in_chans
        self.stem = Stem16(in_chans, embed_dim[0])
        dpr = calculate_drop_path_rates(drop_path_rate, list(depth), stagewise=True)
        stages, self.feature_info, prev = [], [], embed_dim[0]
        for i, (dim, pdim, d, t) in enumerate(zip(embed_dim, partial_dim, depth, types, strict=True)):
            down = StageDownsample(prev, dim) if i > 0 else None
            blocks = [
                SandwichBlock(dim, SHSA(dim, pdim, qk_dim) if t == "s" else None, sandwich=False, drop_path=dpr[i][j])
                for j in range(d)
            ]
            stages.append(LevitStage(down, blocks))
            self.feature_info.append({"num_chs": dim, "reduction": 16 * 2**i, "module": f"stages.{i}", "stage": i})
            prev = dim
        self.stages = nn.Sequential(*stages)
        self._init_head(embed_dim[-1], num_classes, global_pool, drop_rate)


# ---------------------------------------------------------------------------------------------
# Checkpoint layouts (zoo/_levit.py)
# ---------------------------------------------------------------------------------------------


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """timm ``shvit_*`` and official ysj9909/SHViT checkpoints -> ``ez_shvit_*`` keys."""
    return levit_state_dict(state_dict)


# ---------------------------------------------------------------------------------------------
# Configs and registration
# ---------------------------------------------------------------------------------------------


def _cfg(**kwargs) -> dict:
    return {
        "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (4, 4),
        "crop_pct": 0.875, "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.conv1.conv", "classifier": "head.linear", "license": "mit",
        "paper_ids": "arXiv:2401.16456", "paper_name": PAPER, "origin_url": "https://github.com/ysj9909/SHViT",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "ez_shvit_s1": _cfg(),
    "ez_shvit_s2": _cfg(),
    "ez_shvit_s3": _cfg(),
    "ez_shvit_s4": _cfg(input_size=(3, 256, 256)),
})

_VARIANTS = {
    "s1": {"embed_dim": (128, 224, 320), "depth": (2, 4, 5), "partial_dim": (32, 48, 68)},
    "s2": {"embed_dim": (128, 308, 448), "depth": (2, 4, 5), "partial_dim": (32, 66, 96)},
    "s3": {"embed_dim": (192, 352, 448), "depth": (3, 5, 5), "partial_dim": (48, 75, 96)},
    "s4": {"embed_dim": (224, 336, 448), "depth": (4, 7, 6), "partial_dim": (48, 72, 96)},
}


def _create(variant: str, pretrained: bool, **kwargs) -> SHViT:
    name = f"ez_shvit_{variant}"
    return build_model_with_cfg(
        SHViT, name, pretrained, pretrained_filter_fn=checkpoint_filter_fn, feature_cfg=feature_cfg(3),
        **{**_VARIANTS[variant], "types": ("i", "s", "s"), **kwargs},
    )


@register(FAMILY, checkpoint_filter_fn)
def ez_shvit_s1(pretrained: bool = False, **kwargs) -> SHViT:
    """SHViT-S1 (6.3M params, 241M MACs @224): single-head ViT, Yun & Ro, CVPR 2024."""
    return _create("s1", pretrained, **kwargs)


@register(FAMILY, checkpoint_filter_fn)
def ez_shvit_s2(pretrained: bool = False, **kwargs) -> SHViT:
    """SHViT-S2 (11.4M params, 366M MACs @224): single-head ViT, Yun & Ro, CVPR 2024."""
    return _create("s2", pretrained, **kwargs)


@register(FAMILY, checkpoint_filter_fn)
def ez_shvit_s3(pretrained: bool = False, **kwargs) -> SHViT:
    """SHViT-S3 (14.2M params, 601M MACs @224): single-head ViT, Yun & Ro, CVPR 2024."""
    return _create("s3", pretrained, **kwargs)


@register(FAMILY, checkpoint_filter_fn)
def ez_shvit_s4(pretrained: bool = False, **kwargs) -> SHViT:
    """SHViT-S4 (16.5M params, 986M MACs @256): single-head ViT, Yun & Ro, CVPR 2024."""
    return _create("s4", pretrained, **kwargs)
