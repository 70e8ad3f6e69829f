"""timm's own utilities on every registered edgezoo model, called as timm's scripts call them.

``validate.py``, ``train.py``, ``benchmark.py`` and ``onnx_export.py`` live in timm's repository, not
its wheel; what they call does ship: ``reparameterize_model`` (``--reparam``), ``onnx_export`` (both
torch exporters, static and ``--dynamic-size``, ``--check-forward``), ``resolve_data_config`` +
``create_transform`` + ``create_dataset`` (an ImageFolder), ``create_optimizer_v2`` (with
``--layer-decay``). One model per block family runs in ``make test``, with the TorchScript exporter
(timm's default); the dynamo exporter, 5-30 s an export here, and every other model run in
``make test-all`` (``tests/test_export_onnx.py`` runs the dynamo exporter on one model per family in
``make test``, through edgezoo's export). Weights are randomised (:func:`edgezoo.weights.randomize_`),
so no branch is a zero-initialised no-op.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from timm.data import create_dataset, create_transform, resolve_data_config
from timm.optim import create_optimizer_v2
from timm.utils.model import reparameterize_model
from timm.utils.onnx import onnx_export
from torch import nn

import edgezoo
from tests.util import calibrate_bn_, randomize_, rel_err

#: One model per block family.
FAST = ("ez_efficientvit_m0", "ez_shvit_s1", "ez_focalnet_edge_xs", "ez_efficientvit_b0", "ez_mobilenetv2_eca")
MODELS = [name if name in FAST else pytest.param(name, marks=pytest.mark.slow) for name in edgezoo.list_models()]
SIZE = 64
#: timm's ``check_forward`` compares logits to 3 decimals (absolute): the classifier is scaled so the
#: largest logit is about this, which makes the check a relative one of 1.5e-3, 30 times the float32 drift
#: of these models (randomised weights give logits up to 1e3-1e5, where float32 rounding alone exceeds 1e-3).
LOGIT_SCALE = 1.0


def _model(name: str, num_classes: int = 1000) -> nn.Module:
    return randomize_(timm.create_model(name, num_classes=num_classes)).eval()


def _input(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def _batchnorms(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize("name", MODELS)
def test_reparameterize_model_is_the_deploy_form(name: str) -> None:
    """timm's ``reparameterize_model`` (``--reparam``): no BatchNorm left, outputs equal to edgezoo.fuse's."""
    model = _model(name)
    reparam = reparameterize_model(model).eval()
    fused = edgezoo.fuse(model)
    assert not _batchnorms(reparam), f"BatchNorm left by reparameterize_model: {_batchnorms(reparam)[:5]}"
    x = _input()
    with torch.no_grad():
        ref = model(x)
        assert torch.equal(reparam(x), fused(x))
        assert rel_err(reparam(x), ref) <= 1e-4


@torch.no_grad()
def _deploy_with_unit_logits(name: str) -> nn.Module:
    """Randomised weights with BatchNorm statistics from data (:func:`edgezoo.weights.calibrate_bn_`): random
    statistics leave some channels near zero variance, and the model's own float32 output then drifts from
    float64's by about as much as ``check_forward`` allows (EfficientViT-M0 at 64 px: 4e-4 of logits up to 10)."""
    model = reparameterize_model(calibrate_bn_(timm.create_model(name), size=SIZE))
    head = model.get_classifier()
    scale = LOGIT_SCALE / model(_input()).abs().max()
    head.weight.mul_(scale)
    head.bias.mul_(scale)
    return model


@pytest.mark.parametrize("dynamic_size", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("use_dynamo", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("name", MODELS)
def test_onnx_export_check_forward(tmp_path: Path, name: str, use_dynamo: bool, dynamic_size: bool) -> None:
    """``onnx_export.py --reparam --check-forward [--dynamic-size] [--dynamo]``: onnxruntime matches PyTorch."""
    model = _deploy_with_unit_logits(name)
    path = tmp_path / f"{name}.onnx"
    # A fixed input (timm's default is an unseeded torch.randn): with random weights EfficientViT-M0 meets about
    # one input in 20 where PyTorch's own float32 logits are 2e-2 from float64's (onnxruntime's are closer).
    onnx_export(model, str(path), example_input=_input(), check_forward=True, dynamic_size=dynamic_size,
                use_dynamo=use_dynamo)
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in dims] == [True, False, dynamic_size, dynamic_size]


def _digits_folder(root: Path, per_class: int = 2) -> Path:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for label in range(10):
        idx = [i for i, t in enumerate(digits.target) if t == label][:per_class]
        (root / str(label)).mkdir(parents=True)
        for i in idx:
            Image.fromarray((digits.images[i] * 15).astype("uint8")).convert("RGB").save(root / str(label) / f"{i}.png")
    return root


@pytest.mark.parametrize("name", MODELS)
def test_data_config_transform_and_imagefolder(tmp_path: Path, name: str) -> None:
    """``validate.py``'s data path: the model's pretrained_cfg drives the transform of an ImageFolder."""
    model = _model(name, num_classes=10)
    config = resolve_data_config({"img_size": SIZE}, model=model)
    cfg = model.pretrained_cfg
    assert config["input_size"] == (3, SIZE, SIZE)
    assert (config["mean"], config["std"], config["crop_pct"], config["interpolation"]) == (
        tuple(cfg["mean"]), tuple(cfg["std"]), cfg["crop_pct"], cfg["interpolation"])
    dataset = create_dataset("", root=str(_digits_folder(tmp_path / "val")), split="validation",
                             transform=create_transform(**config))
    assert len(dataset) == 20
    x, label = dataset[len(dataset) - 1]
    assert x.shape == config["input_size"] and label == 9
    mean, std = torch.tensor(config["mean"])[:, None, None], torch.tensor(config["std"])[:, None, None]
    pixels = x * std + mean  # undo the normalisation: back in [0, 1], the digit's strokes near 1
    assert pixels.min() >= -1e-5 and 0.9 <= pixels.max() <= 1 + 1e-5
    batch = torch.stack([dataset[i][0] for i in range(4)])
    with torch.no_grad():
        logits = model(batch)
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", MODELS)
def test_create_optimizer_v2_with_layer_decay(name: str) -> None:
    """``train.py``'s optimiser: AdamW, no weight decay on biases/norms, per-layer lr scales, one real step."""
    model = _model(name, num_classes=10).train()
    opt = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.75)
    params = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    seen = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(seen) == sorted(params), "every trainable parameter in exactly one group"
    no_decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert {i for i, n in params.items() if dict(model.named_parameters())[n].ndim <= 1} <= no_decay
    assert len({g["lr_scale"] for g in opt.param_groups}) > 1
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = nn.functional.cross_entropy(model(_input(4)), torch.arange(4))
    loss.backward()
    opt.step()
    # a residual branch that drop-path dropped for the whole batch has zero gradients: its norms keep their values
    moved = [not torch.equal(p, before[n]) for n, p in model.named_parameters() if p.grad is not None and p.grad.any()]
    assert torch.isfinite(loss) and moved and all(moved)
