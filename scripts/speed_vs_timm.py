"""Deprecated: folded into ``edgezoo bench --compare-timm`` (same ratios, one protocol, every runtime).

    python scripts/speed_vs_timm.py efficientvit_m0 shvit_s1 --runs 300 --json speed.json
    # is now
    edgezoo bench ez_efficientvit_m0 ez_shvit_s1 --compare-timm --runtime ort --runs 300 --json speed.json
"""

from __future__ import annotations

import argparse
import sys


def main() -> int:
    from edgezoo.cli import main as edgezoo_main

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="timm or edgezoo names, e.g. efficientvit_m0 shvit_s1")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=None, help="input resolution (default: the model's)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    argv = ["bench", *[m if m.startswith("ez_") else f"ez_{m}" for m in args.models], "--compare-timm",
            "--runtime", "ort", "--runs", str(args.runs), "--threads", str(args.threads)]
    argv += ["--img-size", str(args.size)] if args.size else []
    argv += ["--json", args.json] if args.json else []
    return edgezoo_main(argv)


if __name__ == "__main__":
    sys.exit(main())
