"""Focal modulation (FocalNet: Focal Modulation Networks, Yang et al., NeurIPS 2022).

Focal modulation replaces self-attention by three steps on each token's neighbourhood:

1. *hierarchical contextualisation*: a stack of depthwise convs with GELU, each level seeing a
   wider window (kernel ``focal_window + focal_factor * level``), plus a global level (the
   spatial mean of the last level, through GELU);
2. *gated aggregation*: every level is weighted per position by its own gate (one channel of
   the input projection) and summed;
3. *element-wise affine modulation*: the query is multiplied by a 1x1 projection (the
   modulator ``h``) of the aggregated context.

The paper's options are all here: ``use_post_norm`` (LayerNorm after the modulation and the
MLP instead of before), ``use_post_norm_in_modulation`` (LayerNorm on the modulated query),
``normalize_modulator`` (divide the aggregated context by ``focal_level + 1``), layer scale
(``layerscale_value``), ``focal_level`` and ``focal_window``, overlapping patch embeddings.

Layout: channels-first ``(B, C, H, W)`` throughout, the 1x1 projections as 1x1 convs and
LayerNorm over channels (timm's ``LayerNorm2d``). On onnxruntime's CPU provider this is the
fast layout: its blocked (NCHWc) conv kernels run these pointwise layers ~20% faster than the
``Gemm`` a channels-last ``nn.Linear`` exports to, and the transposes around each LayerNorm
fold into the layout reorders. ``fuse()`` folds layer scale into the conv before it (or into
the post-norm's affine) and the modulator normalisation into ``h``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial

import torch
from timm.layers import DropPath, LayerNorm2d, LayerScale2d, Mlp
from torch import nn
from torch.nn import functional as F

from edgezoo.kernels import focal_aggregate, use_kernels

__all__ = ["GELU", "Downsample", "FocalModulation", "FocalNetBlock", "FocalNetStage", "native_gelu"]

NormLayer = Callable[[int], nn.Module]
#: FocalNet's LayerNorm over channels (eps 1e-5, as in the official code and timm).
DEFAULT_NORM: NormLayer = partial(LayerNorm2d, eps=1e-5)


class GELU(nn.GELU):
    """Exact (erf) GELU (Hendrycks & Gimpel, 2016) that exports in a form onnxruntime fuses.

    Under ``torch.export`` (and so the dynamo ONNX exporter) it is written as
    ``x * (erf(x / sqrt 2) + 1) * 0.5``, the pattern onnxruntime's GeluFusion turns into one
    ``Gelu`` op; the exporter's own decomposition of ``gelu`` multiplies in another order and
    stays five separate ops. Same function, so outputs agree to float rounding. (The tanh
    approximation, ``approximate="tanh"``, exports as it is.)
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.approximate == "none" and torch.compiler.is_exporting() and not _NATIVE_GELU:
            return x * (torch.erf(x / math.sqrt(2.0)) + 1.0) * 0.5
        return F.gelu(x, approximate=self.approximate)


_NATIVE_GELU = False


@contextmanager
def native_gelu() -> Iterator[None]:
    """Within it, :class:`GELU` exports as the one ``aten.gelu`` op, for a converter with a GELU op of its own.

    litert-torch lowers ``aten.gelu`` to LiteRT's GELU op but the erf pattern to a rational approximation of
    erf (about 26 element-wise ops a GELU): FocalNet edge-XS at 224 px (random weights, XNNPACK, 1 thread)
    ran 10.2 ms in fp32 that way and 6.2 ms with the GELU op, and its full-integer file 60.8 against 11.2 ms
    (each element-wise op int8 requantises a whole activation map); fp32 parity 9e-7 either way
    (2026-12-07, `amd-epyc-2c-avx512-vnni-bf16-9963a7`).
    """
    global _NATIVE_GELU
    before, _NATIVE_GELU = _NATIVE_GELU, True
    try:
        yield
    finally:
        _NATIVE_GELU = before


