"""``edgezoo bench --remote``: a real OpenSSH server on the loopback, a target Python that cannot import
edgezoo, the one-line errors of bad targets, and the native runners' parsers on output in each tool's
documented format.

What runs for real here: ssh/scp and the Python runner. adb, the native runners and trtexec are
checked only against their documented output (:mod:`edgezoo.bench.native`); the non-executable runner
binary is pushed and run for real.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from edgezoo.bench.native import (
    native_command,
    parse_benchmark_model,
    parse_executor_runner,
    parse_ort_perf_test,
    parse_trtexec,
)
from edgezoo.bench.targets import parse_target
from edgezoo.cli.main import main
from edgezoo.errors import InvalidArgumentError
from tests.sshd import SSHD, Sshd, bare_python, start_sshd

needs_sshd = pytest.mark.skipif(not SSHD.exists(), reason="no /usr/sbin/sshd: run scripts/ensure_sshd.sh")


# -- the native runners' output, in each tool's documented format -------------------------------------------------

ORT_PERF_TEST = """\
Setting intra_op_num_threads to 2
Session creation time cost: 0.0394 s
First inference time cost: 3 ms
Total inference time cost: 0.1231 s
Total inference requests: 100
Average inference time cost total: 1.231 ms
Total inference run time: 0.1245 s
Number of inferences per second: 803.2
Avg CPU usage: 96 %
Peak working set size: 38211584 bytes
Min Latency: 0.00112 s
Max Latency: 0.00201 s
P50 Latency: 0.00121 s
P90 Latency: 0.00135 s
P95 Latency: 0.0014 s
P99 Latency: 0.0019 s
P999 Latency: 0.00201 s
"""

EXECUTOR_RUNNER = """\
I 00:00:00.000512 executorch:executor_runner.cpp:182] Model file a3.pte is loaded.
I 00:00:00.000530 executorch:executor_runner.cpp:191] Using method forward
I 00:00:00.081920 executorch:executor_runner.cpp:257] Model executed successfully 50 time(s) in 61.250000 ms.
I 00:00:00.081950 executorch:executor_runner.cpp:266] 1 outputs:
Output 0: tensor(sizes=[1, 10], [0.1, -0.3, ...])
"""

BENCHMARK_MODEL = """\
INFO: Num threads: [4]
INFO: The input model file size (MB): 4.08
INFO: Initialized session in 4.532ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=366 first=2410 curr=1302 min=1250 max=2410 avg=1363.5 std=120
INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=739 first=1301 curr=1290 min=1241 max=1980 avg=1352.2 std=72
INFO: Inference timings in us: Init: 4532, First inference: 2410, Warmup (avg): 1363.5, Inference (avg): 1352.2
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE
INFO: Memory footprint delta from the start of the tool (MB): init=4.2 overall=6.1
INFO: Overall peak memory footprint (MB) via periodic monitoring: 12.5
"""

TRTEXEC = """\
[12/06/2026-10:00:00] [I] [TRT] Loaded engine size: 5 MiB
[12/06/2026-10:00:00] [I] Engine built in 25.123 sec.
[12/06/2026-10:00:33] [I] Timing trace has 2437 queries over 3.00366 s
[12/06/2026-10:00:33] [I] === Performance summary ===
[12/06/2026-10:00:33] [I] Throughput: 812.34 qps
[12/06/2026-10:00:33] [I] Latency: min = 1.1 ms, max = 2.0 ms, mean = 1.2 ms, median = 1.19 ms, \
percentile(90%) = 1.3 ms, percentile(99%) = 1.8 ms
[12/06/2026-10:00:33] [I] Enqueue Time: min = 0.2 ms, max = 0.5 ms, mean = 0.25 ms, median = 0.24 ms, \
percentile(90%) = 0.3 ms, percentile(99%) = 0.45 ms
[12/06/2026-10:00:33] [I] H2D Latency: min = 0.01 ms, max = 0.05 ms, mean = 0.02 ms, median = 0.02 ms, \
percentile(90%) = 0.03 ms, percentile(99%) = 0.04 ms
[12/06/2026-10:00:33] [I] GPU Compute Time: min = 0.9 ms, max = 1.7 ms, mean = 1.0 ms, median = 0.99 ms, \
percentile(90%) = 1.1 ms, percentile(99%) = 1.6 ms
"""


def test_native_parsers_read_each_tools_documented_output() -> None:
    ort = parse_ort_perf_test(ORT_PERF_TEST)
    assert ort["latency_ms"] == {"p50": 1.21, "p90": 1.35, "p99": 1.9, "min": 1.12, "mean": 1.231}
    assert (ort["runs"], ort["load_ms"], ort["peak_memory_mb"]) == (100, 39.4, 38.2)
    older = parse_ort_perf_test(ORT_PERF_TEST.replace("cost total:", "cost:"))  # before 1.20: no "total"
    assert older["latency_ms"]["mean"] == 1.231

    et = parse_executor_runner(EXECUTOR_RUNNER)
    assert et == {"latency_ms": {"mean": 1.225}, "runs": 50}  # the tool prints a total only

    lite = parse_benchmark_model(BENCHMARK_MODEL)  # the timed runs' line, not the warm-up's
    assert lite["latency_ms"] == {"min": 1.241, "mean": 1.3522, "std": 0.072}
    assert (lite["runs"], lite["load_ms"], lite["peak_memory_mb"]) == (739, 4.532, 12.5)
    same = parse_benchmark_model("INFO: count=5 first=9 curr=9 min=9 max=9 avg=9 std=0\n"
                                 "INFO: count=20 curr=800(all same)")
    assert same["latency_ms"] == {"min": 0.8, "mean": 0.8, "p50": 0.8}

    trt = parse_trtexec(TRTEXEC)  # host latency, not the H2D or GPU-compute lines
    assert trt["latency_ms"] == {"min": 1.1, "p50": 1.19, "p90": 1.3, "p99": 1.8, "mean": 1.2}
    assert (trt["gpu_compute_mean_ms"], trt["engine_build_s"], trt["runs"]) == (1.0, 25.123, 2437)
    assert parse_trtexec(TRTEXEC.replace("Engine built in 25.123 sec.",
                                         "Engine generation completed in 31.5 seconds."))["engine_build_s"] == 31.5

    for parse in (parse_ort_perf_test, parse_executor_runner, parse_benchmark_model, parse_trtexec):
        with pytest.raises(ValueError, match="no "):
            parse("Segmentation fault\n")


def test_native_commands_carry_the_protocol() -> None:
    cmd = native_command("trtexec", "/usr/src/tensorrt/bin/trtexec", "/w/a0.onnx", runs=200, warmup=10, threads=4,
                         seconds=10, engine="/w/a0.engine", precision="fp16", plugins="/w/bin/libez.so")
    assert "--onnx=/w/a0.onnx --saveEngine=/w/a0.engine --iterations=200" in cmd
    assert cmd.endswith("--fp16 --plugins=/w/bin/libez.so")
    cmd = native_command("benchmark_model", "/data/local/tmp/b m", "/w/a1.tflite", runs=50, warmup=5, threads=4,
                         seconds=10)
    assert cmd.startswith("'/data/local/tmp/b m' --graph=/w/a1.tflite --num_runs=50 --warmup_runs=5 --num_threads=4")


def test_target_specs_and_the_targets_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEZOO_TARGETS", str(tmp_path / "none.yaml"))  # no default file: URLs need none
    t = parse_target("ssh://pi@raspberrypi:2222")
    assert (t.transport, t.host, t.port, t.python) == ("ssh", "pi@raspberrypi", 2222, "python3")
    assert parse_target("ssh://[fe80::1]").host == "[fe80::1]"
    phone = parse_target("adb://R58M12")
    assert (phone.transport, phone.serial, phone.work) == ("adb", "R58M12", "/data/local/tmp/edgezoo-bench")
    runner = tmp_path / "benchmark_model"
    runner.write_bytes(b"\x7fELF")
    (tmp_path / "t.yaml").write_text(
        "ssh_options: [-F, /dev/null]\n"
        "targets:\n"
        "  jetson: {transport: ssh://ubuntu@jetson.local, threads: 6, cooldown: 30, ssh_options: [-i, k],\n"
        "           runners: {trtexec: target:/usr/src/tensorrt/bin/trtexec}}\n"
        f"  pixel: {{transport: adb, python: null, runners: {{benchmark_model: {runner}}}}}\n")
    jetson = parse_target("jetson", tmp_path / "t.yaml")
    assert (jetson.threads, jetson.cooldown, jetson.ssh_options) == (6, 30.0, ["-F", "/dev/null", "-i", "k"])
    assert jetson.runners == {"trtexec": "target:/usr/src/tensorrt/bin/trtexec"}
    pixel = parse_target("pixel", tmp_path / "t.yaml")
    assert (pixel.python, pixel.runners["benchmark_model"]) == (None, str(runner))
    for bad, match in (("nope", "targets there: jetson, pixel"), ("http://x", "not ssh://"),
                       ("ssh://h:70000", "port 70000")):
        with pytest.raises(InvalidArgumentError, match=match):
            parse_target(bad, tmp_path / "t.yaml")
    (tmp_path / "bad.yaml").write_text("targets:\n  x: {transport: adb, runners: {trtexec: /no/such/file}}\n")
    with pytest.raises(InvalidArgumentError, match="runner trtexec /no/such/file is not a file here"):
        parse_target("x", tmp_path / "bad.yaml")


# -- a real sshd on the loopback ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Sshd:
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def target_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The target's Python: every package of this environment but edgezoo."""
    py = bare_python(tmp_path_factory.mktemp("venv") / "py")
    assert subprocess.run([str(py), "-c", "import edgezoo"], capture_output=True).returncode == 1
    assert subprocess.run([str(py), "-c", "import onnxruntime, numpy"], capture_output=True).returncode == 0
    return py


