"""``edgezoo train`` and ``edgezoo validate`` (heavy imports stay inside the handlers)."""

from __future__ import annotations

import argparse
import json

from edgezoo.cli.args import non_negative_int, positive_int

__all__ = ["add_parsers", "cmd_train", "cmd_validate"]


def cmd_train(args: argparse.Namespace) -> int:
    from edgezoo.train.config import resolve_config

    cfg = resolve_config(
        args.config, model=args.model, data=args.data, overrides=args.set or (),
        sched__epochs=args.epochs, data__img_size=args.img_size, data__batch_size=args.batch_size,
        run__output=args.output, run__save_every=args.save_every,
    )
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    if not cfg.data.path:
        from edgezoo.errors import ConfigError

        raise ConfigError("no dataset given: pass --data digits, --data PATH (an ImageFolder root with train/ "
                          "and val/), --data wds/SHARDS_DIR or --data hfds/NAME")
    from edgezoo.train.engine import run

    run(cfg, resume=args.resume)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from edgezoo.train.validate import validate_checkpoint

    res = validate_checkpoint(args.model, args.checkpoint, args.data, img_size=args.img_size,
                              batch_size=args.batch_size, workers=args.workers, use_ema=args.ema,
                              output=args.output)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{args.model} {args.checkpoint}{' (EMA)' if args.ema else ''} on {args.data}: {res['count']} images")
    print(f"  top-1 {res['top1']:.2f}   top-5 {res['top5']:.2f}   loss {res['loss']:.4f}")
    print("per-class top-1:")
    for name, acc in res["per_class"].items():
        print(f"  {name:<24} {acc:6.2f}")
    print(f"confusion matrix: {res['confusion_png']}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train or fine-tune a model with the shared recipe (configs/)",
        description="Resolve the recipe (configs/base.yaml -> family -> model [-> digits.yaml] -> CONFIG -> flags "
                    "-> --set) and train. Under torchrun every process runs this command. SIGTERM writes "
                    "OUTPUT/last.pth and exits 0; the same command with --resume continues.",
    )
    p.add_argument("config", nargs="?", help="a YAML recipe layered on top of the model's own")
    p.add_argument("--model", help="model name (edgezoo or timm); alone it picks the model's recipe")
    p.add_argument("--data", help="'digits' (built in), an ImageFolder root with train/ and val/, wds/SHARDS_DIR "
                                  "(WebDataset shards + _info.json) or hfds/NAME (a Hugging Face dataset)")
    p.add_argument("--epochs", type=positive_int, help="sched.epochs")
    p.add_argument("--img-size", type=positive_int, help="data.img_size")
    p.add_argument("--batch-size", type=positive_int, help="data.batch_size (per process)")
    p.add_argument("--output", help="run.output (default runs/<model>-<data>)")
    p.add_argument("--resume", action="store_true",
                   help="continue OUTPUT/last.pth exactly (also mid-epoch); start afresh if OUTPUT has no checkpoint "
                        "yet; exit 0 if its run is finished")
    p.add_argument("--save-every", type=float, metavar="MIN",
                   help="run.save_every: minutes between mid-epoch checkpoints (0 = epoch ends only; SIGTERM "
                        "always writes one)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any key, e.g. optim.lr=1e-3")
    p.add_argument("--print-config", action="store_true", help="print the resolved recipe and exit")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("validate", help="top-1/top-5/loss, per-class accuracy and confusion matrix of a checkpoint")
    p.add_argument("model")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="'digits' or an ImageFolder root (its val/ is used)")
    p.add_argument("--img-size", type=positive_int, help="default: the checkpoint's, else the model's")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--workers", type=non_negative_int, default=0)
    p.add_argument("--ema", action="store_true", help="validate the EMA weights")
    p.add_argument("--output", help="folder for confusion.png (default: the checkpoint's)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_validate)
