"""EfficientViT-M: timm and official (microsoft/Cream) checkpoints, windows at any resolution,
attention-bias caching and the deploy form, export. Weights as in tests/test_shvit.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import timm
import torch
from timm.models.efficientvit_msra import checkpoint_filter_fn as timm_filter_fn
from torch import nn

import edgezoo
from edgezoo.blocks.cascaded import CascadedGroupAttention
from tests.test_shvit import TOL, load_from_file, max_stage_err, onnx_ok, randomize_damped_
from tests.util import rel_err

# batch > 1; one 7x7 window per stage-0 map (224); padded windows (256: 16 -> 21, non-square
# 160x288: 10x18); maps smaller than the window (96x64: 6x4, 3x2, 2x1).
SHAPES = [(2, 3, 224, 224), (1, 3, 256, 256), (1, 3, 160, 288), (2, 3, 96, 64)]
VARIANTS = ["m0"] + [pytest.param(v, marks=pytest.mark.slow) for v in ("m1", "m2", "m3", "m4", "m5")]


def official_state_dict(timm_sd: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """timm ``efficientvit_m*`` keys -> microsoft/Cream's (``blocksN``, ``Conv2d_BN.c``, ``BN_Linear.l``)."""
    out = {}
    for key, value in timm_sd.items():
        m = re.match(r"^patch_embed\.conv(\d)\.(.*)$", key)
        if m:
            key = f"patch_embed.{2 * (int(m.group(1)) - 1)}.{m.group(2)}"
        m = re.match(r"^stages\.(\d+)\.(downsample\.(res1|patchmerge|res2)|blocks\.(\d+))\.(.*)$", key)
        if m:
            s = int(m.group(1))
            j = {"res1": 0, "patchmerge": 1, "res2": 2}[m.group(3)] if m.group(3) else int(m.group(4)) + (3 if s else 0)
            key = f"blocks{s + 1}.{j}.{m.group(5)}"
        key = re.sub(r"\.conv\.weight$", ".c.weight", key).replace("head.linear.", "head.l.")
        out[key] = value
    for name, module in model.named_modules():  # official buffers are persistent
        if hasattr(module, "attention_bias_idxs"):
            official = official_state_dict_name(name)
            out[f"{official}.attention_bias_idxs"] = module.attention_bias_idxs.clone()
    return out


def official_state_dict_name(timm_module: str) -> str:
    """``stages.S.blocks.J.rest`` (timm) -> ``blocks{S+1}.{J (+3 after stage 0)}.rest`` (official)."""
    m = re.match(r"^stages\.(\d+)\.blocks\.(\d+)\.(.*)$", timm_module)
    s, j = int(m.group(1)), int(m.group(2)) + (3 if int(m.group(1)) else 0)
    return f"blocks{s + 1}.{j}.{m.group(3)}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_timm_checkpoint_equal_any_resolution(variant: str, tmp_path: Path) -> None:
    ref = randomize_damped_(timm.create_model(f"efficientvit_{variant}")).eval()
    model = load_from_file(f"ez_efficientvit_{variant}", ref.state_dict(), tmp_path)
    fused = edgezoo.fuse(model)
    for shape in SHAPES:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        assert max_stage_err(model, ref, x) <= TOL, shape
        assert max_stage_err(fused, ref, x) <= TOL, f"fused {shape}"


def test_official_layout_with_distillation_head(tmp_path: Path) -> None:
    ref = randomize_damped_(timm.create_model("efficientvit_m0")).eval()
    dist = randomize_damped_(timm.create_model("efficientvit_m0"), seed=1).head.eval()
    sd = official_state_dict(ref.state_dict(), ref)
    sd.update({f"head_dist.{k.replace('linear.', 'l.')}": v for k, v in dist.state_dict().items()})
    assert "blocks2.3.mixer.m.attn.attention_bias_idxs" in sd and "patch_embed.6.c.weight" in sd
    model = load_from_file("ez_efficientvit_m0", {"model": sd}, tmp_path)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        feats = ref.forward_head(ref.forward_features(x), pre_logits=True)
        expected = (ref.head(feats) + dist(feats)) / 2  # the official model's inference output
        assert rel_err(model(x), expected) <= TOL
        assert rel_err(edgezoo.fuse(model)(x), expected) <= TOL


def test_other_img_size_resizes_bias_tables_like_timm(tmp_path: Path) -> None:
    sd = randomize_damped_(timm.create_model("efficientvit_m0")).state_dict()  # windows 7, 7, 4
    ref = timm.create_model("efficientvit_m0", img_size=320).eval()  # windows 7, 7, 5
    ref.load_state_dict(timm_filter_fn(sd, ref))
    model = load_from_file("ez_efficientvit_m0", sd, tmp_path, img_size=320)
    assert model.stages[2].blocks[0].mixer.m.window_size == 5
    x = torch.randn(1, 3, 320, 320)
    assert max_stage_err(model, ref, x) <= TOL


def _attentions(model: nn.Module) -> list[CascadedGroupAttention]:
    return [m for m in model.modules() if isinstance(m, CascadedGroupAttention)]


