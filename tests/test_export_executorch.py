"""ExecuTorch export: ``.pte`` lowered to XNNPACK, gated in the ExecuTorch runtime on this machine.

Lowering is slow (tens of seconds a model on 2 cores, more for graphs XNNPACK splits into many
delegates), so the default suite lowers one small CNN in fp32 (random weights, BN statistics from
data) and one briefly trained on digits in int8; ``-m slow`` adds one fp32 model per family and
int8 for a trained CNN (batch 2), FocalNet and EfficientViT-M0. Everything runs at 32 px
and one thread per test process (``pytest -n 2`` on 2 cores: more threads only contend).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import edgezoo
import edgezoo.export.executorch as et
from edgezoo.errors import InvalidArgumentError
from edgezoo.export import NotRunnable, export, get_format
from tests.util import calibrate_bn_

pytest.importorskip("executorch")

SIZE = 32
FP32_MODEL = "ez_resnet18_se"  # one XNNPACK delegate, the fastest to lower of the zoo's small models
INT8_MODEL = "ez_resnet18_se"  # 3 epochs of digits at 32 px: ~97% val top-1


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread while a test runs (restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _sidecar(path: str) -> dict:
    return json.loads(Path(f"{path}.json").read_text())


def _check_metadata(result) -> None:
    """The program's constant methods hold the metadata the sidecar JSON holds."""
    side = _sidecar(result.path)
    embedded = et.read_metadata(result.path)
    assert embedded == {k: v for k, v in side.items() if k != "export"}
    assert embedded["model"] == result.model and embedded["precision"] == result.precision
    assert embedded["format"] == "executorch" and embedded["input_size"] == list(result.metadata["input_size"])
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(result.path)
    assert {"forward", et.METADATA_METHOD, "edgezoo_model", "edgezoo_mean"} <= program.method_names
    assert program.load_method("edgezoo_model").execute([])[0] == result.model
    assert json.loads(program.load_method("edgezoo_mean").execute([])[0]) == side["mean"]


def _fp32(name: str, tmp_path: Path, batch: int = 1, size: int = SIZE):
    model = calibrate_bn_(timm.create_model(name), size)
    result = export(model, "executorch", tmp_path, img_size=size, batch=batch)
    print(f"\n{result.summary()}; lowering {result.notes.get('lower_s')} s, {result.notes.get('delegates')} "
          f"delegate(s), not delegated: {result.notes.get('non_delegated')}")
    assert result.status == "verified", result.summary() + "\n" + result.notes.get("traceback", "")
    assert result.parity["max_rel_err"] <= 1e-4 and result.parity["top1_flips"] == 0
    assert Path(result.path).name == f"{name}.pte" and Path(result.path).stat().st_size == result.size_bytes
    assert result.notes["delegates"] >= 1 and result.notes["delegated_ops"] > 0
    return result


def _int8(name: str, tmp_path: Path, epochs: int, img_size: int = SIZE, batch: int = 1, agreement: float = 0.99):
    from edgezoo.train import train_digits

    trained = train_digits(name, epochs=epochs, img_size=img_size, output=str(tmp_path / "train"), run__threads=1,
                           run__progress=False)
    top1 = max(trained["val_top1"], trained.get("ema_val_top1", 0.0))
    assert top1 >= 90.0, f"{name} reached only {top1:.1f}% on digits in {epochs} epochs"
    result = export(trained["checkpoint"], "executorch", tmp_path / "out", int8=True, calib="digits", batch=batch)
    print(f"\n{result.summary()}; val top-1 {top1:.1f}%; {result.notes.get('quantized_tensors')} quantised tensors, "
          f"lowering {result.notes.get('lower_s')} s, not delegated: {result.notes.get('non_delegated')}")
    assert result.status == "verified", result.summary() + "\n" + result.notes.get("traceback", "")
    assert result.parity["images"] >= 200
    assert result.parity["top1_agreement"] >= agreement
    assert Path(result.path).name == f"{name}_int8.pte"
    assert result.notes["quantized_tensors"] > 0 and result.notes["calibration_batches"] == 64 // batch
    assert "calibration" in result.metadata and result.metadata["classes"] == [str(i) for i in range(10)]
    return result


# -- cheap checks ---------------------------------------------------------------------------------

