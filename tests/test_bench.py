"""edgezoo bench: the latency protocol on stub workloads, the report schema, absent runtimes, the
charts, the README section, ``--compare-timm`` and the CLI's errors."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from edgezoo.bench import Protocol, Runtime, bench, get_runtime, measure, parse_runtimes, summarise
from edgezoo.bench.fingerprint import cpu_flags, fingerprint_id
from edgezoo.bench.plot import cost_curve_png, fit_exponents, pareto_front, pareto_png, read_accuracy
from edgezoo.bench.report import validate_report
from edgezoo.bench.runtime import _RUNTIMES
from edgezoo.cli import main
from edgezoo.errors import InvalidArgumentError

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SMALL = "ez_efficientvit_m0"


# --- the protocol -------------------------------------------------------------------------------

def test_summarise_statistics() -> None:
    s = summarise([0.001, 0.002, 0.003, 0.004, 0.005])
    assert (s.p50_ms, s.min_ms, s.mean_ms, s.runs) == pytest.approx((3.0, 1.0, 3.0, 5))
    assert s.p90_ms == pytest.approx(4.6)  # linear interpolation between the 4th and 5th values
    assert s.seconds == pytest.approx(0.015)


def test_protocol_on_a_sleep_of_known_duration() -> None:
    calls = []

    def work() -> None:
        calls.append(1)
        time.sleep(0.02)

    stats = measure({"sleep": work}, Protocol(warmup=3, runs=12, max_seconds=30))["sleep"]
    assert stats.runs == 12 and len(calls) == 3 + 12  # warm-up calls are not timed
    # a sleep lasts at least its time; a busy shared CPU adds a scheduler slice or so on top
    assert stats.min_ms >= 20.0 and stats.p50_ms <= 20.0 + 15.0
    assert stats.min_ms <= stats.p50_ms <= stats.p90_ms


def test_protocol_honours_the_time_limit() -> None:
    start = time.perf_counter()
    stats = measure({"sleep": lambda: time.sleep(0.01)}, Protocol(warmup=0, runs=100_000, max_seconds=0.15))["sleep"]
    elapsed = time.perf_counter() - start
    assert 3 <= stats.runs <= 16  # 0.15 s of 10 ms calls, stopped at the first round past the limit
    assert elapsed < 0.15 + 0.2


def test_protocol_interleaves_and_measures_a_ratio() -> None:
    order = []

    def fn(key: str, seconds: float):
        def run() -> None:
            order.append(key)
            time.sleep(seconds)
        return run

    stats = measure({"a": fn("a", 0.01), "b": fn("b", 0.03)}, Protocol(warmup=0, runs=8, max_seconds=30))
    assert order[:6] == ["a", "b", "b", "a", "a", "b"]  # the order alternates from round to round
    assert stats["a"].runs == stats["b"].runs == 8
    assert 0.25 <= stats["a"].p50_ms / stats["b"].p50_ms <= 0.6  # 1/3, with a scheduler slice of slack


def test_protocol_blocks_time_turns_of_consecutive_calls_after_an_untimed_one() -> None:
    """``block=3``: each turn is one untimed call then three timed calls of the same callable."""
    order: list[str] = []
    spans: dict[str, list[tuple[int, int]]] = {"a": [], "b": []}

    def fn(key: str, seconds: float):
        def run() -> None:
            order.append(key)
            start = time.perf_counter_ns()
            time.sleep(seconds)
            spans[key].append((start, time.perf_counter_ns()))
        return run

    stats = measure({"a": fn("a", 0.004), "b": fn("b", 0.012)}, Protocol(warmup=0, runs=7, block=3, max_seconds=30))
    assert stats["a"].runs == stats["b"].runs == 7  # the last turn is cut to what is left
    assert "".join(order) == "aaaa" "bbbb" "bbbb" "aaaa" "aa" "bb"  # untimed + 3, alternating; then untimed + 1
    assert 0.2 <= stats["a"].p50_ms / stats["b"].p50_ms <= 0.5  # 1/3: the untimed calls are not in the figures
    assert stats["a"].min_ms >= 4.0 and stats["b"].min_ms >= 12.0


@pytest.mark.parametrize("kwargs", [{"runs": 0}, {"max_seconds": 0}, {"warmup": -1}, {"block": 0}, {"repeat": 0}])
def test_protocol_rejects_bad_settings(kwargs) -> None:
    from edgezoo.bench.protocol import ProtocolError

    with pytest.raises(ProtocolError):
        Protocol(**kwargs)


# --- fingerprint --------------------------------------------------------------------------------

def test_cpu_flags_and_fingerprint_id() -> None:
    info = "model name\t: Test CPU 9000\nflags\t\t: fpu avx2 fma avx512f avx512_bf16 amx_tile amx_bf16\n"
    flags = cpu_flags(info)
    assert flags["avx512_bf16"] and flags["amx_bf16"] and not flags["avx512_vnni"]
    fp = {"cpu": "Test CPU 9000", "flags": flags, "usable_cores": 4, "gpus": []}
    fid = fingerprint_id(fp)
    assert fid.startswith("test-cpu-9000-4c-amx-avx512-bf16-")
    assert fingerprint_id({**fp, "flags": {**flags, "amx_bf16": False}}) != fid  # another machine, another id
    assert fingerprint_id({**fp, "versions": {"torch": "9"}}) == fid  # versions do not change the machine


# --- runtimes: registry, absent, fake workloads through bench() -----------------------------------

class _SleepRuntime(Runtime):
    """A runtime whose batch-b call sleeps b milliseconds and returns zero logits."""

    name = "test-sleep"
    precisions = ("fp32", "int8")
    description = "test stub"

    def load(self, item, precision, batch):
        def run(x: np.ndarray) -> np.ndarray:
            time.sleep(0.002 * x.shape[0])
            return np.zeros((x.shape[0], 10), np.float32)
        return run


class _AbsentRuntime(_SleepRuntime):
    name = "test-absent"

    def absent(self) -> str | None:
        return "not installed in this test"


class _BrokenRuntime(_SleepRuntime):
    name = "test-broken"

    def load(self, item, precision, batch):
        raise RuntimeError("the runtime refused the model\nsecond line")


@pytest.fixture
def fake_runtimes():
    runtimes = {cls.name: cls() for cls in (_SleepRuntime, _AbsentRuntime, _BrokenRuntime)}
    _RUNTIMES.update(runtimes)
    yield runtimes
    for name in runtimes:
        _RUNTIMES.pop(name, None)


def test_parse_runtimes() -> None:
    from edgezoo.errors import InvalidArgumentError

    parsed = parse_runtimes("torch, openvino:bf16,ort")
    expected = [("torch", ["fp32"]), ("openvino", ["bf16"]), ("ort", ["fp32"])]
    assert [(rt.name, precs) for rt, precs in parsed] == expected
    assert [rt.name for rt, _ in parse_runtimes("all")][:4] == ["torch", "compile", "ort", "ort-int8"]
    with pytest.raises(InvalidArgumentError, match="did you mean ort"):
        get_runtime("onnxrt")
    with pytest.raises(InvalidArgumentError, match="runs fp32"):
        parse_runtimes("torch:int8")


def test_bench_records_schema_absent_and_failed(fake_runtimes) -> None:
    runtimes = [(fake_runtimes[n], ["fp32", "int8"]) for n in ("test-sleep", "test-absent", "test-broken")]
    report = bench([SMALL], runtimes, batches=[1, 4], threads=1, img_sizes=[32], progress=False,
                   protocol=Protocol(warmup=1, runs=5, max_seconds=5))
    validate_report(report)
    json.loads(json.dumps(report))  # plain JSON
    recs = report["records"]
    assert len(recs) == 3 * 2 * 2  # model x runtime x precision x batch
    ok = [r for r in recs if r["runtime"] == "test-sleep"]
    assert all(r["status"] == "ok" and r["runs"] == 5 and r["img_size"] == 32 for r in ok)
    b1, b4 = (next(r for r in ok if r["batch"] == b and r["precision"] == "fp32") for b in (1, 4))
    assert b1["latency_ms"]["min"] >= 2.0 and b4["latency_ms"]["min"] >= 8.0
    assert b4["throughput_ips"] == pytest.approx(4e3 / b4["latency_ms"]["p50"], rel=1e-3)
    assert b1["macs"] > 0 and b1["family"] == "cascaded_group" and b1["fingerprint"] == report["fingerprint"]["id"]
    absent = [r for r in recs if r["runtime"] == "test-absent"]
    assert {r["status"] for r in absent} == {"absent"} and absent[0]["reason"] == "not installed in this test"
    broken = [r for r in recs if r["runtime"] == "test-broken"]
    assert {r["status"] for r in broken} == {"failed"}
    assert broken[0]["error"] == "RuntimeError: the runtime refused the model"
    fp = report["fingerprint"]
    assert fp["threads"] == 1 and "torch" in fp["versions"] and isinstance(fp["flags"], dict)

    broken_report = json.loads(json.dumps(report))
    del broken_report["records"][0]["latency_ms"]
    with pytest.raises(ValueError, match="missing 'latency_ms'"):
        validate_report(broken_report)


class _HalfAtInt8Runtime(_SleepRuntime):
    """fp32 sleeps 4 ms, int8 2 ms; every call is logged in ``calls``."""

    name = "test-half"
    calls: ClassVar[list[str]] = []

    def load(self, item, precision, batch):
        def run(x: np.ndarray) -> np.ndarray:
            self.calls.append(precision)
            time.sleep(0.004 if precision == "fp32" else 0.002)
            return np.zeros((x.shape[0], 10), np.float32)
        return run


def test_bench_interleaves_runtimes_in_turns(fake_runtimes) -> None:
    """``interleave_runtimes``: one model's runtimes and precisions timed together, in turns of ``block`` calls
    (each after an untimed one); an absent or broken runtime is its own record and the rest still run."""
    half = _HalfAtInt8Runtime()
    _RUNTIMES[half.name] = half
    half.calls.clear()
    try:
        runtimes = [(half, ["fp32", "int8"]), (fake_runtimes["test-absent"], ["fp32"]),
                    (fake_runtimes["test-broken"], ["fp32"])]
        report = bench([SMALL], runtimes, threads=1, img_sizes=[32], progress=False, interleave_runtimes=True,
                       protocol=Protocol(warmup=2, runs=6, block=3, max_seconds=30))
    finally:
        _RUNTIMES.pop(half.name)
    validate_report(report)
    assert report["protocol"]["block"] == 3
    fp32, int8 = report["records"][:2]
    assert [r["status"] for r in report["records"]] == ["ok", "ok", "absent", "failed"]
    assert fp32["runs"] == int8["runs"] == 6 and fp32["interleaved_with"] == 1
    # warm-up of each as it loads, then turns of 1 untimed + 3 timed calls, alternating which goes first
    assert "".join("f" if c == "fp32" else "i" for c in half.calls) == "ff" "ii" "ffff" "iiii" "iiii" "ffff"
    assert 0.35 <= int8["latency_ms"]["p50"] / fp32["latency_ms"]["p50"] <= 0.7
    with pytest.raises(InvalidArgumentError, match="cannot also interleave runtimes or sizes"):
        bench([SMALL], runtimes[:1], compare_timm=True, interleave_runtimes=True, progress=False)


class _DriftRuntime(_SleepRuntime):
    """fp32 and int8 sleep for what ``schedule[pass]`` says (ms); the test moves ``now`` on after each pass."""

    name = "test-drift"
    schedule: ClassVar[list[dict[str, float]]] = [{"fp32": 2, "int8": 1}, {"fp32": 6, "int8": 2},
                                                  {"fp32": 3, "int8": 3}]
    now: ClassVar[list[int]] = [0]

    def load(self, item, precision, batch):
        ms = self.schedule[self.now[0]][precision]

        def run(x: np.ndarray) -> np.ndarray:
            time.sleep(ms / 1e3)
            return np.zeros((x.shape[0], 10), np.float32)
        return run


def test_repeat_runs_the_plan_again_and_a_ratio_is_the_median_of_the_passes(monkeypatch) -> None:
    """``Protocol(repeat=3)``: three passes, each loading the runtimes again; a record's p50 is the median of its
    passes', and the speed-up the median of the per-pass ratios (2x here, where the ratio of the median p50s is
    1.5x), with its range; agreement is measured in the first pass only."""
    from edgezoo.bench import run as bench_run
    from edgezoo.bench.markdown import markdown
    from edgezoo.bench.passes import ratio

    drift = _DriftRuntime()
    _RUNTIMES[drift.name] = drift
    drift.now[0] = 0
    agreed: list[str] = []
    monkeypatch.setattr(bench_run, "_agreement", lambda runner, it, n, calib: agreed.append("x") or
                        {"top1_agreement": 1.0, "images": n, "calib": calib})

    def next_pass(report: dict) -> None:
        drift.now[0] = min(drift.now[0] + 1, 2)
    try:
        report = bench([SMALL], [(drift, ["fp32", "int8"])], threads=1, img_sizes=[32], progress=False, agree=5,
                       interleave_runtimes=True, on_progress=next_pass,
                       protocol=Protocol(warmup=1, runs=8, block=2, max_seconds=30, repeat=3))
    finally:
        _RUNTIMES.pop(drift.name)
    validate_report(report)
    fp32, int8 = report["records"]
    assert report["protocol"]["repeat"] == 3 and fp32["runs"] == int8["runs"] == 24
    assert len(fp32["pass_p50_ms"]) == len(int8["pass_p50_ms"]) == 3
    assert [round(p) for p in fp32["pass_p50_ms"]] == [2, 6, 3] and [round(p) for p in int8["pass_p50_ms"]] == [1, 2, 3]
    assert fp32["latency_ms"]["p50"] == pytest.approx(float(np.median(fp32["pass_p50_ms"])), abs=1e-4)
    assert fp32["latency_ms"]["min"] >= 2.0 and fp32["latency_ms"]["min"] < 3.0  # the least of every pass
    assert agreed == ["x", "x"] and int8["agreement"]["top1_agreement"] == 1.0  # once per record, first pass
    speedup = ratio(fp32, int8)
    assert speedup.passes == 3 and 1.75 <= speedup.median <= 2.05  # the ratio of the medians would be 1.5
    assert 0.9 <= speedup.low <= 1.1 and 2.6 <= speedup.high <= 3.05
    fp32["runtime"] = "ort"  # the README's speed-up column is against onnxruntime fp32
    text = markdown(digits=report)
    assert f"`test-drift int8` {speedup.median:.2f}x ({speedup.low:.2f}-{speedup.high:.2f}, 3 passes)" in text
    assert "the whole plan run 3 times" in text


def test_combine_passes_and_ratio_of_single_runs() -> None:
    """A failed later pass is left out and counted; one pass is the record as it is; records without passes
    give the plain ratio of their p50."""
    from edgezoo.bench.passes import combine, ratio

    def rec(p50: float, status: str = "ok") -> dict:
        if status != "ok":
            return {"status": status, "batch": 1, "error": "RuntimeError: gone"}
        return {"status": "ok", "batch": 1, "runs": 10, "seconds": p50 / 100,
                "latency_ms": {"p50": p50, "p90": p50 + 1, "min": p50 - 0.5, "mean": p50 + 0.1}}

    merged = combine([rec(2.0), rec(9.0, "failed"), rec(4.0)])
    assert merged["pass_p50_ms"] == [2.0, 4.0] and merged["failed_passes"] == 1 and merged["runs"] == 20
    assert merged["latency_ms"] == {"p50": 3.0, "p90": 4.0, "min": 1.5, "mean": 3.1}
    assert merged["throughput_ips"] == pytest.approx(1e3 / 3.0, abs=0.01)
    assert combine([rec(5.0)]) == rec(5.0) and combine([rec(1.0, "failed"), rec(2.0)])["status"] == "failed"
    single = ratio(rec(6.0), rec(3.0))
    assert (single.median, single.passes, single.text()) == (2.0, 1, "2.00x")
    one_run = ratio(combine([rec(4.0), rec(9.0)], "run-a"), combine([rec(1.0), rec(3.0)], "run-a"))
    assert (one_run.median, one_run.low, one_run.high, one_run.passes) == (3.5, 3.0, 4.0, 2)
    merged_in = ratio(combine([rec(4.0), rec(9.0)], "run-a"), combine([rec(1.0), rec(3.0)], "run-b"))
    assert (merged_in.median, merged_in.passes) == (6.5 / 2.0, 1)  # other runs' passes are not paired


class _PixelsRuntime(_SleepRuntime):
    """Sleeps 1 ms per 32x32 pixels of the input; every call's input side is logged in ``calls``."""

    name = "test-pixels"
    calls: ClassVar[list[int]] = []

    def load(self, item, precision, batch):
        def run(x: np.ndarray) -> np.ndarray:
            self.calls.append(x.shape[-1])
            time.sleep(0.001 * (x.shape[-1] / 32) ** 2)
            return np.zeros((x.shape[0], 10), np.float32)
        return run


