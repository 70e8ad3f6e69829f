"""edgezoo.blocks: plain ``nn.Module`` building blocks, one file per family, no registry knowledge."""

from edgezoo.blocks.cnn_attention import (
    ATTENTIONS,
    CBAM,
    ECA,
    ELA,
    CoordAttention,
    SqueezeExcite,
    TripletAttention,
    create_attn,
)
from edgezoo.blocks.conv_bn import BNLinear, ConvBN, fold_pair, fuse_bn_linear, fuse_conv_bn

__all__ = [
    "ATTENTIONS",
    "CBAM",
    "ECA",
    "ELA",
    "BNLinear",
    "ConvBN",
    "CoordAttention",
    "SqueezeExcite",
    "TripletAttention",
    "create_attn",
    "fold_pair",
    "fuse_bn_linear",
    "fuse_conv_bn",
]