def test_bias_cached_in_deploy_form_and_refreshed_in_eval(tmp_path: Path) -> None:
    ref = randomize_damped_(timm.create_model("efficientvit_m0")).eval()
    model = load_from_file("ez_efficientvit_m0", ref.state_dict(), tmp_path)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = ref(x)
        fused = edgezoo.fuse(model)
        for attn in _attentions(fused):  # the gathered table is stored; the index is no longer used
            n = attn.window_size**2
            assert attn.attn_bias.shape == (attn.num_heads, n, n) and not hasattr(attn, "attention_biases")
            attn.attention_bias_idxs.fill_(0)
        assert rel_err(fused(x), expected) <= TOL
        model(x)  # fills the eval-mode cache
        other = randomize_damped_(timm.create_model("efficientvit_m0"), seed=5).eval()
        edgezoo.load_checkpoint(model, _save(other, tmp_path))  # in-place copy must invalidate it
        assert rel_err(model(x), other(x)) <= TOL


def _save(model: nn.Module, tmp_path: Path) -> Path:
    path = tmp_path / "other.pth"
    torch.save(model.state_dict(), path)
    return path


def test_export_and_trace_at_a_non_square_size() -> None:
    """torch.export and jit.trace; ONNX at non-square sizes: tests/test_export_onnx.py."""
    model = edgezoo.fuse(randomize_damped_(edgezoo.create_model("ez_efficientvit_m0")))
    x = torch.randn(1, 3, 160, 288)  # padded, partitioned windows in stage 0
    with torch.no_grad():
        ref = model(x)
        exported = torch.export.export(model, (x,))
        assert rel_err(exported.module()(x), ref) <= TOL
        traced = torch.jit.trace(model, x)
        assert rel_err(traced(x), ref) <= TOL
        eval_model = randomize_damped_(edgezoo.create_model("ez_efficientvit_m0")).eval()  # unfused, eval
        assert rel_err(torch.export.export(eval_model, (x,)).module()(x), eval_model(x)) <= TOL


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["m0", "m1", "m2", "m3", "m4", "m5"])
def test_onnx_every_variant(variant: str, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    model = edgezoo.fuse(randomize_damped_(edgezoo.create_model(f"ez_efficientvit_{variant}")))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ref = model(x)
    onnx_ok(model, x, ref, tmp_path, ort)


def test_export_at_a_window_multiple_has_no_alias_nodes() -> None:
    """At 224 px every stage is a whole number of windows: the exported graph must not carry the
    no-op pad/crop as `alias` nodes, which coremltools cannot convert."""
    model = edgezoo.fuse(edgezoo.create_model("ez_efficientvit_m0")).eval()
    program = torch.export.export(model, (torch.randn(1, 3, 224, 224),)).run_decompositions({})
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert not any("alias" in t for t in targets), sorted(t for t in targets if "alias" in t)


def test_static_export_of_one_window_maps_has_no_partition() -> None:
    """Built for 48 px, every stage map at 48 px is exactly one window (3, 2, 1): a static export runs the
    heads on the map directly (no window view/permute, which XNNPACK runs as copies); at 80 px (maps 5x5,
    3x3, 2x2 against windows 3, 2, 1) every block partitions. Both equal eager."""
    model = edgezoo.fuse(randomize_damped_(edgezoo.create_model("ez_efficientvit_m0", img_size=48)))

    def permutes(program: torch.export.ExportedProgram) -> int:
        return sum(1 for n in program.graph.nodes if n.op == "call_function" and "permute" in str(n.target))

    with torch.no_grad():
        for side, expected in ((48, 0), (80, 2 * 6)):  # a permute in and out of each of the 6 blocks
            x = torch.randn(1, 3, side, side)
            program = torch.export.export(model, (x,))
            assert permutes(program) == expected
            assert rel_err(program.module()(x), model(x)) <= TOL


def test_kernels_is_the_per_head_kernel_sizes_and_kernel_mode_the_fused_op_mode() -> None:
    """``kernels=`` keeps the paper's meaning (EfficientViT-M's per-head depthwise kernel sizes); the fused-op
    mode is ``kernel_mode=``, and a mode given as ``kernels=`` is a one-line error naming the right keyword."""
    from edgezoo.errors import InvalidArgumentError

    model = timm.create_model("ez_efficientvit_m1", kernels=(3, 3, 3, 3), kernel_mode="reference")
    cga = next(m for m in model.modules() if isinstance(m, CascadedGroupAttention))
    head_kernels = [m.kernel_size[0] for m in cga.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert head_kernels == [3] * len(head_kernels) and len(head_kernels) >= 2, head_kernels
    default = next(m for m in timm.create_model("ez_efficientvit_m1").modules()
                   if isinstance(m, CascadedGroupAttention))
    assert [m.kernel_size[0] for m in default.modules() if isinstance(m, nn.Conv2d) and m.groups > 1][:2] == [7, 5]
    with pytest.raises(InvalidArgumentError, match=r"kernels='triton'.*kernel_mode='triton'"):
        timm.create_model("ez_efficientvit_m1", kernels="triton")
    with pytest.raises(InvalidArgumentError, match=r"kernel_mode='cuda' is not a kernel mode"):
        timm.create_model("ez_efficientvit_m1", kernel_mode="cuda")