def targets_file(path: Path, sshd: Sshd, python: Path | None, *, port: int | None = None, key: Path | None = None,
                 work: Path | None = None) -> Path:
    entry = {"transport": f"ssh://{sshd.user}@127.0.0.1:{port or sshd.port}", "python": str(python) if python else None,
             "work": str(work or path.parent / "remote-work"), "threads": 1, "ssh_options": sshd.ssh_options(key)}
    path.write_text(json.dumps({"targets": {"loop": entry}}))  # JSON is YAML
    return path


def tiny_onnx(path: Path) -> Path:
    """A two-node ONNX graph (global average pool, flatten): an artifact made without edgezoo's exporters."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Flatten", ["p"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def one_line_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("edgezoo: error: ")
    return err


@needs_sshd
def test_an_artifact_runs_there_with_the_protocol_and_the_targets_fingerprint(tmp_path: Path, sshd: Sshd,
                                                                            target_python: Path, capsys) -> None:
    onnx_file = tiny_onnx(tmp_path / "tiny.onnx")
    tf = targets_file(tmp_path / "t.yaml", sshd, target_python)
    argv = ["bench", str(onnx_file), "--remote", "loop", "--targets", str(tf), "--runs", "30", "--warmup", "2",
            "--json", str(tmp_path / "out.json"), "-q"]
    assert main(argv) == 0
    report = json.loads((tmp_path / "out.json").read_text())
    (rec,) = report["records"]
    fp = rec["target_fingerprint"]
    assert (rec["status"], rec["protocol"], rec["runtime"], rec["img_size"], rec["runs"]) == ("ok", "edgezoo", "ort",
                                                                                               8, 30)
    assert fp["id"] == rec["fingerprint"] == report["fingerprint"]["id"] and rec["threads"] == fp["threads"] == 1
    assert "onnxruntime" in fp["versions"] and "edgezoo" not in fp["versions"]  # the target's own packages
    version = "import platform; print(platform.python_version())"
    assert fp["python"] == subprocess.run([str(target_python), "-c", version], capture_output=True,
                                          text=True).stdout.strip()
    lat = rec["latency_ms"]
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] and lat["std"] >= 0 and rec["load_ms"] > 0
    from edgezoo.bench.report import table, validate_report

    validate_report(report)
    assert "ort" in capsys.readouterr().out
    # a native tool's record (a mean only) fits the same report and table
    native = {**rec, "runtime": "executorch", "protocol": "executor_runner", **parse_executor_runner(EXECUTOR_RUNNER)}
    report["records"].append(native)
    validate_report(report)
    assert "executor_runner mean 1.23" in table(report)


@needs_sshd
def test_unreachable_port_is_one_line(tmp_path: Path, sshd: Sshd, capsys) -> None:
    from tests.sshd import free_port

    tf = targets_file(tmp_path / "t.yaml", sshd, None, port=free_port())
    err = one_line_error(capsys, ["bench", str(tiny_onnx(tmp_path / "m.onnx")), "--remote", "loop",
                                  "--targets", str(tf)])
    assert "cannot reach ssh://" in err and "Connection refused" in err


@needs_sshd
def test_a_key_the_server_does_not_know_is_refused_in_one_line(tmp_path: Path, sshd: Sshd, capsys) -> None:
    from tests.sshd import keygen

    tf = targets_file(tmp_path / "t.yaml", sshd, None, key=keygen(tmp_path / "stranger"))
    err = one_line_error(capsys, ["bench", str(tiny_onnx(tmp_path / "m.onnx")), "--remote", "loop",
                                  "--targets", str(tf)])
    assert "refused authentication" in err and "Permission denied" in err


@needs_sshd
def test_a_runtime_missing_there_names_the_package(tmp_path: Path, sshd: Sshd, capsys) -> None:
    numpy_only = bare_python(tmp_path / "np", ("numpy",))
    tf = targets_file(tmp_path / "t.yaml", sshd, numpy_only)
    err = one_line_error(capsys, ["bench", str(tiny_onnx(tmp_path / "m.onnx")), "--remote", "loop",
                                  "--targets", str(tf)])
    assert "onnxruntime is missing for runtime ort" in err and "pip install onnxruntime there" in err


@needs_sshd
def test_a_runner_binary_for_another_cpu_is_not_executable(tmp_path: Path, sshd: Sshd, capsys) -> None:
    """An aarch64 ELF header on this x86 host: pushed, made executable, and refused by the kernel (exit 126)."""
    binary = tmp_path / "onnxruntime_perf_test"
    header = b"\x7fELF\x02\x01\x01" + bytes(9) + (2).to_bytes(2, "little") + (183).to_bytes(2, "little")  # EM_AARCH64
    binary.write_bytes(header + bytes(64 - len(header)))
    tf = targets_file(tmp_path / "t.yaml", sshd, None)
    err = one_line_error(capsys, ["bench", str(tiny_onnx(tmp_path / "m.onnx")), "--remote", "loop",
                                  "--targets", str(tf), "--runner", f"onnxruntime_perf_test={binary}"])
    assert "runner binary" in err and "is not executable there" in err


@needs_sshd
def test_no_space_in_the_work_folder_is_one_line(tmp_path: Path, sshd: Sshd, target_python: Path,
                                                 capsys) -> None:
    """A sparse 1 TB artifact (no disk used here) against the target's free space, read with ``df``."""
    big = tmp_path / "big.onnx"
    with big.open("wb") as fh:
        fh.truncate(2**40)
    tf = targets_file(tmp_path / "t.yaml", sshd, target_python)
    err = one_line_error(capsys, ["bench", str(big), "--remote", "loop", "--targets", str(tf)])
    assert "no space for this run" in err and "MB are free" in err


