"""Fixtures shared by the test files."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest

#: The briefly trained models the int8 tests use: (model, epochs, img_size). cnn reaches ~97% on
#: digits (`make test`); vit ~99% (`make test-all` only: 8 epochs, ~2 min on 2 cores).
TRAINED = {
    "cnn": ("ez_resnet18_eca", 3, 32),
    "vit": ("ez_efficientvit_m0", 8, 48),
}


#: The longest test of `make test` (minutes): collected first, so that one pytest-xdist worker
#: starts it while the other works through the rest, instead of it starting last.
LONGEST = "test_digits_reaches_97_percent_within_10_epochs"


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, each worker gets its share of the cores (one each on 2 cores with ``-n 2``).

    torch (and the subprocesses tests start, through ``OMP_NUM_THREADS``) would otherwise run as many
    threads as the machine has cores in every worker, and the workers' OpenMP pools would spin
    against each other: ``make test``'s ONNX export and model tests took 466 s that way against 362 s
    with one thread per worker (2-core AVX2 EPYC, 2026-12-03). Tests that time or compare thread
    counts set theirs explicitly.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers:
        import torch

        threads = max(1, len(os.sched_getaffinity(0)) // workers)
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: getattr(item, "originalname", item.name) != LONGEST)  # stable: order kept otherwise


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Callable[[str], dict[str, Any]]:
    """``get("cnn" | "vit")`` -> ``{"checkpoint", "top1", "model", "img_size"}`` of a model trained on digits.

    Trained once per test session, whatever the number of pytest-xdist workers: the first worker to
    ask trains under a file lock in the session's shared temporary folder, the others read its result.
    """
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        root = root.parent  # shared by every xdist worker of this pytest run

    def get(kind: str) -> dict[str, Any]:
        from edgezoo.train import train_digits

        name, epochs, img_size = TRAINED[kind]
        folder = root / f"digits-{name}-{img_size}px-{epochs}ep"
        done = folder / "result.json"
        with FileLock(str(folder) + ".lock"):
            if not done.is_file():
                final = train_digits(name, epochs=epochs, img_size=img_size, output=str(folder), run__progress=False)
                top1 = max(final["val_top1"], final.get("ema_val_top1", 0.0))
                done.write_text(json.dumps({"checkpoint": str(final["checkpoint"]), "top1": top1, "model": name,
                                            "img_size": img_size}))
        result = json.loads(done.read_text())
        assert result["top1"] >= 90.0, f"{name} reached only {result['top1']:.1f}% on digits in {epochs} epochs"
        return result

    return get
