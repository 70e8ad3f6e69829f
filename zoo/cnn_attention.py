"""ResNet-18/50 and MobileNetV2 with channel/spatial attention plugged in.

ResNets are timm's own ``ResNet`` (with ``fuse()`` on its blocks and stem:
:mod:`edgezoo.blocks.resnet`) with the attention module passed as its ``attn_layer``:
timm places it after the last BatchNorm of every residual branch, before the addition —
where SENet, CBAM, ECA-Net and Triplet attention put theirs (ELA and Coordinate attention
follow the same placement in ResNets). MobileNetV2 is written here (timm's builder has no
slot after the projection conv) with timm's layer names; see :mod:`edgezoo.blocks.mobilenet`
and :data:`MOBILENETV2_ATTN` for the per-attention placement.

Every entrypoint takes ``layout=``: ``"paper"`` (default) builds the published network (the
paper's widths and kernels, the released checkpoints' configuration); ``"timm"`` builds
timm's variant of it where timm's differs (``seresnet18``: SE widths rounded to 8;
``ecaresnet``-style ECA kernels from timm's formula); ``"cadene"`` (``ez_resnet50_se``
only) builds the Caffe-style SE-ResNet-50 of Cadene's pretrainedmodels and timm's
``legacy_seresnet50``: stride on each bottleneck's first 1x1 conv, ceil-mode stem max-pool.

Checkpoints (see :func:`checkpoint_filter_fn`): timm's ResNets (and torchvision's, which
share key names), timm's CBAM, Cadene's SE-ResNet-50, the official ECA-Net, CBAM and
triplet-attention ResNets, timm's and torchvision's MobileNetV2, and the official ECA-Net,
triplet-attention and Coordinate-attention MobileNetV2s. A layout whose keys match but whose
network differs (Cadene's strides) is refused unless the model was built for it.

Initialisation follows the papers' official code: no zero-init of the residual branch's last
BN (timm's ``zero_init_last``; none of the official repositories use it), CBAM's and triplet's
gate BNs as in :mod:`edgezoo.blocks.cnn_attention`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import calculate_drop_path_rates, create_classifier, make_divisible
from timm.models import build_model_with_cfg, generate_default_cfgs
from torch import nn

from edgezoo._base import StagedBackbone, feature_cfg
from edgezoo.blocks.cnn_attention import CBAM, ECA, ELA, CoordAttention, SqueezeExcite, TripletAttention
from edgezoo.blocks.conv_bn import ConvBNAct
from edgezoo.blocks.mobilenet import DepthwiseSeparable, InvertedResidual
from edgezoo.blocks.resnet import BasicBlock, Bottleneck, ResNet
from edgezoo.errors import CheckpointError, InvalidArgumentError
from edgezoo.registry import register

__all__ = ["ATTN_PAPERS", "MOBILENETV2_ATTN", "MOBILENETV2_ATTN_POSITION", "MobileNetV2", "checkpoint_filter_fn"]

FAMILY = "cnn_attention"

#: Attention name -> paper, for the docstrings and ``edgezoo info``.
ATTN_PAPERS: dict[str, str] = {
    "se": "Squeeze-and-Excitation Networks, Hu et al., CVPR 2018",
    "cbam": "CBAM: Convolutional Block Attention Module, Woo et al., ECCV 2018",
    "eca": "ECA-Net: Efficient Channel Attention, Wang et al., CVPR 2020",
    "triplet": "Rotate to Attend: Convolutional Triplet Attention, Misra et al., WACV 2021",
    "ela": "ELA: Efficient Local Attention for Deep CNNs, Xu & Wan, 2024",
    "ca": "Coordinate Attention for Efficient Mobile Network Design, Hou et al., CVPR 2021",
}

AttnFactory = Callable[..., nn.Module]


def _eca_from_table(channels: int, table: dict[int, int], **dd) -> ECA:
    """ECA with the kernel a released model uses at ``channels`` channels."""
    return ECA(channels, kernel_size=table[channels], **dd)


def _eca_mobilenetv2(channels: int, **dd) -> ECA:
    """ECA-Net's official MobileNetV2: k=1 on blocks of at most 96 output channels, else k=3."""
    return ECA(channels, kernel_size=1 if channels <= 96 else 3, **dd)


def _ela_t_mobilenetv2(channels: int, **dd) -> ELA:
    """ELA-T with its 32 GroupNorm groups, or 16 on the two 144-channel blocks (144 = 9 x 16)."""
    return ELA(channels, "t", gn_groups=32 if channels % 32 == 0 else 16, **dd)