def test_registered():
    fmt = get_format("executorch")
    assert isinstance(fmt, et.ExecutorchFormat)
    assert (fmt.suffix, fmt.extra, fmt.modules, fmt.precisions) == (".pte", "executorch", ("executorch",),
                                                                     ("fp32", "int8"))
    assert not fmt.supports_dynamic and "XNNPACK" in fmt.parity and fmt.missing() is None


def test_bad_requests_raise(tmp_path: Path):
    with pytest.raises(InvalidArgumentError, match="static batch"):
        export("ez_resnet18_se", "executorch", tmp_path, dynamic=True)
    with pytest.raises(InvalidArgumentError, match="fp16"):
        export("ez_resnet18_se", "executorch", tmp_path, half=True)
    with pytest.raises(InvalidArgumentError, match="option"):
        export("ez_resnet18_se", "executorch", tmp_path, opset=18)
    assert not list(tmp_path.iterdir())


def test_run_without_runtime_is_not_runnable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import sys

    monkeypatch.setitem(sys.modules, "executorch.runtime", None)  # import fails
    pte = tmp_path / "x.pte"
    pte.write_bytes(b"")
    with pytest.raises(NotRunnable, match="ExecuTorch runtime"):
        get_format("executorch").run(pte, torch.zeros(1, 3, SIZE, SIZE).numpy(), None)


def test_native_gelu_swap_leaves_the_model_alone():
    """edgezoo's export-time erf GELU becomes nn.GELU in a copy; the model itself is unchanged."""
    from edgezoo.blocks.focal import GELU
    from edgezoo.export.base import ExportJob

    model = edgezoo.fuse(timm.create_model("ez_focalnet_edge_xs").eval())
    n = sum(isinstance(m, GELU) for m in model.modules())
    assert n > 0
    job = ExportJob(model=model, name="m", input_size=(3, SIZE, SIZE), batch=1, dynamic=False, precision="fp32",
                    options={}, metadata={}, work_dir=Path("."))
    swapped = et._native_gelu(model, job)
    assert swapped is not model and job.notes["native_gelu"] == n
    assert not any(isinstance(m, GELU) for m in swapped.modules())
    assert sum(isinstance(m, GELU) for m in model.modules()) == n
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(swapped(x), model(x))
    plain = nn.Sequential(nn.Conv2d(3, 4, 1), nn.GELU())
    assert et._native_gelu(plain, job) is plain


def test_xnnpack_module_swaps_compute_the_same_function():
    """FocalNet's channel LayerNorms and split projection become XNNPACK-friendly modules in a copy, with the
    same outputs; the model itself keeps its modules."""
    from timm.layers import LayerNorm2d

    from edgezoo.blocks.focal import FocalModulation
    from edgezoo.export.base import ExportJob
    from edgezoo.export.xnnpack_rewrites import ChannelLayerNorm, SplitPointwise

    torch.manual_seed(0)
    model = edgezoo.fuse(timm.create_model("ez_focalnet_edge_xs").eval())
    norms = sum(isinstance(m, LayerNorm2d) for m in model.modules())
    blocks = sum(isinstance(m, FocalModulation) for m in model.modules())
    job = ExportJob(model=model, name="m", input_size=(3, SIZE, SIZE), batch=1, dynamic=False, precision="fp32",
                    options={}, metadata={}, work_dir=Path("."))
    swapped = et._xnnpack_modules(model, job)
    assert job.notes["channel_layer_norms"] == norms > 0 and job.notes["split_projections"] == blocks > 0
    assert sum(isinstance(m, ChannelLayerNorm) for m in swapped.modules()) == norms
    assert sum(isinstance(m, SplitPointwise) for m in swapped.modules()) == blocks
    assert not any(isinstance(m, LayerNorm2d) for m in swapped.modules())
    assert sum(isinstance(m, LayerNorm2d) for m in model.modules()) == norms  # the model is left as it is
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(swapped(x), model(x), rtol=1e-5, atol=1e-5)
        # MALA reads its LayerNorm2d's affine itself (MALA._prenorm): its swapped copy must still run
        mala = edgezoo.fuse(timm.create_model("ez_mix_mala_s").eval())
        torch.testing.assert_close(et._xnnpack_modules(mala, job)(x), mala(x), rtol=1e-5, atol=1e-5)
    # the norm on its own, with and without an affine, against F.layer_norm over channels
    for affine in (True, False):
        norm = LayerNorm2d(24, eps=1e-6, affine=affine)
        if affine:
            nn.init.normal_(norm.weight)
            nn.init.normal_(norm.bias)
        y = torch.randn(3, 24, 5, 7) * 4 + 2
        torch.testing.assert_close(ChannelLayerNorm(norm)(y), norm(y), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="ungrouped 1x1 conv"):
        SplitPointwise(nn.Conv2d(4, 6, 3), [3, 3])


