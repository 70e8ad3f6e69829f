"""``edgezoo sweep``: the mixer sweep (:mod:`edgezoo.pipelines.sweep`) from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgezoo.cli.args import positive_int

__all__ = ["add_parsers", "cmd_sweep"]


def _csv(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def cmd_sweep(args: argparse.Namespace) -> int:
    from edgezoo.pipelines.sweep import sweep, write_sweep

    mixers = _csv(args.mixers)
    out = args.output or f"runs/sweep-{args.size}-{Path(args.data).name or 'data'}"
    if args.tables_only:
        from edgezoo.blocks.mixers import MIXERS

        write_sweep(Path(out), mixers or list(MIXERS), args.size, args.data, {}, args.runtime or "", args.bench_size)
        return 0
    sweep(args.size, mixers, args.data, out, args.epochs, args.img_size, args.batch_size, args.set, args.runtime,
          args.threads, args.nproc, args.bench_size, progress=not args.quiet)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep", help="train, validate, export and benchmark every token mixer in one macro (ez_mix_*)",
        description="The mixer sweep: ez_mix_<mixer>_<size> for every mixer, the shared recipe on the same data, "
                    "one run folder per mixer (resumable), then sweep.{json,csv,md} and a Pareto chart per runtime.",
    )
    p.add_argument("--size", default="s", help="model size: s (0.3 GMACs) or m (1 GMACs)")
    p.add_argument("--mixers", help="comma-separated mixers (default: all)")
    p.add_argument("--data", default="digits", help="'digits' (built in) or an ImageFolder root with train/ and val/")
    p.add_argument("--output", help="sweep folder (default runs/sweep-<size>-<data>)")
    p.add_argument("--epochs", type=positive_int, help="sched.epochs (default: the recipe's)")
    p.add_argument("--img-size", type=positive_int, help="training and benchmark input size (default 64 on digits)")
    p.add_argument("--batch-size", type=positive_int, help="data.batch_size per process")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="recipe override for every mixer")
    p.add_argument("--runtime", help="runtimes to time (default: every one present here but compile)")
    p.add_argument("--threads", type=positive_int, help="benchmark threads (default: all cores)")
    p.add_argument("--bench-size", type=positive_int, default=224,
                   help="benchmark input size (default 224, the models')")
    p.add_argument("--nproc", type=positive_int,
                   help="processes per training (default: the GPU count; >1 uses torchrun)")
    p.add_argument("--tables-only", action="store_true", help="rebuild the tables and charts from the mixers done")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sweep)