#: ECA kernel per stage width of the released ECA-Net checkpoints (eca_resnet18_k3577,
#: eca_resnet50_k3557): 3+5+7+7 per BasicBlock stage, 80 parameters in ResNet-50.
_ECA_RELEASED = {
    "resnet18": {64: 3, 128: 5, 256: 7, 512: 7},
    "resnet50": {256: 3, 512: 5, 1024: 5, 2048: 7},
}

#: (trunk, attention, layout) -> the attention factory timm's ResNet calls with the channels.
_RESNET_ATTN: dict[tuple[str, str, str], AttnFactory] = {
    **{(t, "se", "paper"): partial(SqueezeExcite, reduction=16) for t in ("resnet18", "resnet50")},
    **{(t, "se", "timm"): partial(SqueezeExcite, reduction=16, divisor=8) for t in ("resnet18", "resnet50")},
    ("resnet50", "se", "cadene"): partial(SqueezeExcite, reduction=16),
    **{(t, "eca", "paper"): partial(_eca_from_table, table=_ECA_RELEASED[t]) for t in ("resnet18", "resnet50")},
    **{(t, "eca", "timm"): ECA for t in ("resnet18", "resnet50")},  # timm's adaptive k (>= 3 at these widths)
    **{(t, "cbam", "paper"): partial(CBAM, reduction=16) for t in ("resnet18", "resnet50")},
    **{(t, "triplet", "paper"): partial(TripletAttention, kernel_size=7) for t in ("resnet18", "resnet50")},
    **{(t, "ela", "paper"): partial(ELA, variant="b") for t in ("resnet18", "resnet50")},  # ELA paper: ELA-B
    **{(t, "ca", "paper"): CoordAttention for t in ("resnet18", "resnet50")},
}

#: Attention -> (position in the block, factory, attention in the first t=1 block too) in
#: MobileNetV2. SE, CBAM and CA follow the CA paper's MobileNetV2 (after the depthwise conv,
#: SE/CBAM at reduction 24, no attention in the first block); ELA follows the same setup
#: with ELA-T; ECA and Triplet follow their official MobileNetV2s (after the projection,
#: every block).
MOBILENETV2_ATTN: dict[str, tuple[str, AttnFactory, bool]] = {
    "se": ("mid", partial(SqueezeExcite, reduction=24), False),
    "cbam": ("mid", partial(CBAM, reduction=24), False),
    "ca": ("mid", CoordAttention, False),
    "ela": ("mid", _ela_t_mobilenetv2, False),
    "eca": ("out", _eca_mobilenetv2, True),
    "triplet": ("out", partial(TripletAttention, kernel_size=3), True),
}
MOBILENETV2_ATTN_POSITION = {name: spec[0] for name, spec in MOBILENETV2_ATTN.items()}


# ---------------------------------------------------------------------------------------------
# MobileNetV2 trunk
# ---------------------------------------------------------------------------------------------


class MobileNetV2(StagedBackbone):
    """MobileNetV2 (Sandler et al., CVPR 2018) with an optional attention module per block.

    Seven stages of the paper's table 2 (expansion t, channels c, repeats n, stride s);
    features are taken at strides 2, 4, 8, 16 and 32 like timm's ``mobilenetv2_100``.
    ``attn_first_block=False`` leaves the first (t=1) block without attention.
    """

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        width_mult: float = 1.0,
        attn_layer: AttnFactory | None = None,
        attn_position: str = "out",
        attn_first_block: bool = True,
        global_pool: str = "avg",
        drop_rate: float = 0.2,
        drop_path_rate: float = 0.0,
        head_chs: int = 1280,
    ) -> None:
        super().__init__()
        from timm.layers import DropPath

        self.num_classes = num_classes
        self.drop_rate = drop_rate
        chs = make_divisible(32 * width_mult, 8)
        self.stem = ConvBNAct(in_chans, chs, 3, stride=2, act_layer=nn.ReLU6)
        num_blocks = sum(n for _, _, n, _ in self.SETTINGS)
        dpr = calculate_drop_path_rates(drop_path_rate, num_blocks)
        stages, self.feature_info, stride, idx = [], [], 2, 0
        for i, (t, c, n, s) in enumerate(self.SETTINGS):
            out = make_divisible(c * width_mult, 8)
            blocks = []
            for j in range(n):
                attn = attn_layer if (idx > 0 or attn_first_block) else None
                kw = {"stride": s if j == 0 else 1, "attn_layer": attn, "attn_position": attn_position}
                if t == 1:
                    blocks.append(DepthwiseSeparable(chs, out, **kw))
                else:
                    drop = DropPath(dpr[idx]) if dpr[idx] > 0 else None
                    blocks.append(InvertedResidual(chs, out, expand=t, drop_path=drop, **kw))
                chs, idx = out, idx + 1
            stride *= s
            stages.append(nn.Sequential(*blocks))
            if i == len(self.SETTINGS) - 1 or self.SETTINGS[i + 1][3] == 2:
                self.feature_info.append({"num_chs": out, "reduction": stride, "module": f"stages.{i}", "stage": i})
        self.stages = nn.Sequential(*stages)
        head_chs = max(head_chs, make_divisible(head_chs * width_mult, 8))
        self.neck = ConvBNAct(chs, head_chs, 1, act_layer=nn.ReLU6)
        self.num_features = self.head_hidden_size = head_chs
        self.global_pool, self.classifier = create_classifier(head_chs, num_classes, pool_type=global_pool)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        pool = global_pool if global_pool is not None else self.global_pool.pool_type
        self.global_pool, self.classifier = create_classifier(self.num_features, num_classes, pool_type=pool)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate > 0.0:
            x = nn.functional.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.classifier(x)


