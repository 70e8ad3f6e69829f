"""``edgezoo export``: one model (name or checkpoint) to one or more formats, or the whole matrix.

Exit status: 0 when every requested artifact exists and passed its gate (or was converted
where no runtime here can run it), 1 when any export failed (its figures or error printed),
2 for bad input (one line).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edgezoo.cli.args import non_negative_int, positive_int

__all__ = ["add_parsers", "cmd_export"]


def _parse_options(pairs: list[str] | None) -> dict[str, str]:
    from edgezoo.errors import InvalidArgumentError

    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidArgumentError(f"--option {pair!r}: expected KEY=VALUE, e.g. --option target=iOS17")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def _options_for(fmt: Any, options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k in fmt.options}


def _check_options_used(formats: list[Any], options: dict[str, Any]) -> None:
    from edgezoo.errors import InvalidArgumentError

    for key in options:
        if not any(key in f.options for f in formats):
            supported = {f.name: ", ".join(f.options) or "none" for f in formats}
            listing = "; ".join(f"{n}: {o}" for n, o in supported.items())
            raise InvalidArgumentError(f"no requested format takes option {key!r} (options by format: {listing})")


def _list_formats() -> int:
    from edgezoo.export import get_format, list_formats

    for name in list_formats():
        fmt = get_format(name)
        missing = fmt.missing()
        state = f"missing {missing}: pip install \"edgezoo[{fmt.extra}]\"" if missing else "installed"
        runs = fmt.runtime_reason() if not missing else None
        print(f"{name:<11} {fmt.suffix:<11} {'/'.join(fmt.precisions):<15} {state}"
              + (f"; not runnable here: {runs}" if runs else ""))
        print(f"{'':<11} {fmt.description}")
        for key, opt in fmt.options.items():
            choices = f" ({'|'.join(map(str, opt.choices))})" if opt.choices else ""
            print(f"{'':<11}   --option {key}=...  {opt.help}; default {opt.default}{choices}")
    return 0


def _matrix(args: argparse.Namespace, formats: list[Any], options: dict[str, Any]) -> int:
    import edgezoo
    from edgezoo.pipelines.matrix import print_table, run_matrix

    patterns = (args.models or "").split(",")
    models = [m for m in edgezoo.list_models() if any(m in edgezoo.list_models(p) for p in patterns)]
    out = Path(args.out)
    precisions = args.precisions.split(",") if args.precisions else None
    print(f"export matrix: {len(models)} models x {', '.join(f.name for f in formats)} -> {out} (the converters' "
          f"own output: {out / '.plan' / 'converters.log'})", flush=True)
    path = Path(args.json) if args.json else out / "export-matrix.json"
    matrix = run_matrix(models, [f.name for f in formats], out, precisions=precisions, img_size=args.img_size,
                        log=lambda m: print(m, flush=True), json_path=path, batch=args.batch or 1,
                        calib=args.calib, calib_size=args.calib_size, jobs=args.jobs, progress=not args.quiet,
                        **options)
    print(print_table(matrix))
    print(f"matrix JSON: {path} (the docs' table: make tables; run again to continue a stopped matrix)")
    return 0 if all(r["status"] != "failed" for r in matrix["results"]) else 1


def cmd_export(args: argparse.Namespace) -> int:
    from edgezoo.errors import InvalidArgumentError
    from edgezoo.export import export, get_format, prepare
    from edgezoo.paths import writable_dir

    if args.list_formats:
        return _list_formats()
    formats = [get_format(f) for f in args.format.split(",") if f.strip()]
    options = _parse_options(args.option)
    if args.opset is not None:
        options["opset"] = args.opset
    if args.image_input:
        options["image_input"] = True
    if args.plugins:
        options["plugins"] = True
    if args.target:
        options["target"] = args.target
    _check_options_used(formats, options)
    for fmt in formats:
        fmt.require()
        if args.dynamic and not fmt.supports_dynamic:
            raise InvalidArgumentError(f"format {fmt.name!r} exports a static batch only: drop --dynamic or export "
                                       f"it separately")
    if args.all:
        return _matrix(args, formats, options)
    if not args.source:
        raise InvalidArgumentError("name a model or a checkpoint to export (or pass --all for the whole matrix)")
    if args.batch is not None and args.dynamic:
        raise InvalidArgumentError("choose one of --batch N (static) and --dynamic")
    writable_dir(args.out, "--out")
    if args.json:
        writable_dir(Path(args.json).parent, "--json")
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    src = prepare(args.source, args.model, args.img_size, args.ema)
    results = []
    for fmt in formats:
        res = export(src, fmt.name, args.out, img_size=args.img_size, batch=args.batch or 1, dynamic=args.dynamic,
                     half=args.half, int8=args.int8, calib=args.calib, calib_size=args.calib_size, log=log,
                     **_options_for(fmt, options))
        results.append(res)
        print(res.summary(), flush=True)
        for w in res.warnings:
            print(f"  warning: {w}")
    if args.json:
        Path(args.json).write_text(json.dumps([r.to_dict() for r in results], indent=2, default=str))
    return 0 if all(r.ok for r in results) else 1


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a model or checkpoint to ONNX, CoreML, ExecuTorch, TensorRT behind a parity gate",
        description="Fuse, convert, check against PyTorch, then write the artifact and its metadata JSON. "
                    "Exit 0 only when every requested artifact passed its gate; 1 when one failed; 2 for bad input.",
    )
    p.add_argument("source", nargs="?", help="a model name (random weights) or a checkpoint (.pth/.safetensors)")
    p.add_argument("--format", "-f", default="onnx", help="comma-separated formats (see --list-formats)")
    p.add_argument("--out", "-o", default="exported", help="output folder (default: exported/)")
    p.add_argument("--model", help="the model a checkpoint holds, if it does not record it")
    p.add_argument("--img-size", type=positive_int,
                   help="input resolution (default: the checkpoint's, else the model's)")
    p.add_argument("--batch", type=positive_int, help="static batch size (default 1)")
    p.add_argument("--dynamic", action="store_true", help="dynamic batch (and height/width where the model allows)")
    p.add_argument("--half", action="store_true", help="fp16 (ops the blocks declare fp32 stay fp32)")
    p.add_argument("--int8", action="store_true", help="int8, calibrated with --calib")
    p.add_argument("--calib", default="digits", help="int8 calibration data: digits or a folder of images")
    p.add_argument("--calib-size", type=positive_int, default=64, help="calibration images (default 64)")
    p.add_argument("--opset", type=int, help="ONNX opset (onnx, tensorrt; default 18)")
    p.add_argument("--target", help="CoreML minimum deployment target, e.g. iOS16 (default)")
    p.add_argument("--image-input", action="store_true", help="CoreML: image input with mean/std folded in")
    p.add_argument("--plugins", action="store_true",
                   help="onnx, tensorrt: the edgezoo fused ops as TensorRT plugin nodes (domain edgezoo)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="a format option (see --list-formats)")
    p.add_argument("--ema", action="store_true", help="export a checkpoint's EMA weights")
    p.add_argument("--json", help="write the results as JSON here")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    p.add_argument("--all", action="store_true", help="the model x format x precision matrix of every model")
    p.add_argument("--models", help="with --all: only models matching these comma-separated substrings or globs")
    p.add_argument("--precisions", help="with --all: only these precisions, e.g. fp32,int8")
    p.add_argument("--jobs", type=non_negative_int,
                   help="with --all: worker processes (default: the cores; 0: in this process)")
    p.add_argument("--list-formats", action="store_true", help="list formats, their options and what is installed")
    p.set_defaults(func=cmd_export)
