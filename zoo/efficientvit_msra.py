"""EfficientViT-M0..M5 (Liu et al., "EfficientViT: Memory Efficient Vision Transformer with
Cascaded Group Attention", CVPR 2023; microsoft/Cream).

Layout: 16x conv stem -> three stages of sandwich blocks (DW -> FFN -> cascaded group attention
-> DW -> FFN), stages 1-2 opened by DW -> FFN -> PatchMerging -> DW -> FFN -> average pool ->
BN + Linear. The trunk and head are :class:`edgezoo._levit.LevitStyleNet`, shared with SHViT.

Attention windows: each stage's window is ``min(7, its feature size at img_size)`` (224 ->
7, 7, 4), which fixes the shape of the bias tables; other input sizes pad and partition into
windows of that size (see :mod:`edgezoo.blocks.cascaded`). Building with another ``img_size``
changes the windows; checkpoints for another window size get their bias tables resized
(bicubic, timm's ``resize_rel_pos_bias_table_levit``).

Checkpoints: timm's ``efficientvit_m*`` layout and the official microsoft/Cream layout
(``blocks1..3``, ``Conv2d_BN.c``, ``BN_Linear.l``, persistent ``attention_bias_idxs``, dropped)
load into ``ez_efficientvit_m*``. A distillation head ``head_dist`` is merged with ``head``
into one head giving the official inference output ``(head + head_dist) / 2``.
"""

from __future__ import annotations

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import calculate_drop_path_rates, resize_rel_pos_bias_table_levit, to_2tuple
from timm.models import build_model_with_cfg, generate_default_cfgs
from torch import nn

from edgezoo._base import feature_cfg
from edgezoo._levit import LevitStage, LevitStyleNet, levit_state_dict
from edgezoo.blocks.cascaded import CascadedGroupAttention
from edgezoo.blocks.levit_common import SandwichBlock, StageDownsample, Stem16
from edgezoo.errors import ConfigError
from edgezoo.registry import register

__all__ = ["EfficientViTM"]

FAMILY = "cascaded_group"
PAPER = "EfficientViT: Memory Efficient Vision Transformer with Cascaded Group Attention (Liu et al., CVPR 2023)"