# ---------------------------------------------------------------------------------------------
# Caffe-style strides (Cadene's SE-ResNets)
# ---------------------------------------------------------------------------------------------


def _caffe_strides_(model: ResNet) -> ResNet:
    """Move each bottleneck's stride from its 3x3 conv to its first 1x1 conv, ceil-mode stem pool.

    This is the SENet release's (Caffe) ResNet, kept by Cadene's pretrainedmodels and timm's
    ``legacy_seresnet*``; timm's and torchvision's ResNet stride the 3x3 conv instead.
    """
    for block in model.modules():
        if isinstance(block, Bottleneck) and block.conv2.stride != (1, 1):
            block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)
    model.maxpool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
    return model


# ---------------------------------------------------------------------------------------------
# Checkpoint layouts
# ---------------------------------------------------------------------------------------------

#: Attribute names the official repositories give the attention module -> timm's slot ``se``.
_OFFICIAL_SLOTS = ((r"\.(?:eca|cbam|triplet_attention|se_module)\.", ".se."),)

#: The inner layout of each foreign attention module: a marker in the keys -> renames.
#: ``(?P<s>...)`` is the slot (``se``: ResNets and MobileNetV2's mid slot; ``attn``: its out slot).
_SLOT = r"(?P<s>\.(?:se|attn)\.)"
_ATTN_INNER: dict[str, tuple[tuple[str, str], ...]] = {
    ".se.channel.fc1.": ((r"\.se\.channel\.fc([12])\.", r".se.fc\1."),),  # timm CbamModule
    "ChannelGateH.": (  # triplet-attention official: rotated H and W gates, plain spatial gate
        (_SLOT + r"ChannelGateH\.spatial\.", r"\g<s>gate_cw.conv."),
        (_SLOT + r"ChannelGateW\.spatial\.", r"\g<s>gate_hc.conv."),
        (_SLOT + r"SpatialGate\.spatial\.", r"\g<s>gate_hw.conv."),
    ),
    "ChannelGate.mlp.": (  # CBAM official (Jongchan/attention-module): Linear MLP, BasicConv gate
        (_SLOT + r"ChannelGate\.mlp\.1\.", r"\g<s>fc1."),
        (_SLOT + r"ChannelGate\.mlp\.3\.", r"\g<s>fc2."),
        (_SLOT + r"SpatialGate\.spatial\.", r"\g<s>spatial.conv."),
    ),
    ".se.conv1.": (  # Coordinate attention official: conv1 (with bias) + bn1, conv2 (H), conv3 (W)
        (_SLOT + r"conv1\.", r"\g<s>reduce.conv."), (_SLOT + r"bn1\.", r"\g<s>reduce.bn."),
        (_SLOT + r"conv2\.", r"\g<s>conv_h."), (_SLOT + r"conv3\.", r"\g<s>conv_w."),
    ),
}

#: Cadene's SENet top-level names -> timm's ResNet names.
_CADENE = ((r"^layer0\.", ""), (r"^last_linear\.", "fc."))

