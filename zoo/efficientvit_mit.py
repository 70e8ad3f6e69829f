"""EfficientViT-B/L (Cai et al., ICCV 2023) with a pluggable linear-attention token mixer.

The network is a MobileNet-style conv trunk (DSConv/ResBlock stem, MBConv/FusedMBConv stages,
see :mod:`edgezoo.blocks.mbconv`) whose last stage(s) alternate a global token mixer with a
local MBConv (:class:`EfficientViTBlock`). The mixer is EfficientViT's LiteMLA by default; any
mixer of :mod:`edgezoo.blocks.linear_attention` (``mixer="flatten"|"agent"|"mala"``) can
replace it. ``ez_efficientvit_b1_{flatten,agent,mala}`` are edgezoo's own combinations: they have
no published accuracy and no pretrained weights.

Checkpoints: timm's ``efficientvit_b*``/``efficientvit_l*`` layout is edgezoo's (same key names,
so they load as they are); the official repository's (mit-han-lab/efficientvit,
``backbone.input_stem.op_list.*``, ``backbone.stages.*.op_list.*``, ``head.op_list.*``) is remapped.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import SelectAdaptivePool2d, calculate_drop_path_rates
from timm.models import build_model_with_cfg, generate_default_cfgs
from torch import nn

from edgezoo._base import StagedBackbone, feature_cfg
from edgezoo.blocks.linear_attention import create_token_mixer, resolve_mixer
from edgezoo.blocks.mbconv import ConvNormAct, DSConv, FusedMBConv, MBConv, ResBlock, Residual
from edgezoo.errors import ConfigError, InvalidArgumentError
from edgezoo.registry import register

__all__ = ["ClassifierHead", "EfficientViT", "EfficientViTBlock", "StageCfg", "checkpoint_filter_fn"]

FAMILY = "linear_vit"
_PAPER = "EfficientViT: Multi-Scale Linear Attention for High-Resolution Dense Prediction"

_LOCAL_BLOCKS = {"ds": DSConv, "res": ResBlock, "mb": MBConv, "fmb": FusedMBConv}


def local_block(kind: str, in_chs: int, out_chs: int, stride: int, expand: float, norm_layer, act_layer,
                fewer_norm: bool = False) -> nn.Module:
    """One conv block as EfficientViT builds it: ``fewer_norm`` keeps a BatchNorm on the last conv only
    and gives the others a bias instead; the last conv has no activation."""
    n = 3 if kind == "mb" else 2
    bias = (True,) * (n - 1) + (False,) if fewer_norm else False
    norm = (None,) * (n - 1) + (norm_layer,) if fewer_norm else norm_layer
    act = (act_layer,) * (n - 1) + (None,)
    kwargs = {} if kind == "ds" else {"expand_ratio": expand}
    return _LOCAL_BLOCKS[kind](in_chs, out_chs, stride=stride, bias=bias, norm_layer=norm, act_layer=act, **kwargs)


class EfficientViTBlock(nn.Module):
    """Global token mixer then local MBConv, each residual (EfficientViT's attention block).

    ``context_module.main`` is the token mixer (LiteMLA unless ``mixer`` names another),
    ``local_module.main`` an MBConv whose expansion convs carry a bias instead of a BatchNorm.
    """

    def __init__(self, dim: int, head_dim: int, expand_ratio: float, norm_layer, act_layer, mixer: str = "litemla",
                 mixer_kwargs: dict | None = None, drop_path: float = 0.0) -> None:
        super().__init__()
        token_mixer = create_token_mixer(mixer, dim, head_dim=head_dim, norm_layer=norm_layer, **(mixer_kwargs or {}))
        self.context_module = Residual(token_mixer, drop_path=drop_path)
        mbconv = local_block("mb", dim, dim, 1, expand_ratio, norm_layer, act_layer, fewer_norm=True)
        self.local_module = Residual(mbconv, drop_path=drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.local_module(self.context_module(x))


@dataclass(frozen=True)
class StageCfg:
    """One stage: a stride-2 ``down`` block (expansion ``down_expand``), then ``depth`` blocks of ``kind``
    (``"vit"`` = :class:`EfficientViTBlock`) with expansion ``expand``."""

    kind: str
    depth: int
    down_expand: float
    expand: float
    fewer_norm: bool


def b_stages(depths: tuple[int, ...]) -> tuple[StageCfg, ...]:
    """EfficientViT-B: MBConv stages (the stride-2 block counts in the depth), then two attention stages."""
    return (StageCfg("mb", depths[1] - 1, 4, 4, False), StageCfg("mb", depths[2] - 1, 4, 4, False),
            StageCfg("vit", depths[3], 4, 4, True), StageCfg("vit", depths[4], 4, 4, True))


def l_stages(depths: tuple[int, ...]) -> tuple[StageCfg, ...]:
    """EfficientViT-L: FusedMBConv, FusedMBConv, MBConv stages, then one attention stage (expansions
    16/16/16/24 in the stride-2 blocks, 4/4/4/6 in the others)."""
    return (StageCfg("fmb", depths[1], 16, 4, False), StageCfg("fmb", depths[2], 16, 4, False),
            StageCfg("mb", depths[3], 16, 4, True), StageCfg("vit", depths[4], 24, 6, True))


class EfficientViTStage(nn.Module):
    """A stride-2 conv block then the stage's blocks, all in ``blocks`` (timm's layout)."""

    def __init__(self, in_chs: int, out_chs: int, cfg: StageCfg, head_dim: int, norm_layer, act_layer,
                 mixer: str, mixer_kwargs: dict | None, drop_path: list[float]) -> None:
        super().__init__()
        down_kind = "mb" if cfg.kind == "vit" else cfg.kind
        blocks = [Residual(local_block(down_kind, in_chs, out_chs, 2, cfg.down_expand, norm_layer, act_layer,
                                       cfg.fewer_norm), shortcut=False)]
        for i in range(cfg.depth):
            if cfg.kind == "vit":
                blocks.append(EfficientViTBlock(out_chs, head_dim, cfg.expand, norm_layer, act_layer, mixer,
                                                mixer_kwargs, drop_path[i]))
            else:
                block = local_block(cfg.kind, out_chs, out_chs, 1, cfg.expand, norm_layer, act_layer, cfg.fewer_norm)
                blocks.append(Residual(block, drop_path=drop_path[i]))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class ClassifierHead(nn.Module):
    """1x1 conv + BN + act -> global pool -> Linear (no bias) + LayerNorm + act -> dropout -> Linear.

    ``classifier`` indices follow timm (``0`` linear, ``1`` norm, ``2`` act, ``3`` dropout, ``4`` fc).
    """

    def __init__(self, in_chs: int, widths: tuple[int, int], num_classes: int, act_layer, pool_type: str = "avg",
                 drop_rate: float = 0.0, ln_eps: float = 1e-5) -> None:
        super().__init__()
        self.in_features, self.widths = in_chs, widths
        self.in_conv = ConvNormAct(in_chs, widths[0], 1, act_layer=act_layer)
        self.global_pool = _pool(pool_type)
        self.classifier = nn.Sequential(
            nn.Linear(widths[0], widths[1], bias=False),
            nn.LayerNorm(widths[1], eps=ln_eps),
            act_layer(),
            nn.Dropout(drop_rate),
            nn.Linear(widths[1], num_classes) if num_classes > 0 else nn.Identity(),
        )
        self.num_features = widths[1]

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(self.in_conv(x))
        for i, layer in enumerate(self.classifier):
            if pre_logits and i == 4:
                break
            x = layer(x)
        return x


def _pool(pool_type: str) -> SelectAdaptivePool2d:
    if not pool_type:
        raise InvalidArgumentError("EfficientViT's head needs a global pool: pass global_pool='avg', 'max' or 'avgmax'")
    pool = SelectAdaptivePool2d(pool_type=pool_type, flatten=True)
    if pool.feat_mult() != 1:
        raise InvalidArgumentError(f"global_pool={pool_type!r} changes the pooled width; use 'avg', 'max' or 'avgmax'")
    return pool


class EfficientViT(StagedBackbone):
    """EfficientViT-B/L backbone and classifier (Cai et al., ICCV 2023).

    Args:
        widths: stem width then the four stages' widths.
        depths: stem blocks then each stage's depth (as the paper's configs count them).
        arch: ``"b"`` (hardswish, DSConv stem, attention in the last two stages) or ``"l"``
            (GELU-tanh, ResBlock stem, FusedMBConv early stages, attention in the last stage,
            BatchNorm/LayerNorm eps 1e-7).
        head_dim: channels per attention head.
        head_widths: widths of the head's 1x1 conv and hidden linear layer.
        mixer: token mixer of the attention blocks (:data:`edgezoo.blocks.linear_attention.TOKEN_MIXERS`).
        mixer_kwargs: extra options for the mixer.
    """

    def __init__(
        self,
        widths: tuple[int, ...],
        depths: tuple[int, ...],
        arch: str = "b",
        head_dim: int = 32,
        head_widths: tuple[int, int] = (2304, 2560),
        mixer: str = "litemla",
        mixer_kwargs: dict | None = None,
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if arch not in ("b", "l"):
            raise ConfigError(f"arch must be 'b' or 'l', got {arch!r}")
        try:
            resolve_mixer(mixer)
        except ValueError as err:
            raise ConfigError(f"{err}: pass mixer= one of those names") from None
        if len(widths) != 5 or len(depths) != 5:
            raise ConfigError(f"widths and depths need 5 entries (stem + 4 stages), got {widths} and {depths}")
        self.arch, self.mixer = arch, mixer
        self.num_classes, self.drop_rate = num_classes, drop_rate
        large = arch == "l"
        norm_layer = partial(nn.BatchNorm2d, eps=1e-7) if large else nn.BatchNorm2d
        act_layer = partial(nn.GELU, approximate="tanh") if large else nn.Hardswish
        stages_cfg = l_stages(depths) if large else b_stages(depths)

        stem = OrderedDict(in_conv=ConvNormAct(in_chans, widths[0], 3, 2, norm_layer=norm_layer, act_layer=act_layer))
        for i in range(depths[0]):
            block = local_block("res" if large else "ds", widths[0], widths[0], 1, 1, norm_layer, act_layer)
            stem[f"res{i}"] = Residual(block)
        self.stem = nn.Sequential(stem)

        n_blocks = sum(c.depth for c in stages_cfg)
        dpr = calculate_drop_path_rates(drop_path_rate, n_blocks)
        stages, self.feature_info, chs, stride, start = [], [], widths[0], 2, 0
        for i, (cfg, out_chs) in enumerate(zip(stages_cfg, widths[1:], strict=True)):
            stages.append(EfficientViTStage(chs, out_chs, cfg, head_dim, norm_layer, act_layer, mixer, mixer_kwargs,
                                            dpr[start:start + cfg.depth]))
            chs, stride, start = out_chs, stride * 2, start + cfg.depth
            self.feature_info.append({"num_chs": chs, "reduction": stride, "module": f"stages.{i}", "stage": i})
        self.stages = nn.Sequential(*stages)

        self.num_features = chs
        self.head = ClassifierHead(chs, head_widths, num_classes, act_layer, global_pool, drop_rate,
                                   ln_eps=1e-7 if large else 1e-5)
        self.head_hidden_size = self.head.num_features

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Agent-attention biases and FLatten's focusing scale (position/scale parameters)."""
        return {n for n, _ in self.named_parameters() if n.endswith(("an_bias", "na_bias", "main.scale"))}

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.classifier[-1]

    def reset_classifier(self, num_classes: int, global_pool: str | None = None, reset_other: bool = False) -> None:
        """New classifier for ``num_classes`` (0 = none); ``reset_other`` also drops the head's 1x1 conv and
        hidden linear layer so that ``forward_head`` pools the stage features directly (timm's semantics)."""
        head = self.head
        self.num_classes = num_classes
        if global_pool is not None:
            head.global_pool = _pool(global_pool)
        if reset_other:
            head.in_conv = nn.Identity()
            for i in range(3):
                head.classifier[i] = nn.Identity()
            head.num_features = self.num_features
        fc = nn.Linear(head.num_features, num_classes, device=next(self.parameters()).device) if num_classes else None
        head.classifier[-1] = fc if fc is not None else nn.Identity()
        self.head_hidden_size = head.num_features

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        from timm.models._features import feature_take_indices

        take, max_index = feature_take_indices(len(self.feature_info), indices)
        self.stages = self.stages[: max_index + 1]
        pruned_end = max_index < len(self.feature_info) - 1
        if pruned_end:
            self.num_features = self.feature_info[max_index]["num_chs"]
        if prune_head or pruned_end:
            self.reset_classifier(0, reset_other=True)
        return take

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)


