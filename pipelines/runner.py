"""One runner for every plan: the demo, the mixer sweep, the export matrix, the int8 and fastest-path tables.

A :class:`Plan` is a list of :class:`Stage` s, each a module-level function with JSON settings and the stages
whose results it takes. :func:`run` runs them in worker processes sized to the machine, the longest chain
first, stages of one model on the same worker where it is free (so a worker's cache of prepared models
serves them: :func:`edgezoo.pipelines.cache.prepared`), benchmarks alone once everything else has finished.

Each finished stage is recorded in ``plan.state_dir/<stage>.json`` with its *content key*: a hash of the
function, its settings and the keys and results of the stages it takes. Run again, a stage whose record holds
the same key is not run (its recorded result is used), so a stopped plan continues where it stopped and a
changed setting redoes that stage and what depends on it, nothing else. A failed stage is recorded as failed
and run again next time; the stages that need it are skipped, the others go on.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgezoo.errors import InvalidArgumentError

__all__ = ["Outcome", "Plan", "Stage", "content_key", "recorded", "run", "usable_cores", "write_record"]


@dataclass(frozen=True)
class Stage:
    """One step of a plan.

    ``fn(**settings, inputs={need: result, ...})`` returns a JSON-serialisable dict; ``inputs`` is passed only
    when ``needs`` is not empty. ``cost`` orders ready stages (the largest first); ``exclusive`` stages (timings)
    run alone, after every other stage that is ready or running; ``affinity`` groups stages that share a worker's
    cache (a model's stages).
    """

    name: str
    fn: Callable[..., dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    cost: float = 1.0
    exclusive: bool = False
    affinity: str | None = None


@dataclass
class Plan:
    """Stages and the folder that records them (one JSON file a stage)."""

    stages: list[Stage]
    state_dir: Path

    def __post_init__(self) -> None:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names repeat in the plan: {sorted({n for n in names if names.count(n) > 1})}")
        known = set(names)
        for s in self.stages:
            missing = [n for n in s.needs if n not in known]
            if missing:
                raise ValueError(f"stage {s.name!r} needs {missing}, which the plan lacks")


@dataclass
class Outcome:
    """What became of a stage: ``done`` (run now), ``reused`` (recorded with the same key), ``failed``, or
    ``skipped`` (a stage it needs failed)."""

    status: str
    result: dict[str, Any] | None = None
    error: str | None = None
    seconds: float = 0.0
    key: str | None = None


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def content_key(stage: Stage, outcomes: dict[str, Outcome]) -> str:
    """The hash that decides whether ``stage`` runs again: its function, settings and what it takes."""
    fn = f"{stage.fn.__module__}.{stage.fn.__qualname__}"
    deps = {n: [outcomes[n].key, _digest(outcomes[n].result)] for n in stage.needs}
    return _digest({"fn": fn, "settings": stage.settings, "needs": deps})


def _file(state_dir: Path, name: str) -> Path:
    return state_dir / (name.replace("/", "__").replace(os.sep, "__") + ".json")


def recorded(state_dir: Path, name: str, key: str) -> Outcome | None:
    try:
        rec = json.loads(_file(state_dir, name).read_text())
    except (OSError, ValueError):
        return None
    if rec.get("key") == key and rec.get("status") == "done":
        return Outcome("reused", rec.get("result"), seconds=rec.get("seconds", 0.0), key=key)
    return None


def write_record(state_dir: Path, name: str, out: Outcome) -> None:
    path = _file(state_dir, name)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"stage": name, "key": out.key, "status": out.status, "result": out.result,
                               "error": out.error, "seconds": round(out.seconds, 3),
                               "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=1, default=str))
    tmp.replace(path)


def _call(fn: Callable[..., dict[str, Any]], settings: dict[str, Any], inputs: dict[str, Any] | None) -> tuple:
    start = time.perf_counter()
    result = fn(**settings, inputs=inputs) if inputs is not None else fn(**settings)
    return result, time.perf_counter() - start


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {(text[0] if text else '')[:300]}"


class _Workers:
    """``jobs`` single-process executors (or one in-process thread with ``jobs == 0``), so a stage can go to the
    worker that ran its affinity last."""

    def __init__(self, jobs: int, initializer: Callable[..., None] | None, initargs: tuple) -> None:
        if jobs == 0:
            self.pools: list[Executor] = [ThreadPoolExecutor(max_workers=1)]
        else:
            ctx = multiprocessing.get_context("spawn")
            self.pools = [ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=initializer,
                                              initargs=initargs) for _ in range(jobs)]
        self.busy: dict[int, Future] = {}
        self.last: dict[int, str | None] = dict.fromkeys(range(len(self.pools)))

    def idle(self) -> list[int]:
        return [i for i in range(len(self.pools)) if i not in self.busy]

    def submit(self, stage: Stage, inputs: dict[str, Any] | None) -> Future:
        free = self.idle()
        worker = next((i for i in free if stage.affinity and self.last[i] == stage.affinity), free[0])
        fut = self.pools[worker].submit(_call, stage.fn, stage.settings, inputs)
        self.busy[worker], self.last[worker] = fut, stage.affinity
        return fut

    def release(self, fut: Future) -> None:
        self.busy = {w: f for w, f in self.busy.items() if f is not fut}

    def shutdown(self, kill: bool = False) -> None:
        """Wait for the workers to exit; with ``kill`` (the plan was interrupted) end them first, so a stopped
        plan leaves no worker running its stage on (they are not in the caller's process group's signals when
        ``kill PID`` stops the plan alone)."""
        for pool in self.pools:
            if kill:  # concurrent.futures has no public terminate before Python 3.14
                for proc in list((getattr(pool, "_processes", None) or {}).values()):
                    proc.terminate()
            pool.shutdown(wait=not kill, cancel_futures=True)


def run(plan: Plan, jobs: int | None = None, progress: bool = True, desc: str = "plan",
        on_outcome: Callable[[str, Outcome], None] | None = None,
        initializer: Callable[..., None] | None = None, initargs: tuple = ()) -> dict[str, Outcome]:
    """Run ``plan``; ``{stage name: Outcome}`` for every stage.

    ``jobs``: worker processes (default: the usable cores, at most the stages; 0: in this process, one at a
    time). ``on_outcome(name, outcome)`` is called as each stage ends or is reused (to write a report as it
    grows). ``initializer(*initargs)`` runs once in each worker (threads, seeds).
    """
    if jobs is not None and jobs < 0:
        raise InvalidArgumentError(f"--jobs must be >= 0, got {jobs}")
    jobs = min(usable_cores(), max(1, len(plan.stages))) if jobs is None else jobs
    plan.state_dir.mkdir(parents=True, exist_ok=True)
    by_name = {s.name: s for s in plan.stages}
    outcomes: dict[str, Outcome] = {}
    waiting = list(plan.stages)
    running: dict[Future, tuple[Stage, str]] = {}
    bar = _bar(len(plan.stages), desc, progress)

    def finish(name: str, out: Outcome) -> None:
        outcomes[name] = out
        bar.update(1)
        if on_outcome is not None:
            on_outcome(name, out)

    def settle() -> list[tuple[Stage, str, dict[str, Any] | None]]:
        """Reuse recorded stages, skip those whose needs failed; return the stages ready to run."""
        ready, progress_made = [], True
        while progress_made:
            progress_made, ready = False, []
            for stage in list(waiting):
                states = [outcomes.get(n) for n in stage.needs]
                if any(o is not None and o.status in ("failed", "skipped") for o in states):
                    waiting.remove(stage)
                    bad = [n for n in stage.needs if outcomes.get(n) and outcomes[n].status in ("failed", "skipped")]
                    finish(stage.name, Outcome("skipped", error=f"needs {', '.join(bad)}"))
                    progress_made = True
                    continue
                if any(o is None for o in states):
                    continue
                key = content_key(stage, outcomes)
                hit = recorded(plan.state_dir, stage.name, key)
                if hit is not None:
                    waiting.remove(stage)
                    finish(stage.name, hit)
                    progress_made = True
                    continue
                inputs = {n: outcomes[n].result for n in stage.needs} if stage.needs else None
                ready.append((stage, key, inputs))
        return ready

    workers = _Workers(jobs, initializer, initargs)
    finished = False
    restore = _exit_on_sigterm()
    try:
        while True:
            ready = settle()
            if not ready and not running:
                break
            others_ready = any(not s.exclusive for s, _, _ in ready)
            for stage, key, inputs in sorted(ready, key=lambda r: -r[0].cost):
                if not workers.idle():
                    break
                if stage.exclusive and (running or others_ready):
                    continue  # timings run alone, on an otherwise idle machine
                if not stage.exclusive and any(s.exclusive for s, _ in running.values()):
                    break
                waiting.remove(stage)
                running[workers.submit(stage, inputs)] = (stage, key)
                bar.set_postfix_str(", ".join(s.name for s, _ in running.values())[:60])
            if not running:
                raise RuntimeError(f"plan cannot progress: {[s.name for s in waiting]} wait on each other")
            done, _ = wait(list(running), timeout=1.0, return_when=FIRST_COMPLETED)
            for fut in done:
                stage, key = running.pop(fut)
                workers.release(fut)
                try:
                    result, seconds = fut.result()
                    out = Outcome("done", result, seconds=seconds, key=key)
                except Exception as err:  # a crashed stage is recorded; the stages that do not need it go on
                    out = Outcome("failed", error=_first_line(err), key=key)
                write_record(plan.state_dir, stage.name, out)
                finish(stage.name, out)
        finished = True
    finally:
        workers.shutdown(kill=not finished)
        restore()
        bar.close()
    return {name: outcomes[name] for name in by_name}


def _exit_on_sigterm() -> Callable[[], None]:
    """Make SIGTERM end the plan as Ctrl-C does (its ``finally`` ends the workers); returns what restores the
    previous handler. Only the main thread can set a handler: elsewhere nothing changes."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="stage", disable=not enabled, dynamic_ncols=True, leave=True)


def stages_of(outcomes: dict[str, Outcome], prefix: str) -> Sequence[tuple[str, Outcome]]:
    """The outcomes whose stage name starts with ``prefix`` (a model's stages, say), in plan order."""
    return [(n, o) for n, o in outcomes.items() if n.startswith(prefix)]
