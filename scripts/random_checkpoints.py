"""Write randomised-weight checkpoints that ``edgezoo bench`` and ``edgezoo export`` can time and gate.

A model name given to those commands is already randomised (every weight drawn, BatchNorm statistics
from random images at the size it runs: :func:`edgezoo.weights.calibrate_bn_`; timm's fresh init zeroes
branches that converters fold away, and LiteRT timed timm's EfficientViT-M0 as initialised at 0.58 ms
against 2.17 ms randomised). A checkpoint fixes those weights across commands and machines, and lets the
BatchNorm statistics come from another size than the one timed:

    python scripts/random_checkpoints.py OUT_DIR [MODEL ...] [--bn-size 128]

With no model: the smallest model of each family (:func:`edgezoo.bench.smallest_per_family`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import timm
import torch

import edgezoo  # noqa: F401  (registers the ez_* models with timm)
from edgezoo.bench import smallest_per_family
from edgezoo.weights import calibrate_bn_


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="folder for <model>.pth")
    p.add_argument("models", nargs="*", help="model names (default: the smallest of each family)")
    p.add_argument("--bn-size", type=int, default=128, help="image size the BatchNorm statistics are taken at")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.models or smallest_per_family():
        model = calibrate_bn_(timm.create_model(name), size=args.bn_size, seed=args.seed)
        path = out / f"{name}.pth"
        torch.save({"arch": name, "num_classes": model.num_classes, "model": model.state_dict()}, path)
        print(path)


if __name__ == "__main__":
    main()