class _ChannelNormNet(nn.Module):
    """conv -> LayerNorm over channels -> conv: the norm must stay float in int8 and inside the delegate."""

    def __init__(self) -> None:
        super().__init__()
        from timm.layers import LayerNorm2d

        self.stem, self.norm, self.conv = nn.Conv2d(3, 16, 3, padding=1), LayerNorm2d(16), nn.Conv2d(16, 16, 1)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(self.norm(self.stem(x))).mean((2, 3)))


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_channel_layer_norm_is_delegated_and_float(precision: str, tmp_path: Path):
    from edgezoo.data.calib import CalibrationSet
    from edgezoo.export.base import ExportJob

    torch.manual_seed(0)
    model = _ChannelNormNet().eval()
    job = ExportJob(model=model, name="norm", input_size=(3, 8, 8), batch=1, dynamic=False, precision=precision,
                    options={"int8_fallback": 0}, metadata={}, work_dir=tmp_path)
    job.calibration = CalibrationSet(torch.randn(16, 3, 8, 8), torch.randn(4, 3, 8, 8), "random")
    path = et.build_pte(job, tmp_path / f"norm_{precision}.pte")
    assert job.notes["channel_layer_norms"] == 1
    assert job.notes["delegates"] == 1 and job.notes["non_delegated_ops"] == 0, job.notes["non_delegated"]
    x = torch.randn(1, 3, 8, 8)
    out = get_format("executorch").run(path, x.numpy(), job)
    with torch.no_grad():
        ref = model(x).numpy()
    if precision == "fp32":
        assert abs(out - ref).max() <= 1e-5 * max(abs(ref).max(), 1.0)
    else:  # the norm's two mean convs, its rsqrt and its arithmetic are float, not annotated int8
        assert job.notes["float_ops"]["conv2d"] == 2 and job.notes["float_ops"]["rsqrt"] == 1, job.notes["float_ops"]
        assert abs(out - ref).max() <= 0.1 * abs(ref).max()


class _PadWindowsThenCbam(nn.Module):
    """Two patterns XNNPACK refused in int8, in small: a zero pad before a 6-D window partition (view,
    permute, reshape: CGA's windowing) and a module applied twice (CBAM's channel MLP, on the mean- and the
    max-pooled map)."""

    def __init__(self) -> None:
        from edgezoo.blocks.cnn_attention import CBAM

        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 32, 1)
        self.cbam, self.head = CBAM(32), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.pad(self.a(x), (0, 3, 0, 3))
        y = y.view(1, 8, 1, 7, 1, 7).permute(0, 2, 4, 1, 3, 5).reshape(1, 8, 7, 7)
        return self.head(self.cbam(self.b(y)).mean((2, 3)))


