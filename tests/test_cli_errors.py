"""Every ``edgezoo`` command turns bad input into one line, ``edgezoo: error: ...``, with exit status 2.

One table, every command: missing, unreadable and non-checkpoint files, unwritable outputs, impossible sizes
and unknown names. Each case runs in this process through the CLI's entry point (the one error boundary,
:func:`edgezoo.cli.main.main`), and fails before any long work starts (each case takes well under a second).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgezoo.cli.main import main

CNN = "ez_resnet18_eca"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad-input")
    text = root / "notes.pth"
    text.write_text("these are notes, not weights\n")
    yaml_list = root / "recipe.yaml"
    yaml_list.write_text("- not\n- a mapping\n")
    return {"text": text, "dir": root, "yaml": yaml_list, "missing": root / "missing.pth",
            "unwritable": Path("/proc/edgezoo-cannot-write-here")}


CASES: dict[str, tuple[str, str]] = {
    # name: (command line, with {text} {dir} {yaml} {missing} {unwritable} filled in; text the line must hold)
    "list unknown family": ("list --family nope", "unknown family 'nope'"),
    "list no match": ("list zzz_no_such", "no model matches"),
    "info unknown model": ("info ez_nope", "unknown model 'ez_nope'"),
    "demo negative size": ("demo --img-size -5", "--img-size: expected a whole number >= 1, got -5"),
    "demo unknown family": ("demo --families nope", "unknown demo family"),
    "demo unknown format": ("demo --formats onx", "did you mean onnx"),
    "demo unwritable out": ("demo --quick --out {unwritable}", "edgezoo-cannot-write-here"),
    "train unknown model": ("train --model ez_nope --data digits", "unknown model 'ez_nope'"),
    "train zero epochs": (f"train --model {CNN} --data digits --epochs 0", "--epochs: expected a whole number >= 1"),
    "train missing data": (f"train --model {CNN} --data {{missing}}", "dataset not found"),
    "train missing recipe": (f"train {{missing}}.yaml --model {CNN} --data digits", "config file not found"),
    "train recipe not a mapping": (f"train {{yaml}} --model {CNN} --data digits", "must hold a mapping"),
    "train unwritable output": (f"train --model {CNN} --data digits --epochs 1 --output {{unwritable}}",
                                "edgezoo-cannot-write-here"),
    "validate missing checkpoint": (f"validate {CNN} --checkpoint {{missing}} --data digits", "checkpoint not found"),
    "validate text as checkpoint": (f"validate {CNN} --checkpoint {{text}} --data digits",
                                    "not a PyTorch/safetensors weights file"),
    "validate negative size": (f"validate {CNN} --checkpoint {{text}} --data digits --img-size -5",
                               "--img-size: expected a whole number >= 1"),
    "sweep unknown mixer": ("sweep --mixers nope", "unknown sweep mixer 'nope'"),
    "sweep unknown size": ("sweep --size x", "unknown size 'x'"),
    "sweep negative size": ("sweep --img-size -5", "--img-size: expected a whole number >= 1"),
    "export text as checkpoint": ("export {text}", "not a PyTorch/safetensors weights file"),
    "export folder as checkpoint": ("export {dir}", "is not a checkpoint"),
    "export missing checkpoint": ("export {missing}", "checkpoint not found"),
    "export unwritable out": ("export ez_efficientvit_m0 --out {unwritable}", "--out /proc/edgezoo-cannot-write-here"),
    "export negative size": ("export ez_efficientvit_m0 --img-size -5", "--img-size: expected a whole number >= 1"),
    "export unknown model": ("export ez_nope", "unknown model 'ez_nope'"),
    "export unknown format": ("export ez_efficientvit_m0 --format onx", "did you mean onnx"),
    "bench missing file": ("bench nothere.onnx", "file not found: nothere.onnx"),
    "bench text as checkpoint": ("bench {text}", "not a PyTorch/safetensors weights file"),
    "bench negative size": ("bench ez_efficientvit_m0 --img-size -5", "--img-size: expected a whole number >= 1"),
    "bench unknown runtime": ("bench ez_efficientvit_m0 --runtime orrt", "did you mean ort"),
    "bench unwritable json": ("bench ez_efficientvit_m0 --runtime torch --json {unwritable}/x.json",
                              "--json /proc/edgezoo-cannot-write-here"),
    "bench zero threads": ("bench ez_efficientvit_m0 --threads 0", "--threads: expected a whole number >= 1"),
    "bench zero seconds": ("bench ez_efficientvit_m0 --seconds 0", "--seconds: expected a number > 0"),
    "unknown command": ("nosuchcommand", "invalid choice: 'nosuchcommand'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_with_exit_status_2(case: str, files: dict[str, Path], capsys) -> None:
    line, expected = CASES[case]
    code = main(line.format(**files).split())
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code}: {err}"
    assert len(lines) == 1 and lines[0].startswith("edgezoo: error: "), err
    assert expected.format(**files) in lines[0], lines[0]
    assert "Traceback" not in out + err


def test_every_command_has_a_bad_input_case() -> None:
    from edgezoo.cli.main import build_parser

    commands = set(build_parser()._subparsers._group_actions[0].choices)  # the registered subcommands
    covered = {line.split()[0] for line, _ in CASES.values()}
    assert commands <= covered, f"commands without a bad-input case: {sorted(commands - covered)}"