# ---------------------------------------------------------------------------------------------
# Checkpoint layouts
# ---------------------------------------------------------------------------------------------

#: Official classification head (``head.op_list.N``) -> timm/edgezoo names.
_OFFICIAL_HEAD = (
    (r"^head\.op_list\.0\.", "head.in_conv."),
    (r"^head\.op_list\.2\.linear\.", "head.classifier.0."),
    (r"^head\.op_list\.2\.norm\.", "head.classifier.1."),
    (r"^head\.op_list\.3\.linear\.", "head.classifier.4."),
)


def _official_key(key: str, large: bool) -> str:
    """mit-han-lab/efficientvit ``EfficientViTCls`` key -> edgezoo key. B: ``input_stem`` is the stem and
    ``stages.0-3`` the stages; L: ``stages.0`` is the stem and ``stages.1-4`` the stages."""
    for pattern, repl in _OFFICIAL_HEAD:
        key = re.sub(pattern, repl, key)
    m = re.match(r"^backbone\.(?:input_stem|stages\.(\d+))\.op_list\.(\d+)\.(.*)$", key)
    if m is None:
        return key
    stage = None if m.group(1) is None else int(m.group(1)) - int(large)
    index, rest = int(m.group(2)), m.group(3)
    if stage is None or stage < 0:
        return f"stem.in_conv.{rest}" if index == 0 else f"stem.res{index - 1}.{rest}"
    return f"stages.{stage}.blocks.{index}.{rest}"


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map timm's (unchanged) and the official repository's layouts to edgezoo's keys."""
    if not any(k.startswith("backbone.") for k in state_dict):
        return state_dict
    large = not any(k.startswith("backbone.input_stem.") for k in state_dict)
    return {_official_key(k, large): v for k, v in state_dict.items()}