def test_quantized_pad_before_views_and_a_shared_module_load(tmp_path: Path):
    """The stock quantizer leaves the pad float between int8 tensors, and quantises a shared module's weights
    at its first use only: XNNPACK refused both programs at load time. Fixed, the program loads and runs."""
    from edgezoo.data.calib import CalibrationSet
    from edgezoo.export.base import ExportJob

    torch.manual_seed(0)
    model = edgezoo.fuse(_PadWindowsThenCbam().eval())
    job = ExportJob(model=model, name="pad", input_size=(3, 4, 4), batch=1, dynamic=False, precision="int8",
                    options={}, metadata={"model": "pad"}, work_dir=tmp_path)
    job.calibration = CalibrationSet(torch.randn(16, 3, 4, 4), torch.randn(4, 3, 4, 4), "random")
    path = et.build_pte(job, tmp_path / "pad_int8.pte")
    assert job.notes["untied_tensors"] == 4  # fc1 and fc2, weight and bias, at the second use
    assert job.notes["calibration_batches"] == 16
    assert et.read_metadata(path) == {"model": "pad"}
    xs = torch.randn(4, 1, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    out = np.concatenate([get_format("executorch").run(path, x.numpy(), job) for x in xs])
    with torch.no_grad():
        ref = torch.cat([model(x) for x in xs]).numpy()
    assert abs(out - ref).max() <= 0.2 * abs(ref).max()  # int8 noise away from fp32


def test_quantized_split_runs(tmp_path: Path):
    """SHSA splits int8 tensors (the attended slice, then q/k/v): rewritten into delegated slices they
    made the program fail at run time (xnn_status_invalid_parameter), so a quantised split stays whole."""
    from edgezoo.data.calib import CalibrationSet
    from edgezoo.export.base import ExportJob
    from edgezoo.shvit import SHViT

    torch.manual_seed(0)
    model = SHViT(embed_dim=(16, 24, 32), partial_dim=(8, 8, 8), depth=(1, 1, 1), num_classes=10)
    model = edgezoo.fuse(calibrate_bn_(model, size=32).eval())
    job = ExportJob(model=model, name="shvit", input_size=(3, 32, 32), batch=1, dynamic=False, precision="int8",
                    options={}, metadata={}, work_dir=tmp_path)
    job.calibration = CalibrationSet(torch.randn(16, 3, 32, 32), torch.randn(4, 3, 32, 32), "random")
    path = et.build_pte(job, tmp_path / "shvit_int8.pte")
    assert job.notes["non_delegated"].get("aten.split_with_sizes_copy.default", 0) > 0
    # loads, runs, and is int8 noise away from fp32 (random weights, 16 random calibration images, 10 logits).
    # Judged on 16 inputs of their own generator: one input's correlation ranges 0.6-0.99 here, and which
    # input ``torch.randn`` gives after the export depended on what the process had run before.
    xs = torch.randn(16, 1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    out = np.concatenate([get_format("executorch").run(path, x.numpy(), job) for x in xs])
    with torch.no_grad():
        ref = torch.cat([model(x) for x in xs]).numpy()
    per_image = [np.corrcoef(o, r)[0, 1] for o, r in zip(out, ref, strict=True)]
    assert np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.85 and np.median(per_image) > 0.9
    assert abs(out - ref).max() <= 0.6 * abs(ref).max()


class _RefusedOps(nn.Module):
    """The ops XNNPACK's partitioner refuses as ``torch.export`` writes them: split, select, a batched
    matmul (its no-op expand), a mean over H, W without keepdim, a sum over the last dim (LiteMLA's
    normaliser), CBAM's max over H, W and max and mean over channels, a mean over H (coordinate attention,
    ELA), LayerNorm, GroupNorm, ELU, reciprocal, a float power, unsqueeze and squeeze
    (edgezoo.export.xnnpack_rewrites, edgezoo.export.xnnpack_decompositions)."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Conv2d(4, 12, 1)
        self.bias = nn.Parameter(torch.randn(3, 9, 9))
        self.norm = nn.LayerNorm(4)
        self.gn = nn.GroupNorm(2, 4)
        self.head = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).flatten(2).split([4, 4, 4], dim=1)
        attn = (q.transpose(-2, -1) @ k + self.bias[1]).softmax(-1)
        y = (v @ attn.transpose(-2, -1)) / (k.relu().sum(-1, keepdim=True) + 1.0)
        y = y.view_as(x) + x[:, 1].unsqueeze(1)
        y = y * (y.amax((2, 3), keepdim=True) + y.amax(1, keepdim=True) + y.mean(1, keepdim=True)).sigmoid()
        y = self.gn(F.elu(y)) + torch.reciprocal(y.pow(3.0).abs() + 1.0) + y.mean(2, keepdim=True)
        return self.head(self.norm(y.mean((2, 3))).unsqueeze(1)).squeeze(1)


@pytest.mark.parametrize("rewrite", [False, True])
def test_xnnpack_rewrites_delegate_everything_with_the_same_values(rewrite: bool, monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path):
    from edgezoo.export import xnnpack_decompositions, xnnpack_rewrites
    from edgezoo.export.base import ExportJob

    if not rewrite:
        monkeypatch.setattr(xnnpack_rewrites, "rewrite_passes", lambda: [])
        monkeypatch.setattr(xnnpack_decompositions, "decompositions", lambda: {})
    torch.manual_seed(0)
    model = _RefusedOps().eval()
    job = ExportJob(model=model, name="refused", input_size=(4, 3, 3), batch=2, dynamic=False, precision="fp32",
                    options={}, metadata={}, work_dir=tmp_path)
    path = et.build_pte(job, tmp_path / "refused.pte")
    x = torch.randn(2, 4, 3, 3)
    out = get_format("executorch").run(path, x.numpy(), job)
    with torch.no_grad():
        ref = model(x).numpy()
    assert abs(out - ref).max() <= 1e-5 * max(abs(ref).max(), 1.0)
    if rewrite:  # all but the channel max, kept portable on purpose (xnnpack_decompositions._reduce)
        assert job.notes["non_delegated"] == {"aten.amax.default": 1} and job.notes["delegates"] == 2
    else:  # the rewrites are what takes them: without, each op is a portable kernel between delegates
        refused = {"aten.split_with_sizes_copy.default", "aten.select_copy.int", "aten.expand_copy.default",
                   "aten.mean.dim", "aten.sum.dim_IntList", "aten.amax.default", "aten.native_layer_norm.default",
                   "aten.native_group_norm.default", "aten.elu.default", "aten.reciprocal.default",
                   "aten.pow.Tensor_Scalar",
                   "aten.unsqueeze_copy.default", "aten.squeeze_copy.dims"}
        assert refused <= set(job.notes["non_delegated"]), job.notes["non_delegated"]


@pytest.mark.parametrize("corrected", [False, True])
def test_tanh_gelu_is_not_lowered_as_the_exact_gelu(corrected: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """ExecuTorch 1.5's partitioner gives ``gelu(approximate="tanh")`` to XNNPACK's exact GELU (EfficientViT-L's
    activation); edgezoo writes the tanh form out (edgezoo.export.xnnpack_decompositions.corrections)."""
    from edgezoo.export import xnnpack_decompositions
    from edgezoo.export.base import ExportJob

    if not corrected:
        monkeypatch.setattr(xnnpack_decompositions, "decompositions", lambda: {})
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.GELU(approximate="tanh")).eval()
    job = ExportJob(model=model, name="gelu", input_size=(3, 8, 8), batch=1, dynamic=False, precision="fp32",
                    options={}, metadata={}, work_dir=tmp_path)
    path = et.build_pte(job, tmp_path / "gelu.pte")
    x = torch.linspace(-4, 4, 192).reshape(1, 3, 8, 8)
    with torch.no_grad():
        ref = model(x).numpy()
        exact = F.gelu(model[0](x)).numpy()
    out = get_format("executorch").run(path, x.numpy(), job)
    assert job.notes["non_delegated_ops"] == 0
    if corrected:
        assert abs(out - ref).max() < 1e-5
    else:  # the defect this guards against: the exact GELU's values
        assert abs(out - exact).max() < 1e-5 < abs(out - ref).max()


@pytest.mark.parametrize("written_out", [False, True])
def test_tanh_gelu_in_an_int8_program_runs(written_out: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """In an int8 program the tanh GELU is left to XNNPACK's GELU: written out between a dequantise and a quantise
    it lowers, but XNNPACK's shape propagation refuses it on the first call (EfficientViT-L's int8 programs)."""
    from edgezoo.export import xnnpack_decompositions

    if written_out:
        monkeypatch.setattr(xnnpack_decompositions, "int8_decompositions", xnnpack_decompositions.corrections)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.GELU(approximate="tanh"), nn.Conv2d(16, 4, 1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    result = export(model, "executorch", tmp_path, img_size=8, int8=True, int8_fallback=0)
    if written_out:
        assert result.status == "failed" and "execute() failed" in result.error, result.summary()
    else:
        assert result.status == "verified", result.summary()


# -- lowering: one fp32 and one int8 in the default suite -----------------------------------------

def test_fp32_verified_with_metadata(tmp_path: Path):
    result = _fp32(FP32_MODEL, tmp_path)
    assert result.notes["non_delegated_ops"] == 0  # the whole graph is one XNNPACK delegate
    _check_metadata(result)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


@pytest.mark.slow  # lowering int8 takes minutes on 2 cores: `make test-all`
def test_int8_trained_cnn_agrees_with_fp32(digits_checkpoint, tmp_path: Path):
    """The CNN the ONNX int8 test uses (trained once per session, tests/conftest.py)."""
    trained = digits_checkpoint("cnn")
    result = export(trained["checkpoint"], "executorch", tmp_path / "out", int8=True, calib="digits")
    assert result.status == "verified", result.summary() + "\n" + result.notes.get("traceback", "")
    assert result.parity["images"] >= 200 and result.parity["top1_agreement"] >= 0.99
    assert Path(result.path).name == f"{trained['model']}_int8.pte" and result.notes["quantized_tensors"] > 0
    assert result.metadata["classes"] == [str(i) for i in range(10)]
    _check_metadata(result)


# -- slow: one fp32 model per family, int8 for a CNN (batch 2) and a transformer -----------------

@pytest.mark.slow
@pytest.mark.parametrize("name", ["ez_mobilenetv2_cbam", "ez_resnet18_eca", "ez_resnet18_ela", "ez_shvit_s1",
                                  "ez_efficientvit_m0", "ez_focalnet_edge_xs", "ez_efficientvit_b0",
                                  "ez_efficientvit_l1", "ez_mix_mala_s", "ez_mix_flatten_s", "ez_mix_agent_s"])
def test_fp32_per_family(name: str, tmp_path: Path):
    # MobileNetV2-CBAM with random weights is ill-conditioned at 32 px: onnxruntime's error there is
    # 6e-5 and XNNPACK's 1.3e-4 (both about 5e-5 at 64 px), so it runs at 64 px.
    result = _fp32(name, tmp_path, size=64 if name == "ez_mobilenetv2_cbam" else SIZE)
    # one XNNPACK delegate and no portable op (edgezoo.export.xnnpack_rewrites and xnnpack_decompositions: ECA's
    # unsqueeze, the norms, sums, means, ELU, ...), but for CBAM's channel max, left portable on purpose
    portable = result.notes["non_delegated"]
    if name == "ez_mobilenetv2_cbam":
        assert set(portable) == {"aten.amax.default"}
    else:
        assert result.notes["non_delegated_ops"] == 0 and result.notes["delegates"] == 1, portable


#: What may stay in portable kernels of an fp32 program: CBAM's and triplet attention's channel max (kept on
#: purpose, edgezoo.export.xnnpack_decompositions._reduce) and the masking of scaled_dot_product_attention's
#: safe softmax (the `mhsa` mixer).
PORTABLE_FP32 = {"aten.amax.default", "aten.any.dim", "aten.eq.Scalar", "aten.full_like.default",
                 "aten.logical_not.default", "aten.mul.Scalar", "aten.where.self"}


@pytest.mark.slow
@pytest.mark.parametrize("name", edgezoo.list_models())
def test_every_model_lowers(name: str, tmp_path: Path):
    """Every model lowers to an fp32 program that matches PyTorch, with no portable op but the known ones (the
    ELA models once did not lower at all, and EfficientViT-L's tanh GELU was lowered as the exact GELU).
    EfficientViT-M5 with random weights is ill-conditioned at 64 px (PyTorch's own fp32 output 5.8e-5 from
    float64, XNNPACK's 3.9e-4, one delegate), so it runs at 128 px (6e-5)."""
    result = _fp32(name, tmp_path, size=128 if name == "ez_efficientvit_m5" else 64)
    assert set(result.notes["non_delegated"]) <= PORTABLE_FP32, result.notes["non_delegated"]


@pytest.mark.slow
def test_fp32_static_batch_2(tmp_path: Path):
    result = _fp32("ez_efficientvit_b0", tmp_path, batch=2)
    assert result.metadata["batch"] == 2 and result.parity["images"] == 8


@pytest.mark.slow
def test_int8_trained_cnn_batch_2(tmp_path: Path):
    """CBAM applies its channel MLP twice: both applications must be int8 (see ``_untie_weights``)."""
    result = _int8("ez_resnet18_cbam", tmp_path, epochs=3, batch=2)
    assert result.notes["untied_tensors"] > 0


@pytest.mark.slow
def test_int8_trained_focalnet(tmp_path: Path):
    result = _int8("ez_focalnet_edge_xs", tmp_path, epochs=3)
    assert result.notes["native_gelu"] > 0


@pytest.mark.slow
def test_int8_trained_vit(tmp_path: Path):
    """EfficientViT-M0 (cascaded group attention): windows padded at 32 px, softmax inputs float.

    Its int8 agreement on digits after 3 epochs is about 96%, with most of the loss in the per-tensor
    int8 residual stream, so this checks the gate's 95% rather than 99%. Before the pad rule of
    :func:`edgezoo.export.executorch._quantizer` the runtime refused the program.
    """
    result = _int8("ez_efficientvit_m0", tmp_path, epochs=3, agreement=0.95)
    assert result.notes["float_ops"].get("add", 0) > 0  # q @ k + bias stays float before the softmax