@needs_sshd
def test_a_connection_lost_mid_run_keeps_the_finished_records(tmp_path: Path, sshd: Sshd, target_python: Path) -> None:
    from edgezoo.bench import Protocol, parse_runtimes
    from edgezoo.bench.remote import RemoteError, bench_remote

    files = [tiny_onnx(tmp_path / f"m{i}.onnx") for i in range(3)]
    saved: list[dict] = []

    def cut(report: dict) -> None:  # the first record landed: drop the connection that carries the run
        saved.append(report)
        for pid in sshd.connection_pids():
            subprocess.run(["kill", "-9", str(pid)], check=False)

    with pytest.raises(RemoteError, match="lost"):
        bench_remote([str(f) for f in files], parse_runtimes("ort"), "loop",
                     targets_file=targets_file(tmp_path / "t.yaml", sshd, target_python),
                     protocol=Protocol(warmup=1, runs=10**6, max_seconds=1.5), on_progress=cut)
    assert len(saved) == 1 and [r["status"] for r in saved[0]["records"]] == ["ok"]


@needs_sshd
@pytest.mark.slow  # five exports and an ExecuTorch lowering: minutes on 2 cores
def test_the_five_families_and_executorch_agree_with_pytorch_there(tmp_path: Path, sshd: Sshd, target_python: Path,
                                                                   capsys) -> None:
    from edgezoo.bench import smallest_per_family

    tf = targets_file(tmp_path / "t.yaml", sshd, target_python)
    common = ["--remote", "loop", "--targets", str(tf), "--img-size", "32", "--runs", "20", "--agree", "20", "-q",
              "--work", str(tmp_path / "work")]
    assert main(["bench", *smallest_per_family(), "--runtime", "ort", *common, "--json", str(tmp_path / "a.json"),
                 "--plot", str(tmp_path / "pareto.png")]) == 0
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"  # the local report's chart, from remote records
    assert main(["bench", "ez_efficientvit_m0", "--runtime", "executorch:fp32", *common,
                 "--json", str(tmp_path / "b.json")]) == 0
    records = [r for f in ("a.json", "b.json") for r in json.loads((tmp_path / f).read_text())["records"]]
    assert sorted({r["family"] for r in records[:5]}) == sorted({"cnn_attention", "single_head_vit", "cascaded_group",
                                                                 "focal_modulation", "linear_vit"})
    assert [r["runtime"] for r in records] == ["ort"] * 5 + ["executorch"]
    for rec in records:
        assert (rec["status"], rec["protocol"], rec["target"]) == ("ok", "edgezoo", "loop"), rec
        assert rec["fingerprint"] == rec["target_fingerprint"]["id"]
        assert "edgezoo" not in rec["target_fingerprint"]["versions"]
        assert rec["agreement"]["top1_agreement"] == 1.0 and rec["agreement"]["images"] == 20, rec["model"]


