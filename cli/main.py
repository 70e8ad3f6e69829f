"""The ``edgezoo`` command line.

``edgezoo list`` / ``info`` / ``demo`` live here; ``train``, ``validate``, ``sweep``, ``export`` and ``bench``
in the sibling modules, each adding its subcommands with ``add_parsers(subparsers)`` (heavy imports stay
inside the command handlers, so ``edgezoo list`` starts fast).

:func:`main` is the one error boundary of every command: bad input prints
``edgezoo: error: <one line>`` and exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from edgezoo.cli import bench, export, sweep, train
from edgezoo.cli.args import Parser, non_negative_int, positive_int
from edgezoo.errors import EdgezooError
from edgezoo.tables import format_count, text_table

__all__ = ["build_parser", "main"]


def cmd_list(args: argparse.Namespace) -> int:
    from edgezoo import get_spec, list_models
    from edgezoo.profile import profile_model

    names = list_models(args.filter or "", family=args.family)
    if not names:
        raise EdgezooError(f"no model matches {args.filter!r}" + (f" in family {args.family}" if args.family else ""))
    rows = []
    for name in names:
        prof = profile_model(name)
        size = "x".join(map(str, prof.input_size[1:]))
        rows.append([name, get_spec(name).family, format_count(prof.params), format_count(prof.macs), size])
    if args.json:
        keys = ["name", "family", "params", "macs", "input_size"]
        print(json.dumps([dict(zip(keys, r, strict=True)) for r in rows], indent=2))
    else:
        print(text_table(rows, ["model", "family", "params", "MACs", "input"]))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import torch

    from edgezoo import FAMILIES, create_model, get_spec
    from edgezoo.profile import block_summary, count_macs, count_params
    from edgezoo.registry import model_doc

    spec = get_spec(args.model)
    with torch.device("meta"):
        model = create_model(spec.name)
    cfg = {k: v for k, v in model.pretrained_cfg.items() if v not in (None, "", [], {})}
    size = tuple(cfg["input_size"])
    info = {
        "model": spec.name,
        "family": f"{spec.family}: {FAMILIES[spec.family]}",
        "description": model_doc(spec.name),
        "params": count_params(model),
        "macs": count_macs(model, size),
        "input_size": list(size),
        "pretrained_cfg": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        "blocks": {name: n for name, n in block_summary(model)},
        "feature_info": [
            {k: f[k] for k in ("module", "num_chs", "reduction")} for f in getattr(model, "feature_info", [])
        ],
    }
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"{info['model']}  ({info['family']})")
    print(f"  {info['description']}")
    print(f"  params {format_count(info['params'])} ({info['params']:,})   MACs {format_count(info['macs'])} "
          f"at {'x'.join(map(str, size))}")
    print("config:")
    for k, v in info["pretrained_cfg"].items():
        print(f"  {k}: {v}")
    print("blocks:")
    for name, n in info["blocks"].items():
        print(f"  {n:4d} x {name}")
    print("features (features_only=True / forward_intermediates):")
    for i, f in enumerate(info["feature_info"]):
        print(f"  [{i}] {f['module']:<12} channels {f['num_chs']:<5} stride {f['reduction']}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The whole pipeline on digits (:func:`edgezoo.pipelines.demo.run_demo`): train, export, bench, report."""
    from edgezoo.pipelines.demo import run_demo

    families = [f for f in (args.families or "").split(",") if f.strip()] or None
    formats = [f for f in args.formats.split(",") if f.strip()] if args.formats is not None else None
    started = time.perf_counter()
    done = run_demo(args.out, families=families, quick=args.quick, resume=args.resume, epochs=args.epochs,
                    img_size=args.img_size, formats=formats, jobs=args.jobs, sets=args.set or [],
                    progress=not args.quiet, remote=args.remote, targets=args.targets)
    print(f"edgezoo demo: report {done['report_md']} (charts and report.json beside it), "
          f"{time.perf_counter() - started:.0f} s" + ("; some stages FAILED, see the report" if done["failed"] else ""))
    return 1 if done["failed"] else 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="edgezoo", description="Efficient vision models for edge targets.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list models with params and MACs")
    p.add_argument("filter", nargs="?", help="substring or glob, e.g. resnet50 or 'ez_*_eca'")
    p.add_argument("--family", help="only this family (see `edgezoo info`)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="config, params, MACs, blocks and features of one model")
    p.add_argument("model")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="the whole pipeline on digits in minutes: train, validate, export, bench, report",
                       description="Train the smallest model of each family on the built-in digits data, validate, "
                                   "export through every parity gate, benchmark every runtime present and write "
                                   "OUT/report.md with its charts.")
    p.add_argument("--out", default="demo-out", help="output folder (default demo-out; safe to run again into it)")
    p.add_argument("--quick", action="store_true", help="one family, two epochs, no ExecuTorch: about a minute")
    p.add_argument("--resume", action="store_true", help="reuse finished training runs (and exports) in OUT")
    p.add_argument("--families", help="comma-separated families (default: all five; see edgezoo info MODEL)")
    p.add_argument("--epochs", type=positive_int, help="epochs for every model (default: each family's schedule)")
    p.add_argument("--img-size", type=positive_int, default=32, help="input size in pixels (default 32)")
    p.add_argument("--formats", help="comma-separated: onnx, onnx-int8, coreml, executorch, executorch-int8, "
                                     "tensorrt (default all but executorch-int8; empty: none)")
    p.add_argument("--jobs", type=non_negative_int,
                   help="worker processes side by side (default: the cores; 0: in this process)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="recipe override, as edgezoo train --set")
    p.add_argument("--remote", metavar="SPEC", help="also time every model on a target of yours: ssh://[user@]host"
                                                    "[:port], adb[://serial] or a name from --targets")
    p.add_argument("--targets", metavar="FILE", help="targets file for --remote names (see edgezoo bench --help)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)

    for module in (train, sweep, export, bench):
        module.add_parsers(sub)
    return parser


def _version() -> str:
    from edgezoo import __version__

    return f"edgezoo {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command: the error boundary of every ``edgezoo`` command.

    Bad input (an :class:`~edgezoo.errors.EdgezooError`, from argument parsing or deeper) and a file the
    system refuses (an ``OSError`` naming a file) print one line, ``edgezoo: error: ...``, and return 2.
    """
    try:
        args = build_parser().parse_args(argv)
        args.command_line = " ".join(["edgezoo", *(sys.argv[1:] if argv is None else argv)])  # what reports record
        return int(args.func(args) or 0)
    except EdgezooError as err:
        print(f"edgezoo: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.filename is None:
            raise
        print(f"edgezoo: error: {err.filename}: {err.strerror or err}: check the path, its permissions and the "
              f"free space", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgezoo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
