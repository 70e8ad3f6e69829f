"""The machine fingerprint: standard library only, the same ids for the results already recorded, and the CPU
read on Linux, macOS (``sysctl``) and Windows (the registry, else ``platform``)."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest

from edgezoo.bench import fingerprint as fpmod

RESULTS = Path(__file__).resolve().parents[1] / "results"


def recorded() -> list[dict]:
    found = []
    for path in sorted(RESULTS.rglob("*.json")):
        data = json.loads(path.read_text())
        fp = data.get("fingerprint") if isinstance(data, dict) else None
        if isinstance(fp, dict) and "id" in fp and "cpu" in fp:
            found.append(fp)
    return found


def test_ids_of_recorded_results_do_not_change() -> None:
    fps = recorded()
    assert len(fps) >= 10, "expected the recorded benchmark reports under results/"
    for fp in fps:
        assert fpmod.fingerprint_id(fp) == fp["id"]


def test_this_machine_has_a_stable_id() -> None:
    a, b = fpmod.fingerprint(2), fpmod.fingerprint(1)
    assert a["id"] == b["id"] and a["threads"] == 2 and b["threads"] == 1
    assert a["cpu"] and a["logical_cores"] >= 1 and "torch" in a["versions"]


def test_macos_cpu_and_flags_from_sysctl(monkeypatch) -> None:
    outputs = {  # what `sysctl` prints on an Apple M2 (arm64)
        ("sysctl", "-n", "machdep.cpu.brand_string"): "Apple M2",
        ("sysctl", "-n", "machdep.cpu.features", "machdep.cpu.leaf7_features"): "",
        ("sysctl", "hw.optional"): "hw.optional.arm.FEAT_BF16: 1\nhw.optional.arm.FEAT_I8MM: 1\n"
                                   "hw.optional.arm.FEAT_DotProd: 1\nhw.optional.neon: 1\nhw.optional.arm.FEAT_SME: 0",
    }
    monkeypatch.setattr(fpmod, "_read", lambda path: "")
    monkeypatch.setattr(fpmod, "_command", lambda *argv: outputs.get(argv, ""))
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    info = fpmod._cpuinfo()
    assert fpmod._cpu_model(info) == "Apple M2"
    flags = fpmod.cpu_flags(info)
    assert flags["bf16"] and flags["i8mm"] and flags["asimddp"] and flags["asimd"] and not flags["avx2"]


def test_windows_cpu_without_proc(monkeypatch) -> None:
    monkeypatch.setattr(fpmod, "_read", lambda path: "")
    monkeypatch.setattr(platform, "system", lambda: "Windows")
    monkeypatch.setattr(platform, "processor", lambda: "Intel64 Family 6 Model 154 Stepping 3, GenuineIntel")
    info = fpmod._cpuinfo()
    assert info == "" and fpmod.cpu_flags(info) == {}
    try:
        import winreg  # noqa: F401  (on Windows the registry names the CPU)
    except ImportError:
        assert fpmod._cpu_model(info) == "Intel64 Family 6 Model 154 Stepping 3, GenuineIntel"


@pytest.mark.parametrize(("release", "expected"), [("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref",
                                                   "R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref")])
def test_jetson_release_is_read(monkeypatch, release: str, expected: str) -> None:
    files = {"/etc/nv_tegra_release": release + "\n"}
    monkeypatch.setattr(fpmod, "_read", lambda path: files.get(path, ""))
    monkeypatch.setattr(fpmod, "_command", lambda *argv: "NV Power Mode: MAXN\n0" if argv[0] == "nvpmodel" else "")
    facts = fpmod.device_facts()
    assert facts["l4t"] == expected and facts["power_mode"] == "NV Power Mode: MAXN 0"
