"""Does keeping the classifier or the stem conv float lift a model's ExecuTorch int8 agreement?

    python experiments/int8_float_ends.py CHECKPOINT --img-size 48 --keep none,classifier,stem

For each choice the checkpoint is exported to ExecuTorch int8 (``int8_fallback=0`` by default, so only
the choice differs from the stock policy) and gated on every held-out digit; it prints the agreement and
flips. ``classifier``: the model's ``get_classifier()`` Linear and the pooling and element-wise ops between
it and the last conv/linear before it (a float Linear needs a float input in XNNPACK); ``stem``: the first
conv of the graph. The probe adds these to the precision policy's float nodes
(``edgezoo.export.executorch._float_nodes``) for its own run only. On 2026-12-03 (digits checkpoints of
``scripts/int8_table.py``): EfficientViT-M0 at 48 px 3 flips either way (classifier float); EfficientViT-B0
at 128 px 3 -> 2 flips (stem float); neither became a default (README, "Why M0 and B0 stop short of 2x at 99%").
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

import torch

WEIGHTED = ("conv", "linear", "addmm")


def _scopes(node: Any) -> list[str]:
    return [path for path, _ in node.meta.get("nn_module_stack", {}).values()]


def classifier_nodes(graph: torch.fx.GraphModule, model: torch.nn.Module) -> list[Any]:
    """The classifier's ops and the non-weighted ops feeding it, back to the global pool (inclusive)."""
    cls = model.get_classifier()
    name = next(n for n, m in model.named_modules() if m is cls)
    ops = [n for n in graph.graph.nodes if n.op == "call_function" and name in _scopes(n)]
    keep, todo = list(ops), [i for n in ops for i in n.all_input_nodes]
    while todo:
        node = todo.pop()
        target = str(node.target)
        if node.op != "call_function" or node in keep or any(w in target for w in WEIGHTED):
            continue
        keep.append(node)
        if "mean" not in target and "pool" not in target:
            todo.extend(node.all_input_nodes)
    return keep


def stem_nodes(graph: torch.fx.GraphModule, model: torch.nn.Module) -> list[Any]:
    """The graph's first conv."""
    return [next(n for n in graph.graph.nodes if n.op == "call_function" and "conv" in str(n.target))]


def main() -> int:
    import edgezoo.export.executorch as et
    from edgezoo.export import export

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--img-size", type=int, required=True)
    parser.add_argument("--keep", default="none,classifier,stem", help="comma-separated: none, classifier, stem")
    parser.add_argument("--fallback", default="0", help="int8_fallback for every export (default 0)")
    args = parser.parse_args()
    policy = et._float_nodes
    choices = {"none": [], "classifier": [classifier_nodes], "stem": [stem_nodes]}
    for keep in args.keep.split(","):
        extra = choices[keep]

        def float_nodes(graph: torch.fx.GraphModule, model: torch.nn.Module, extra=extra) -> list[Any]:
            nodes = policy(graph, model)
            return list(dict.fromkeys(nodes + [n for rule in extra for n in rule(graph, model)]))

        et._float_nodes = float_nodes
        try:
            with tempfile.TemporaryDirectory() as out:
                res = export(args.checkpoint, "executorch", out, int8=True, calib="digits", img_size=args.img_size,
                             int8_fallback=args.fallback)
        finally:
            et._float_nodes = policy
        p = res.parity
        print(f"{keep:10s} {res.status}  agreement {p.get('top1_agreement', float('nan')):.1%}  "
              f"flips {p.get('top1_flips')}  ({res.seconds:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