#: timm's MobileNetV2 top-level names -> edgezoo's.
_TIMM_MBV2 = (
    (r"^conv_stem\.", "stem.conv."), (r"^bn1\.", "stem.bn."), (r"^blocks\.", "stages."),
    (r"^conv_head\.", "neck.conv."), (r"^bn2\.", "neck.bn."),
)

#: torchvision's MobileNetV2 block internals (``features.N.conv.*``) -> edgezoo's layer names;
#: the last index is where ECA-Net's and triplet-attention's official MobileNetV2s put theirs.
_TV_FIRST = {"conv.0.0": "conv_dw", "conv.0.1": "bn1", "conv.1": "conv_pw", "conv.2": "bn2", "conv.3": "attn"}
_TV_BLOCK = {"conv.0.0": "conv_pw", "conv.0.1": "bn1", "conv.1.0": "conv_dw", "conv.1.1": "bn2",
             "conv.2": "conv_pwl", "conv.3": "bn3", "conv.4": "attn"}
#: The flat ``nn.Sequential`` MobileNetV2 of the Coordinate-attention release (``features.N.conv.i``,
#: CA at ``conv.6``; head ``conv.0``/``conv.1``).
_FLAT_FIRST = {"conv.0": "conv_dw", "conv.1": "bn1", "conv.3": "conv_pw", "conv.4": "bn2"}
_FLAT_BLOCK = {"conv.0": "conv_pw", "conv.1": "bn1", "conv.3": "conv_dw", "conv.4": "bn2", "conv.6": "se",
               "conv.7": "conv_pwl", "conv.8": "bn3"}


def _rename(key: str, rules: tuple[tuple[str, str], ...]) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


def _mbv2_block_key(key: str, first: dict[str, str], block: dict[str, str], head: str) -> str:
    """``features.N.<layer>...`` of a torchvision-style MobileNetV2 -> edgezoo's MobileNetV2 key.

    ``first``/``block`` map the layer names inside the t=1 and the other blocks; ``head`` is
    the pattern of the classifier's Linear.
    """
    where = [(i, j) for i, (_, _, n, _) in enumerate(MobileNetV2.SETTINGS) for j in range(n)]
    m = re.fullmatch(r"features\.(\d+)\.(.+)", key)
    if m is None:
        key = re.sub(r"^conv\.0\.", "neck.conv.", re.sub(r"^conv\.1\.", "neck.bn.", key))  # flat layout's head
        return re.sub(head, "classifier.", key)
    feat, rest = int(m.group(1)), m.group(2)
    if feat in (0, len(where) + 1):  # stem and torchvision's head: Conv-BN-ReLU (0 conv, 1 bn)
        part = "stem" if feat == 0 else "neck"
        return re.sub(r"^0\.", f"{part}.conv.", re.sub(r"^1\.", f"{part}.bn.", rest))
    table = first if feat == 1 else block
    layer = next(k for k in sorted(table, key=len, reverse=True) if rest.startswith(k + "."))
    stage, index = where[feat - 1]
    return f"stages.{stage}.{index}.{table[layer]}{rest[len(layer):]}"


def _refuse_cadene(keys: list[str], model: nn.Module) -> None:
    """Cadene's keys map onto timm's ResNet one to one, but its strides differ: refuse silently wrong loads."""
    if not any(".se_module." in k for k in keys) or getattr(model, "attn_layout", None) == "cadene":
        return
    arch = getattr(model, "pretrained_cfg", {}).get("architecture", type(model).__name__)
    raise CheckpointError(
        f"this is a Cadene/pretrainedmodels SE-ResNet checkpoint (timm legacy_seresnet*), whose bottlenecks stride "
        f"their first 1x1 conv and whose stem pools with ceil_mode: loaded into {arch} it would compute something "
        f"else; build timm.create_model('ez_resnet50_se', layout='cadene') (SE-ResNet-50 only) and load into that"
    )


