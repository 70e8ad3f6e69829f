"""FocalNet (Focal Modulation Networks, Yang et al., NeurIPS 2022) and edge-size FocalNets.

The paper's ImageNet-1k models (T/S/B with small and large receptive fields) reproduce the
published configurations; ``ez_focalnet_edge_*`` are edgezoo's own small variants (see their
docstrings: new designs, no published accuracy).

Checkpoints: timm's ``focalnet_*`` layout (``layers.N``, downsampling at the start of a stage,
GELU-wrapped depthwise convs) and the official microsoft/FocalNet layout (``nn.Linear`` projections,
``patch_embed``, downsampling at the end of the previous layer, ``gamma_1``/``gamma_2`` layer
scale, ``norm1``/``norm2`` reused as post-norms) both map to edgezoo's keys.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead, LayerNorm2d, calculate_drop_path_rates, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs
from torch import nn

from edgezoo._base import StagedBackbone, feature_cfg
from edgezoo.blocks.focal import Downsample, FocalNetStage
from edgezoo.errors import ConfigError
from edgezoo.registry import register

__all__ = ["FocalNet", "checkpoint_filter_fn"]

FAMILY = "focal_modulation"
PAPER = "Focal Modulation Networks, Yang et al., NeurIPS 2022"


class FocalNet(StagedBackbone):
    """FocalNet (Yang et al., NeurIPS 2022): patch embedding, four stages of focal-modulation
    blocks (stride 4, 8, 16, 32), final LayerNorm, average pool, linear classifier.

    Args:
        embed_dim: width of the first stage (doubled per stage, as in the paper) or one width per stage.
        depths: blocks per stage.
        focal_levels / focal_windows: per stage, the number of depthwise context levels and the
            first level's kernel (level ``l`` uses ``focal_window + 2 * l``).
        use_overlap_down: overlapping conv patch embeddings (7x7/4 stem, 3x3/2 downsampling).
        use_post_norm, use_post_norm_in_modulation, normalize_modulator, layerscale_value:
            the paper's options (see :mod:`edgezoo.blocks.focal`).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        embed_dim: int | Sequence[int] = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        mlp_ratio: float = 4.0,
        focal_levels: Sequence[int] = (2, 2, 2, 2),
        focal_windows: Sequence[int] = (3, 3, 3, 3),
        use_overlap_down: bool = False,
        use_post_norm: bool = False,
        use_post_norm_in_modulation: bool = False,
        normalize_modulator: bool = False,
        layerscale_value: float | None = None,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        n = len(depths)
        dims = [embed_dim * 2**i for i in range(n)] if isinstance(embed_dim, int) else list(embed_dim)
        if not (len(dims) == len(focal_levels) == len(focal_windows) == n):
            raise ConfigError(
                f"FocalNet needs one embed_dim, focal_level and focal_window per stage: got {len(dims)}, "
                f"{len(focal_levels)} and {len(focal_windows)} for {n} stages (depths={tuple(depths)})"
            )
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.embed_dim = dims
        norm_layer = partial(LayerNorm2d, eps=1e-5)
        self.stem = Downsample(in_chans, dims[0], 4, overlap=use_overlap_down, norm_layer=norm_layer)
        rates = calculate_drop_path_rates(drop_path_rate, sum(depths))
        stages, self.feature_info = [], []
        for i, depth in enumerate(depths):
            stages.append(FocalNetStage(
                dims[max(i - 1, 0)], dims[i], depth, downsample=i > 0,
                drop_path=rates[sum(depths[:i]):sum(depths[:i + 1])], use_overlap_down=use_overlap_down,
                norm_layer=norm_layer, mlp_ratio=mlp_ratio, focal_level=focal_levels[i],
                focal_window=focal_windows[i], use_post_norm=use_post_norm,
                use_post_norm_in_modulation=use_post_norm_in_modulation, normalize_modulator=normalize_modulator,
                layerscale_value=layerscale_value, proj_drop=proj_drop_rate,
            ))
            self.feature_info.append({"num_chs": dims[i], "reduction": 4 * 2**i, "module": f"stages.{i}", "stage": i})
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = dims[-1]
        self.neck = LayerNorm2d(dims[-1], eps=1e-5)
        self.head = ClassifierHead(dims[-1], num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return {
            "stem": r"^stem",
            "blocks": r"^stages\.(\d+)" if coarse else [
                (r"^stages\.(\d+)\.downsample", (0,)), (r"^stages\.(\d+)\.blocks\.(\d+)", None), (r"^neck", (99999,)),
            ],
        }

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, pool_type=global_pool)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)


