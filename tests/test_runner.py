"""The one pipeline runner: stages run once, a stopped plan continues where it stopped, a changed setting
redoes that stage and what depends on it, a failure skips only what needs it. Toy stages, real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgezoo.pipelines.runner import Plan, Stage, run

ROOT = Path(__file__).resolve().parents[1]


def note(log: str, name: str, value: int, seconds: float = 0.0, fail_if: str = "",
         inputs: dict | None = None) -> dict:
    """A toy stage: appends its name to ``log`` (what actually ran), sleeps, fails while ``fail_if`` exists,
    returns its value plus the values of the stages it takes, and the process it ran in."""
    with open(log, "a") as f:
        f.write(name + "\n")
    time.sleep(seconds)
    if fail_if and Path(fail_if).exists():
        raise RuntimeError(f"{name} was told to fail")
    total = value + sum(r["total"] for r in (inputs or {}).values())
    return {"total": total, "pid": os.getpid()}


def ran(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def diamond(tmp: Path, b_value: int = 2, fail: str = "", seconds: float = 0.0) -> Plan:
    """a -> (b, c) -> d."""
    log = str(tmp / "log")
    return Plan([
        Stage("a", note, dict(log=log, name="a", value=1)),
        Stage("b", note, dict(log=log, name="b", value=b_value, seconds=seconds), needs=("a",)),
        Stage("c", note, dict(log=log, name="c", value=3, fail_if=fail), needs=("a",)),
        Stage("d", note, dict(log=log, name="d", value=4), needs=("b", "c")),
    ], tmp / "state")


def test_stages_run_once_in_order_and_pass_results(tmp_path: Path) -> None:
    out = run(diamond(tmp_path), jobs=0, progress=False)
    assert ran(tmp_path / "log")[0] == "a" and ran(tmp_path / "log")[-1] == "d"
    assert out["d"].status == "done" and out["d"].result["total"] == 4 + (2 + 1) + (3 + 1)
    again = run(diamond(tmp_path), jobs=0, progress=False)
    assert [o.status for o in again.values()] == ["reused"] * 4 and len(ran(tmp_path / "log")) == 4
    assert again["d"].result == out["d"].result


def test_a_changed_setting_redoes_that_stage_and_its_dependents_only(tmp_path: Path) -> None:
    run(diamond(tmp_path), jobs=0, progress=False)
    out = run(diamond(tmp_path, b_value=20), jobs=0, progress=False)
    assert ran(tmp_path / "log")[4:] == ["b", "d"]
    assert {n: o.status for n, o in out.items()} == {"a": "reused", "b": "done", "c": "reused", "d": "done"}
    assert out["d"].result["total"] == 4 + 21 + 4


def test_a_failure_skips_what_needs_it_and_is_run_again_next_time(tmp_path: Path) -> None:
    flag = tmp_path / "fail-c"
    flag.touch()
    first = run(diamond(tmp_path, fail=str(flag)), jobs=0, progress=False)
    assert {n: o.status for n, o in first.items()} == {"a": "done", "b": "done", "c": "failed", "d": "skipped"}
    assert "c was told to fail" in first["c"].error and "needs c" in first["d"].error
    flag.unlink()
    second = run(diamond(tmp_path, fail=str(flag)), jobs=0, progress=False)
    assert {n: o.status for n, o in second.items()} == {"a": "reused", "b": "reused", "c": "done", "d": "done"}


def _plan_at_b(tmp: Path) -> subprocess.Popen:
    """The diamond plan in its own process with two workers, returned once ``b`` (which sleeps) has started."""
    script = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
              "from pathlib import Path\n"
              "from tests.test_runner import diamond\n"
              "from edgezoo.pipelines.runner import run\n"
              f"run(diamond(Path({str(tmp)!r}), seconds=60), jobs=2, progress=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    deadline = time.monotonic() + 120
    while "b" not in ran(tmp / "log") and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    if "b" not in ran(tmp / "log"):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError("the plan did not reach b")
    return proc


def test_a_killed_plan_continues_where_it_stopped(tmp_path: Path) -> None:
    """The plan runs in its own process, two workers; it is killed (SIGKILL) while ``b`` sleeps. Run again,
    ``a`` (finished before the kill) is not run again; ``b``, ``c`` and ``d`` finish."""
    proc = _plan_at_b(tmp_path)
    os.killpg(proc.pid, signal.SIGKILL)  # the plan and its workers, mid-stage
    proc.wait()
    assert json.loads((tmp_path / "state" / "a.json").read_text())["status"] == "done"
    assert not (tmp_path / "state" / "d.json").exists()
    out = run(diamond(tmp_path), jobs=0, progress=False)  # b without its sleep: another setting, so b runs again
    runs = ran(tmp_path / "log")
    assert runs.count("a") == 1 and out["a"].status == "reused"
    assert out["d"].status == "done" and out["d"].result["total"] == 11


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (field 4 of /proc/N/stat)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()  # a zombie has ended
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads worker processes from /proc (Linux)")
def test_a_terminated_plan_ends_its_workers(tmp_path: Path) -> None:
    """``kill PID`` (SIGTERM to the plan's process alone, as a scheduler or a user stops it) ends the workers
    mid-stage too, instead of leaving them running their stage without a plan to report to."""
    proc = _plan_at_b(tmp_path)
    try:
        workers = [c for c in _children(proc.pid) if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        assert len(workers) == 2, workers
        proc.terminate()
        assert proc.wait(timeout=30) != 0
        deadline = time.monotonic() + 15
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not (tmp_path / "state" / "d.json").exists()


def test_affinity_keeps_a_models_stages_on_one_worker_and_exclusive_stages_run_alone(tmp_path: Path) -> None:
    log = str(tmp_path / "log")
    stages = []
    for m in ("m1", "m2"):
        stages += [Stage(f"{m}/train", note, dict(log=log, name=f"{m}/train", value=1, seconds=0.3), affinity=m),
                   Stage(f"{m}/export", note, dict(log=log, name=f"{m}/export", value=1), needs=(f"{m}/train",),
                         affinity=m),
                   Stage(f"{m}/bench", note, dict(log=log, name=f"{m}/bench", value=1), needs=(f"{m}/export",),
                         exclusive=True, affinity=m)]
    out = run(Plan(stages, tmp_path / "state"), jobs=2, progress=False)
    for m in ("m1", "m2"):
        assert out[f"{m}/train"].result["pid"] == out[f"{m}/export"].result["pid"]
    order = ran(tmp_path / "log")
    assert order.index("m1/bench") > order.index("m2/export") and order.index("m2/bench") > order.index("m1/export")


def test_a_plan_that_names_an_unknown_stage_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs"):
        Plan([Stage("a", note, {}, needs=("z",))], tmp_path)