# ---------------------------------------------------------------------------------------------
# Configs and registration
# ---------------------------------------------------------------------------------------------

_ARCHS: dict[str, dict] = {
    "b0": {"widths": (8, 16, 32, 64, 128), "depths": (1, 2, 2, 2, 2), "head_dim": 16, "head_widths": (1024, 1280)},
    "b1": {"widths": (16, 32, 64, 128, 256), "depths": (1, 2, 3, 3, 4), "head_dim": 16, "head_widths": (1536, 1600)},
    "b2": {"widths": (24, 48, 96, 192, 384), "depths": (1, 3, 4, 4, 6), "head_dim": 32, "head_widths": (2304, 2560)},
    "b3": {"widths": (32, 64, 128, 256, 512), "depths": (1, 4, 6, 6, 9), "head_dim": 32, "head_widths": (2304, 2560)},
    "l1": {"widths": (32, 64, 128, 256, 512), "depths": (1, 1, 1, 6, 6), "head_dim": 32, "head_widths": (3072, 3200),
           "arch": "l"},
    "l2": {"widths": (32, 64, 128, 256, 512), "depths": (1, 2, 2, 8, 8), "head_dim": 32, "head_widths": (3072, 3200),
           "arch": "l"},
}

_MIXER_VARIANTS = {
    "flatten": "focused linear attention (FLatten, Han et al., ICCV 2023)",
    "agent": "agent attention (Han et al., ECCV 2024)",
    "mala": "magnitude-aware linear attention (MALA, Fan et al., ICCV 2025)",
}

