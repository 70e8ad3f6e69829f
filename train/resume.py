"""What ``--resume`` does with an output folder: start, continue, or report a finished run.

A job script on a preemptible cluster passes ``--resume`` every time, so the same command must
work on an empty folder (start from scratch), on a folder a kill left mid-run (continue exactly)
and on a finished run (say so, exit 0). A folder written by a different recipe is an error naming
the keys that differ, so that a resumed run never silently mixes two recipes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgezoo.errors import CheckpointError, ConfigError
from edgezoo.train.config import TrainConfig

__all__ = ["RUNTIME_KEYS", "ResumePlan", "config_differences", "final_metrics", "plan_resume"]

#: Keys that may change between a run and its resume: where and how it runs, not what it computes.
RUNTIME_KEYS = frozenset({
    "run.output", "run.progress", "run.threads", "run.device", "run.compile", "run.save_every",
    "run.save_every_steps", "run.stop_at_top1", "data.workers",
})


@dataclass
class ResumePlan:
    """``kind`` is ``fresh`` (no checkpoint yet), ``continue`` or ``finished``; ``state`` the checkpoint."""

    kind: str
    state: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def _flatten(tree: dict[str, Any]) -> dict[str, Any]:
    return {f"{section}.{key}": value for section, values in tree.items() if isinstance(values, dict)
            for key, value in values.items()}


def config_differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``key (saved there, now here)`` for every recipe key that differs, runtime keys aside."""
    a, b = _flatten(saved), _flatten(now)
    missing = "(absent)"
    # a key added to the recipe after the run was saved: the run had its default
    a = {**{k: v for k, v in _flatten(TrainConfig().to_dict()).items() if k not in a and k in b}, **a}
    keys = [k for k in sorted(set(a) | set(b)) if k not in RUNTIME_KEYS and a.get(k, missing) != b.get(k, missing)]
    return [f"{key} ({a.get(key, missing)!r} there, {b.get(key, missing)!r} now)" for key in keys]


def _check_same_recipe(cfg: TrainConfig, saved: dict[str, Any], source: Path) -> None:
    diffs = config_differences(saved, cfg.to_dict())
    if diffs:
        raise ConfigError(f"--resume: {source} holds a run of a different recipe: {'; '.join(diffs)}. Pass the "
                          f"same config and flags as that run, or --output DIR to start a new one")


def _saved_config(path: Path) -> dict[str, Any]:
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"--resume: cannot parse {path} ({err}); remove it to start this folder afresh") from err
    if not isinstance(tree, dict):
        raise ConfigError(f"--resume: {path} is not a recipe; remove it to start this folder afresh")
    return tree


def total_epochs(state: dict[str, Any]) -> int:
    """The epochs the checkpointed run trains for (schedule plus cool-down)."""
    if "epochs" in state:
        return int(state["epochs"])
    sched = state.get("config", {}).get("sched", {})
    return int(sched.get("epochs", 0)) + int(sched.get("cooldown_epochs", 0))


def is_finished(state: dict[str, Any], stop_at_top1: float = 0.0) -> bool:
    """Every epoch trained, or (``stop_at_top1`` > 0) an epoch end at which the best top-1 reached it."""
    if state.get("position") is not None:
        return False
    reached = 0 < stop_at_top1 <= float(state.get("best_top1", -1.0))
    return reached or int(state["epoch"]) >= total_epochs(state)


def plan_resume(cfg: TrainConfig, out: Path) -> ResumePlan:
    """Read ``out`` for ``--resume``: check its recipe matches ``cfg`` and decide what to do."""
    from edgezoo.train.state import load_training_state

    last = out / "last.pth"
    if last.is_file():
        state = load_training_state(last)
        if state.get("arch") != cfg.model.name:
            raise CheckpointError(f"--resume: {last} trains {state.get('arch')}, not {cfg.model.name}")
        if isinstance(state.get("config"), dict):
            _check_same_recipe(cfg, state["config"], last)
        return ResumePlan("finished" if is_finished(state, cfg.run.stop_at_top1) else "continue", state)
    saved = out / "config.yaml"
    if saved.is_file():
        _check_same_recipe(cfg, _saved_config(saved), saved)
    return ResumePlan("fresh", notes=[f"resume: no checkpoint in {out} yet; starting from scratch"])


def final_metrics(state: dict[str, Any], out: Path) -> dict[str, Any]:
    """What :func:`edgezoo.train.run` returns, rebuilt from a finished run's checkpoint."""
    final = dict(state["history"][-1]) if state.get("history") else {}
    final.update(best_top1=float(state["best_top1"]), best_epoch=int(state["best_epoch"]), output=str(out),
                 checkpoint=str(out / "best.pth"), finished=True)
    return final
