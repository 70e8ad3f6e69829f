"""What one training run is made of, built from its recipe: the model (its EMA, compiled and DDP forms),
mixup, the loss, the optimizer, the schedule and the gradient scaler. timm's maintained pieces
(create_optimizer_v2, create_scheduler_v2, ModelEmaV3, Mixup) do the work; a bad setting is a ConfigError.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgezoo.errors import ConfigError
from edgezoo.train.config import TrainConfig
from edgezoo.train.distributed import DistContext

__all__ = ["Parts", "build_parts", "create_train_model", "model_kwargs", "output_dir"]


def output_dir(cfg: TrainConfig) -> Path:
    """``run.output``, or ``runs/<model>-<dataset>`` when empty."""
    if cfg.run.output:
        return Path(cfg.run.output).expanduser()
    data = "digits" if cfg.data.path == "digits" else (Path(cfg.data.path).name or "data")
    return Path("runs") / f"{cfg.model.name}-{data}"


def model_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """What ``model.name`` is built with beyond classes and drop rates: ``{"img_size": S}`` for a model
    whose structure depends on it (``model.img_size``; ``data`` = ``data.img_size``) and whose default
    differs, else ``{}``. Recorded in every checkpoint (``model_kwargs``), so a loader builds the same net.

    EfficientViT-M built for 224 px and trained at 48 px pads each 3x3 stage map to a 7x7 window
    (49 tokens for 9); built for 48 px its windows are 3, 2 and 1 (the paper's ``min(7, resolution)``).
    """
    import timm

    size = cfg.data.img_size if cfg.model.img_size == "data" else cfg.model.img_size
    if size is None:
        return {}
    with torch.device("meta"):
        default = timm.create_model(cfg.model.name).pretrained_cfg.get("input_size", (3, 224, 224))[-1]
        if size == default:
            return {}
        try:
            timm.create_model(cfg.model.name, img_size=size)
        except TypeError as err:  # the model takes no img_size: its structure does not depend on one
            if "img_size" in str(err):
                return {}
            raise
    return {"img_size": int(size)}


def create_train_model(cfg: TrainConfig, num_classes: int | None = None, meta: bool = False,
                       built: dict[str, Any] | None = None) -> nn.Module:
    """The model named by ``model.name`` (edgezoo or timm) with the recipe's drop rates, built with
    ``built`` (a checkpoint's ``model_kwargs``) or else :func:`model_kwargs`."""
    import timm

    kwargs: dict[str, Any] = dict(model_kwargs(cfg) if built is None else built)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if cfg.model.drop_path is not None:
        kwargs["drop_path_rate"] = cfg.model.drop_path
    if cfg.model.drop_rate is not None:
        kwargs["drop_rate"] = cfg.model.drop_rate
    pretrained = cfg.model.pretrained and not meta
    try:
        with torch.device("meta") if meta else contextlib.nullcontext():
            return timm.create_model(cfg.model.name, pretrained=pretrained, **kwargs)
    except TypeError as err:
        if "drop_path_rate" in str(err) or "drop_rate" in str(err):
            raise ConfigError(f"{cfg.model.name} does not take a drop rate ({err}); set model.drop_path: null "
                              f"and model.drop_rate: null") from err
        raise


@dataclass
class Parts:
    """The built parts of a run (see :func:`build_parts`)."""

    raw: nn.Module  # the model itself: what checkpoints hold
    ema: Any  # timm's ModelEmaV3, or None
    net: nn.Module  # ``raw``, compiled with ``run.compile``
    train_net: nn.Module  # ``net``, wrapped in DDP across processes
    mixup: Any
    criterion: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    epochs: int
    scaler: torch.amp.GradScaler
    global_batch: int
    lr: float
    updates_per_epoch: int


def build_parts(cfg: TrainConfig, ctx: DistContext, num_classes: int, built: dict[str, Any],
                steps_per_epoch: int) -> Parts:
    """Every part of a run of ``cfg`` on ``ctx``'s device, for ``num_classes`` classes, the model built with
    ``built`` (its ``model_kwargs``), ``steps_per_epoch`` loader batches an epoch."""
    from timm.data import Mixup
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from timm.utils import ModelEmaV3

    from edgezoo.train.losses import build_criterion, build_teacher

    model = create_train_model(cfg, num_classes, built=built)
    if cfg.model.checkpoint:
        from edgezoo import load_checkpoint

        info = load_checkpoint(model, cfg.model.checkpoint, strict=False)
        if ctx.is_main and any(info.values()):
            print(f"model.checkpoint: not loaded {sum(map(len, info.values()))} keys "
                  f"(e.g. {(info['skipped'] + info['missing'])[:3]})", flush=True)
    model.to(ctx.device)
    if cfg.run.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = ModelEmaV3(model, decay=cfg.ema.decay, use_warmup=cfg.ema.warmup) if cfg.ema.enable else None
    net = torch.compile(model) if cfg.run.compile else model
    train_net = net
    if ctx.distributed:
        ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
        train_net = nn.parallel.DistributedDataParallel(net, device_ids=ids)

    aug = cfg.aug
    mixup = None
    if aug.mixup > 0 or aug.cutmix > 0:
        if cfg.data.batch_size % 2:
            raise ConfigError(f"mixup/cutmix need an even batch size, got {cfg.data.batch_size}")
        mixup = Mixup(mixup_alpha=aug.mixup, cutmix_alpha=aug.cutmix, prob=aug.mixup_prob,
                      switch_prob=aug.mixup_switch_prob, mode=aug.mixup_mode, label_smoothing=aug.smoothing,
                      num_classes=num_classes)
    teacher = build_teacher(cfg, num_classes, ctx.device)
    if teacher is not None and cfg.run.channels_last:
        teacher.to(memory_format=torch.channels_last)
    criterion = build_criterion(cfg, teacher, mixup is not None)

    o = cfg.optim
    global_batch = cfg.data.batch_size * ctx.world * o.accum_steps
    lr = o.lr if o.lr is not None else o.lr_base * global_batch / o.lr_base_size
    extra = {k: v for k, v in (("betas", tuple(o.betas) if o.betas else None), ("eps", o.eps)) if v is not None}
    try:
        optimizer = create_optimizer_v2(model, opt=o.opt, lr=lr, weight_decay=o.weight_decay, momentum=o.momentum,
                                        layer_decay=o.layer_decay, **extra)
    except (ValueError, AssertionError, KeyError, TypeError) as err:
        raise ConfigError(f"optim.opt={o.opt!r} is not a timm optimizer, or takes other options ({err})") from err
    updates_per_epoch = math.ceil(steps_per_epoch / o.accum_steps)
    s = cfg.sched
    try:
        scheduler, epochs = create_scheduler_v2(
            optimizer, sched=s.name, num_epochs=s.epochs, warmup_epochs=s.warmup_epochs,
            warmup_lr=s.warmup_lr, min_lr=s.min_lr, cooldown_epochs=s.cooldown_epochs, step_on_epochs=False,
            updates_per_epoch=updates_per_epoch,
        )
    except ValueError as err:
        raise ConfigError(f"sched.name={s.name!r}: {err} Use cosine, step, multistep, tanh or poly") from err
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=cfg.run.amp == "fp16")
    return Parts(raw=model, ema=ema, net=net, train_net=train_net, mixup=mixup, criterion=criterion,
                 optimizer=optimizer, scheduler=scheduler, epochs=epochs, scaler=scaler, global_batch=global_batch,
                 lr=lr, updates_per_epoch=updates_per_epoch)
