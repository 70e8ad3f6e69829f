"""What does a layout change cost inside ExecuTorch's XNNPACK delegate?

    python experiments/xnnpack_transposes.py            # 20 1x1 convs, 64 channels, 14x14, 300 interleaved runs

Four fp32 programs of the same 20 1x1 convs (64 channels, a 14x14 map, batch 1), lowered whole to XNNPACK,
differ only in what runs after each conv: nothing; a ``permute`` to NHWC and straight back; a token-major
``(B, N, C)`` view, a scale, and back; a channel-major ``flatten``, a scale, and back. The extra time per
conv is what the layout change costs, i.e. whether XNNPACK fuses or elides inverse transposes. On 2026-12-03
(AVX2-only EPYC, otherwise idle, p50): 0.26 / 0.35 / 0.49 / 0.40 ms: it does not; ExecuTorch's
``ChannelsLastTaggedReshapePass`` keeps every conv NHWC and every ``view`` NCHW, so each boundary between
them is a real transpose (README, "Why M0 and B0 stop short of 2x at 99%").
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torch import nn

from edgezoo.bench import Protocol, measure

MODES = ("plain", "permute-pair", "token-major", "channel-major")


class Convs(nn.Module):
    """``depth`` 1x1 convs with the layout round trip ``mode`` after each."""

    def __init__(self, mode: str, chans: int = 64, depth: int = 20) -> None:
        super().__init__()
        self.mode = mode
        self.convs = nn.ModuleList([nn.Conv2d(chans, chans, 1) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        for conv in self.convs:
            x = conv(x)
            if self.mode == "permute-pair":
                x = x.permute(0, 2, 3, 1).permute(0, 3, 1, 2)
            elif self.mode == "token-major":
                t = x.permute(0, 2, 3, 1).reshape(B, H * W, C) * 1.0001
                x = t.view(B, H, W, C).permute(0, 3, 1, 2)
            elif self.mode == "channel-major":
                x = (x.flatten(2) * 1.0001).view(B, C, H, W)
        return x


def _program(model: nn.Module, x: torch.Tensor, path: Path):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    exported = torch.export.export(model.eval(), (x,))
    path.write_bytes(to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch().buffer)
    program = Runtime.get().load_program(path)
    return program, program.load_method("forward")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=14)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(1, 64, args.size, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        loaded = {mode: _program(Convs(mode), x, Path(tmp) / f"{mode}.pte") for mode in MODES}
        fns = {mode: (lambda m=method: m.execute([x])) for mode, (_, method) in loaded.items()}
        stats = measure(fns, Protocol(runs=args.runs))
    for mode, s in stats.items():
        print(f"{mode:14s} p50 {s.p50_ms:.3f} ms  min {s.min_ms:.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