def _fold_ca_bias(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official CA's conv1 bias -> the following BN's running mean (BN(Wx + b) == BN'(Wx))."""
    for key in [k for k in state_dict if k.endswith(".reduce.conv.bias")]:
        mean = key[: -len("conv.bias")] + "bn.running_mean"
        state_dict[mean] = state_dict[mean] - state_dict.pop(key)
    return state_dict


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map timm, torchvision, Cadene and official-repository layouts to this family's keys."""
    keys = list(state_dict)
    _refuse_cadene(keys, model)
    if "features.1.conv.0.weight" in keys:  # the flat layout of the CA release
        state_dict = {_mbv2_block_key(k, _FLAT_FIRST, _FLAT_BLOCK, r"^classifier\.1\."): v
                      for k, v in state_dict.items()}
    elif any(k.startswith("features.") for k in keys):
        state_dict = {_mbv2_block_key(k, _TV_FIRST, _TV_BLOCK, r"^classifier\.1\."): v for k, v in state_dict.items()}
    elif isinstance(model, MobileNetV2):
        state_dict = {_rename(k, _TIMM_MBV2): v for k, v in state_dict.items()}
    if any(".se_module." in k for k in keys):
        state_dict = {_rename(k, _CADENE): v for k, v in state_dict.items()}
    state_dict = {_rename(k, _OFFICIAL_SLOTS): v for k, v in state_dict.items()}
    for marker, rules in _ATTN_INNER.items():
        if any(marker in k for k in state_dict):
            state_dict = {_rename(k, rules): v for k, v in state_dict.items()}
    state_dict = _fold_ca_bias(dict(state_dict))
    expected = model.state_dict()
    out = {}
    for key, value in state_dict.items():
        target = expected.get(key)
        if target is not None and value.ndim == 2 and target.ndim == 4:  # Linear MLP -> 1x1 conv
            value = value[:, :, None, None]
        out[key] = value
    if any(".se.channel.fc1." in k for k in keys):
        # timm's CBAM pools the spatial map as [mean, max] (the paper and edgezoo: [max, mean])
        # and its MLP has no biases (equivalent to zero biases here).
        for key in [k for k in out if k.endswith("spatial.conv.conv.weight")]:
            out[key] = out[key].flip(1)
        for key in [k for k in out if re.search(r"\.se\.fc[12]\.weight$", k)]:
            out.setdefault(key[: -len("weight")] + "bias", out[key].new_zeros(out[key].shape[0]))
    return out


# ---------------------------------------------------------------------------------------------
# Configs and registration
# ---------------------------------------------------------------------------------------------


def _cfg(**kwargs) -> dict:
    return {
        "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
        "crop_pct": 0.875, "interpolation": "bilinear", "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD, "first_conv": "conv1", "classifier": "fc", "license": "apache-2.0",
        **kwargs,
    }


_RESNETS = {"resnet18": (BasicBlock, (2, 2, 2, 2)), "resnet50": (Bottleneck, (3, 4, 6, 3))}
_ATTNS = ("se", "cbam", "eca", "triplet", "ela", "ca")

default_cfgs = generate_default_cfgs({
    **{f"ez_{trunk}_{attn}": _cfg(paper_name=ATTN_PAPERS[attn]) for trunk in _RESNETS for attn in _ATTNS},
    **{f"ez_mobilenetv2_{attn}": _cfg(paper_name=ATTN_PAPERS[attn], first_conv="stem.conv", classifier="classifier")
       for attn in _ATTNS},
})


def _layout_error(name: str, layout: str, choices: list[str]) -> InvalidArgumentError:
    note = " (legacy_seresnet18/34 also put a ReLU before SE, which timm's BasicBlock has not)" if (
        layout == "cadene" and "resnet18" in name) else ""
    return InvalidArgumentError(f"{name} has no layout {layout!r}{note}; choose from {', '.join(choices)}")


def _resnet(name: str, trunk: str, attn: str, pretrained: bool, layout: str = "paper", **kwargs) -> ResNet:
    factory = _RESNET_ATTN.get((trunk, attn, layout))
    if factory is None:
        choices = [lay for (t, a, lay) in _RESNET_ATTN if (t, a) == (trunk, attn)]
        raise _layout_error(name, layout, choices)
    block, layers = _RESNETS[trunk]
    kwargs.setdefault("zero_init_last", False)  # as the papers' official code (timm's default is True)
    cadene = layout == "cadene"
    model = build_model_with_cfg(
        ResNet, name, pretrained and not cadene, pretrained_filter_fn=checkpoint_filter_fn,
        block=block, layers=layers, block_args={"attn_layer": factory}, **kwargs,
    )
    model.attn_layout = layout
    if cadene:
        _caffe_strides_(model)
        if pretrained:  # the weights load once the model has Cadene's strides
            from timm.models import load_pretrained

            load_pretrained(model, num_classes=model.num_classes, in_chans=kwargs.get("in_chans", 3),
                            filter_fn=checkpoint_filter_fn)
    return model


def _mobilenetv2(name: str, attn: str, pretrained: bool, layout: str = "paper", **kwargs) -> MobileNetV2:
    if layout != "paper":
        raise _layout_error(name, layout, ["paper"])
    position, factory, first = MOBILENETV2_ATTN[attn]
    model = build_model_with_cfg(
        MobileNetV2, name, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
        attn_layer=factory, attn_position=position, attn_first_block=first, feature_cfg=feature_cfg(5), **kwargs,
    )
    model.attn_layout = layout
    return model


def _make_entrypoint(name: str, build, doc: str):
    def entrypoint(pretrained: bool = False, **kwargs) -> nn.Module:
        return build(name, pretrained=pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = doc
    return register(FAMILY, checkpoint_filter_fn)(entrypoint)


#: What each model reproduces and the published parameter count ("their count": the authors'
#: own counter, which differs from timm's/torchvision's count of the same trunk).
_REPRODUCES = {
    "ez_resnet18_se": "SE-ResNet-18 of SENet (C//16 widths; layout='timm' builds timm's seresnet18).",
    "ez_resnet50_se": "SE-ResNet-50 of SENet (28.09M published) on timm's ResNet-50, as timm's seresnet50; "
                      "layout='cadene' builds the SENet release's Caffe strides (legacy_seresnet50).",
    "ez_resnet18_cbam": "CBAM-ResNet-18 of the CBAM release (Jongchan/attention-module).",
    "ez_resnet50_cbam": "CBAM-ResNet-50 of the CBAM release: 28.09M published.",
    "ez_resnet18_eca": "ECA-Net's released eca_resnet18_k3577 (11.15M their count; ResNet-18 + 44).",
    "ez_resnet50_eca": "ECA-Net's released eca_resnet50_k3557: ResNet-50 + 80 published (24.37M their count).",
    "ez_resnet18_triplet": "the triplet-attention release's ResNet-18 (k=7).",
    "ez_resnet50_triplet": "the triplet-attention release's ResNet-50 (k=7): 25.56M published.",
    "ez_resnet18_ela": "ELA-B in ResNet-18 as the ELA paper's ResNets; no published count reproduced.",
    "ez_resnet50_ela": "ELA-B in ResNet-50 as the ELA paper's ResNets; no published count reproduced.",
    "ez_resnet18_ca": "an edgezoo combination (the CA paper has no ResNet); no published count.",
    "ez_resnet50_ca": "an edgezoo combination (the CA paper has no ResNet); no published count.",
    "ez_mobilenetv2_se": "the CA paper's MobileNetV2 + SE (r=24, none in the t=1 block): 3.89M published.",
    "ez_mobilenetv2_cbam": "the CA paper's MobileNetV2 + CBAM (r=24, none in the t=1 block): 3.89M published.",
    "ez_mobilenetv2_ca": "the CA release's MobileNetV2 (mbv2_ca): 3.95M published.",
    "ez_mobilenetv2_eca": "ECA-Net's released eca_mobilenetv2_k13 (3.34M their count; MobileNetV2 + 25).",
    "ez_mobilenetv2_triplet": "the triplet-attention release's MobileNetV2 (k=3): 3.506M published.",
    "ez_mobilenetv2_ela": "ELA-T in the CA paper's MobileNetV2 setup (edgezoo's choice); no published count.",
}

_PLACEMENT = {
    "resnet": "after the last BatchNorm of each residual branch, before the addition",
    "mid": "after the depthwise conv, on the expanded channels",
    "out": "after the linear projection, before the residual addition",
}

for _trunk in _RESNETS:
    for _attn in _ATTNS:
        _make_entrypoint(
            f"ez_{_trunk}_{_attn}", partial(_resnet, trunk=_trunk, attn=_attn),
            f"{_trunk.replace('resnet', 'ResNet-')} with {_attn.upper()} ({ATTN_PAPERS[_attn]}) "
            f"{_PLACEMENT['resnet']}. Reproduces {_REPRODUCES[f'ez_{_trunk}_{_attn}']}",
        )
for _attn in _ATTNS:
    _make_entrypoint(
        f"ez_mobilenetv2_{_attn}", partial(_mobilenetv2, attn=_attn),
        f"MobileNetV2 1.0 with {_attn.upper()} ({ATTN_PAPERS[_attn]}) {_PLACEMENT[MOBILENETV2_ATTN_POSITION[_attn]]}. "
        f"Reproduces {_REPRODUCES[f'ez_mobilenetv2_{_attn}']}",
    )