# ---------------------------------------------------------------------------------------------
# Checkpoint layouts
# ---------------------------------------------------------------------------------------------

#: timm's FocalNet -> edgezoo (timm already downsamples at the start of a stage). Both timm and
#: the official code wrap each depthwise conv with its GELU in a Sequential (``focal_layers.N.0``).
_TIMM_RULES = (
    (r"^layers\.", "stages."), (r"^norm\.", "neck."), (r"\.focal_layers\.(\d+)\.0\.", r".focal_layers.\1."),
)

#: microsoft/FocalNet -> timm's names (then the timm rules apply).
_OFFICIAL_RULES = (
    (r"^patch_embed\.", "stem."),
    (r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) + 1}.downsample."),
    (r"\.gamma_([12])$", r".ls\1.gamma"),
    (r"\.modulation\.ln\.", ".modulation.norm."),
    (r"^head\.", "head.fc."),
)


def _rename(key: str, rules: Sequence[tuple]) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map timm's and the official repository's FocalNet layouts to edgezoo's keys.

    Shapes differ only where the official code has an ``nn.Linear`` for a 1x1 conv (reshaped); it
    also reuses ``norm1``/``norm2`` as post-norms when ``use_postln`` is set, which maps to
    ``norm1_post``/``norm2_post`` when this model has them.
    """
    if any(k.startswith("stages.") for k in state_dict):
        return state_dict  # already edgezoo's layout
    expected = model.state_dict()
    official = any(k.startswith("patch_embed.") for k in state_dict)
    out = {}
    for key, value in state_dict.items():
        if official:
            key = _rename(key, _OFFICIAL_RULES)
        key = _rename(key, _TIMM_RULES)
        if key not in expected:
            key = re.sub(r"\.norm([12])\.", r".norm\1_post.", key)  # official post-norms
        target = expected.get(key)
        if target is not None and target.shape != value.shape and target.numel() == value.numel():
            value = value.reshape(target.shape)  # linear -> 1x1 conv
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------------
# Configs and registration
# ---------------------------------------------------------------------------------------------


def _cfg(**kwargs) -> dict:
    return {
        "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7), "crop_pct": 0.9,
        "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.proj", "classifier": "head.fc", "license": "mit", "paper_name": PAPER,
        "paper_ids": "arXiv:2203.11926", "origin_url": "https://github.com/microsoft/FocalNet", **kwargs,
    }


#: Paper variants: depths, width, focal levels (srf 2, lrf 3; window 3), training drop-path.
_PAPER_ARCHS = {
    "tiny": ((2, 2, 6, 2), 96, 0.2),
    "small": ((2, 2, 18, 2), 96, 0.3),
    "base": ((2, 2, 18, 2), 128, 0.5),
}
_RF = {"srf": 2, "lrf": 3}
_PUBLISHED = {  # top-1 on ImageNet-1k at 224 (paper, table 1)
    "tiny_srf": 82.1, "tiny_lrf": 82.3, "small_srf": 83.4, "small_lrf": 83.5, "base_srf": 83.7, "base_lrf": 83.9,
}

#: Edge variants (new in edgezoo): widths, depths, focal levels per stage, MLP ratio.
_EDGE_ARCHS = {
    "xs": {"embed_dim": (32, 64, 96, 128), "depths": (1, 2, 4, 1), "focal_levels": (2, 2, 2, 1), "mlp_ratio": 3.0},
    "s": {"embed_dim": (48, 96, 144, 224), "depths": (2, 2, 6, 2), "focal_levels": (2, 2, 2, 1), "mlp_ratio": 3.0},
    "m": {"embed_dim": (64, 128, 192, 320), "depths": (2, 2, 6, 2), "focal_levels": (2, 2, 2, 1), "mlp_ratio": 3.0},
}

default_cfgs = generate_default_cfgs({
    **{f"ez_focalnet_{size}_{rf}": _cfg(notes=f"published top-1 {_PUBLISHED[f'{size}_{rf}']} (ImageNet-1k, 224)")
       for size in _PAPER_ARCHS for rf in _RF},
    **{f"ez_focalnet_edge_{size}": _cfg(
        paper_name=f"edgezoo edge variant of {PAPER}", notes="new edgezoo design; no published accuracy")
       for size in _EDGE_ARCHS},
})


def _create(name: str, pretrained: bool, **kwargs) -> FocalNet:
    n_stages = len(kwargs.get("depths", (2, 2, 6, 2)))
    return build_model_with_cfg(
        FocalNet, name, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=feature_cfg(n_stages), **kwargs,
    )


def _paper_entrypoint(size: str, rf: str) -> None:
    depths, dim, drop_path = _PAPER_ARCHS[size]
    name = f"ez_focalnet_{size}_{rf}"

    def entrypoint(pretrained: bool = False, **kwargs) -> FocalNet:
        arch = {"depths": depths, "embed_dim": dim, "focal_levels": (_RF[rf],) * 4, "focal_windows": (3,) * 4,
                "drop_path_rate": drop_path}
        return _create(name, pretrained, **{**arch, **kwargs})

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = (
        f"FocalNet-{size[0].upper()} ({rf}: focal level {_RF[rf]}, window 3; {PAPER}); "
        f"drop-path {drop_path} (the paper's) by default."
    )
    register(FAMILY, checkpoint_filter_fn)(entrypoint)


def _edge_entrypoint(size: str, doc: str) -> None:
    name = f"ez_focalnet_edge_{size}"

    def entrypoint(pretrained: bool = False, **kwargs) -> FocalNet:
        arch = {**_EDGE_ARCHS[size], "focal_windows": (3,) * 4, "use_overlap_down": True, "drop_path_rate": 0.0}
        return _create(name, pretrained, **{**arch, **kwargs})

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = doc
    register(FAMILY, checkpoint_filter_fn)(entrypoint)


for _size in _PAPER_ARCHS:
    for _rf in _RF:
        _paper_entrypoint(_size, _rf)

_EDGE_WHY = """

    NEW in edgezoo: not from the paper, no published accuracy (train it before relying on it).
    Edge choices: overlapping conv patch embeddings (7x7/4 stem, 3x3/2 downsampling; small
    models gain most from them); focal level 2 (kernels 3, 5) in stages 1-3 and 1 in stage 4,
    where a 3x3 level plus the global level already spans the 7x7 map at 224; MLP ratio 3;
    width x2 in the cheap high-resolution stages, then x1.5, so the stride-32 stage and the
    classifier (a large share of the params at this size) stay small; no layer scale, and
    drop-path off by default (small models underfit; pass drop_path_rate to train with it).
"""
_edge_entrypoint("xs", "FocalNet-Edge-XS (NEW edgezoo variant, ~1.0M params, 0.23 GMACs), focal modulation."
                 + _EDGE_WHY)
_edge_entrypoint("s", "FocalNet-Edge-S (NEW edgezoo variant, ~3.2M params, 0.70 GMACs), focal modulation."
                 + _EDGE_WHY)
_edge_entrypoint("m", "FocalNet-Edge-M (NEW edgezoo variant, ~5.9M params, 1.24 GMACs), focal modulation."
                 + _EDGE_WHY)
