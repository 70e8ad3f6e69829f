"""ResNet-18/50 and MobileNetV2 with channel/spatial attention plugged in.

ResNets are timm's own ``ResNet`` with the attention module passed as its ``attn_layer``:
timm places it after the last BatchNorm of every residual branch, before the addition —
where SENet, CBAM, ECA-Net and Triplet attention put theirs (ELA and Coordinate attention
follow the same placement in ResNets). MobileNetV2 is written here (timm's builder has no
slot after the projection conv) with timm's layer names; see :mod:`edgezoo.blocks.mobilenet`
for the per-attention placement.

Checkpoints: timm's ResNet layouts (and torchvision's, which share key names) load as they are;
timm's CBAM (channel/spatial sub-modules, spatial pool ordered mean-then-max) and the papers'
official layouts (ECA-Net ``.eca.``, CBAM ``.cbam.ChannelGate.mlp``, triplet-attention
``.triplet_attention.ChannelGateH``), timm's and torchvision's MobileNetV2 are remapped.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from functools import partial

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import create_classifier, make_divisible
from timm.models import build_model_with_cfg, generate_default_cfgs
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from edgezoo._base import StagedBackbone, feature_cfg
from edgezoo._registry import register
from edgezoo.blocks.cnn_attention import ATTENTIONS
from edgezoo.blocks.conv_bn import fold_pair
from edgezoo.blocks.mobilenet import DepthwiseSeparable, InvertedResidual
from edgezoo.fuse import register_fuser

__all__ = ["ATTN_PAPERS", "MOBILENETV2_ATTN_POSITION", "MobileNetV2"]

FAMILY = "cnn_attention"

#: Attention name -> (paper, placement note) for the docstrings and ``edgezoo info``.
ATTN_PAPERS: dict[str, str] = {
    "se": "Squeeze-and-Excitation Networks, Hu et al., CVPR 2018",
    "cbam": "CBAM: Convolutional Block Attention Module, Woo et al., ECCV 2018",
    "eca": "ECA-Net: Efficient Channel Attention, Wang et al., CVPR 2020",
    "triplet": "Rotate to Attend: Convolutional Triplet Attention, Misra et al., WACV 2021",
    "ela": "ELA: Efficient Local Attention for Deep CNNs, Xu & Wan, 2024",
    "ca": "Coordinate Attention for Efficient Mobile Network Design, Hou et al., CVPR 2021",
}

#: Where each attention goes inside a MobileNetV2 block (see edgezoo.blocks.mobilenet).
MOBILENETV2_ATTN_POSITION = {"se": "mid", "ca": "mid", "ela": "mid", "eca": "out", "triplet": "out", "cbam": "out"}

#: Module options per (trunk, attention) where the papers differ from the module defaults:
#: ELA-B for ResNets and ELA-T for MobileNetV2 (ELA paper), Triplet k=3 in MobileNetV2.
_ATTN_KWARGS = {
    ("resnet", "ela"): {"variant": "b"},
    ("mobilenetv2", "ela"): {"variant": "t"},
    ("mobilenetv2", "triplet"): {"kernel_size": 3},
}


def _attn_layer(trunk: str, attn: str) -> partial:
    return partial(ATTENTIONS[attn], **_ATTN_KWARGS.get((trunk, attn), {}))


# ---------------------------------------------------------------------------------------------
# MobileNetV2 trunk
# ---------------------------------------------------------------------------------------------


class MobileNetV2(StagedBackbone):
    """MobileNetV2 (Sandler et al., CVPR 2018) with an optional attention module per block.

    Seven stages of the paper's table 2 (expansion t, channels c, repeats n, stride s);
    features are taken at strides 2, 4, 8, 16 and 32 like timm's ``mobilenetv2_100``.
    """

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        width_mult: float = 1.0,
        attn_layer: partial | None = None,
        attn_position: str = "out",
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
        self.stem = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(in_chans, chs, 3, 2, 1, bias=False), bn=nn.BatchNorm2d(chs), act=nn.ReLU6(inplace=True),
        ))
        num_blocks = sum(n for _, _, n, _ in self.SETTINGS)
        dpr = [drop_path_rate * i / max(num_blocks - 1, 1) for i in range(num_blocks)]
        stages, self.feature_info, stride, idx = [], [], 2, 0
        for i, (t, c, n, s) in enumerate(self.SETTINGS):
            out = make_divisible(c * width_mult, 8)
            blocks = []
            for j in range(n):
                kw = {"stride": s if j == 0 else 1, "attn_layer": attn_layer, "attn_position": attn_position}
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
        self.neck = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(chs, head_chs, 1, bias=False), bn=nn.BatchNorm2d(head_chs), act=nn.ReLU6(inplace=True),
        ))
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
# Checkpoint layouts
# ---------------------------------------------------------------------------------------------

#: Attention layouts of other code bases: a marker found in the checkpoint's keys -> renames.
_ATTN_LAYOUTS: dict[str, tuple[tuple[str, str], ...]] = {
    ".se.channel.fc1.": ((r"\.se\.channel\.fc([12])\.", r".se.fc\1."),),  # timm CbamModule
    ".eca.": ((r"\.eca\.", ".se."),),  # ECA-Net official
    ".se_module.": ((r"\.se_module\.", ".se."), (r"^layer0\.", ""), (r"^last_linear\.", "fc.")),  # Cadene
    ".cbam.": (  # CBAM official (Jongchan/attention-module): Linear MLP, BasicConv spatial gate
        (r"\.cbam\.ChannelGate\.mlp\.1\.", ".se.fc1."),
        (r"\.cbam\.ChannelGate\.mlp\.3\.", ".se.fc2."),
        (r"\.cbam\.SpatialGate\.spatial\.", ".se.spatial.conv."),
    ),
    ".triplet_attention.": (  # triplet-attention official: H, W and spatial gates
        (r"\.triplet_attention\.ChannelGateH\.spatial\.", ".se.gate_cw.conv."),
        (r"\.triplet_attention\.ChannelGateW\.spatial\.", ".se.gate_hc.conv."),
        (r"\.triplet_attention\.SpatialGate\.spatial\.", ".se.gate_hw.conv."),
    ),
}

#: timm's MobileNetV2 top-level names -> edgezoo's.
_TIMM_MBV2 = (
    (r"^conv_stem\.", "stem.conv."), (r"^bn1\.", "stem.bn."), (r"^blocks\.", "stages."),
    (r"^conv_head\.", "neck.conv."), (r"^bn2\.", "neck.bn."),
)

#: torchvision's MobileNetV2 block internals (``features.N.conv.*``) -> edgezoo's layer names;
#: ``conv.4`` is where ECA-Net's official MobileNetV2 keeps its ECA module.
_TV_FIRST = {"conv.0.0": "conv_dw", "conv.0.1": "bn1", "conv.1": "conv_pw", "conv.2": "bn2", "conv.3": "attn"}
_TV_BLOCK = {"conv.0.0": "conv_pw", "conv.0.1": "bn1", "conv.1.0": "conv_dw", "conv.1.1": "bn2",
             "conv.2": "conv_pwl", "conv.3": "bn3", "conv.4": "attn"}


def _rename(key: str, rules: tuple[tuple[str, str], ...]) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


def _torchvision_mbv2_key(key: str) -> str:
    """``features.N...`` of torchvision's ``mobilenet_v2`` -> edgezoo's MobileNetV2 key."""
    where = [(i, j) for i, (_, _, n, _) in enumerate(MobileNetV2.SETTINGS) for j in range(n)]
    m = re.fullmatch(r"features\.(\d+)\.(.+)", key)
    if m is None:
        return key.replace("classifier.1.", "classifier.")
    feat, rest = int(m.group(1)), m.group(2)
    if feat in (0, len(where) + 1):  # stem and head: Conv2dNormActivation (0 conv, 1 bn)
        part = "stem" if feat == 0 else "neck"
        return re.sub(r"^0\.", f"{part}.conv.", re.sub(r"^1\.", f"{part}.bn.", rest))
    table = _TV_FIRST if feat == 1 else _TV_BLOCK
    layer = next(k for k in sorted(table, key=len, reverse=True) if rest.startswith(k + "."))
    stage, index = where[feat - 1]
    return f"stages.{stage}.{index}.{table[layer]}{rest[len(layer):]}"


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map timm, torchvision and official-repository layouts to this family's keys."""
    keys = list(state_dict)
    if any(k.startswith("features.") for k in keys):
        state_dict = {_torchvision_mbv2_key(k): v for k, v in state_dict.items()}
    elif isinstance(model, MobileNetV2):
        state_dict = {_rename(k, _TIMM_MBV2): v for k, v in state_dict.items()}
    for marker, rules in _ATTN_LAYOUTS.items():
        if any(marker in k for k in keys):
            state_dict = {_rename(k, rules): v for k, v in state_dict.items()}
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
# Deploy form for timm's ResNet (edgezoo blocks fuse themselves)
# ---------------------------------------------------------------------------------------------


