"""Preemption: kills in the middle of an epoch, SIGTERM, and what ``--resume`` does with any folder.

Every resumed run is compared with one uninterrupted run of the same recipe: on CPU in fp32 the
metrics of every epoch and the final weights must be bit-identical.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch

from edgezoo.errors import ConfigError
from edgezoo.train import run
from edgezoo.train.resume import plan_resume
from tests.train_helpers import ENV, TINY, edgezoo_cmd, load_last, pause_mid_epoch, rows, tiny, without_time

EPOCHS = 2
STEPS = 1437 // 32  # digits train images / batch 32 (drop_last)
SMALL = "data.img_size=16"  # exactness does not need resolution: 16 px keeps these runs cheap
ARGV = ("--model", TINY, "--data", "digits", "--img-size", "16", "--epochs", str(EPOCHS), "--set", "run.threads=1",
        "--set", "run.progress=false")


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """The uninterrupted run: its metrics rows and final weights."""
    out = tmp_path_factory.mktemp("straight")
    run(tiny(out, EPOCHS, SMALL))
    return without_time(rows(out)), load_last(out)["model"]


def _assert_same_run(out: Path, straight: tuple[list[dict], dict[str, torch.Tensor]]) -> None:
    expected_rows, expected_weights = straight
    assert without_time(rows(out)) == expected_rows  # bit-identical losses and accuracies, every epoch
    weights = load_last(out)["model"]
    assert all(torch.equal(weights[k], expected_weights[k]) for k in expected_weights)


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path: Path, straight):
    """SIGKILL right after a mid-epoch checkpoint of epoch 1; every checkpoint loads at every moment."""
    out = tmp_path / "kill"
    argv = ["train", *ARGV, "--output", str(out), "--set", "run.save_every_steps=7"]
    bad, stop = [], threading.Event()

    def watch():  # a torn or partial file would fail to load
        while not stop.is_set():
            try:
                load_last(out)
            except Exception as err:
                bad.append(f"{type(err).__name__}: {err}")
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        proc = subprocess.Popen(edgezoo_cmd(*argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env=ENV)
        killed = pause_mid_epoch(out, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert 0 < killed["position"]["step"] < STEPS and killed["num_updates"] % 7 == 0
        assert len(rows(out)) == killed["epoch"] < EPOCHS  # died inside an epoch
        done = subprocess.run(edgezoo_cmd(*argv, "--resume"), capture_output=True, text=True, env=ENV, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    finally:
        stop.set()
        watcher.join()
    assert not bad, bad
    assert f"in epoch {killed['epoch'] + 1}/{EPOCHS} after step {killed['position']['step']}" in done.stdout
    _assert_same_run(out, straight)
    assert not list(out.glob(".*.tmp"))


@pytest.mark.slow  # make test's 20-minute budget: make test-all runs it
def test_sigterm_writes_checkpoint_and_exits_cleanly(tmp_path: Path, straight):
    out = tmp_path / "term"
    argv = ["train", *ARGV, "--output", str(out)]
    proc = subprocess.Popen(edgezoo_cmd(*argv, "--set", "run.save_every_steps=11"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    first = pause_mid_epoch(out, proc, lambda s: s["epoch"] == 0)  # in epoch 1: the stop comes before the end
    proc.send_signal(signal.SIGTERM)  # delivered when the process runs again
    proc.send_signal(signal.SIGCONT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-2000:]
    assert "Traceback" not in stderr and "SIGTERM: stopped cleanly" in stdout
    state = load_last(out)
    where = (state["epoch"], state["position"]["step"] if state["position"] else 0)  # mid-epoch or at its end
    assert where > (first["epoch"], first["position"]["step"])
    assert len(rows(out)) == state["epoch"] < EPOCHS
    done = subprocess.run(edgezoo_cmd(*argv, "--resume"), capture_output=True, text=True, env=ENV, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    _assert_same_run(out, straight)


@pytest.mark.slow  # make test's 20-minute budget: make test-all runs it
def test_resume_on_empty_finished_and_other_recipe_folders(tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "r"
    first = run(tiny(out, 1, SMALL), resume=True)  # the job script always passes --resume: a new folder trains
    said = capsys.readouterr().out.splitlines()
    assert said[0] == f"resume: no checkpoint in {out} yet; starting from scratch"
    assert first["epoch"] == 1 and len(rows(out)) == 1
    stamp = (out / "last.pth").stat().st_mtime_ns
    cli = ["train", "--model", TINY, "--data", "digits", "--img-size", "16", "--epochs", "1", "--output", str(out),
           "--resume"]
    done = subprocess.run(edgezoo_cmd(*cli), capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("nothing to resume") and "finished (1 epochs" in done.stdout
    assert (out / "last.pth").stat().st_mtime_ns == stamp and len(rows(out)) == 1  # nothing trained
    with pytest.raises(ConfigError, match=r"last\.pth holds a run of a different recipe: data\.batch_size \(32 there, "
                                          r"16 now\); optim\.lr \(None there, 0\.01 now\)\. Pass the same config"):
        run(tiny(out, 1, SMALL, "optim.lr=0.01", "data.batch_size=16"), resume=True)

    # A run killed before its first checkpoint leaves only config.yaml: the same recipe starts afresh ...
    early = tmp_path / "early"
    early.mkdir()
    (early / "config.yaml").write_text(tiny(early, 1).to_yaml())
    assert plan_resume(tiny(early, 1, "data.workers=2"), early).kind == "fresh"  # runtime keys may change
    # ... and another recipe is refused before anything is written.
    with pytest.raises(ConfigError, match=r"config\.yaml holds a run of a different recipe: sched\.epochs \(1 there, "
                                          r"3 now\)\. Pass"):
        run(tiny(early, 3), resume=True)
    assert sorted(p.name for p in early.iterdir()) == ["config.yaml"]


def test_data_order_and_augmentation_resume_anywhere():
    """Each sample's augmentation depends on (seed, epoch, index) only: not on workers, skips or the caller's RNG."""
    from edgezoo.data.datasets import build_data, resolve_data_cfg
    from edgezoo.train.engine import create_train_model

    cfg = tiny(Path("unused"), 1, "aug.auto_augment=rand-m9-mstd0.5-inc1", "aug.reprob=0.5", "aug.color_jitter=0.4")

    def batches(workers: int, skip: int, count: int) -> list[torch.Tensor]:
        cfg.data.workers = workers
        data = build_data(cfg, resolve_data_cfg(cfg, create_train_model(cfg, meta=True)))
        first, it = data.epoch_batches(3, skip)
        assert first == skip // cfg.data.batch_size
        return [next(it)[0] for _ in range(count)]

    torch.manual_seed(0)
    before = torch.get_rng_state()
    whole = batches(0, 0, 4)
    assert torch.equal(torch.get_rng_state(), before)  # the training loop's generator is untouched
    assert all(torch.equal(a, b) for a, b in zip(whole[2:], batches(2, 64, 2), strict=True))
    assert not torch.equal(whole[0], whole[1])
