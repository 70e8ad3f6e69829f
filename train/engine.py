"""The training loop: one recipe for every timm-style model, on one CPU or many GPUs.

:func:`run` trains a resolved :class:`~edgezoo.train.config.TrainConfig` and returns the final
metrics. It uses timm's maintained pieces (create_optimizer_v2, create_scheduler_v2,
ModelEmaV3, Mixup, the cross-entropies, create_transform, the folder reader) and adds the
engine around them: AMP (bf16/fp16), channels_last, gradient clipping and accumulation,
torch.compile, DDP under ``torchrun``, per-epoch ``metrics.jsonl`` + curves PNG, atomic
``last.pth``/``best.pth`` every epoch, mid-epoch ``last.pth`` every ``run.save_every`` minutes and
on SIGTERM, exact ``--resume`` (also from the middle of an epoch), and a clean stop on a NaN/inf loss.
"""

from __future__ import annotations

import contextlib
import random
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from edgezoo.errors import ConfigError, EdgezooError
from edgezoo.train.checkpointing import Checkpointing
from edgezoo.train.config import TrainConfig
from edgezoo.train.distributed import DistContext, all_reduce_sum, setup, teardown
from edgezoo.train.parts import build_parts, create_train_model, model_kwargs, output_dir
from edgezoo.train.preempt import Preemption
from edgezoo.train.resume import ResumePlan, final_metrics, plan_resume

__all__ = ["TrainingDivergedError", "create_train_model", "evaluate", "model_kwargs", "output_dir", "run"]


class TrainingDivergedError(EdgezooError, RuntimeError):
    """The loss became NaN or infinite; the run stopped and its last good checkpoint is intact."""


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _broadcast_state(ctx: DistContext, module: nn.Module, params: bool = False) -> None:
    """Copy rank 0's buffers (and optionally parameters) to every process before evaluation."""
    if not ctx.distributed:
        return
    tensors = list(module.buffers()) + (list(module.parameters()) if params else [])
    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t.data, src=0)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Any,
    ctx: DistContext,
    num_classes: int,
    amp: str = "none",
    channels_last: bool = False,
    confusion: bool = False,
) -> dict[str, Any]:
    """Loss, top-1/top-5 (%), and optionally the confusion matrix, summed exactly over processes."""
    model.eval()
    k = min(5, num_classes)
    sums = torch.zeros(4, dtype=torch.float64)  # loss sum, top-1 hits, top-k hits, count
    matrix = torch.zeros(num_classes * num_classes, dtype=torch.float64) if confusion else None
    for x, y in loader:
        x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(ctx.device, amp):
            out = model(x)
        out = (out[0] if isinstance(out, tuple | list) else out).float()
        top = out.topk(k, dim=1).indices
        hits = top.eq(y[:, None])
        sums += torch.tensor([
            nn.functional.cross_entropy(out, y, reduction="sum").item(),
            hits[:, 0].sum().item(), hits.any(dim=1).sum().item(), y.numel(),
        ], dtype=torch.float64)
        if matrix is not None:
            matrix += torch.bincount((y * num_classes + top[:, 0]).cpu(), minlength=num_classes**2).double()
    sums = all_reduce_sum(ctx, sums)
    n = max(sums[3].item(), 1.0)
    result: dict[str, Any] = {"loss": sums[0].item() / n, "top1": 100 * sums[1].item() / n,
                              "top5": 100 * sums[2].item() / n, "count": int(sums[3].item())}
    if matrix is not None:
        result["confusion"] = all_reduce_sum(ctx, matrix).view(num_classes, num_classes).long()
    return result


