"""Generate the README's export matrix section from the JSON ``edgezoo export --all`` writes.

    python scripts/export_table.py exported/export-matrix.json                  # print it
    python scripts/export_table.py exported/export-matrix.json --write README.md  # splice it in
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

START, END = "<!-- export-matrix:start -->", "<!-- export-matrix:end -->"


def splice(text: str, table: str) -> str:
    from _readme import splice as _splice  # scripts/ is on sys.path when a script runs

    return _splice(text, table, START, END)


def main() -> int:
    from edgezoo.pipelines.matrix import load_matrix, markdown_table

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("matrix", type=Path, nargs="+", help="export-matrix.json file(s), merged in order")
    parser.add_argument("--write", type=Path, metavar="README")
    args = parser.parse_args()
    matrices = [load_matrix(p) for p in args.matrix]
    merged = {**matrices[0], "results": [r for m in matrices for r in m["results"]]}
    table = markdown_table(merged)
    if args.write:
        args.write.write_text(splice(args.write.read_text(), table))
    else:
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
