"""Remote against local latency of the same artifacts, in alternating passes of one run.

    python scripts/remote_vs_local.py --remote loop --targets targets.yaml --json results/bench/ --passes 3

Each pass times every model here (``edgezoo.bench.bench``) and then on the target
(``edgezoo.bench.remote.bench_remote``), with the same exported files (one ``--work`` folder) and
the same protocol and threads; a model's ratio is the median over passes of remote p50 / local p50,
with its range. On a loopback target (sshd on this machine) the ratio is the cost of the remote
path itself: the runner, its Python, the shipped protocol; ssh is outside the timed calls.
The JSON (``<fingerprint>-remote-vs-local.json``) holds every pass's records, the ratios, both
fingerprints and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time


def main(argv: list[str] | None = None) -> int:
    from edgezoo.bench import Protocol, bench, parse_runtimes, smallest_per_family
    from edgezoo.bench.remote import bench_remote
    from edgezoo.bench.report import output_path

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--remote", required=True)
    p.add_argument("--targets")
    p.add_argument("--models", nargs="*", help="default: the smallest model of each family")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--runtime", default="ort")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--work", default="runs/remote-vs-local")
    p.add_argument("--json", default="results/bench/")
    args = p.parse_args(argv)
    models = args.models or smallest_per_family()
    protocol = Protocol(runs=args.runs, max_seconds=args.seconds)
    common = {"batches": [1], "threads": args.threads, "img_sizes": [args.img_size], "protocol": protocol,
              "work_dir": args.work}
    load = [round(os.getloadavg()[0], 2)]
    passes = []
    for n in range(args.passes):
        local = bench(models, parse_runtimes(args.runtime), progress=False, **common)
        remote = bench_remote(models, parse_runtimes(args.runtime), args.remote, targets_file=args.targets, **common)
        passes.append({"local": local, "remote": remote})
        print(f"pass {n + 1}/{args.passes} done", file=sys.stderr)
    load.append(round(os.getloadavg()[0], 2))
    ratios = {}
    for i, name in enumerate(models):
        each = [ps["remote"]["records"][i]["latency_ms"]["p50"] / ps["local"]["records"][i]["latency_ms"]["p50"]
                for ps in passes]
        ratios[name] = {"median": round(statistics.median(each), 4), "low": round(min(each), 4),
                        "high": round(max(each), 4), "passes": len(each)}
    out = {"schema": "edgezoo.remote-vs-local/1", "date": time.strftime("%Y-%m-%d"),
           "command": "python scripts/remote_vs_local.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
           "load_average_1min": load, "local_fingerprint": passes[0]["local"]["fingerprint"],
           "remote_fingerprint": passes[0]["remote"]["fingerprint"], "target": args.remote,
           "protocol": protocol.to_dict(), "img_size": args.img_size, "threads": args.threads,
           "ratio_remote_over_local_p50": ratios, "passes": passes}
    path = output_path(args.json, {"fingerprint": out["local_fingerprint"]}, "-remote-vs-local")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=str) + "\n")
    for name, r in ratios.items():
        print(f"{name:<28} remote/local p50 {r['median']:.3f} ({r['low']:.3f}-{r['high']:.3f}, {r['passes']} passes)")
    print(f"JSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
