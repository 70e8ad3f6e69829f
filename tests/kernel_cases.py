"""Small modules holding every edgezoo fused op, shared by the kernel tests."""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from edgezoo.blocks.cascaded import CascadedGroupAttention
from edgezoo.blocks.cnn_attention import CBAM, ECA, SqueezeExcite
from edgezoo.blocks.focal import FocalModulation
from edgezoo.blocks.linear_attention import LiteMLA, MagnitudeAwareLinearAttention
from tests.util import randomize_

#: ``EDGEZOO_TEST_CUDA=1`` on a GPU machine: the kernel tests run on CUDA tensors, through the compiled kernels.
ON_CUDA = os.environ.get("EDGEZOO_TEST_CUDA") == "1" and torch.cuda.is_available()
DEVICE = "cuda" if ON_CUDA else "cpu"


class AllOps(nn.Module):
    """A tiny classifier whose blocks call every edgezoo op (and every plugin kind but focal 1/3/4 levels):
    stride-4 stem, LiteMLA, MALA, focal modulation, SE, CBAM, ECA, windowed CGA, pooled linear head."""

    def __init__(self, dim: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stem = nn.Conv2d(3, dim, 4, stride=4)
        self.blocks = nn.Sequential(
            LiteMLA(dim, head_dim=8, scales=(3,)),
            MagnitudeAwareLinearAttention(dim, head_dim=8, rope=False, output_gate=False),  # the kernel's form
            FocalModulation(dim, focal_level=2), SqueezeExcite(dim, reduction=4), CBAM(dim, reduction=4), ECA(dim),
            CascadedGroupAttention(dim, key_dim=8, num_heads=2, window_size=4, kernels=(3, 3)),
        )
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = x + block(x)
        return self.head(x.mean((2, 3)))


def all_ops(seed: int = 0) -> AllOps:
    """A randomised :class:`AllOps` in eval mode."""
    return randomize_(AllOps(), seed=seed).eval()


class CallLog(TorchDispatchMode):
    """Records the name of every op dispatched inside the ``with`` block."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))