def test_the_runner_and_what_it_ships_need_no_edgezoo() -> None:
    """The runner imports the standard library, numpy, a runtime's own package and its shipped siblings only;
    every file it is shipped with exists."""
    import ast
    import sys

    from edgezoo.bench import remote

    folder = Path(remote.__file__).parent
    allowed = set(sys.stdlib_module_names) | {"numpy", "onnxruntime", "executorch", "openvino", "ai_edge_litert",
                                              "torch", "protocol", "fingerprint", "memory"}
    for name in remote.SHIPPED:
        tree = ast.parse((folder / name).read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert names - {""} <= allowed, f"{name} imports {names - allowed}"


@pytest.mark.slow
def test_the_demo_adds_the_targets_columns(tmp_path: Path, sshd: Sshd, target_python: Path) -> None:
    """``edgezoo demo --remote``: each model's files timed on the target too, its columns beside this machine's."""
    from edgezoo.pipelines.demo import run_demo

    tf = targets_file(tmp_path / "t.yaml", sshd, target_python)
    done = run_demo(tmp_path / "demo", families=["focal_modulation"], epochs=1, formats=["onnx"], jobs=0,
                    progress=False, protocol={"warmup": 2, "runs": 20, "max_seconds": 0.5}, remote="loop",
                    targets=str(tf))
    assert not done["failed"]
    saved = json.loads(Path(done["report_json"]).read_text())["results"][0]
    remote = [r for r in saved["remote"]["records"] if r["status"] == "ok"]
    assert remote and all(r["target"] == "loop" and r["protocol"] == "edgezoo" for r in remote)
    assert all(r["agreement"]["top1_agreement"] >= 0.99 for r in remote)
    assert "`ort fp32 @ loop` ms" in Path(done["report_md"]).read_text()
