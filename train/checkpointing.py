"""Saving and restoring a run: ``last.pth``/``best.pth`` every epoch and mid-epoch, exact resume (also with
another number of processes), written atomically (:mod:`edgezoo.train.state`).

:class:`Checkpointing` is the part of :class:`~edgezoo.train.engine.Trainer` that does it; it reads the run's
parts and position from the trainer's attributes.
"""

from __future__ import annotations

from typing import Any

import torch

from edgezoo.train.distributed import all_gather_objects

__all__ = ["Checkpointing"]


class Checkpointing:
    """What a :class:`~edgezoo.train.engine.Trainer` saves and how it resumes."""

    # -- checkpoints ----------------------------------------------------------------------------

    def _state(self, rng: list[Any]) -> dict[str, Any]:
        from edgezoo import __version__

        state = {
            "arch": self.cfg.model.name,
            "model": self.raw.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": len(self.history),  # completed epochs
            "epochs": self.epochs,
            "position": None,  # mid-epoch: step, consumed samples, partial loss sums, elapsed seconds
            "num_updates": self.num_updates,
            "best_top1": self.best_top1,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "rng": rng,
            "config": self.cfg.to_dict(),
            "num_classes": self.num_classes,
            "classes": self.data.classes,
            "img_size": self.dcfg["img_size"],
            "model_kwargs": self.built,  # how the model was built: loaders build it alike
            "world_size": self.ctx.world,
            "edgezoo_version": __version__,
        }
        if self.ema is not None:
            state["model_ema"] = self.ema.module.state_dict()
        return state

    def _resume(self, state: dict[str, Any]) -> None:
        from edgezoo.train.state import set_rng_state

        self.raw.load_state_dict(state["model"])
        if self.ema is not None and "model_ema" in state:
            self.ema.module.load_state_dict(state["model_ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.start_epoch, self.num_updates = int(state["epoch"]), int(state["num_updates"])
        self.best_top1, self.best_epoch = float(state["best_top1"]), int(state["best_epoch"])
        self.history = list(state["history"])
        self.position = state.get("position")
        rngs = state.get("rng") or []
        if len(rngs) == self.ctx.world == int(state.get("world_size", len(rngs))):
            self.scheduler.load_state_dict(state["scheduler"])
            set_rng_state(rngs[self.ctx.rank])
        else:
            self._rescale_schedule(int(state.get("world_size", len(rngs))))
        self._resume_report()

    def _rescale_schedule(self, old_world: int) -> None:
        """Another number of processes: the schedule (built for this one's updates per epoch) goes on from
        the same point of the same epoch, with the lr of the new global batch; the RNG streams restart."""
        skip = int(self.position["consumed"]) // self.ctx.world if self.position else 0
        done = min(skip // self.cfg.data.batch_size, self.data.steps_per_epoch)
        self.num_updates = self.start_epoch * self.updates_per_epoch + done // self.cfg.optim.accum_steps
        self.scheduler.step_update(num_updates=self.num_updates)
        if self.ctx.is_main:
            print(f"resume: checkpoint from {old_world} processes, now {self.ctx.world}: the schedule continues at "
                  f"update {self.num_updates} of {self.epochs * self.updates_per_epoch} (lr {self._lr():.3g}); "
                  f"RNG streams restart", flush=True)

    def _resume_report(self) -> None:
        from edgezoo.train.report import write_metrics

        if self.ctx.is_main:
            write_metrics(self.out / "metrics.jsonl", self.history)
            where = (f"in epoch {self.start_epoch + 1}/{self.epochs} after step {self.position['step']}"
                     if self.position else f"at epoch {self.start_epoch}/{self.epochs}")
            print(f"resumed {self.last_path} {where}", flush=True)

    def _save(self, improved: bool, position: dict[str, Any] | None = None,
              partial: dict[str, Any] | None = None) -> None:
        """Write last.pth (and best.pth when ``improved``); mid-epoch, ``position`` says where, ``partial``
        holds this process's running loss sum and sample count."""
        from edgezoo.train.state import get_rng_state, save_training_state

        gathered = all_gather_objects(self.ctx, (get_rng_state(), partial))
        if not self.ctx.is_main:
            return
        state = self._state([rng for rng, _ in gathered])
        if position is not None:
            state["position"] = {**position, "loss_sum": [p["loss_sum"] for _, p in gathered],
                                 "seen": [p["seen"] for _, p in gathered]}
        save_training_state(self.last_path, state)
        if improved:
            save_training_state(self.best_path, state)

    def _save_position(self, epoch: int, step: int, loss_sum: torch.Tensor, seen: int, elapsed: float) -> None:
        """A mid-epoch last.pth: ``step`` batches of epoch ``epoch`` (0-based) are done."""
        consumed = step * self.cfg.data.batch_size * self.ctx.world
        self._save(False, position={"step": step, "consumed": consumed, "elapsed": elapsed},
                   partial={"loss_sum": float(loss_sum.item()), "seen": seen})
        self.preempt.saved()

    def _partial_sums(self, position: dict[str, Any] | None) -> tuple[torch.Tensor, int]:
        """This process's running loss sum and count restored from a mid-epoch checkpoint.

        With another number of processes than the checkpoint's, process 0 carries the whole sum.
        """
        sums, seen = [0.0], [0]
        if position is not None:
            sums, seen = list(position["loss_sum"]), list(position["seen"])
        if len(sums) == self.ctx.world:
            mine, count = sums[self.ctx.rank], seen[self.ctx.rank]
        else:
            mine, count = (sum(sums), sum(seen)) if self.ctx.is_main else (0.0, 0)
        return torch.tensor(mine, dtype=torch.float64), int(count)
