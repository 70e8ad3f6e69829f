"""CoreML export: every family converts, metadata and I/O round-trip, the fp16 policy, image input.

coremltools converts on Linux but predicts on macOS only: off macOS an export's status is
``converted`` and the parity tests skip; on macOS the same exports must be ``verified``.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch

pytest.importorskip("coremltools")

import coremltools as ct
from coremltools.proto import MIL_pb2

import edgezoo
import edgezoo.export.coreml as coreml  # importing registers the format
from edgezoo.errors import InvalidArgumentError
from edgezoo.export import ExportResult, export, get_format
from edgezoo.export.base import parse_bool
from tests.util import calibrate_bn_, rel_err

SIZE = 64
MAC = sys.platform == "darwin"
EXPECTED = "verified" if MAC else "converted"
ON_MAC_ONLY = pytest.mark.skipif(not MAC, reason="CoreML runs on macOS only")
#: the smallest model of each block family
FAMILIES = ["ez_mobilenetv2_eca", "ez_shvit_s1", "ez_efficientvit_m0", "ez_focalnet_edge_xs", "ez_efficientvit_b0"]
FP16, FP32 = MIL_pb2.DataType.Value("FLOAT16"), MIL_pb2.DataType.Value("FLOAT32")


def _model(name: str) -> torch.nn.Module:
    return calibrate_bn_(timm.create_model(name), SIZE)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., ExportResult]:
    """``exported(name, **options)``: the export of ``name`` at :data:`SIZE`, made once per module."""
    cache: dict[tuple, ExportResult] = {}

    def get(name: str, **kwargs: Any) -> ExportResult:
        key = (name, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = export(_model(name), "coreml", tmp_path_factory.mktemp(name), img_size=SIZE, **kwargs)
        return cache[key]

    return get


def _load(result: ExportResult) -> Any:
    return ct.models.MLModel(result.path, skip_model_load=True)


def _ops(result: ExportResult) -> list[tuple[str, int | None]]:
    """``(op type, output dtype)`` of every op of the saved ML Program's main function."""
    fn = _load(result).get_spec().mlProgram.functions["main"]
    block = fn.block_specializations[fn.opset]
    return [(op.type, op.outputs[0].type.tensorType.dataType if op.outputs else None) for op in block.operations]


def _assert_status(result: ExportResult) -> None:
    assert result.status == EXPECTED, result.summary()
    if MAC:
        assert result.parity["passed"], result.parity
    else:
        assert result.parity["passed"] is None
        assert "CoreML runs on macOS only" in result.parity["reason"]


def test_format_registered() -> None:
    fmt = get_format("coreml")
    assert isinstance(fmt, coreml.CoremlFormat)
    assert (fmt.suffix, fmt.extra, fmt.precisions, fmt.supports_dynamic) == (".mlpackage", "export", ("fp16", "fp32"),
                                                                            False)
    assert fmt.options["target"].default == "iOS16" and fmt.options["image_input"].default is False
    assert (fmt.runtime_reason() is None) == MAC
    if not MAC:
        with pytest.raises(coreml.NotRunnable, match="macOS only"):
            fmt.run(Path("x.mlpackage"), np.zeros((1, 3, SIZE, SIZE), np.float32), None)  # type: ignore[arg-type]


def test_option_parsing(tmp_path: Path) -> None:
    assert parse_bool("true") is True and parse_bool("Off") is False and parse_bool(True) is True
    assert coreml._target("ios17") == "iOS17" and coreml._target("macOS14") == "macOS14"
    with pytest.raises(ValueError):
        parse_bool("maybe")
    for bad in ({"target": "iOS9"}, {"image_input": "maybe"}, {"opset": 18}):
        with pytest.raises(InvalidArgumentError):
            export("ez_mobilenetv2_eca", "coreml", tmp_path, **bad)
    with pytest.raises(InvalidArgumentError, match="does not export int8"):
        export("ez_mobilenetv2_eca", "coreml", tmp_path, int8=True)
    with pytest.raises(InvalidArgumentError, match="static batch"):
        export("ez_mobilenetv2_eca", "coreml", tmp_path, dynamic=True)


@pytest.mark.parametrize("name", FAMILIES)
def test_family_converts(exported: Callable[..., ExportResult], name: str) -> None:
    result = exported(name)
    _assert_status(result)
    path = Path(result.path)
    assert path.name == f"{name}_fp16.mlpackage" and path.is_dir()
    assert json.loads(path.with_name(path.name + ".json").read_text())["model"] == name
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "temporary files left behind"
    assert result.notes["exporter"] == "torch.export" and result.notes["target"] == "iOS16"

    mlmodel = _load(result)
    meta = mlmodel.user_defined_metadata
    cfg = timm.create_model(name).pretrained_cfg
    assert meta["model"] == name and meta["format"] == "coreml" and meta["precision"] == "fp16"
    assert json.loads(meta["input_size"]) == [3, SIZE, SIZE]
    assert json.loads(meta["mean"]) == pytest.approx(list(cfg["mean"]))
    assert json.loads(meta["std"]) == pytest.approx(list(cfg["std"]))
    assert meta["edgezoo_version"] == edgezoo.__version__ and meta["edgezoo.input_type"] == "tensor"
    assert mlmodel.author == "edgezoo" and mlmodel.version == edgezoo.__version__ and name in mlmodel.short_description

    spec = mlmodel.get_spec()
    assert spec.specificationVersion == 7  # iOS16
    (inp,), (out,) = spec.description.input, spec.description.output
    assert inp.name == "input" and list(inp.type.multiArrayType.shape) == [1, 3, SIZE, SIZE]
    assert out.name == "logits" and list(out.type.multiArrayType.shape) == [1, 1000]
    assert inp.type.multiArrayType.dataType == out.type.multiArrayType.dataType == ct.proto.FeatureTypes_pb2.\
        ArrayFeatureType.FLOAT32
    dtypes = Counter(dtype for op, dtype in _ops(result) if op == "conv")
    assert dtypes[FP16] > 0 and dtypes[FP32] == 0, "convolutions should run in fp16"


