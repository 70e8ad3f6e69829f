"""Which ops, kept float, bring a digits-trained ViT's full-integer LiteRT file to ExecuTorch's int8 agreement?

Question: the int8 table's LiteRT column agreed 98.1% (SHViT-S1) and 98.3% (EfficientViT-M0) with fp32 on
360 held-out digits where ExecuTorch's int8 reached 99.2% and 99.4%, and the sensitivity fallback found no
prefix of its ranking worth keeping float. Is the error in the weighted ops (convs, fully connected), in the
element-wise ops between them (residual adds, attention scales), or at the file's ends (int8 input, stem,
logits)?

Method: the checkpoint's fp32 ``.tflite`` (``edgezoo export CKPT --format litert``) is quantised by
ai-edge-quantizer's full-integer recipe on the same 64 calibration digits as the exporter, with the
precision policy's float ops (:func:`edgezoo.export.litert_int8.policy_tensors`) plus each variant's; every
file is run with XNNPACK on the 360 held-out digits and compared with PyTorch's fp32 top-1.

    python experiments/litert_int8_scope.py CKPT [CKPT ...] [--calib-size N]

Variants: the policy alone (``int8_mode=full``), the stem or the classifier float, every op but the convs
and fully connected layers float (``int8_mode=weighted``), that with float logits, and dynamic range
(``int8_mode=dynamic``: int8 weights, activations quantised per call, nothing calibrated).

Answer: see ``experiments/README.md``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def main() -> None:
    from ai_edge_quantizer import quantizer, recipe

    from edgezoo.data.calib import load_calibration
    from edgezoo.export import export, prepare
    from edgezoo.export.litert import interpreter, litert_runner
    from edgezoo.export.litert_int8 import op_graph, policy_tensors, static_quantizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--calib-size", type=int, default=64, help="calibration digits (the exporter's default: 64)")
    args = parser.parse_args()
    for ckpt in args.checkpoints:
        src = prepare(ckpt)
        data = load_calibration("digits", src, n=args.calib_size, held_out=360)
        with torch.inference_mode():
            ref = src.model(data.held_out).argmax(1).numpy()
        out = Path(tempfile.mkdtemp())
        content = Path(export(src, "litert", out).path).read_bytes()
        ops, names = op_graph(content)
        outputs = {op["op_name"]: [] for op in ops}
        for op in ops:
            outputs[op["op_name"]].extend(names.get(i, "") for i in op["outputs"])
        weighted = [n for op in ops if op["op_name"] in WEIGHTED for n in (names.get(i, "") for i in op["outputs"])]
        first, last = weighted[0], weighted[-1]
        others = [n for kind, ns in outputs.items() if kind not in WEIGHTED for n in ns]
        policy = policy_tensors(content, src.model)
        signatures = interpreter(content, 1, xnnpack=False).get_signature_list()
        key = next(iter(signatures))
        input_name = signatures[key]["inputs"][0]
        calib = [{input_name: data.calib[i:i + 1].numpy()} for i in range(len(data.calib))]
        variants = {"policy": [], "stem float": [first], "logits float": [last], "both ends float": [first, last],
                    "only weighted ops int8": others, "weighted, logits float": [*others, last], "dynamic range": None}
        print(f"{src.name} at {src.input_size[1]} px, {len(calib)} calibration digits: {len(ops)} ops, "
              f"{len(weighted)} weighted, policy keeps {len(policy)} float")
        for label, extra in variants.items():
            if extra is None:
                q = quantizer.Quantizer(bytearray(content), recipe.dynamic_wi8_afp32())
                made = bytes(q.quantize(enable_progress_report=False).quantized_model)
            else:
                q = static_quantizer(content, sorted({*policy, *extra}))
                made = bytes(q.quantize(q.calibrate({key: calib}, num_threads=1),
                                        enable_progress_report=False).quantized_model)
            run = litert_runner(made, threads=1, xnnpack=True)
            got = np.array([int(np.argmax(run(data.held_out[i:i + 1].numpy()))) for i in range(len(ref))])
            print(f"  {label:24s} agreement {float((got == ref).mean()):.1%} ({int((got != ref).sum())} flips), "
                  f"{len(made) / len(content):.2f}x size", flush=True)


if __name__ == "__main__":
    main()
