"""``torchrun`` with a c10d rendezvous: two "nodes" (launchers) of one CPU process each, gloo.

The run is stopped by SIGTERM (what a scheduler sends) and resumed on one process; a
one-process run is resumed on two. Only global rank 0 writes OUTPUT, once per run, not once
per node.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.train_helpers import ENV, TINY, edgezoo_cmd, free_port, load_last, rows, torchrun_cmd, wait_for_checkpoint

TRAIN = ("train", "--model", TINY, "--data", "digits", "--img-size", "32", "--epochs", "2", "--batch-size", "16",
         "--set", "run.progress=false")


def _best(out: Path) -> float:
    return max(max(r["val_top1"], r["ema_val_top1"]) for r in rows(out))


@pytest.mark.slow
def test_two_nodes_c10d_stopped_by_sigterm_resume_on_one(tmp_path: Path):
    out = tmp_path / "nodes"
    rdzv = ("--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
            f"127.0.0.1:{free_port()}", "--rdzv-id", "edgezoo-test")
    argv = (*TRAIN, "--output", str(out))
    nodes = [subprocess.Popen(torchrun_cmd(*rdzv, "-m", "edgezoo.cli", *argv, "--set", "run.save_every_steps=30"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV) for _ in range(2)]
    # into epoch 2: one epoch row, then a mid-epoch checkpoint (update 60 = epoch 2, step 16 of 44)
    wait_for_checkpoint(out, nodes[0], lambda s: s["epoch"] == 1 and s["position"] is not None, timeout=600)
    for node in nodes:
        node.send_signal(signal.SIGTERM)
    said = [node.communicate(timeout=300) for node in nodes]
    stdout = "".join(o for o, _ in said)
    assert stdout.count("SIGTERM: stopped cleanly") == 1, said  # rank 0 reports, once for both nodes
    assert stdout.count("epoch   1/2") == 1 and stdout.count("training test_resnet") == 1
    state = load_last(out)
    assert state["world_size"] == 2 and len(state["rng"]) == 2 and state["epoch"] == 1
    assert state["position"]["step"] >= 16 and len(rows(out)) == 1
    assert sorted(p.name for p in out.iterdir()) == ["best.pth", "config.yaml", "curves.png", "last.pth",
                                                     "metrics.jsonl"]

    one = subprocess.run(edgezoo_cmd(*argv, "--resume"), capture_output=True, text=True, env=ENV, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    assert "checkpoint from 2 processes, now 1" in one.stdout
    final = load_last(out)
    assert final["world_size"] == 1 and [r["epoch"] for r in rows(out)] == [1, 2]
    assert final["num_updates"] == 2 * (1437 // 16)  # the schedule re-laid for one process: 89 updates an epoch
    print(f"\n2 nodes -> 1 process: best top-1 {_best(out):.2f}")
    assert _best(out) > 80.0


@pytest.mark.slow
def test_one_process_resumed_on_two(tmp_path: Path):
    out = tmp_path / "grow"
    argv = (*TRAIN, "--output", str(out))
    alone = subprocess.Popen(edgezoo_cmd(*argv, "--set", "run.save_every_steps=40"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=ENV)
    wait_for_checkpoint(out, alone, lambda s: s["position"] is not None, timeout=600)
    alone.send_signal(signal.SIGTERM)
    _, err = alone.communicate(timeout=300)
    assert alone.returncode == 0, err[-2000:]
    assert load_last(out)["world_size"] == 1
    two = subprocess.run(torchrun_cmd("--standalone", "--nproc-per-node", "2", "-m", "edgezoo.cli", *argv,
                                      "--resume"), capture_output=True, text=True, env=ENV, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    assert "checkpoint from 1 processes, now 2" in two.stdout
    final = load_last(out)
    assert final["world_size"] == 2 and [r["epoch"] for r in rows(out)] == [1, 2]
    print(f"\n1 process -> 2: best top-1 {_best(out):.2f}")
    assert _best(out) > 80.0