class EfficientViTM(LevitStyleNet):
    """EfficientViT-M: sandwich blocks around cascaded group attention."""

    def __init__(
        self,
        embed_dim: tuple[int, ...] = (64, 128, 192),
        depth: tuple[int, ...] = (1, 2, 3),
        num_heads: tuple[int, ...] = (4, 4, 4),
        kernels: tuple[int, ...] = (5, 5, 5, 5),
        key_dim: int = 16,
        window_size: int = 7,
        img_size: int | tuple[int, int] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if not len(embed_dim) == len(depth) == len(num_heads):
            raise ConfigError("EfficientViT-M needs embed_dim, depth and num_heads of the same length")
        if not global_pool and num_classes > 0:
            raise ConfigError("a classifier needs pooled features: pass global_pool='avg' with num_classes > 0")
        self.in_chans = in_chans
        self.stem = Stem16(in_chans, embed_dim[0])
        resolution = min(to_2tuple(img_size)) // 16
        if resolution < 1:
            raise ConfigError(f"img_size {img_size} is below the stem's stride 16: use at least 16")
        dpr = calculate_drop_path_rates(drop_path_rate, list(depth), stagewise=True)
        stages, self.feature_info, prev = [], [], embed_dim[0]
        for i, (dim, d, heads) in enumerate(zip(embed_dim, depth, num_heads, strict=True)):
            down = None
            if i > 0:
                down = StageDownsample(prev, dim)
                resolution = (resolution - 1) // 2 + 1
            window = min(window_size, resolution)
            blocks = [
                SandwichBlock(dim, CascadedGroupAttention(dim, key_dim, heads, window, kernels), drop_path=dpr[i][j])
                for j in range(d)
            ]
            stages.append(LevitStage(down, blocks))
            self.feature_info.append({"num_chs": dim, "reduction": 16 * 2**i, "module": f"stages.{i}", "stage": i})
            prev = dim
        self.stages = nn.Sequential(*stages)
        self._init_head(embed_dim[-1], num_classes, global_pool, drop_rate)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {k for k, _ in self.named_parameters() if k.endswith("attention_biases")}


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """timm ``efficientvit_m*`` and official microsoft/Cream checkpoints -> ``ez_efficientvit_m*`` keys."""
    out = levit_state_dict(state_dict)
    target = model.state_dict()
    for key, value in out.items():
        if key.endswith("attention_biases") and key in target and value.shape != target[key].shape:
            out[key] = resize_rel_pos_bias_table_levit(value.T, target[key].shape[::-1]).T.contiguous()
    return out


def _cfg(**kwargs) -> dict:
    return {
        "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (4, 4),
        "crop_pct": 0.875, "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.conv1.conv", "classifier": "head.linear", "license": "mit",
        "paper_ids": "arXiv:2305.07027", "paper_name": PAPER,
        "origin_url": "https://github.com/microsoft/Cream/tree/main/EfficientViT",
        **kwargs,
    }


_VARIANTS = {
    "m0": {"embed_dim": (64, 128, 192), "depth": (1, 2, 3), "num_heads": (4, 4, 4), "kernels": (5, 5, 5, 5)},
    "m1": {"embed_dim": (128, 144, 192), "depth": (1, 2, 3), "num_heads": (2, 3, 3), "kernels": (7, 5, 3, 3)},
    "m2": {"embed_dim": (128, 192, 224), "depth": (1, 2, 3), "num_heads": (4, 3, 2), "kernels": (7, 5, 3, 3)},
    "m3": {"embed_dim": (128, 240, 320), "depth": (1, 2, 3), "num_heads": (4, 3, 4), "kernels": (5, 5, 5, 5)},
    "m4": {"embed_dim": (128, 256, 384), "depth": (1, 2, 3), "num_heads": (4, 4, 4), "kernels": (7, 5, 3, 3)},
    "m5": {"embed_dim": (192, 288, 384), "depth": (1, 3, 4), "num_heads": (3, 3, 4), "kernels": (7, 5, 3, 3)},
}

default_cfgs = generate_default_cfgs({f"ez_efficientvit_{v}": _cfg() for v in _VARIANTS})


def _create(variant: str, pretrained: bool, **kwargs) -> EfficientViTM:
    return build_model_with_cfg(
        EfficientViTM, f"ez_efficientvit_{variant}", pretrained, pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=feature_cfg(3), **{**_VARIANTS[variant], **kwargs},
    )


@register(FAMILY, checkpoint_filter_fn)
def ez_efficientvit_m0(pretrained: bool = False, **kwargs) -> EfficientViTM:
    """EfficientViT-M0 (2.3M params, 79M MACs): cascaded group attention, Liu et al., CVPR 2023."""
    return _create("m0", pretrained, **kwargs)


@register(FAMILY, checkpoint_filter_fn)
def ez_efficientvit_m1(pretrained: bool = False, **kwargs) -> EfficientViTM:
    """EfficientViT-M1 (3.0M params, 167M MACs): cascaded group attention, Liu et al., CVPR 2023."""
    return _create("m1", pretrained, **kwargs)


@register(FAMILY, checkpoint_filter_fn)
def ez_efficientvit_m2(pretrained: bool = False, **kwargs) -> EfficientViTM:
    """EfficientViT-M2 (4.2M params, 201M MACs): cascaded group attention, Liu et al., CVPR 2023."""
    return _create("m2", pretrained, **kwargs)


@register(FAMILY, checkpoint_filter_fn)
def ez_efficientvit_m3(pretrained: bool = False, **kwargs) -> EfficientViTM:
    """EfficientViT-M3 (6.9M params, 263M MACs): cascaded group attention, Liu et al., CVPR 2023."""
    return _create("m3", pretrained, **kwargs)


@register(FAMILY, checkpoint_filter_fn)
def ez_efficientvit_m4(pretrained: bool = False, **kwargs) -> EfficientViTM:
    """EfficientViT-M4 (8.8M params, 299M MACs): cascaded group attention, Liu et al., CVPR 2023."""
    return _create("m4", pretrained, **kwargs)


@register(FAMILY, checkpoint_filter_fn)
def ez_efficientvit_m5(pretrained: bool = False, **kwargs) -> EfficientViTM:
    """EfficientViT-M5 (12.4M params, 522M MACs): cascaded group attention, Liu et al., CVPR 2023."""
    return _create("m5", pretrained, **kwargs)
