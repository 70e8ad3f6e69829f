"""The LeViT-style trunk shared by SHViT and EfficientViT-M, and their checkpoint layouts.

Both papers build: 16x conv stem -> three stages (each after the first opens with
DW -> FFN -> PatchMerging -> DW -> FFN) -> average pool -> BN + Linear head. Their repositories
and timm share naming conventions (``blocksN``, ``Conv2d_BN.c``, ``BN_Linear.l``), so one key
mapping, :func:`levit_state_dict`, serves both families.
"""

from __future__ import annotations

import re

import torch
from timm.layers import SelectAdaptivePool2d
from torch import nn

from edgezoo._base import StagedBackbone
from edgezoo.blocks.conv_bn import BNLinear
from edgezoo.errors import ConfigError

__all__ = ["LevitStage", "LevitStyleNet", "levit_state_dict"]


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




# ---------------------------------------------------------------------------------------------
# Checkpoint layouts (timm and the official SHViT / EfficientViT-M repositories)
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
