"""The papers' official CNN-attention networks, re-written from their released code for the tests.

Each module reproduces the structure (so the state-dict keys) and the computation of the
repository named in its docstring, written independently of edgezoo's blocks: the tests
randomise these, save their weights, load them into edgezoo models with
:func:`edgezoo.load_checkpoint` and compare outputs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

AttnFn = Callable[[int, int], nn.Module]  # (channels, stage index) -> module


class EcaLayer(nn.Module):
    """ECA-Net (BangguWu/ECANet ``eca_layer``): avg pool, Conv1d over channels, sigmoid."""

    def __init__(self, k_size: int) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, k_size, padding=(k_size - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.avg_pool(x).squeeze(-1).transpose(-1, -2)  # (B, 1, C)
        return x * torch.sigmoid(self.conv(y).transpose(-1, -2).unsqueeze(-1))


class BasicConv(nn.Module):
    """CBAM's and triplet-attention's ``BasicConv``: conv (no bias) + BN (momentum 0.01), no ReLU."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, k, padding=(k - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class SpatialGateRef(nn.Module):
    """``SpatialGate``: [channel max, channel mean] -> BasicConv -> sigmoid."""

    def __init__(self, k: int = 7) -> None:
        super().__init__()
        self.spatial = BasicConv(k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.max(1)[0].unsqueeze(1), x.mean(1).unsqueeze(1)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class ChannelGateRef(nn.Module):
    """CBAM's ``ChannelGate``: one Linear MLP (after a Flatten) over avg- and max-pooled vectors."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(channels, channels // reduction), nn.ReLU(),
                                 nn.Linear(channels // reduction, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        att = self.mlp(F.avg_pool2d(x, size)) + self.mlp(F.max_pool2d(x, size))
        return x * torch.sigmoid(att)[:, :, None, None]


class CbamRef(nn.Module):
    """CBAM (Jongchan/attention-module ``CBAM``): channel gate, then spatial gate."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.ChannelGate = ChannelGateRef(channels, reduction)
        self.SpatialGate = SpatialGateRef(7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SpatialGate(self.ChannelGate(x))


class TripletRef(nn.Module):
    """Triplet attention (landskape-ai/triplet-attention ``TripletAttention``)."""

    def __init__(self, k: int = 7) -> None:
        super().__init__()
        self.ChannelGateH = SpatialGateRef(k)
        self.ChannelGateW = SpatialGateRef(k)
        self.SpatialGate = SpatialGateRef(k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h_branch = self.ChannelGateH(x.permute(0, 2, 1, 3).contiguous()).permute(0, 2, 1, 3)
        w_branch = self.ChannelGateW(x.permute(0, 3, 2, 1).contiguous()).permute(0, 3, 2, 1)
        return (self.SpatialGate(x) + h_branch + w_branch) / 3


class CoordAttRef(nn.Module):
    """Coordinate attention (houqb/CoordAttention ``CoordAtt``): conv1 has a bias, h_swish."""

    def __init__(self, channels: int, groups: int = 32) -> None:
        super().__init__()
        mip = max(8, channels // groups)
        self.conv1 = nn.Conv2d(channels, mip, 1)
        self.bn1 = nn.BatchNorm2d(mip)
        self.conv2 = nn.Conv2d(mip, channels, 1)
        self.conv3 = nn.Conv2d(mip, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        x_h = F.adaptive_avg_pool2d(x, (None, 1))
        x_w = F.adaptive_avg_pool2d(x, (1, None)).permute(0, 1, 3, 2)
        y = self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2)))
        y = y * F.relu6(y + 3) / 6
        y_h, y_w = torch.split(y, [h, w], dim=2)
        return x * torch.sigmoid(self.conv3(y_w.permute(0, 1, 3, 2))) * torch.sigmoid(self.conv2(y_h))


# --- ResNets of the ECA-Net, CBAM and triplet-attention repositories (torchvision's trunk) ---


class _Block(nn.Module):
    """BasicBlock / Bottleneck with the attention module ``attn_name`` after the last BN."""

    def __init__(self, inplanes: int, planes: int, stride: int, bottleneck: bool, attn_name: str,
                 attn: nn.Module) -> None:
        super().__init__()
        out = planes * (4 if bottleneck else 1)
        self.bottleneck = bottleneck
        if bottleneck:
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(out)
        else:
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.attn_name = attn_name
        setattr(self, attn_name, attn)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.bottleneck:
            y = self.bn3(self.conv3(F.relu(y)))
        y = getattr(self, self.attn_name)(y)
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(y + shortcut)


class ResNetRef(nn.Module):
    """The official repositories' ImageNet ResNet (stride on the 3x3 conv), attention per block."""

    def __init__(self, depth: int, attn_name: str, attn_fn: AttnFn) -> None:
        super().__init__()
        bottleneck = depth == 50
        layers = (3, 4, 6, 3) if bottleneck else (2, 2, 2, 2)
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        inplanes = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            out = planes * (4 if bottleneck else 1)
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(_Block(inplanes, planes, stride, bottleneck, attn_name, attn_fn(out, i)))
                inplanes = out
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(inplanes, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(x.mean((2, 3)))  # the repos' AvgPool2d(7) at 224 px: a global average


# --- MobileNetV2s ------------------------------------------------------------------------------


def torchvision_mbv2_with(attn_fn: Callable[[int], nn.Module]) -> nn.Module:
    """torchvision's MobileNetV2 with ``attn_fn(out_channels)`` appended to every block's ``conv``.

    That is the MobileNetV2 of ECA-Net's and triplet-attention's repositories: the module is the
    last entry of each block's ``conv`` sequence (``conv.3`` in the t=1 block, ``conv.4`` after).
    """
    from torchvision.models import mobilenet_v2

    model = mobilenet_v2()
    for block in model.features[1:-1]:
        block.conv.append(attn_fn(block.out_channels))
    return model


class _FlatBlock(nn.Module):
    """The CA release's inverted residual: one flat ``conv`` sequence, CA after the depthwise conv."""

    def __init__(self, inp: int, oup: int, stride: int, t: int) -> None:
        super().__init__()
        hidden = inp * t
        self.identity = stride == 1 and inp == oup
        dw = [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
              nn.ReLU6()]
        pwl = [nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup)]
        if t == 1:
            self.conv = nn.Sequential(*dw, *pwl)
        else:
            pw = [nn.Conv2d(inp, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
            self.conv = nn.Sequential(*pw, *dw, CoordAttRef(hidden), *pwl)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.identity else self.conv(x)


class CoordAttMobileNetV2Ref(nn.Module):
    """The Coordinate-attention release's MobileNetV2 (houqb/CoordAttention ``MBV2_CA``)."""

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32),
                                                 nn.ReLU6())]
        chs = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(_FlatBlock(chs, c, s if i == 0 else 1, t))
                chs = c
        self.features = nn.Sequential(*layers)
        self.conv = nn.Sequential(nn.Conv2d(chs, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6())
        self.classifier = nn.Sequential(nn.Dropout(0.1), nn.Linear(1280, 1000))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.conv(self.features(x)).mean((2, 3)))