def _autocast(device: torch.device, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


class Trainer(Checkpointing):
    """One run: its parts (:func:`~edgezoo.train.parts.build_parts`), its checkpoints
    (:class:`~edgezoo.train.checkpointing.Checkpointing`) and the loop here; :meth:`fit` trains to ``sched.epochs``
    and returns the final metrics."""

    def __init__(self, cfg: TrainConfig, ctx: DistContext, resume: bool | ResumePlan | None = False,
                 preempt: Preemption | None = None) -> None:
        from edgezoo.data.datasets import build_data, resolve_data_cfg
        from edgezoo.train.state import clean_stale_temp_files

        self.cfg, self.ctx = cfg, ctx
        self.out = output_dir(cfg)
        self.last_path, self.best_path = self.out / "last.pth", self.out / "best.pth"
        plan = plan_resume(cfg, self.out) if resume is True else resume or None
        self.preempt = preempt or Preemption(cfg.run.save_every)
        if plan is None and self.last_path.exists():
            raise ConfigError(f"{self.out} already holds a run (last.pth): pass --resume to continue it, or "
                              f"--output DIR to start a new one")
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        _seed_all(cfg.run.seed + ctx.rank)

        resumed = plan.state if plan is not None else None
        self.built = dict(resumed.get("model_kwargs", {})) if resumed is not None else model_kwargs(cfg)
        self.dcfg = resolve_data_cfg(cfg, create_train_model(cfg, meta=True, built=self.built))
        self.data = build_data(cfg, self.dcfg, ctx.rank, ctx.world)  # bad data fails before OUTPUT exists
        self.num_classes = self.data.num_classes
        if ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            clean_stale_temp_files(self.out)

        parts = build_parts(cfg, ctx, self.num_classes, self.built, self.data.steps_per_epoch)
        self.raw, self.ema, self.net, self.train_net = parts.raw, parts.ema, parts.net, parts.train_net
        self.mixup, self.criterion = parts.mixup, parts.criterion
        self.optimizer, self.scaler = parts.optimizer, parts.scaler
        self.scheduler, self.epochs, self.updates_per_epoch = parts.scheduler, parts.epochs, parts.updates_per_epoch
        self.global_batch, self.lr = parts.global_batch, parts.lr

        self.start_epoch, self.num_updates = 0, 0
        self.best_top1, self.best_epoch = -1.0, 0
        self.history: list[dict[str, Any]] = []
        self.position: dict[str, Any] | None = None  # where in its epoch a mid-epoch checkpoint stopped
        if plan is not None and plan.state is not None:
            self._resume(plan.state)
        elif ctx.is_main:
            (self.out / "config.yaml").write_text(cfg.to_yaml())
            (self.out / "metrics.jsonl").write_text("")

    # -- one epoch ------------------------------------------------------------------------------

    def _sync_flags(self, loss: torch.Tensor, epoch: int, step: int) -> tuple[bool, bool]:
        """One all-reduce per step: stop on a NaN/inf loss anywhere; agree on (save now, SIGTERM seen)."""
        flags = torch.tensor([0.0 if torch.isfinite(loss.detach()).item() else 1.0, float(self.preempt.save_due()),
                              float(self.preempt.requested)], dtype=torch.float64)
        flags = all_reduce_sum(self.ctx, flags)
        if flags[0].item() == 0:
            return flags[1].item() > 0, flags[2].item() > 0
        kept = (f"the last good checkpoint {self.last_path} (epoch {len(self.history)}) is intact"
                if self.history else "no checkpoint was written yet")
        raise TrainingDivergedError(
            f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}: training stopped; {kept}. "
            f"Lower optim.lr, set optim.clip_grad, or use run.amp=bf16 instead of fp16"
        )

    def train_one_epoch(self, epoch: int, t0: float | None = None) -> float | None:
        """The epoch's mean training loss; None when SIGTERM stopped it (after writing a mid-epoch last.pth).

        A run resumed from a mid-epoch checkpoint starts at its step, with its running loss sums.
        ``t0`` is the epoch's start on ``time.perf_counter`` (earlier when resumed part-way).
        """
        from tqdm import tqdm

        cfg, ctx = self.cfg, self.ctx
        t0 = time.perf_counter() if t0 is None else t0
        self.train_net.train()
        position, self.position = self.position, None
        loss_sum, seen = self._partial_sums(position)
        skip = int(position["consumed"]) // ctx.world if position else 0
        first, batches = self.data.epoch_batches(epoch, skip)
        accum, steps, batch = cfg.optim.accum_steps, self.data.steps_per_epoch, cfg.data.batch_size
        bar = tqdm(total=steps * batch * ctx.world, initial=first * batch * ctx.world, unit="img", unit_scale=True,
                   leave=False, desc=f"epoch {epoch + 1}/{self.epochs}",
                   disable=None if cfg.run.progress and ctx.is_main else True)
        for step, (x, y) in enumerate(batches, start=first):
            x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
            if self.mixup is not None:
                x, y = self.mixup(x, y)
            if cfg.run.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            update = (step + 1) % accum == 0 or step + 1 == steps
            sync = contextlib.nullcontext()
            if ctx.distributed and not update:
                sync = self.train_net.no_sync()
            with sync:
                with _autocast(ctx.device, cfg.run.amp):
                    loss = self.criterion(x, self.train_net(x), y)
                save_due, stop = self._sync_flags(loss, epoch, step)
                self.scaler.scale(loss / accum).backward()
            if update:
                self._step()
            loss_sum += loss.detach().double().cpu() * x.size(0)
            seen += x.size(0)
            bar.update(x.size(0) * ctx.world)
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{self._lr():.2e}", refresh=False)
            every = cfg.run.save_every_steps
            if update and step + 1 < steps and (stop or save_due or (every and self.num_updates % every == 0)):
                self._save_position(epoch, step + 1, loss_sum, seen, time.perf_counter() - t0)
                if stop:
                    bar.close()
                    return None
        bar.close()
        totals = all_reduce_sum(ctx, torch.stack([loss_sum, torch.tensor(float(seen), dtype=torch.float64)]))
        return (totals[0] / totals[1].clamp_min(1)).item()

    def _step(self) -> None:
        from timm.utils import dispatch_clip_grad

        o = self.cfg.optim
        if o.clip_grad is not None:
            self.scaler.unscale_(self.optimizer)
            dispatch_clip_grad(self.raw.parameters(), o.clip_grad, mode=o.clip_mode)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.num_updates += 1
        self.scheduler.step_update(num_updates=self.num_updates)
        if self.ema is not None:
            self.ema.update(self.raw, step=self.num_updates)

    def _lr(self) -> float:
        return max(g["lr"] for g in self.optimizer.param_groups)

    # -- the run --------------------------------------------------------------------------------

    def validate(self) -> dict[str, float]:
        cfg = self.cfg
        _broadcast_state(self.ctx, self.raw)
        val = evaluate(self.net, self.data.val, self.ctx, self.num_classes, cfg.run.amp, cfg.run.channels_last)
        row = {"val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"]}
        if self.ema is not None:
            _broadcast_state(self.ctx, self.ema.module, params=True)
            ev = evaluate(self.ema.module, self.data.val, self.ctx, self.num_classes, cfg.run.amp,
                          cfg.run.channels_last)
            row.update(ema_val_loss=ev["loss"], ema_val_top1=ev["top1"], ema_val_top5=ev["top5"])
        return row

    def fit(self) -> dict[str, Any]:
        from edgezoo.train.report import append_metrics, plot_curves

        ctx = self.ctx
        if ctx.is_main:
            where = f"{ctx.world} processes on {ctx.device.type}" if ctx.distributed else str(ctx.device)
            print(f"training {self.cfg.model.name} on {self.cfg.data.path} ({self.data.train_images} train / "
                  f"{self.data.val_images} val images, {self.num_classes} classes, {self.dcfg['img_size']}px) "
                  f"for {self.epochs} epochs: {where}, global batch {self.global_batch}, lr {self.lr:.3g}; "
                  f"output {self.out}", flush=True)
        for epoch in range(self.start_epoch, self.epochs):
            t0 = time.perf_counter() - float((self.position or {}).get("elapsed", 0.0))
            train_loss = self.train_one_epoch(epoch, t0)
            if train_loss is None:
                return self._stopped()
            row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": train_loss}
            row.update(self.validate())
            row["lr"] = self._lr()
            row["epoch_time"] = time.perf_counter() - t0
            score = max(row["val_top1"], row.get("ema_val_top1", -1.0))
            improved = score > self.best_top1
            if improved:
                self.best_top1, self.best_epoch = score, epoch + 1
            self.history.append(row)
            self._save(improved)
            if ctx.is_main:
                append_metrics(self.out / "metrics.jsonl", row)
                plot_curves(self.out / "curves.png", self.history, title=f"{self.cfg.model.name} on "
                            f"{self.cfg.data.path}")
                ema = f"  ema top-1 {row['ema_val_top1']:6.2f}" if "ema_val_top1" in row else ""
                print(f"epoch {epoch + 1:3d}/{self.epochs}  train loss {train_loss:.4f}  val loss {row['val_loss']:.4f}"
                      f"  top-1 {row['val_top1']:6.2f}  top-5 {row['val_top5']:6.2f}{ema}  lr {row['lr']:.2e}  "
                      f"{row['epoch_time']:.1f}s", flush=True)
            if epoch + 1 < self.epochs and self._target_reached():
                break
            if epoch + 1 < self.epochs and self._stop_agreed():
                return self._stopped()
        final = dict(self.history[-1]) if self.history else {}
        final.update(best_top1=self.best_top1, best_epoch=self.best_epoch, output=str(self.out),
                     checkpoint=str(self.best_path))
        if ctx.is_main:
            print(f"done: best top-1 {self.best_top1:.2f} at epoch {self.best_epoch}; checkpoints in {self.out}",
                  flush=True)
        return final

    def _target_reached(self) -> bool:
        """``run.stop_at_top1`` reached (every process computes the same all-reduced top-1)."""
        target = self.cfg.run.stop_at_top1
        if not (0 < target <= self.best_top1):
            return False
        if self.ctx.is_main:
            print(f"val top-1 {self.best_top1:.2f} reached run.stop_at_top1={target:g} at epoch {self.best_epoch}: "
                  f"stopping ({len(self.history)}/{self.epochs} epochs)", flush=True)
        return True

    def _stop_agreed(self) -> bool:
        """Whether any process received SIGTERM (checked at epoch ends, after the checkpoint)."""
        flag = torch.tensor([float(self.preempt.requested)], dtype=torch.float64)
        return all_reduce_sum(self.ctx, flag).item() > 0

    def _stopped(self) -> dict[str, Any]:
        if self.ctx.is_main:
            print(f"SIGTERM: stopped cleanly; {self.last_path} holds the run ({len(self.history)}/{self.epochs} "
                  f"epochs done); run the same command with --resume to continue", flush=True)
        return {"stopped": True, "epoch": len(self.history), "output": str(self.out),
                "checkpoint": str(self.last_path), "best_top1": self.best_top1, "best_epoch": self.best_epoch}


