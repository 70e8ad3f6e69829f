"""Does ONNX's fused ``Attention`` (opset 23) speed up EfficientViT-M's cascaded heads on onnxruntime CPU?

    python experiments/onnx_attention.py                 # ez_efficientvit_m0 at 224 px, 300 interleaved runs

The deploy form is exported twice more with torch's dynamo exporter: (a) as edgezoo exports it
(opset 18: each head's scores, bias, softmax and values as MatMul/Add/Softmax/MatMul), and (b) with
each head's attention as ``scaled_dot_product_attention``, which the exporter writes as one
``Attention`` node at opset 23; ``--token-major`` keeps q, k and v token-major in (b) (the layout
``Attention`` reads without transposes). Both sessions are timed interleaved by the bench protocol
and the outputs compared. On 2026-12-02 (EPYC, 2 threads, beside another benchmark): (b) 1.02x slower than
(a) by min latency, 1.22x with ``--token-major``, so the exporter keeps the heads decomposed (README,
"Against timm").
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F

import edgezoo
from edgezoo.bench import Protocol, measure
from edgezoo.blocks.cascaded import CascadedGroupAttention
from edgezoo.export.onnx import ort_session


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """One head on token-major ``(B, N, C)`` tensors as SDPA (4-D: the exporter's Attention wants heads)."""
    return F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], attn_mask=bias, scale=1.0)[:, 0]


def _attend_sdpa(self, q, k, v, bias):  # (B, C, N) in and out, as CascadedGroupAttention._attend
    return _sdpa(q.transpose(-2, -1), k.transpose(-2, -1), v.transpose(-2, -1), bias).transpose(-2, -1)


def _heads_token_major(self, x, bias):  # CascadedGroupAttention._heads_fused with q, k, v kept (B, N, C)
    B, _, H, W = x.shape
    kd, vd = self.key_dim, self.val_dim
    pre = self.qkv_in(x.flatten(2)).transpose(1, 2).split(2 * kd + vd, dim=-1)
    outs: list[torch.Tensor] = []
    for i in range(self.num_heads):
        qkv = pre[i] if i == 0 else pre[i] + F.linear(outs[-1], self.qkv_prev[i - 1].weight[..., 0])
        q, k, v = qkv.split([kd, kd, vd], dim=-1)
        q = self.dws[i](q.transpose(1, 2).reshape(B, kd, H, W)).flatten(2).transpose(1, 2)
        outs.append(_sdpa(q, k, v, bias[i]))
    return torch.cat(outs, dim=-1).transpose(1, 2).reshape(B, -1, H, W)


def _export(model: torch.nn.Module, x: torch.Tensor, path: Path, opset: int) -> None:
    with torch.no_grad():
        torch.onnx.export(model, (x,), dynamo=True, opset_version=opset, verbose=False).save(str(path))
    print(f"{path.name}: {Counter(n.op_type for n in onnx.load(str(path)).graph.node).most_common(8)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ez_efficientvit_m0")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--token-major", action="store_true", help="keep q, k, v token-major in the SDPA variant")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = edgezoo.fuse(edgezoo.create_model(args.model).eval())
    for m in model.modules():  # random init zeroes the projection's BN: give the attention a say in the output
        if isinstance(m, CascadedGroupAttention):
            torch.nn.init.normal_(m.proj.weight, std=0.05)
    x = torch.randn(1, 3, args.img_size, args.img_size)
    with tempfile.TemporaryDirectory() as work:
        a, b = Path(work) / "decomposed.onnx", Path(work) / "attention.onnx"
        _export(model, x, a, 18)
        if args.token_major:
            CascadedGroupAttention._heads_fused = _heads_token_major
        else:
            CascadedGroupAttention._attend = _attend_sdpa
        _export(model, x, b, 23)
        sa, sb = ort_session(a, threads=args.threads), ort_session(b, threads=args.threads)
    feeds = {s: {s.get_inputs()[0].name: x.numpy()} for s in (sa, sb)}
    ya, yb = (s.run(None, feeds[s])[0] for s in (sa, sb))
    print(f"max |attention - decomposed| = {np.abs(ya - yb).max():.3g} (max |logit| {np.abs(ya).max():.3g})")
    stats = measure({"decomposed": lambda: sa.run(None, feeds[sa]), "attention": lambda: sb.run(None, feeds[sb])},
                    Protocol(warmup=20, runs=args.runs, max_seconds=60))
    for key, st in stats.items():
        print(f"{key}: p50 {st.p50_ms:.3f} ms, min {st.min_ms:.3f} ms")
    print(f"attention / decomposed: p50 {stats['attention'].p50_ms / stats['decomposed'].p50_ms:.3f}, "
          f"min {stats['attention'].min_ms / stats['decomposed'].min_ms:.3f}")


if __name__ == "__main__":
    main()
