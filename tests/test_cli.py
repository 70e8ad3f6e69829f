"""The ``edgezoo`` console script: list, info and the unknown-name error."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgezoo.cli import main


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgezoo.cli", *args], capture_output=True, text=True, timeout=300)


def test_list_table(capsys) -> None:
    assert main(["list", "resnet50", "--family", "cnn_attention"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["model", "family", "params", "MACs", "input"]
    rows = {line.split()[0]: line.split() for line in out[2:]}
    assert set(rows) == {f"ez_resnet50_{a}" for a in ("se", "cbam", "eca", "triplet", "ela", "ca")}
    assert rows["ez_resnet50_se"][2:] == ["28.09M", "4.09G", "224x224"]


def test_list_json_glob(capsys) -> None:
    assert main(["list", "ez_mobilenetv2_*", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 6 and all(r["family"] == "cnn_attention" for r in rows)


def test_info(capsys) -> None:
    assert main(["info", "ez_mobilenetv2_eca"]) == 0
    out = capsys.readouterr().out
    assert "edgezoo.blocks.cnn_attention.ECA" in out
    assert "MACs" in out and "first_conv: stem.conv" in out
    assert "stages.6     channels 320   stride 32" in out


@pytest.mark.parametrize("args", [["info", "ez_resnet50_sse"], ["list", "--family", "nope"], ["list", "zzz"]])
def test_bad_input_is_one_line_exit_2(args) -> None:
    proc = _run(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgezoo: error:"), proc.stderr
    if args[0] == "info":
        assert "did you mean: ez_resnet50_se" in lines[0]
