"""timm's backbone interface, written once for every edgezoo model built as stem -> stages -> head.

A subclass provides ``stem``, ``stages`` (an ``nn.Sequential`` of stages), ``feature_info``
(one dict per tapped stage: ``num_chs``, ``reduction``, ``module``, ``stage``),
``forward_head`` and ``reset_classifier``; optionally ``neck``, a module that runs after the
last stage inside ``forward_features`` (e.g. a final norm or 1x1 conv).
This base supplies ``forward_features``, ``forward_intermediates``,
``prune_intermediate_layers`` and gradient checkpointing with timm's exact semantics, so
``features_only=True`` (timm's ``FeatureGetterNet``) works for every model.
"""

from __future__ import annotations

import torch
from timm.models import checkpoint_seq
from timm.models._features import feature_take_indices
from torch import nn

__all__ = ["StagedBackbone", "feature_cfg"]


def feature_cfg(num_features: int) -> dict:
    """``feature_cfg`` for ``timm.models.build_model_with_cfg``: features via forward_intermediates."""
    return {"feature_cls": "getter", "out_indices": tuple(range(num_features))}


class StagedBackbone(nn.Module):
    """Mixin base with timm's feature-extraction API for stem -> stages -> head models."""

    stem: nn.Module
    stages: nn.Sequential
    feature_info: list[dict]
    grad_checkpointing: bool = False

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups for layer-wise lr decay (timm's ``param_groups_layer_decay``)."""
        return {"stem": r"^stem", "blocks": r"^stages\.(\d+)" if coarse else [
            (r"^stages\.(\d+)\.(?:\w+\.)?(\d+)\.", None),  # a block: stages.i.j.* or stages.i.<name>.j.*
            (r"^stages\.(\d+)", (0,)),  # the stage's other layers (a downsample), with its first block
        ]}

    def forward_neck(self, x: torch.Tensor) -> torch.Tensor:
        """What runs between the last stage and the head: ``self.neck`` when the model has one."""
        neck = getattr(self, "neck", None)
        return x if neck is None else neck(x)

    def forward_stages(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_neck(self.forward_stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Forward that also returns the outputs of the stages named in ``feature_info``.

        Args:
            indices: take the last ``n`` features if an int, all if None, these if a list.
            norm: unused (stage outputs of these models are not normalised); kept for timm.
            stop_early: stop after the last requested stage.
            output_fmt: only ``"NCHW"``.
            intermediates_only: return the list of features alone.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW' for {type(self).__name__}, got {output_fmt!r}")
        take, max_index = feature_take_indices(len(self.feature_info), indices)
        take_stages = [self.feature_info[i]["stage"] for i in take]
        last_stage = self.feature_info[max_index]["stage"] if (stop_early or intermediates_only) else None
        stages = self.stages if last_stage is None else self.stages[: last_stage + 1]

        intermediates = []
        x = self.stem(x)
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_stages:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        if last_stage is None or last_stage == len(self.stages) - 1:
            x = self.forward_neck(x)
        return x, intermediates

    def prune_intermediate_layers(
        self,
        indices: int | list[int] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop the stages after the last requested feature (and the head); return the indices."""
        take, max_index = feature_take_indices(len(self.feature_info), indices)
        self.stages = self.stages[: self.feature_info[max_index]["stage"] + 1]
        if prune_head:
            if getattr(self, "neck", None) is not None:
                self.neck = nn.Identity()
            self.reset_classifier(0, "")
        return take