def test_bench_interleaves_sizes_for_a_cost_curve() -> None:
    """``interleave_sizes``: a model's input sizes are timed together (call by call at block 1), one record a size,
    each with the latency of its own size."""
    rt = _PixelsRuntime()
    _RUNTIMES[rt.name] = rt
    rt.calls.clear()
    try:
        report = bench([SMALL], [(rt, ["fp32"])], threads=1, img_sizes=[32, 64], progress=False,
                       interleave_sizes=True, protocol=Protocol(warmup=1, runs=8, max_seconds=30))
    finally:
        _RUNTIMES.pop(rt.name)
    validate_report(report)
    small, large = report["records"]
    assert (small["img_size"], large["img_size"]) == (32, 64) and small["interleaved_with"] == 1
    assert rt.calls[:2] == [32, 64]  # each size's warm-up call as it loads
    timed = rt.calls[2:]
    assert sorted(timed) == [32] * 8 + [64] * 8 and len(set(timed[:2])) == len(set(timed[2:4])) == 2  # by turns
    # each record has its own size's time: 4 ms and 1 ms sleeps. A sleep never ends early but may end late on a
    # busy machine (a p50 ratio of 5.5 once, with an export test on the other core), so the bounds are on minima
    assert large["latency_ms"]["min"] >= 4.0 and 1.0 <= small["latency_ms"]["min"] < 2.0


