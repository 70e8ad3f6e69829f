"""The documentation a user reads is short, builds, is current, and does not rot.

In ``make test``: the README is at most 220 lines and starts with the two commands; the MkDocs site builds
with ``--strict``; every generated table equals what its JSON renders to; no file tracked by git narrates
development rounds. In ``make test-all``: the README's Python blocks run as written, and the wheel
``python -m build`` makes installs into a separate folder and trains a model from an empty folder.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_readme_is_short_and_starts_with_the_two_commands() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= 220, f"README.md has {len(lines)} lines; move detail into docs/"
    assert lines[0].startswith("# ") and lines[2].strip() and not lines[2].startswith("#")  # title, one sentence
    first_block = README.read_text().split("```", 2)[1]
    assert "make demo" in first_block and "make test" in first_block


def test_docs_site_builds_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("load_checkpoint", "fuse", "export", "bench", "create_model", "list_models"):
        assert 'id="edgezoo.' in api and name in api, f"the API reference lacks {name}"


def test_every_generated_table_matches_its_json() -> None:
    from edgezoo.pipelines.tables import check

    stale = check()
    assert not stale, f"stale tables (run `make tables`): {stale}"


def test_no_development_diary_in_tracked_files() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    pattern = re.compile(r"[Ss]essions? [0-9]+")
    hits = []
    for name in files:
        path = ROOT / name
        if not path.is_file() or path.suffix in (".png", ".json") or path.stat().st_size > 2_000_000:
            continue
        for i, line in enumerate(path.read_text(errors="ignore").splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{name}:{i}: {line.strip()[:100]}")
    assert not hits, "development rounds named (state what is true, with a date or commit):\n" + "\n".join(hits)


def readme_python() -> str:
    return "\n".join(re.findall(r"```python\n(.*?)```", README.read_text(), re.S))


@pytest.mark.slow
def test_readme_python_blocks_run(tmp_path: Path) -> None:
    script = tmp_path / "tour.py"
    script.write_text(readme_python())
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "verified" in proc.stdout  # the export passed its gate


@pytest.mark.slow
def test_the_wheel_installs_and_trains_from_an_empty_folder(tmp_path: Path) -> None:
    """``python -m build`` makes a wheel; installed with ``--no-deps`` into its own folder over this
    environment's dependencies, it trains a model from a folder holding nothing of the repository."""
    pytest.importorskip("build")
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist)], cwd=ROOT,
                   check=True, capture_output=True, timeout=900)
    wheel = next(dist.glob("edgezoo-*.whl"))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site),
                    str(wheel)], check=True, capture_output=True, timeout=600)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"}
    code = ("import sys\n"
            "import edgezoo, edgezoo.train as t\n"
            "assert edgezoo.__file__.startswith(sys.argv[1]), edgezoo.__file__\n"
            "r = t.train_digits('ez_resnet18_eca', epochs=1, img_size=32, output='run')\n"
            "print(edgezoo.__version__, r['val_top1'])\n")
    proc = subprocess.run([sys.executable, "-c", code, str(site)], cwd=empty, env=env, capture_output=True,
                          text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    version, top1 = proc.stdout.split()[-2:]
    assert version == "0.1.0" and float(top1) > 50.0  # ten classes: chance is 10%
    assert sorted(p.name for p in empty.iterdir()) == ["run"]