@register_fuser(BasicBlock)
def _fuse_basic(block: BasicBlock) -> None:
    fold_pair(block, "conv1", "bn1")
    fold_pair(block, "conv2", "bn2")


@register_fuser(Bottleneck)
def _fuse_bottleneck(block: Bottleneck) -> None:
    for i in (1, 2, 3):
        fold_pair(block, f"conv{i}", f"bn{i}")


@register_fuser(ResNet)
def _fuse_resnet_stem(model: ResNet) -> None:
    fold_pair(model, "conv1", "bn1")


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


def _resnet(name: str, trunk: str, attn: str, pretrained: bool, **kwargs) -> ResNet:
    block, layers = _RESNETS[trunk]
    return build_model_with_cfg(
        ResNet, name, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
        block=block, layers=layers, block_args={"attn_layer": _attn_layer("resnet", attn)}, **kwargs,
    )


def _mobilenetv2(name: str, attn: str, pretrained: bool, **kwargs) -> MobileNetV2:
    return build_model_with_cfg(
        MobileNetV2, name, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
        attn_layer=_attn_layer("mobilenetv2", attn), attn_position=MOBILENETV2_ATTN_POSITION[attn],
        feature_cfg=feature_cfg(5), **kwargs,
    )


def _make_entrypoint(name: str, build, doc: str):
    def entrypoint(pretrained: bool = False, **kwargs) -> nn.Module:
        return build(name, pretrained=pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = doc
    return register(FAMILY, checkpoint_filter_fn)(entrypoint)


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
            f"{_PLACEMENT['resnet']}.",
        )
for _attn in _ATTNS:
    _make_entrypoint(
        f"ez_mobilenetv2_{_attn}", partial(_mobilenetv2, attn=_attn),
        f"MobileNetV2 1.0 with {_attn.upper()} ({ATTN_PAPERS[_attn]}) {_PLACEMENT[MOBILENETV2_ATTN_POSITION[_attn]]}.",
    )