def test_real_absent_runtimes_are_reported_absent() -> None:
    """Whatever is missing on this machine (CUDA, TensorRT, Core ML off macOS) is a record, not an error."""
    missing = [rt for rt, _ in parse_runtimes("all") if rt.absent()]
    if not missing:
        pytest.skip("every runtime is available here")
    report = bench([SMALL], [(rt, list(rt.precisions)) for rt in missing], img_sizes=[32], progress=False,
                   protocol=Protocol(warmup=0, runs=1))
    assert {r["status"] for r in report["records"]} == {"absent"}
    assert all(r["reason"] for r in report["records"])


# --- charts and the README section ----------------------------------------------------------------

def _synthetic_report(sizes=(224,), runtimes=(("ort", "fp32", 1.0), ("ort-int8", "int8", 0.5))) -> dict:
    recs = []
    for model, macs, base in (("ez_a", 80e6, 2.0), ("ez_b", 300e6, 3.0), ("ez_c", 1800e6, 2.5)):
        for rt, prec, scale in runtimes:
            for s in sizes:
                p50 = base * scale * (s / 224) ** (2 if model == "ez_b" else 1) ** 1
                recs.append({"model": model, "runtime": rt, "precision": prec, "batch": 1, "img_size": s,
                             "threads": 2, "status": "ok", "fingerprint": "fp", "macs": int(macs),
                             "latency_ms": {"p50": p50, "p90": p50 * 1.1, "min": p50 * 0.9, "mean": p50},
                             "runs": 10, "seconds": 0.1, "throughput_ips": 1e3 / p50, "peak_memory_mb": 10.0})
    return {"schema": "edgezoo.bench/1", "started": "2026-01-01T00:00:00", "finished": "2026-01-01T00:00:10",
            "fingerprint": {"id": "fp", "cpu": "Test CPU", "flags": {"avx2": True}, "threads": 2, "usable_cores": 2,
                            "gpus": [], "versions": {"torch": "2"}},
            "protocol": Protocol().to_dict(), "records": recs}


