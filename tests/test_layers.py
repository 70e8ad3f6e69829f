"""The package's layers import one way, and ``import edgezoo`` stays light.

The order, lowest first (a module may import its own layer and the layers below it, never above):

====  =====================================  ===========================================================
 0    ``edgezoo.errors``, ``.tables``,        errors, the one table writer, seeding helpers, checks on
      ``.rng``, ``.paths``                    the paths a user names
 1    ``edgezoo.kernels``                     fused ops (custom ops, Triton, TensorRT plugins)
 2    ``edgezoo.blocks``                      plain ``nn.Module`` building blocks
 3    ``edgezoo`` (root: registry, families,  models: what ``import edgezoo`` registers with timm
      checkpoint, fuse, profile), ``.configs``
 4    ``edgezoo.data``                        datasets and calibration images (shared by train and export)
 5    ``edgezoo.train``, ``edgezoo.export``   siblings: neither imports the other
 6    ``edgezoo.bench``                       latency of what export made, one protocol
 7    ``edgezoo.pipelines``                   plans run by one runner: demo, sweep, matrix, tables
 8    ``edgezoo.cli``                         the command line and its one error boundary
====  =====================================  ===========================================================

The check parses every module's imports (function-level ones included) over the folder -> import-name
map in ``pyproject.toml``: import-linter's graph builder walks ``edgezoo.__path__``, which under the
editable install's ``package-dir`` mapping is ``zoo/`` alone, so it would not see the other folders.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Layer of each package, lowest first; ``edgezoo`` is every root module not listed by name.
LAYERS: dict[str, int] = {
    "edgezoo.errors": 0, "edgezoo.tables": 0, "edgezoo.rng": 0, "edgezoo.paths": 0,
    "edgezoo.kernels": 1,
    "edgezoo.blocks": 2,
    "edgezoo": 3, "edgezoo.configs": 3,
    "edgezoo.data": 4,
    "edgezoo.train": 5, "edgezoo.export": 5,
    "edgezoo.bench": 6,
    "edgezoo.pipelines": 7,
    "edgezoo.cli": 8,
}

#: Modules that run on a remote target without edgezoo installed: standard library and numpy only.
STANDALONE = ("edgezoo.bench.protocol", "edgezoo.bench.fingerprint", "edgezoo.bench.memory")

#: What ``import edgezoo`` must not pull in (triton arrives through torch and timm: not ours to avoid).
HEAVY = ("onnx", "onnxruntime", "coremltools", "executorch", "matplotlib", "sklearn", "openvino", "tensorrt",
         "ai_edge_litert", "litert_torch", "edgezoo.train", "edgezoo.export", "edgezoo.bench", "edgezoo.data",
         "edgezoo.pipelines", "edgezoo.cli")


def package_dirs() -> dict[str, Path]:
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    return {name: ROOT / folder for name, folder in mapping.items()}


def modules() -> dict[str, Path]:
    """Every module of the package by import name, from the folder map."""
    dirs = package_dirs()
    found: dict[str, Path] = {}
    for name, folder in dirs.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("").parts
            if any(d != folder and d in path.parents for d in dirs.values() if len(d.parts) > len(folder.parts)):
                continue  # a folder mapped under its own name
            parts = [name, *rel]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def layer_of(module: str) -> tuple[str, int]:
    """The package a module belongs to (the longest key of :data:`LAYERS` it starts with) and its layer."""
    best = max((k for k in LAYERS if module == k or module.startswith(k + ".")), key=len)
    return best, LAYERS[best]


def imports(module: str, path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line, module imported, names imported from it)`` for each edgezoo/tests import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.append((node.lineno, base, [a.name for a in node.names]))
    return [i for i in out if i[1].split(".")[0] in ("edgezoo", "tests")]


def violations(found: dict[str, Path]) -> list[str]:
    bad = []
    for module, path in sorted(found.items()):
        pkg, layer = layer_of(module)
        where = str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
        for line, target, names in imports(module, path):
            if target.split(".")[0] == "tests":
                bad.append(f"{where}:{line}: imports {target} (tests/ is not part of the package)")
                continue
            # `from edgezoo import x` may name a submodule: judge that submodule
            targets = [f"{target}.{n}" if f"{target}.{n}" in found else target for n in names] or [target]
            for full in targets:
                tpkg, tlayer = layer_of(full)
                if tlayer > layer or (tlayer == layer and tpkg != pkg and layer != 0):
                    bad.append(f"{where}:{line}: {module} (layer {layer}, {pkg}) imports {full} "
                               f"(layer {tlayer}, {tpkg}): upward or sideways")
                private = [n for n in names if n.startswith("_") and n != "__version__"]
                private += [p for p in full.split(".") if p.startswith("_") and p != "__init__"]
                if tpkg != pkg and private:
                    bad.append(f"{where}:{line}: {module} imports the private {full}:{','.join(private)} "
                               f"of another package")
    return bad


def test_layers_import_one_way() -> None:
    found = modules()
    assert len(found) > 90, "the folder map found too few modules"
    bad = violations(found)
    assert not bad, "upward or private imports:\n" + "\n".join(bad)


def test_an_injected_upward_import_is_named(tmp_path: Path) -> None:
    """The check fails on the kind of import it exists to stop, and names the file and line."""
    found = modules()
    fake = tmp_path / "cnn_attention.py"
    fake.write_text(found["edgezoo.blocks.cnn_attention"].read_text() + "\n\ndef _f():\n    import edgezoo.cli\n")
    bad = violations({**found, "edgezoo.blocks.cnn_attention": fake})
    assert any("edgezoo.blocks.cnn_attention (layer 2" in b and "imports edgezoo.cli" in b for b in bad), bad


def test_scripts_import_no_tests_and_no_private_names() -> None:
    for folder in ("scripts", "experiments"):
        for path in sorted((ROOT / folder).glob("*.py")):
            for line, target, names in imports("scripts." + path.stem, path):
                assert not target.startswith("tests"), f"{path.name}:{line} imports {target}"
                private = [n for n in names if n.startswith("_") and n != "__version__"]
                private += [p for p in target.split(".") if p.startswith("_")]
                assert not private, f"{path.name}:{line} imports the private {target}:{private}"


@pytest.mark.parametrize("module", STANDALONE)
def test_remote_modules_need_only_the_standard_library_and_numpy(module: str) -> None:
    path = modules()[module]
    tree = ast.parse(path.read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level}
    names.discard("")
    assert names <= set(sys.stdlib_module_names) | {"numpy"}, f"{module} imports {names - set(sys.stdlib_module_names)}"


def test_import_edgezoo_stays_light() -> None:
    """``python -X importtime -c "import edgezoo"`` lists none of the export, training or runtime stacks."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import edgezoo"],
                          capture_output=True, text=True, check=True)
    loaded = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    heavy = sorted(m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert not heavy, f"import edgezoo loads {heavy}"
    assert "edgezoo.registry" in loaded  # the list is real: the model layer is there


def test_the_wheel_lists_every_source_folder() -> None:
    """Every folder of Python files under a mapped folder is a package in ``pyproject.toml`` (a missing one
    would be silently left out of the wheel)."""
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setup["packages"])
    needed = {m.rpartition(".")[0] if p.name != "__init__.py" else m for m, p in modules().items()}
    assert needed <= listed, f"not in [tool.setuptools] packages: {sorted(needed - listed)}"
    mapped = {str(Path(f)) for f in setup["package-dir"].values()}
    tops = {p.parts[0] for p in map(Path, subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True,
                                                         text=True, check=True).stdout.split()) if len(p.parts) > 1}
    assert tops - mapped <= {"tests", "scripts", "experiments", "docs"}, f"unmapped source folders: {tops - mapped}"