def test_fp16_keeps_policy_ops_fp32(exported: Callable[..., ExportResult]) -> None:
    """EfficientViT-B0's LiteMLA normalisers (sum, matmuls, +eps, division) and its LayerNorm stay fp32."""
    result = exported("ez_efficientvit_b0")
    ops = _ops(result)
    by_type: dict[str, Counter] = {}
    for op, dtype in ops:
        by_type.setdefault(op, Counter())[dtype] += 1
    # 4 LiteMLA blocks: each has one sum, one division and three matmuls, all fp32, none in fp16
    assert by_type["reduce_sum"] == Counter({FP32: 4})
    assert by_type["real_div"] == Counter({FP32: 4})
    assert by_type["matmul"] == Counter({FP32: 12})
    assert by_type["layer_norm"][FP16] == 0 and by_type["layer_norm"][FP32] >= 1
    assert by_type["add"][FP32] >= 4  # den + eps
    assert by_type["cast"][FP32] > 0 and by_type["cast"][FP16] > 0  # casts at the fp32 regions' borders
    assert by_type["conv"][FP16] > 0
    assert result.notes["fp32_ops"] >= 4 * 5 + 1
    assert len(json.loads(_load(result).user_defined_metadata["edgezoo.fp32_ops"])) == result.notes["fp32_ops"]


def test_fp16_without_regions_keeps_only_layer_norm(exported: Callable[..., ExportResult]) -> None:
    """A model without fp32 regions: every LayerNorm fp32 and everything else fp16."""
    result = exported("ez_focalnet_edge_xs")
    ops = _ops(result)
    norms = Counter(dtype for op, dtype in ops if op == "layer_norm")
    assert norms[FP32] == result.notes["fp32_ops"] > 0 and norms[FP16] == 0
    assert not [op for op, dtype in ops if dtype == FP32 and op in ("matmul", "real_div", "reduce_sum", "conv")]


def test_fp32_image_input(exported: Callable[..., ExportResult]) -> None:
    result = exported("ez_mobilenetv2_eca", precision="fp32", image_input="true", target="ios17")
    _assert_status(result)
    assert Path(result.path).name == "ez_mobilenetv2_eca.mlpackage" and result.precision == "fp32"
    assert result.options["image_input"] is True and result.notes["target"] == "iOS17"
    mlmodel = _load(result)
    spec = mlmodel.get_spec()
    assert spec.specificationVersion == 8  # iOS17
    (inp,) = spec.description.input
    assert inp.type.WhichOneof("Type") == "imageType"
    image = inp.type.imageType
    assert (image.width, image.height) == (SIZE, SIZE)
    assert image.colorSpace == ct.proto.FeatureTypes_pb2.ImageFeatureType.RGB
    assert mlmodel.user_defined_metadata["edgezoo.input_type"] == "image"
    ops = _ops(result)
    assert not [op for op, dtype in ops if dtype == FP16], "an fp32 program has no fp16 op"
    assert "fp32_ops" not in result.notes


def test_image_input_folds_normalisation_exactly() -> None:
    """The wrapper on pixels / 255 equals the model on the normalised image; the pixel round trip is exact."""
    model = edgezoo.fuse(_model("ez_mobilenetv2_eca"))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    pixels = torch.randint(0, 256, (2, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(0)).float()
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    normalised = (pixels / 255 - m) / s
    with torch.no_grad():
        assert torch.equal(coreml._ImageInput(model, mean, std)(pixels / 255), model(normalised))
        assert torch.equal(coreml._PixelReference(model, mean, std)(normalised), model(normalised))
    assert np.array_equal(coreml._to_pixels(normalised.numpy(), mean, std), pixels.numpy().astype(np.uint8))


def test_image_input_needs_batch_one(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="batch 1"):
        export(_model("ez_mobilenetv2_eca"), "coreml", tmp_path, img_size=SIZE, batch=2, image_input=True)
    assert not list(tmp_path.iterdir()), "a refused export leaves nothing behind"


@ON_MAC_ONLY
@pytest.mark.parametrize("name", ["ez_efficientvit_m0", "ez_efficientvit_b0"])
def test_prediction_parity(exported: Callable[..., ExportResult], name: str) -> None:
    """Core ML's prediction matches PyTorch's deploy form (fp16 within 2e-2, fp32 within 1e-4)."""
    model = edgezoo.fuse(_model(name))
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
    for precision, tol in (("fp16", 2e-2), ("fp32", 1e-4)):
        result = exported(name, precision=precision)
        assert result.status == "verified", result.summary()
        out = ct.models.MLModel(result.path).predict({"input": x.numpy()})["logits"]
        assert rel_err(torch.from_numpy(np.asarray(out)), ref) < tol


@pytest.mark.slow
@pytest.mark.parametrize("name", edgezoo.list_models())
def test_every_model_converts(tmp_path: Path, name: str) -> None:
    """At each model's default input size: EfficientViT-M's window path is only taken at window multiples
    (a 64 px run once hid that it did not convert at 224)."""
    model = timm.create_model(name)
    size = model.pretrained_cfg["input_size"][-1]
    result = export(calibrate_bn_(model, size, batches=1), "coreml", tmp_path, img_size=size)
    _assert_status(result)
    assert Path(result.path).is_dir()