def _assert_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_pareto_front() -> None:
    # (MACs or accuracy: higher is better, latency: lower is better)
    pts = [(1.0, 1.0), (2.0, 3.0), (2.0, 1.5), (3.0, 2.0), (0.5, 2.0)]
    assert pareto_front(pts) == [0, 2, 3]


def test_pareto_png_against_macs_and_accuracy(tmp_path) -> None:
    report = _synthetic_report()
    validate_report(report)
    _assert_png(pareto_png(report, tmp_path / "macs.png"))
    csv = tmp_path / "results.csv"
    csv.write_text("model,top1,top5\nez_a,70.1,90\nez_b,75.5,92\n")
    acc = read_accuracy(csv)
    assert acc == {"ez_a": 70.1, "ez_b": 75.5}
    _assert_png(pareto_png(report, tmp_path / "acc.png", acc))
    js = tmp_path / "val.json"
    js.write_text(json.dumps([{"model": "ez_c", "top1": 80.0, "top5": 95.0}]))
    assert read_accuracy(js) == {"ez_c": 80.0}


def test_cost_curve_exponents_and_png(tmp_path) -> None:
    report = _synthetic_report(sizes=(128, 256, 512), runtimes=(("ort", "fp32", 1.0),))
    slopes = fit_exponents(report)
    assert slopes["ez_a ort fp32"] == pytest.approx(0.5)  # latency ~ side = pixels^0.5
    assert slopes["ez_b ort fp32"] == pytest.approx(1.0)  # latency ~ side^2 = pixels
    _assert_png(cost_curve_png(report, tmp_path / "curve.png"))


