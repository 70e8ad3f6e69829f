"""Training criteria: timm's cross-entropies, wrapped for DeiT-style logit distillation.

Distillation follows DeiT (Touvron et al., ICML 2021), as LeViT, EfficientViT-M and SHViT trained:
``loss = (1 - alpha) * base(student, target) + alpha * distill(student, teacher)``, where the
hard variant is cross-entropy against the teacher's arg-max and the soft variant is
``KL(softmax(s / tau) || softmax(t / tau)) * tau**2``. A model whose training forward returns a
``(class, distillation)`` pair (timm's ``*_distilled`` models) gets the base term on the first
and the distillation term on the second output.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgezoo.errors import ConfigError

__all__ = ["DistillationLoss", "build_criterion", "build_teacher"]


class DistillationLoss(nn.Module):
    """DeiT's hard or soft distillation around a base criterion (DeiT, Touvron et al. 2021)."""

    def __init__(self, base: nn.Module, teacher: nn.Module, kind: str, alpha: float, tau: float) -> None:
        super().__init__()
        if kind not in ("soft", "hard"):
            raise ConfigError(f"distill.kind must be soft or hard, got {kind!r}")
        self.base, self.kind, self.alpha, self.tau = base, kind, alpha, tau
        self.teacher = teacher  # frozen, eval mode; not part of the student's state

    def forward(self, inputs: torch.Tensor, outputs: Any, targets: torch.Tensor) -> torch.Tensor:
        out_cls, out_dist = outputs if isinstance(outputs, tuple | list) else (outputs, outputs)
        base = self.base(out_cls, targets)
        with torch.no_grad():
            teacher = self.teacher(inputs)
        if self.kind == "soft":
            t = self.tau
            distill = F.kl_div(
                F.log_softmax(out_dist.float() / t, dim=1), F.log_softmax(teacher.float() / t, dim=1),
                reduction="batchmean", log_target=True,
            ) * (t * t)
        else:
            distill = F.cross_entropy(out_dist, teacher.argmax(dim=1))
        return base * (1 - self.alpha) + distill * self.alpha


class _Plain(nn.Module):
    """``criterion(inputs, outputs, targets)`` for a base loss that ignores the inputs."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, inputs: torch.Tensor, outputs: Any, targets: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, tuple | list):  # distilled models without a teacher: average the heads
            return sum(self.base(o, targets) for o in outputs) / len(outputs)
        return self.base(outputs, targets)


def build_teacher(cfg: Any, num_classes: int, device: torch.device) -> nn.Module | None:
    """The frozen teacher named by ``distill.teacher`` (timm or edgezoo), or None."""
    d = cfg.distill
    if d.kind == "none":
        return None
    import timm

    from edgezoo import list_models, load_checkpoint
    from edgezoo.registry import resolve_name

    name = d.teacher
    if name in list_models() or not timm.is_model(name):
        name = resolve_name(name)
    pretrained = d.teacher_pretrained and not d.teacher_checkpoint
    teacher = timm.create_model(name, pretrained=pretrained, num_classes=num_classes if not pretrained else None)
    if d.teacher_checkpoint:
        load_checkpoint(teacher, d.teacher_checkpoint, strict=True)
    out = teacher.num_classes
    if out != num_classes:
        raise ConfigError(f"distill.teacher {name} predicts {out} classes but the data has {num_classes}: "
                          f"set distill.teacher_checkpoint to a teacher fine-tuned on your data, or distill.kind=none")
    teacher.requires_grad_(False)
    return teacher.eval().to(device)


def build_criterion(cfg: Any, teacher: nn.Module | None, mixup_active: bool) -> nn.Module:
    """timm's SoftTargetCrossEntropy (mixup targets), LabelSmoothingCrossEntropy, or plain CE."""
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if mixup_active:
        base: nn.Module = SoftTargetCrossEntropy()  # Mixup already smooths the targets
    elif cfg.aug.smoothing > 0:
        base = LabelSmoothingCrossEntropy(smoothing=cfg.aug.smoothing)
    else:
        base = nn.CrossEntropyLoss()
    if teacher is None:
        return _Plain(base)
    return DistillationLoss(base, teacher, cfg.distill.kind, cfg.distill.alpha, cfg.distill.tau)
