"""Parameter and MAC counts, measured by running the model (never by hand formulas).

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2): every conv, linear,
matmul and attention op is counted from the shapes the model actually uses. The model runs
on the ``meta`` device, so counting a 60M-parameter model costs milliseconds and no memory.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["Profile", "block_summary", "count_macs", "count_params", "profile_model"]


@dataclass(frozen=True)
class Profile:
    name: str
    params: int
    macs: int
    input_size: tuple[int, int, int]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_size: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass at batch 1 for a ``(C, H, W)`` input."""
    device = next(model.parameters()).device
    x = torch.zeros((1, *input_size), device=device)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def profile_model(name: str, input_size: tuple[int, int, int] | None = None, **kwargs) -> Profile:
    """Params and MACs of a registered model at its default (or the given) input size."""
    from edgezoo.registry import create_model

    with torch.device("meta"):
        model = create_model(name, **kwargs)
    size = tuple(input_size or model.pretrained_cfg["input_size"])
    return Profile(name=name, params=count_params(model), macs=count_macs(model, size), input_size=size)


def block_summary(model: nn.Module) -> list[tuple[str, int]]:
    """``(qualified class name, count)`` of the block types a model is built from, most used first.

    Plain torch layers (Conv2d, BatchNorm2d, ...) and containers are left out, so what remains
    are the blocks that define the architecture.
    """
    counts: Counter[str] = Counter()
    for module in model.modules():
        cls = type(module)
        if module is model or cls.__module__.startswith("torch.") or (isinstance(module, nn.Sequential) and (
            cls is nn.Sequential
        )):
            continue
        counts[f"{cls.__module__}.{cls.__qualname__}"] += 1
    return counts.most_common()
