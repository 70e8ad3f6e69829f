"""SHViT S1-S4 (Yun & Ro, "SHViT: Single-Head Vision Transformer with Memory Efficient Macro
Design", CVPR 2024), and the LeViT-style trunk it shares with EfficientViT-M.

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

import re

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import SelectAdaptivePool2d
from timm.models import build_model_with_cfg, generate_default_cfgs
from torch import nn

from edgezoo._base import StagedBackbone, feature_cfg
from edgezoo._registry import register
from edgezoo.blocks.conv_bn import BNLinear
from edgezoo.blocks.levit_common import SandwichBlock, StageDownsample, Stem16
from edgezoo.blocks.single_head import SHSA
from edgezoo.errors import ConfigError

__all__ = ["LevitStyleNet", "SHViT", "levit_state_dict"]

FAMILY = "single_head_vit"
PAPER = "SHViT: Single-Head Vision Transformer with Memory Efficient Macro Design (Yun & Ro, CVPR 2024)"


class LevitStyleNet(StagedBackbone):
    """stem -> stages -> pool -> BN+Linear head, shared by SHViT and EfficientViT-M.

    Subclasses build ``stem``, ``stages`` and ``feature_info`` and call :meth:`_init_head`.
    """

    def _init_head(self, num_features: int, num_classes: int, global_pool: str, drop_rate: float) -> None:
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.num_features = self.head_hidden_size = num_features
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))
        self.head: nn.Module = (
            BNLinear(num_features, num_classes, drop=drop_rate) if num_classes > 0 else nn.Identity()
        )

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return {
            "stem": r"^stem",
            "blocks": r"^stages\.(\d+)" if coarse else [
                (r"^stages\.(\d+)\.downsample", (0,)),
                (r"^stages\.(\d+)\.blocks\.(\d+)", None),
            ],
        }

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.linear if isinstance(self.head, BNLinear) else self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        pool = self.global_pool.pool_type if global_pool is None else global_pool
        if num_classes > 0 and not pool:
            raise ConfigError("a classifier needs pooled features: pass global_pool='avg' with num_classes > 0")
        ref = next(self.parameters())
        self.num_classes = num_classes
        self.global_pool = SelectAdaptivePool2d(pool_type=pool, flatten=bool(pool))
        self.head = BNLinear(self.num_features, num_classes, drop=self.drop_rate) if num_classes > 0 else nn.Identity()
        self.head.to(device=ref.device, dtype=ref.dtype).train(self.training)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        return x if pre_logits else self.head(x)


class LevitStage(nn.Module):
    """Optional stage transition (:class:`StageDownsample`) then a sequence of blocks."""

    def __init__(self, downsample: nn.Module | None, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.downsample = downsample if downsample is not None else nn.Identity()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


def drop_path_rates(depth: tuple[int, ...], rate: float) -> list[list[float]]:
    """Stochastic depth rising linearly over all blocks, split per stage."""
    total = sum(depth)
    rates = [rate * i / max(total - 1, 1) for i in range(total)]
    out, start = [], 0
    for d in depth:
        out.append(rates[start:start + d])
        start += d
    return out


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
        dpr = drop_path_rates(depth, drop_path_rate)
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
# Checkpoint layouts (shared with EfficientViT-M, whose repositories use the same conventions)
# ---------------------------------------------------------------------------------------------

_DOWNSAMPLE_FLAT = {"0": "res1.0", "1": "res1.1", "2": "patchmerge", "3": "res2.0", "4": "res2.1"}
_DOWNSAMPLE_OFFICIAL = {"0": "res1", "1": "patchmerge", "2": "res2"}

#: Renames inside a block / module, applied to every key after the stage prefix is mapped.
_COMMON_RULES = (
    (r"^patch_embed\.(\d+)\.", lambda m: f"stem.conv{int(m.group(1)) // 2 + 1}."),  # official / timm SHViT
    (r"^patch_embed\.", "stem."),  # timm EfficientViT-M (conv1..conv4)
    (r"\.c\.weight$", ".conv.weight"),  # Conv2d_BN.c -> ConvBN.conv
    (r"^head\.l\.", "head.linear."),  # BN_Linear.l -> BNLinear.linear
    (r"\.se\.conv_reduce\.", ".se.fc1."),  # older timm SqueezeExcite names
    (r"\.se\.conv_expand\.", ".se.fc2."),
    (r"\.blocks\.(\d+)\.conv\.", r".blocks.\1.dw0."),  # SHViT BasicBlock.conv -> dw0
    (r"\.blocks\.(\d+)\.ffn\.", r".blocks.\1.ffn1."),  # SHViT BasicBlock.ffn -> ffn1
    (r"\.mixer\.m\.attn\.", ".mixer.m."),  # EfficientViT-M LocalWindowAttention.attn
    (r"\.mixer\.m\.proj\.1\.", ".mixer.m.proj."),  # (ReLU, Conv-BN) -> act, proj
)


def _official_stage_key(key: str) -> str:
    """``blocksN.j.`` of the official repositories -> ``stages.{N-1}.(downsample.*|blocks.*)``."""
    m = re.match(r"^blocks(\d+)\.(\d+)\.(.*)$", key)
    if m is None:
        return key
    stage, j, rest = int(m.group(1)) - 1, int(m.group(2)), m.group(3)
    if stage == 0:
        return f"stages.0.blocks.{j}.{rest}"
    if j < 3:
        return f"stages.{stage}.downsample.{_DOWNSAMPLE_OFFICIAL[str(j)]}.{rest}"
    return f"stages.{stage}.blocks.{j - 3}.{rest}"


def _merge_distilled_head(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fold ``(head(x) + head_dist(x)) / 2`` (the official eval output) into one BN+Linear head."""
    if "head_dist.l.weight" not in sd:
        return {k: v for k, v in sd.items() if not k.startswith("head_dist.")}
    weights, biases = [], []
    for prefix in ("head", "head_dist"):
        scale = sd[f"{prefix}.bn.weight"].float() * torch.rsqrt(sd[f"{prefix}.bn.running_var"].float() + 1e-5)
        shift = sd[f"{prefix}.bn.bias"].float() - sd[f"{prefix}.bn.running_mean"].float() * scale
        w, b = sd[f"{prefix}.l.weight"].float(), sd[f"{prefix}.l.bias"].float()
        weights.append(w * scale[None])
        biases.append(b + w @ shift)
    out = {k: v for k, v in sd.items() if not k.startswith(("head.", "head_dist."))}
    dim = weights[0].shape[1]
    out.update({
        "head.bn.weight": torch.full((dim,), (1.0 + 1e-5) ** 0.5), "head.bn.bias": torch.zeros(dim),
        "head.bn.running_mean": torch.zeros(dim), "head.bn.running_var": torch.ones(dim),
        "head.bn.num_batches_tracked": torch.tensor(0),
        "head.l.weight": (weights[0] + weights[1]) / 2, "head.l.bias": (biases[0] + biases[1]) / 2,
    })
    return out


def levit_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map timm's and the official SHViT / EfficientViT-M layouts to edgezoo's ``LevitStyleNet`` keys."""
    sd = {k: v for k, v in state_dict.items() if not k.endswith("attention_bias_idxs")}
    sd = _merge_distilled_head(sd)
    out = {}
    for key, value in sd.items():
        key = _official_stage_key(key)
        m = re.match(r"^(stages\.\d+\.downsample\.)(\d)\.(.*)$", key)  # timm SHViT's flat downsample
        if m is not None:
            key = f"{m.group(1)}{_DOWNSAMPLE_FLAT[m.group(2)]}.{m.group(3)}"
        for pattern, repl in _COMMON_RULES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


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
