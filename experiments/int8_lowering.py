"""Export one checkpoint's ExecuTorch int8 program with other lowerings, to time them against the default.

    python experiments/int8_lowering.py runs/int8-table/ez_efficientvit_b0-48px-8ep/best.pth --out /tmp/b0
    python experiments/pte_ab.py /tmp/b0/{default,slices,decompositions,both}/*_int8.pte --img-size 48 --rounds 40

Variants (each through ``edgezoo export``'s gate; their delegate counts and agreement are in the ``.pte.json``):

* ``default``: what ``edgezoo export --int8`` writes;
* ``slices``: every split lowered as slices, int8 inputs included (``xnnpack_rewrites`` keeps a quantised split
  whole because int8 slices broke SHViT and FocalNet at run time; EfficientViT-B0's pieces feed only float ops;
  the patch lifts the same int8 guard from squeeze/unsqueeze views, which B0 has none of);
* ``decompositions``: the fp32 programs' decompositions (``xnnpack_decompositions``) in the int8 program too;
* ``both``.

On 2026-12-04 (Zen 4 EPYC ``-9963a7``, B0 at 48 px, digits weights): 10, 6, 5 and 1 delegates, all 99.4% agreement;
timed alternately in three runs, the others at 0.95-0.97x, 0.96-0.97x and 0.91-1.01x the default. A probe:
nothing here is a default.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

VARIANTS = ("default", "slices", "decompositions", "both")


def _export(variant: str, argv: list[str]) -> int:
    """One variant's export in this process (the patches are module globals)."""
    import edgezoo.export.xnnpack_decompositions as decompositions
    import edgezoo.export.xnnpack_rewrites as rewrites
    from edgezoo.cli import main as edgezoo_main

    if variant in ("decompositions", "both"):
        table = decompositions.decompositions()
        decompositions.int8_decompositions = lambda: dict(table)  # what the int8 path runs
    if variant in ("slices", "both"):
        rewrites._dequantized = lambda node: False
    return edgezoo_main(argv)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a digits-trained checkpoint (its image size is used)")
    parser.add_argument("--out", type=Path, required=True, help="one folder per variant under it")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # the child process's
    args = parser.parse_args()
    export = ["export", args.checkpoint, "--format", "executorch", "--int8", "--calib", "digits", "-q"]
    if args.variant:
        return _export(args.variant, [*export, "--out", str(args.out / args.variant)])
    failed = 0
    for variant in args.variants.split(","):
        failed |= subprocess.call([sys.executable, __file__, args.checkpoint, "--out", str(args.out),
                                   "--variant", variant])
    return failed


if __name__ == "__main__":
    sys.exit(main())