def test_markdown_section_and_docs_splice(tmp_path) -> None:
    from edgezoo.bench.markdown import fastest, markdown
    from edgezoo.bench.report import save_report

    report = _synthetic_report()
    assert {m: r["runtime"] for m, r in fastest(report).items()} == dict.fromkeys(("ez_a", "ez_b", "ez_c"), "ort-int8")
    text = markdown(report)
    assert "| `ez_a` (80, 224) | 2.00 | **1.00** | `ort-int8 int8` 2.00x |" in text
    assert "Test CPU" in text
    results = tmp_path / "results"
    save_report(report, results / "fp.json")
    sized = _synthetic_report(sizes=(128,))
    for r in sized["records"]:
        r["agreement"], r["interleaved_with"] = {"top1_agreement": 1.0}, 1
    sized["protocol"]["block"] = 10
    save_report(sized, results / "fp-digits-128px.json")  # the fastest path at 128 px: a part of its own
    older = _synthetic_report()
    older["fingerprint"]["id"], older["fingerprint"]["cpu"], older["finished"] = "old", "Old CPU", "2025-01-01"
    for r in older["records"]:
        r["fingerprint"] = "old"
    save_report(older, results / "old.json")  # the newest file, the oldest run: never the section's machine
    older_digits = _synthetic_report(sizes=(32,))
    older_digits["fingerprint"] = older["fingerprint"]
    for r in older_digits["records"]:
        r["fingerprint"] = "old"
    save_report(older_digits, results / "old-digits.json")  # another machine's fastest paths: after this one's
    from edgezoo.pipelines.table_bench import render
    from edgezoo.pipelines.tables import splice

    page = "# x\n<!-- table:bench:start -->\nold\n<!-- table:bench:end -->\ntail\n"
    out = splice(page, render(results, tmp_path), "bench")
    assert "\nold\n" not in out and "**1.00**" in out and out.endswith("<!-- table:bench:end -->\ntail\n")
    assert out.index("`fp`: Test CPU") < out.index("**Fastest faithful path (128 px") < out.index("`old`: Old CPU")
    assert out.count("Old CPU") == 1 and "(80, 32)" in out  # only old's fastest-path part, after fp's
    assert "**Fastest faithful path (128 px, digits-trained models" in out and "(80, 128)" in out
    assert "interleaved in turns of 10 calls" in out


