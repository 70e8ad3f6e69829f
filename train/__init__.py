"""edgezoo.train: the shared training recipe for every edgezoo (and timm) model.

* :func:`resolve_config` / :func:`load_config` - the recipe from ``configs/`` (base -> family ->
  model [-> digits]) plus a user file, CLI flags and ``--set`` overrides, validated;
* :func:`run` - train a recipe (one process, or every process under ``torchrun``) and return
  the final metrics;
* :func:`train_digits` - a short zero-setup run on the built-in digits data (``edgezoo demo``);
* :func:`validate_checkpoint` - top-1/top-5/loss, per-class accuracy and a confusion matrix.

CLI: ``edgezoo train`` and ``edgezoo validate``.
"""

from __future__ import annotations

from typing import Any

from edgezoo.train.config import TrainConfig, load_config, resolve_config

__all__ = ["TrainConfig", "load_config", "resolve_config", "run", "train_digits", "validate_checkpoint"]


def run(cfg: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Train ``cfg``; see :func:`edgezoo.train.engine.run`."""
    from edgezoo.train.engine import run as _run

    return _run(cfg, resume=resume)


def train_digits(
    model: str = "ez_resnet18_eca", epochs: int = 10, img_size: int = 64, output: str | None = None,
    resume: bool = False, **sets: Any
) -> dict[str, Any]:
    """Train ``model`` on the built-in digits data with its recipe + configs/digits.yaml.

    Returns :func:`run`'s final metrics (``val_top1``, ``best_top1``, ``epoch_time``, ...).
    ``output`` defaults to a fresh temporary folder; ``resume`` continues a run stopped in ``output``
    (:func:`run`'s ``resume``); ``sets`` are ``section__key=value`` overrides.
    """
    import tempfile

    output = output or tempfile.mkdtemp(prefix="edgezoo-digits-")
    overrides = [f"{k.replace('__', '.')}={v}" for k, v in sets.items()]
    cfg = resolve_config(model=model, data="digits", overrides=overrides, sched__epochs=epochs,
                         data__img_size=img_size, run__output=output)
    return run(cfg, resume=resume)


def validate_checkpoint(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """See :func:`edgezoo.train.validate.validate_checkpoint`."""
    from edgezoo.train.validate import validate_checkpoint as _validate

    return _validate(*args, **kwargs)
