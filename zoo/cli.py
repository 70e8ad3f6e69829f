"""The ``edgezoo`` command line.

``edgezoo list`` / ``info`` / ``demo`` live here; other packages add their subcommands by
providing ``add_parsers(subparsers)`` in a ``cli`` module listed in :data:`PLUGINS` (their
heavy imports stay inside the command handlers, so ``edgezoo list`` starts fast).
Bad input prints ``edgezoo: error: <one line>`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence

from edgezoo.errors import EdgezooError

__all__ = ["PLUGINS", "build_parser", "main"]

#: Modules that contribute subcommands: each defines ``add_parsers(subparsers)``.
PLUGINS = ("edgezoo.train.cli", "edgezoo.export.cli", "edgezoo.export.bench.cli")


def _fmt_count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


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
        rows.append([name, get_spec(name).family, _fmt_count(prof.params), _fmt_count(prof.macs), size])
    if args.json:
        keys = ["name", "family", "params", "macs", "input_size"]
        print(json.dumps([dict(zip(keys, r, strict=True)) for r in rows], indent=2))
    else:
        print(_table(rows, ["model", "family", "params", "MACs", "input"]))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import torch

    from edgezoo import FAMILIES, create_model, get_spec
    from edgezoo.profile import block_summary, count_macs, count_params

    spec = get_spec(args.model)
    with torch.device("meta"):
        model = create_model(spec.name)
    cfg = {k: v for k, v in model.pretrained_cfg.items() if v not in (None, "", [], {})}
    size = tuple(cfg["input_size"])
    info = {
        "model": spec.name,
        "family": f"{spec.family}: {FAMILIES[spec.family]}",
        "description": _entry_doc(spec.name),
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
    print(f"  params {_fmt_count(info['params'])} ({info['params']:,})   MACs {_fmt_count(info['macs'])} "
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


def _entry_doc(name: str) -> str:
    from timm.models import get_arch_name, model_entrypoint

    doc = (model_entrypoint(get_arch_name(name)).__doc__ or "").strip()
    return " ".join(doc.split("\n\n")[0].split())


def cmd_demo(args: argparse.Namespace) -> int:
    """The pipeline end to end on real data: list, train on digits, validate, deploy form, parity."""
    import tempfile

    import torch

    from edgezoo import create_model, fuse, load_checkpoint
    from edgezoo.train import train_digits, validate_checkpoint

    print("== the zoo ==")
    cmd_list(argparse.Namespace(filter=args.filter, family=None, json=False))
    output = args.output or tempfile.mkdtemp(prefix="edgezoo-demo-")
    print(f"\n== train {args.model} on scikit-learn's digits ({args.epochs} epochs, {args.img_size}px) ==")
    final = train_digits(args.model, epochs=args.epochs, img_size=args.img_size, output=output)
    ckpt = final["checkpoint"]
    print(f"\n== validate {ckpt} ==")
    results = {ema: validate_checkpoint(args.model, ckpt, "digits", use_ema=ema) for ema in (False, True)}
    for ema, res in results.items():
        print(f"  {'EMA weights' if ema else 'weights'}: top-1 {res['top1']:.2f}%  top-5 {res['top5']:.2f}%  "
              f"loss {res['loss']:.4f}")
    print(f"  confusion matrix: {results[False]['confusion_png']}")

    print("\n== deploy form (edgezoo.fuse) ==")
    model = create_model(args.model, num_classes=final.get("num_classes", 10)).eval()
    load_checkpoint(model, ckpt)
    deploy = fuse(model)
    x = torch.randn(16, 3, args.img_size, args.img_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, out = model(x), deploy(x)
    err = ((out - ref).abs().max() / ref.abs().max()).item()
    same = (out.argmax(1) == ref.argmax(1)).float().mean().item() * 100
    params = (sum(p.numel() for p in model.parameters()), sum(p.numel() for p in deploy.parameters()))
    print(f"  params {params[0]:,} -> {params[1]:,}; relative max error {err:.1e}; same prediction {same:.0f}%")
    best = max(r["top1"] for r in results.values())
    print(f"\ndemo done: {args.model} reaches {best:.2f}% top-1 on held-out digits; run folder {output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgezoo", description="Efficient vision models for edge targets.")
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

    p = sub.add_parser("demo", help="what `make demo` runs: list, train on digits, validate, fuse")
    p.add_argument("--model", default="ez_resnet18_eca")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--output", help="run folder (default: a new temporary folder)")
    p.add_argument("--filter", default="", help="which models the listing shows")
    p.set_defaults(func=cmd_demo)

    for module in PLUGINS:
        try:
            plugin = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            continue
        plugin.add_parsers(sub)
    return parser


def _version() -> str:
    from edgezoo import __version__

    return f"edgezoo {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except EdgezooError as err:
        print(f"edgezoo: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgezoo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
