"""How close SHViT-S1's FFNs run to the machine's fp32 peak on onnxruntime, as 1x1 convs and as MatMuls.

    python experiments/ffn_gemm.py [--blocks 6] [--rounds 40] [--threads 2]

For each stage shape of SHViT-S1 at 224 px (128 channels at 14x14, 224 at 7x7, 320 at 4x4) a chain of
``--blocks`` residual FFNs (expand 2x, ReLU, project) is exported twice: channel-major with 1x1 convs (as
edgezoo's and timm's SHViT graphs run them: onnxruntime's NCHWc convolutions) and token-major with Linear
layers (MatMuls with pre-packed weights). Both are timed interleaved in rounds of 10 calls after an untimed
one; the report is the median per-call time per FFN and the GFLOP/s it implies, to compare with the
fingerprint's large-matmul figure. On 2026-12-04 (Zen 4 EPYC, 178 GFLOP/s matmul): convs 161-168 GFLOP/s,
MatMuls 150-158: the FFNs are compute-bound in both forms (README, "Against timm").
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import onnxruntime as ort
import torch
from torch import nn

from edgezoo.bench import Protocol, measure
from edgezoo.export.onnx import session_options

STAGES = ((128, 14), (224, 7), (320, 4))  # SHViT-S1 at 224 px: channels, map side


class FFNChain(nn.Module):
    """``blocks`` residual FFNs ``x + proj(relu(expand(x)))``, as 1x1 convs or as Linear layers."""

    def __init__(self, dim: int, blocks: int, token_major: bool) -> None:
        super().__init__()

        def layer(i: int, o: int) -> nn.Module:
            return nn.Linear(i, o) if token_major else nn.Conv2d(i, o, 1)

        self.blocks = nn.ModuleList(nn.Sequential(layer(dim, 2 * dim), nn.ReLU(), layer(2 * dim, dim))
                                    for _ in range(blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = x + block(x)
        return x


def _session(model: nn.Module, x: torch.Tensor, path: Path, threads: int):
    torch.onnx.export(model.eval(), (x,), path, dynamo=False, opset_version=18)
    session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.numpy()}
    return lambda: session.run(None, feed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for dim, side in STAGES:
            tokens = side * side
            runs = {
                "conv": _session(FFNChain(dim, args.blocks, False), torch.rand(1, dim, side, side),
                                 Path(tmp) / "conv.onnx", args.threads),
                "matmul": _session(FFNChain(dim, args.blocks, True), torch.rand(1, tokens, dim),
                                   Path(tmp) / "matmul.onnx", args.threads),
            }
            stats = measure(runs, Protocol(warmup=1, runs=args.rounds * 10, block=10, max_seconds=300))
            times = {name: s.p50_ms / 1e3 for name, s in stats.items()}
            flops = args.blocks * 2 * 2 * tokens * dim * 2 * dim  # two GEMMs a block, 2 flops a MAC
            report = ", ".join(f"{name} {t * 1e6 / args.blocks:.1f} us/FFN ({flops / t / 1e9:.0f} GFLOP/s)"
                               for name, t in times.items())
            print(f"{dim} channels at {side}x{side}: {report}", flush=True)


if __name__ == "__main__":
    main()
