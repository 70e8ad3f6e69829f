"""Every generated table of the docs and the README, rendered from its JSON by one command.

    python -m edgezoo.pipelines.tables            # write every table into its page (make tables)
    python -m edgezoo.pipelines.tables --check    # exit 1 naming each page whose table differs (make test)
    python -m edgezoo.pipelines.tables --profile  # measure every model's params and MACs again

A table lives in its page between ``<!-- table:NAME:start -->`` and ``<!-- table:NAME:end -->``; the
markers are written once by hand, what lies between them only by this module. Each table states where its
figures come from (the JSON, its date, the machine fingerprint and the command that measured it).
Rendering reads JSON and the registries only, so ``--check`` takes seconds; measuring is the pipelines'
job (``make bench``, ``make export-matrix``, ``make int8-table``, ``--profile`` for the model table).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TABLES", "Table", "check", "render_all", "splice", "write"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
DOCS = ROOT / "docs"


@dataclass(frozen=True)
class Table:
    """A generated table: the page it lives in and how to render it from the repository's JSON."""

    page: Path
    render: Callable[[], str]


def _models(family: str | None = None) -> Callable[[], str]:
    def render() -> str:
        from edgezoo.pipelines.table_models import render as models

        return models(RESULTS, family)

    return render


def _bench() -> str:
    """The runtime tables; the cost-curve chart they show is copied beside the page (the site serves only what
    lies under ``docs/``)."""
    import shutil

    from edgezoo.pipelines.table_bench import render

    text = render(RESULTS / "bench", DOCS / "bench")
    for chart in re.findall(r"\]\(([^)]+\.png)\)", text):
        source = (DOCS / "bench" / chart).resolve()
        if source.is_file() and not source.is_relative_to(DOCS.resolve()):
            copy = DOCS / "bench" / source.name
            if not copy.is_file() or copy.read_bytes() != source.read_bytes():
                shutil.copyfile(source, copy)
            text = text.replace(f"]({chart})", f"]({source.name})")
    return text


def _bench_litert() -> str:
    """LiteRT beside onnxruntime and ExecuTorch: one interleaved run of the five family models at 224 and 32 px."""
    from edgezoo.bench.markdown import markdown

    path = RESULTS / "bench" / "2026-12-07-litert-ort-executorch.json"
    report = json.loads(path.read_text())
    sizes = sorted({r["img_size"] for r in report["records"]}, reverse=True)
    parts = [markdown({**report, "records": [r for r in report["records"] if r["img_size"] == s]}) for s in sizes]
    return ("\n\n".join(parts) + f"\n\nFrom `{path.relative_to(ROOT).as_posix()}`; what it says, and the load "
            "the machine carried: [the LiteRT latency note](../notes/2026-12-07-litert-latency-quiet.md).")


def _matrix() -> str:
    from edgezoo.pipelines.matrix import load_matrix, markdown_table

    path = RESULTS / "export-matrix.json"
    return markdown_table(load_matrix(path)) if path.is_file() else "No export matrix yet: run `make export-matrix`."


def _int8() -> str:
    from edgezoo.pipelines.int8 import markdown

    saved = json.loads((RESULTS / "int8.json").read_text())
    return markdown(saved["rows"], saved["machine"])


def _kernels() -> str:
    from edgezoo.pipelines.table_kernels import render

    path = RESULTS / "bench" / "kernels-nvidia_h200.json"
    return render(json.loads(path.read_text()), path.relative_to(ROOT).as_posix())


def _options(fmt: str) -> Callable[[], str]:
    def render() -> str:
        from edgezoo.export import get_format
        from edgezoo.tables import markdown_table

        f = get_format(fmt)
        rows = [[f"`{key}`", opt.help, f"`{opt.default}`", " ".join(f"`{c}`" for c in opt.choices or ()) or "-"]
                for key, opt in f.options.items()]
        head = (f"Suffix `{f.suffix}`, precisions {', '.join(f.precisions)}, extra `edgezoo[{f.extra}]`. "
                f"Options go as `--option KEY=VALUE` on the command line, keyword arguments in Python.\n\n")
        return head + (markdown_table(rows, ["option", "what", "default", "choices"]) if rows else "No options.")

    return render


def _demo() -> str:
    from edgezoo.pipelines.demo_report import headline

    return headline(json.loads((DOCS / "demo" / "report.json").read_text()), "docs/demo/report.md")


FAMILY_PAGES = ("cnn_attention", "single_head_vit", "cascaded_group", "focal_modulation", "linear_vit")

TABLES: dict[str, Table] = {
    "models": Table(DOCS / "models" / "index.md", _models()),
    **{f"models-{f}": Table(DOCS / "models" / f"{f}.md", _models(f)) for f in FAMILY_PAGES},
    "bench": Table(DOCS / "bench" / "runtimes.md", _bench),
    "bench-litert": Table(DOCS / "bench" / "runtimes.md", _bench_litert),
    "export-matrix": Table(DOCS / "export" / "matrix.md", _matrix),
    "int8": Table(DOCS / "export" / "int8.md", _int8),
    "kernels-gpu": Table(DOCS / "kernels.md", _kernels),
    **{f"options-{f}": Table(DOCS / "export" / f"{f}.md", _options(f))
       for f in ("onnx", "coreml", "executorch", "tensorrt", "litert")},
    "demo": Table(ROOT / "README.md", _demo),
}


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- table:{name}:start -->", f"<!-- table:{name}:end -->"


def splice(text: str, body: str, name: str) -> str:
    """``text`` with what lies between table ``name``'s markers replaced by ``body``."""
    start, end = _markers(name)
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise KeyError(f"the page lacks the markers {start} ... {end}")
    return pattern.sub(lambda _: f"{start}\n{body.strip()}\n{end}", text, count=1)


def render_all(names: list[str] | None = None) -> dict[Path, str]:
    """``{page: text with every table of ``names`` (default all) rendered}``."""
    pages: dict[Path, str] = {}
    for name in names or list(TABLES):
        table = TABLES[name]
        text = pages.get(table.page) or table.page.read_text()
        pages[table.page] = splice(text, table.render(), name)
    return pages


def write(names: list[str] | None = None) -> list[Path]:
    """Write every table into its page; the pages that changed."""
    changed = []
    for page, text in render_all(names).items():
        if page.read_text() != text:
            page.write_text(text)
            changed.append(page)
    return changed


def check(names: list[str] | None = None) -> list[str]:
    """The tables whose rendering differs from what their page holds (empty: all current)."""
    stale = []
    for name in names or list(TABLES):
        table = TABLES[name]
        text = table.page.read_text()
        if splice(text, table.render(), name) != text:
            stale.append(f"{table.page.relative_to(ROOT)} ({name})")
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgezoo.pipelines.tables",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"tables (default all): {', '.join(TABLES)}")
    parser.add_argument("--check", action="store_true", help="exit 1 when a page's table differs from its JSON")
    parser.add_argument("--profile", action="store_true", help="measure params and MACs of every model again")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in TABLES]
    if unknown:
        print(f"tables: unknown table {', '.join(unknown)}; tables: {', '.join(TABLES)}", file=sys.stderr)
        return 2
    if args.profile:
        from edgezoo.pipelines.table_models import profile_all

        print(f"profiled: {profile_all(RESULTS / 'models.json')}")
    if args.check:
        stale = check(args.names)
        for s in stale:
            print(f"stale table: {s}; run `make tables`", file=sys.stderr)
        return 1 if stale else 0
    for page in write(args.names):
        print(f"wrote {page.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