class FocalModulation(nn.Module):
    """Focal modulation (Yang et al., NeurIPS 2022) on ``(B, C, H, W)`` maps.

    ``f`` projects to query, context and ``focal_level + 1`` gates; ``focal_layers`` are the
    depthwise convs of the hierarchy (GELU after each); ``h`` is the 1x1 modulator; ``proj``
    the output projection. ``kernel_mode`` (``"auto" | "triton" | "reference"``) says whether the gated
    aggregation runs as ``torch.ops.edgezoo.focal_aggregate``.
    """

    kernel_mode: str = "auto"

    def __init__(
        self,
        dim: int,
        focal_level: int = 2,
        focal_window: int = 3,
        focal_factor: int = 2,
        bias: bool = True,
        use_post_norm: bool = False,
        normalize_modulator: bool = False,
        proj_drop: float = 0.0,
        norm_layer: NormLayer = DEFAULT_NORM,
    ) -> None:
        super().__init__()
        if focal_level < 1:
            raise ValueError(f"focal_level must be >= 1 (number of depthwise context levels), got {focal_level}")
        if focal_window < 1 or focal_window % 2 == 0:
            raise ValueError(f"focal_window must be an odd kernel size (keeps the map size), got {focal_window}")
        self.dim = dim
        self.focal_level = focal_level
        self.normalize_modulator = normalize_modulator
        self.kernel_sizes = [focal_window + focal_factor * level for level in range(focal_level)]
        self.f = nn.Conv2d(dim, 2 * dim + focal_level + 1, 1, bias=bias)
        self.focal_layers = nn.ModuleList(
            nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim, bias=False) for k in self.kernel_sizes
        )
        self.act = GELU()
        self.h = nn.Conv2d(dim, dim, 1, bias=bias)
        self.norm = norm_layer(dim) if use_post_norm else nn.Identity()
        self.proj = nn.Conv2d(dim, dim, 1)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, ctx, gates = self._project(x)
        if use_kernels(self.kernel_mode, x):
            gates = gates if isinstance(gates, torch.Tensor) else torch.cat(gates, dim=1)
            return self.proj_drop(self.proj(self.norm(q * self.h(self._aggregate_fused(ctx, gates)))))
        gate = (lambda i: gates[i]) if isinstance(gates, list) else (lambda i: gates[:, i:i + 1])
        ctx_all = None
        for level, conv in enumerate(self.focal_layers):
            ctx = self.act(conv(ctx))
            gated = ctx * gate(level)
            ctx_all = gated if ctx_all is None else ctx_all + gated
        ctx_global = self.act(ctx.mean((2, 3), keepdim=True))
        ctx_all = ctx_all + ctx_global * gate(self.focal_level)
        if self.normalize_modulator:
            ctx_all = ctx_all / (self.focal_level + 1)
        x = q * self.h(ctx_all)
        return self.proj_drop(self.proj(self.norm(x)))

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | list[torch.Tensor]]:
        """Query, context and gates: ``f``'s output split in three, or, where ``f`` returns its pieces (the
        ExecuTorch export's :class:`~edgezoo.export.xnnpack_rewrites.SplitPointwise`), query, context and one
        gate map per level."""
        out = self.f(x)
        if isinstance(out, tuple):
            q, ctx, *gates = out
            return q, ctx, gates
        return torch.split(out, [self.dim, self.dim, self.focal_level + 1], dim=1)

    def _aggregate_fused(self, ctx: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """The context levels, then their gated sum with the global context in one fused op."""
        levels = []
        for conv in self.focal_layers:
            ctx = self.act(conv(ctx))
            levels.append(ctx)
        ctx_global = self.act(ctx.mean((2, 3), keepdim=True))
        scale = 1.0 / (self.focal_level + 1) if self.normalize_modulator else 1.0
        return focal_aggregate(levels, gates, ctx_global, scale)

    @torch.no_grad()
    def fuse(self) -> FocalModulation:
        """Fold the modulator normalisation into ``h`` (``h`` is linear); returns ``self``."""
        if self.normalize_modulator:
            self.h.weight.div_(self.focal_level + 1)
            self.normalize_modulator = False
        return self


class FocalNetBlock(nn.Module):
    """FocalNet block (Yang et al., NeurIPS 2022): focal modulation + MLP, both residual.

    Pre-norm by default; ``use_post_norm`` moves each LayerNorm after its branch (the paper's
    choice for its large models). ``layerscale_value`` (None = off) scales each branch per
    channel before the residual addition. ``(B, C, H, W)`` in and out.
    """

    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 4.0,
        focal_level: int = 2,
        focal_window: int = 3,
        use_post_norm: bool = False,
        use_post_norm_in_modulation: bool = False,
        normalize_modulator: bool = False,
        layerscale_value: float | None = None,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_layer: NormLayer = DEFAULT_NORM,
    ) -> None:
        super().__init__()
        self.use_post_norm = use_post_norm
        self.norm1 = nn.Identity() if use_post_norm else norm_layer(dim)
        self.modulation = FocalModulation(
            dim, focal_level=focal_level, focal_window=focal_window, use_post_norm=use_post_norm_in_modulation,
            normalize_modulator=normalize_modulator, proj_drop=proj_drop, norm_layer=norm_layer,
        )
        self.norm1_post = norm_layer(dim) if use_post_norm else nn.Identity()
        self.ls1 = LayerScale2d(dim, layerscale_value) if layerscale_value is not None else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.Identity() if use_post_norm else norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=GELU, drop=proj_drop, use_conv=True)
        self.norm2_post = norm_layer(dim) if use_post_norm else nn.Identity()
        self.ls2 = LayerScale2d(dim, layerscale_value) if layerscale_value is not None else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.norm1_post(self.modulation(self.norm1(x)))))
        return x + self.drop_path2(self.ls2(self.norm2_post(self.mlp(self.norm2(x)))))

    @torch.no_grad()
    def fuse(self) -> FocalNetBlock:
        """Fold layer scale into the layer before it (the post-norm, else the last conv); returns ``self``."""
        for ls, post, conv in ((1, self.norm1_post, self.modulation.proj), (2, self.norm2_post, self.mlp.fc2)):
            scale = getattr(self, f"ls{ls}")
            if not isinstance(scale, LayerScale2d):
                continue
            target = post if isinstance(post, nn.LayerNorm) else conv
            if not isinstance(target, (nn.LayerNorm, nn.Conv2d)) or target.weight is None or target.bias is None:
                continue  # a foreign layer we cannot fold into: keep the layer scale
            target.weight.mul_(scale.gamma.reshape(-1, *([1] * (target.weight.ndim - 1))))
            target.bias.mul_(scale.gamma)
            setattr(self, f"ls{ls}", nn.Identity())
        return self


