"""onnxruntime speed of the fused SHSA's norm as ``GroupNorm(1)`` without affine against a LayerNorm over (C, N).

    python experiments/shsa_groupnorm.py [--model ez_shvit_s1] [--size 224] [--threads 2] [--runs 300]

The deploy form of SHViT runs its single-head attention's pre-norm (a per-sample standardisation of the
attended channel slice, its affine folded into qkv) as ``nn.GroupNorm(1, C, affine=False)`` on the
token-flattened ``(B, C, N)`` slice, which both torch ONNX exporters take at any input size. The form it
replaces, ``F.layer_norm(x, x.shape[1:])``, computes the same values but only the dynamo exporter takes
it (the TorchScript exporter cannot make the shape list constant). The same fused, randomised model
(:func:`edgezoo.weights.calibrate_bn_`) is exported in both forms with the dynamo exporter and onnxslim
(as ``edgezoo export`` does), and the GroupNorm form also with the TorchScript exporter (as timm's
``onnx_export`` does by default); the files are timed interleaved, call by call, with one protocol
(:func:`edgezoo.bench.protocol.measure`). Prints the fingerprint, each file's p50 and the ratios to
the LayerNorm form.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxslim
import torch
import torch.nn.functional as F

import edgezoo
from edgezoo.bench.fingerprint import fingerprint
from edgezoo.bench.protocol import Protocol, measure
from edgezoo.blocks.single_head import SHSA
from edgezoo.export.onnx import ort_session
from edgezoo.weights import calibrate_bn_


class LayerNormSHSA(SHSA):
    """The fused SHSA with its norm written as a LayerNorm over the flattened slice's (C, N)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        x1, x2 = torch.split(x, [self.pdim, self.dim - self.pdim], dim=1)
        x1 = x1.flatten(2)
        q, k, v = self.qkv(F.layer_norm(x1, x1.shape[1:], eps=self.pre_norm.eps)).split(
            [self.qk_dim, self.qk_dim, self.pdim], dim=1)
        attn = (q.transpose(-2, -1) @ k).softmax(dim=-1)
        x1 = (v @ attn.transpose(-2, -1)).view(B, self.pdim, H, W)
        return self.proj(self.act(torch.cat([x1, x2], dim=1)))


def _export(model: torch.nn.Module, x: torch.Tensor, path: Path, dynamo: bool) -> Path:
    if dynamo:
        program = torch.onnx.export(model, (x,), dynamo=True, opset_version=18, verbose=False)
        onnx.save(onnxslim.slim(program.model_proto), path)
    else:
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=18)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="ez_shvit_s1")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    group_norm = edgezoo.fuse(calibrate_bn_(edgezoo.create_model(args.model), size=args.size))
    layer_norm = edgezoo.fuse(calibrate_bn_(edgezoo.create_model(args.model), size=args.size))
    for m in layer_norm.modules():
        if type(m) is SHSA:
            m.__class__ = LayerNormSHSA
    x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = group_norm(x).numpy()
        assert np.abs(layer_norm(x).numpy() - ref).max() <= 1e-5 * np.abs(ref).max()

    with tempfile.TemporaryDirectory() as tmp:
        files = {
            "layernorm-dynamo": _export(layer_norm, x, Path(tmp) / "ln.onnx", dynamo=True),
            "groupnorm-dynamo": _export(group_norm, x, Path(tmp) / "gn.onnx", dynamo=True),
            "groupnorm-torchscript": _export(group_norm, x, Path(tmp) / "gn_ts.onnx", dynamo=False),
        }
        sessions = {k: ort_session(p, threads=args.threads) for k, p in files.items()}
        feed = x.numpy()
        calls = {}
        for key, sess in sessions.items():
            name = sess.get_inputs()[0].name
            out = sess.run(None, {name: feed})[0]
            assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max(), key
            calls[key] = (lambda s=sess, n=name: s.run(None, {n: feed}))
        stats = measure(calls, Protocol(warmup=20, runs=args.runs, max_seconds=args.seconds))
    fp = fingerprint(args.threads)
    base = stats["layernorm-dynamo"].p50_ms
    print(json.dumps({
        "fingerprint": fp["id"], "cpu": fp["cpu"], "versions": fp["versions"],
        "model": args.model, "size": args.size, "threads": args.threads,
        "p50_ms": {k: round(s.p50_ms, 3) for k, s in stats.items()},
        "runs": {k: s.runs for k, s in stats.items()},
        "ratio_to_layernorm": {k: round(s.p50_ms / base, 3) for k, s in stats.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
