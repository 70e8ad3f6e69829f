"""Markdown table of an interleaved ``edgezoo bench`` report: per model and size, each runtime's batch-1 p50 and
minimum latency, the fastest runtime by p50 and by minimum, and the fastest's p50 over each runtime's.

    python scripts/bench_ratios.py results/bench/REPORT.json [--runtimes ort,executorch,litert]

Records that failed are shown as ``failed``. The ratios mean something only for runtimes timed interleaved
(``--interleave-runtimes``), which the report's records say (``interleaved_with``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def table(report: dict, runtimes: list[str]) -> str:
    rows: dict[tuple, dict] = {}
    for rec in report["records"]:
        if rec["runtime"] in runtimes and rec["batch"] == 1:
            rows.setdefault((rec["family"], rec["model"], rec["img_size"]), {})[rec["runtime"]] = rec
    head = " | ".join(f"{rt} p50 / min ms" for rt in runtimes)
    out = [f"| family | model | px | {head} | fastest by p50 | its p50 over {' / '.join(runtimes)} | fastest by min |",
           "|---|---|---|" + "---|" * len(runtimes) + "---|---|---|"]
    for (family, model, px), recs in sorted(rows.items(), key=lambda kv: (kv[0][1], -kv[0][2])):
        ok = {rt: r["latency_ms"] for rt, r in recs.items() if r["status"] == "ok"}
        cells = [f"{ok[rt]['p50']:.2f} / {ok[rt]['min']:.2f}" if rt in ok else "failed" if rt in recs else "-"
                 for rt in runtimes]
        if ok:
            best = min(ok, key=lambda rt: ok[rt]["p50"])
            by_min = min(ok, key=lambda rt: ok[rt]["min"])
            ratios = " / ".join(f"{ok[best]['p50'] / ok[rt]['p50']:.2f}" if rt in ok else "-" for rt in runtimes)
        else:
            best = by_min = ratios = "-"
        out.append(f"| {family} | `{model}` | {px} | " + " | ".join(cells) + f" | {best} | {ratios} | {by_min} |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("report", help="an edgezoo bench JSON report")
    p.add_argument("--runtimes", default="ort,executorch,litert", help="columns, in this order")
    args = p.parse_args()
    print(table(json.loads(Path(args.report).read_text()), [r.strip() for r in args.runtimes.split(",")]))


if __name__ == "__main__":
    main()
