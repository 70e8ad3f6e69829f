"""Generate the README's model table from the registry (never typed by hand).

    python scripts/model_table.py              # print the table
    python scripts/model_table.py --write README.md   # replace the table between the markers
    python scripts/model_table.py --check README.md   # exit 1 if the README's table is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

START, END = "<!-- model-table:start -->", "<!-- model-table:end -->"


def render() -> str:
    import edgezoo
    from edgezoo.cli import _entry_doc, _fmt_count
    from edgezoo.profile import profile_model

    lines = ["| model | family | params | MACs | input | what it is |", "|---|---|---|---|---|---|"]
    for family in edgezoo.FAMILIES:
        if family == "mixer_sweep":  # 26 ez_mix_* models of one macro: the README's sweep section lists them
            continue
        for name in edgezoo.list_models(family=family):
            prof = profile_model(name)
            size = "x".join(map(str, prof.input_size[1:]))
            lines.append(f"| `{name}` | {family} | {_fmt_count(prof.params)} | {_fmt_count(prof.macs)} | {size} "
                         f"| {_entry_doc(name)} |")
    return "\n".join(lines)


def splice(text: str, table: str) -> str:
    from _readme import splice as _splice  # scripts/ is on sys.path when a script runs

    return _splice(text, table, START, END)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", type=Path, metavar="README")
    group.add_argument("--check", type=Path, metavar="README")
    args = parser.parse_args()
    table = render()
    if args.write:
        args.write.write_text(splice(args.write.read_text(), table))
    elif args.check:
        text = args.check.read_text()
        if splice(text, table) != text:
            print(f"{args.check}: model table is stale; run `make table`", file=sys.stderr)
            return 1
    else:
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