def run(cfg: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Train ``cfg`` (see :func:`edgezoo.train.resolve_config`); return the final epoch's metrics.

    The result holds ``epoch``, ``train_loss``, ``val_loss``, ``val_top1``, ``val_top5``, ``lr``,
    ``epoch_time`` (and ``ema_val_*`` with EMA), plus ``best_top1``, ``best_epoch``, ``output``
    and ``checkpoint``. Under ``torchrun`` every process calls it and joins the process group.

    With ``resume``: an OUTPUT without a checkpoint starts from scratch, a finished run returns its
    final metrics (with ``finished``) without training, and a different recipe is a ConfigError.
    A SIGTERM writes ``last.pth`` after the next optimizer update and returns ``{"stopped": True, ...}``.
    """
    ctx = setup(cfg.run.device)
    try:
        plan = None
        if resume:
            out = output_dir(cfg)
            plan = plan_resume(cfg, out)
            if plan.kind == "finished" and plan.state is not None:
                final = final_metrics(plan.state, out)
                if ctx.is_main:
                    print(f"{out}: this run is finished ({plan.state['epoch']} epochs, best top-1 "
                          f"{final['best_top1']:.2f} at epoch {final['best_epoch']}); nothing to resume", flush=True)
                return final
            for note in plan.notes if ctx.is_main else ():
                print(note, flush=True)
        with Preemption(cfg.run.save_every) as preempt:
            return Trainer(cfg, ctx, resume=plan, preempt=preempt).fit()
    finally:
        teardown(ctx)