def test_fastest_faithful_path_is_agreement_gated(tmp_path) -> None:
    """An int8 record below 99% top-1 agreement is never the fastest path; the digits report gets its own part."""
    from edgezoo.bench.markdown import fastest, markdown

    report = _synthetic_report()
    for r in report["records"]:
        r["agreement"] = {"top1_agreement": 0.95 if (r["model"], r["runtime"]) == ("ez_a", "ort-int8") else 1.0}
    assert {m: r["runtime"] for m, r in fastest(report).items()} == {"ez_a": "ort", "ez_b": "ort-int8",
                                                                    "ez_c": "ort-int8"}
    text = markdown(digits=report)
    assert "Fastest faithful path" in text and "| `ez_a` (80, 224) | **2.00** (100.0%) | 1.00 (95.0%) |" in text


# --- the CLI ------------------------------------------------------------------------------------

def test_cli_bench_json_table_and_plot(tmp_path, capsys) -> None:
    out, png = tmp_path / "res", tmp_path / "pareto.png"
    code = main(["bench", SMALL, "--runtime", "torch", "--img-size", "32", "--runs", "3", "--warmup", "1",
                 "--threads", "1", "--batch", "1,2", "--json", f"{out}/", "--plot", str(png), "-q"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "ez_efficientvit_m0" in printed and "p50 ms" in printed
    files = list(out.glob("*.json"))
    assert len(files) == 1
    report = json.loads(files[0].read_text())
    validate_report(report)
    assert files[0].stem == report["fingerprint"]["id"]
    rows = [(r["runtime"], r["batch"], r["status"]) for r in report["records"]]
    assert rows == [("torch", 1, "ok"), ("torch", 2, "ok")]
    _assert_png(png)


def test_cli_compare_timm_torch(tmp_path, capsys) -> None:
    """The pair has the same weights and outputs; both timed interleaved; the ratio is reported."""
    js = tmp_path / "timm.json"
    assert main(["bench", SMALL, "--compare-timm", "--runtime", "torch", "--img-size", "64", "--runs", "4",
                 "--warmup", "1", "--threads", "1", "--json", str(js), "-q"]) == 0
    recs = json.loads(js.read_text())["records"]
    ez, ref = recs
    assert ez["role"] == "edgezoo" and ref["role"] == "timm" and ref["pair_of"] == SMALL
    c = ez["compare"]
    assert c["timm_model"] == "efficientvit_m0" and c["outputs_rel_err"] <= 1e-5
    assert c["ratio_p50"] == pytest.approx(ez["latency_ms"]["p50"] / ref["latency_ms"]["p50"], rel=1e-3)
    assert ez["runs"] == ref["runs"] == 4
    assert "x efficientvit_m0" in capsys.readouterr().out


def test_cli_merge_adds_records_and_replaces_a_remeasured_one(tmp_path, capsys) -> None:
    """``--merge`` keeps the report's records, adds the new ones, replaces one measured again (in place),
    and notes the merged run; a report from another machine or no --json is refused in one line."""
    out = tmp_path / "res"
    base = ["bench", SMALL, "--runtime", "torch", "--img-size", "32", "--runs", "3", "--warmup", "1", "--threads", "1",
            "--json", f"{out}/", "-q"]
    assert main([*base, "--batch", "1,2"]) == 0
    path = next(out.glob("*.json"))
    first = json.loads(path.read_text())
    assert main([*base, "--batch", "2,3", "--merge"]) == 0
    merged = json.loads(path.read_text())
    validate_report(merged)
    assert [r["batch"] for r in merged["records"]] == [1, 2, 3]
    assert merged["records"][0] == first["records"][0]  # untouched
    assert merged["records"][1]["latency_ms"] != first["records"][1]["latency_ms"]  # batch 2 timed again
    assert merged["started"] == first["started"]
    (run,) = merged["merged_runs"]
    assert run["batches"] == [2, 3] and run["records"] == 2 and "--merge" in run["note"]
    assert main([*base, "--batch", "1"]) == 0  # without --merge the file is this run's alone
    assert [r["batch"] for r in json.loads(path.read_text())["records"]] == [1]

    capsys.readouterr()
    other = json.loads(path.read_text())
    other["fingerprint"]["id"] = "another-machine"
    for r in other["records"]:
        r["fingerprint"] = "another-machine"
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps(other))
    assert "holds fingerprint another-machine" in _error(capsys, [*base[:-3], "--json", str(foreign), "-q",
                                                                  "--merge"])
    assert "add --json" in _error(capsys, [*base[:-3], "--merge"])
    junk = tmp_path / "junk.json"
    junk.write_text("{}")
    assert "is not a benchmark report" in _error(capsys, [*base[:-3], "--json", str(junk), "--merge"])


@pytest.mark.slow
def test_cli_compare_timm_ort(tmp_path) -> None:
    """Both models through the same ONNX exporter and onnxruntime."""
    js = tmp_path / "timm.json"
    assert main(["bench", SMALL, "--compare-timm", "--runtime", "ort", "--img-size", "64", "--runs", "10",
                 "--threads", "1", "--json", str(js), "-q"]) == 0
    ez = json.loads(js.read_text())["records"][0]
    assert ez["status"] == "ok" and ez["compare"]["ratio_p50"] > 0


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgezoo: error: ") and "\n" not in err
    return err


def test_cli_bad_input_one_line_errors(tmp_path, capsys) -> None:
    assert "did you mean ort" in _error(capsys, ["bench", SMALL, "--runtime", "onnxrt"])
    assert "--threads: expected a whole number >= 1" in _error(capsys, ["bench", SMALL, "--threads", "0"])
    assert "--batch takes comma-separated integers" in _error(capsys, ["bench", SMALL, "--batch", "1,x"])
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    assert "cannot read checkpoint" in _error(capsys, ["bench", str(corrupt), "--model", SMALL])
    import torch

    import edgezoo

    wrong = tmp_path / "wrong.pth"
    torch.save({"arch": SMALL, "model": edgezoo.create_model("ez_shvit_s1").state_dict()}, wrong)
    assert "does not match" in _error(capsys, ["bench", str(wrong)])
    assert "no timm counterpart" in _error(capsys, ["bench", "ez_focalnet_edge_xs", "--compare-timm"])
    assert "name models" in _error(capsys, ["bench"])
    assert "--repeat: expected a whole number >= 1" in _error(capsys, ["bench", SMALL, "--repeat", "0"])


def test_op_profile_counts_kernels_per_run(tmp_path) -> None:
    """onnxruntime's profiler summed per op type: one MatMul and one Softmax kernel a run, warm-up left out."""
    from onnx import TensorProto, helper, numpy_helper, save

    from edgezoo.bench.op_profile import op_profile, op_profile_table

    w = numpy_helper.from_array(np.ones((8, 8), np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Softmax", ["m"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])], [w])
    path = tmp_path / "tiny.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    prof = op_profile(path, np.zeros((1, 4, 8), np.float32), threads=1, runs=7)
    assert prof["runs"] == 7 and prof["nodes_per_run"] == 2
    ops = {row["op"]: row for row in prof["by_op"]}
    assert set(ops) == {"MatMul", "Softmax"} and ops["MatMul"]["count"] == ops["Softmax"]["count"] == 1
    assert prof["kernel_ms_per_run"] == pytest.approx(sum(r["ms"] for r in prof["by_op"]), abs=1e-3)
    assert sorted((k["op"], k["shapes"].split(";")[0]) for k in prof["top_kernels"]) == [("MatMul", "1x4x8"),
                                                                                          ("Softmax", "1x4x8")]
    report = {"records": [{"model": "a", "runtime": "ort", "img_size": 8, "role": "edgezoo", "op_profile": prof},
                          {"model": "timm_a", "runtime": "ort", "img_size": 8, "role": "timm", "pair_of": "a",
                           "op_profile": prof}]}
    text = op_profile_table(report)
    assert "timm_a" in text and "timm ms/run" in text and text.count("MatMul") == 1


def test_artifacts_are_reused_from_the_work_folder_only_for_the_same_model(tmp_path, monkeypatch) -> None:
    """A second benchmark with the same --work reuses the exported file; other weights export anew."""
    import torch

    import edgezoo.export
    from edgezoo.bench.runtime import Artifacts
    from edgezoo.export import prepare

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 10))
    src = prepare(net, img_size=32)
    first = Artifacts(src, tmp_path).get("onnx", "fp32", 1)
    stamp, mtime = first.with_name(first.name + ".bench.json"), first.stat().st_mtime_ns
    assert stamp.is_file()

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the artifact was reusable")

    monkeypatch.setattr(edgezoo.export, "export", no_export)
    again = Artifacts(src, tmp_path)
    assert again.get("onnx", "fp32", 1) == first and first.stat().st_mtime_ns == mtime
    # the format's defaults are part of the key: a changed default (a new option) is a new artifact
    from edgezoo.export.onnx import OnnxFormat

    opset, before = OnnxFormat.options["opset"], again.digest("onnx", "fp32", 1, {})
    monkeypatch.setitem(OnnxFormat.options, "opset", dataclasses.replace(opset, default=opset.default + 1))
    assert Artifacts(src, tmp_path).digest("onnx", "fp32", 1, {}) != before
    monkeypatch.setitem(OnnxFormat.options, "opset", opset)
    with torch.no_grad():
        next(src.model.parameters()).add_(1.0)
    with pytest.raises(AssertionError, match="exported again"):
        Artifacts(src, tmp_path).get("onnx", "fp32", 1)