class Downsample(nn.Module):
    """Patch embedding / patch merging of FocalNet: strided conv then LayerNorm, NCHW in and out.

    ``overlap`` uses the paper's overlapping convs (7x7 stride 4 pad 2, 3x3 stride 2 pad 1)
    instead of non-overlapping ``stride x stride`` patches.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int,
        overlap: bool = False,
        norm_layer: NormLayer = DEFAULT_NORM,
    ) -> None:
        super().__init__()
        if overlap and stride not in (2, 4):
            raise ValueError(f"overlapping patch embedding supports stride 2 or 4, got {stride}")
        kernel, padding = ({4: (7, 2), 2: (3, 1)}[stride]) if overlap else (stride, 0)
        self.proj = nn.Conv2d(in_chs, out_chs, kernel, stride=stride, padding=padding)
        self.norm = norm_layer(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class FocalNetStage(nn.Module):
    """One FocalNet stage: optional stride-2 :class:`Downsample`, then ``depth`` blocks.

    ``(B, C_in, H, W)`` in, ``(B, C_out, H', W')`` out.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        depth: int,
        downsample: bool,
        drop_path: Sequence[float] | float = 0.0,
        use_overlap_down: bool = False,
        norm_layer: NormLayer = DEFAULT_NORM,
        **block_kwargs,
    ) -> None:
        super().__init__()
        if not downsample and in_chs != out_chs:
            raise ValueError(f"a stage without downsampling keeps its width: in_chs {in_chs} != out_chs {out_chs}")
        rates = [drop_path] * depth if isinstance(drop_path, (int, float)) else list(drop_path)
        self.downsample = (
            Downsample(in_chs, out_chs, 2, overlap=use_overlap_down, norm_layer=norm_layer) if downsample
            else nn.Identity()
        )
        self.blocks = nn.Sequential(*[
            FocalNetBlock(out_chs, drop_path=rates[i], norm_layer=norm_layer, **block_kwargs) for i in range(depth)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))