#: The b1 combinations keep each mixer's named simplification (no size-tied position parameters, and MALA in
#: the form the fused ``linear_attention`` kernel runs); the paper-complete mixers are the defaults of the
#: blocks and of the ``ez_mix_*`` models.
_MIXER_SIMPLIFIED = {"flatten": {"k_pos": False}, "agent": {"rc_bias": False},
                     "mala": {"rope": False, "output_gate": False}}

_MIXER_PAPERS = {
    "flatten": ("FLatten Transformer: Vision Transformer using Focused Linear Attention", "arXiv:2308.00442"),
    "agent": ("Agent Attention: On the Integration of Softmax and Linear Attention", "arXiv:2312.08874"),
    "mala": ("Rectifying Magnitude Neglect in Linear Attention", "arXiv:2507.00698"),
}


def _cfg(**kwargs) -> dict:
    return {
        "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7), "crop_pct": 0.95,
        "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.in_conv.conv", "classifier": "head.classifier.4", "license": "apache-2.0",
        "paper_name": _PAPER, "paper_ids": "arXiv:2205.14756", "origin_url": "https://github.com/mit-han-lab/efficientvit",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    **{f"ez_efficientvit_{v}": _cfg(crop_pct=1.0 if v.startswith("l") else 0.95) for v in _ARCHS},
    **{f"ez_efficientvit_b1_{m}": _cfg(
        paper_name=f"{_PAPER}; {_MIXER_PAPERS[m][0]}", paper_ids=f"arXiv:2205.14756, {_MIXER_PAPERS[m][1]}",
        notes=("edgezoo combination of EfficientViT-B1 with another token mixer: no published accuracy or weights",),
    ) for m in _MIXER_VARIANTS},
})


def _create(name: str, pretrained: bool = False, **kwargs) -> EfficientViT:
    return build_model_with_cfg(
        EfficientViT, name, pretrained, pretrained_filter_fn=checkpoint_filter_fn, feature_cfg=feature_cfg(4),
        **kwargs,
    )


def _make_entrypoint(name: str, model_args: dict, doc: str):
    def entrypoint(pretrained: bool = False, **kwargs) -> EfficientViT:
        return _create(name, pretrained=pretrained, **{**model_args, **kwargs})

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = doc
    return register(FAMILY, checkpoint_filter_fn)(entrypoint)


for _variant, _args in _ARCHS.items():
    _make_entrypoint(
        f"ez_efficientvit_{_variant}", _args,
        f"EfficientViT-{_variant.upper()} with LiteMLA multi-scale linear attention ({_PAPER}, Cai et al., ICCV 2023).",
    )
for _mixer, _desc in _MIXER_VARIANTS.items():
    _make_entrypoint(
        f"ez_efficientvit_b1_{_mixer}", {**_ARCHS["b1"], "mixer": _mixer, "mixer_kwargs": _MIXER_SIMPLIFIED[_mixer]},
        f"EfficientViT-B1 with LiteMLA replaced by {_desc}; an edgezoo combination with no published accuracy.",
    )
