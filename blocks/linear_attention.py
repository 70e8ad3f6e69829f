"""Linear-complexity token mixers with one interface, so any of them can sit in an EfficientViT stage.

Every mixer maps ``(B, C, H, W) -> (B, C, H, W)``: a 1x1 ``qkv`` conv, its attention, then a
``proj`` 1x1 conv + BatchNorm (folded by :func:`edgezoo.fuse`). Build one by name with
:func:`create_token_mixer`:

=========== ================================================================================
``litemla``   ReLU linear attention with multi-scale aggregation (EfficientViT, Cai et al., ICCV 2023)
``flatten``   focused linear attention (FLatten Transformer, Han et al., ICCV 2023)
``agent``     agent attention (Agent Attention, Han et al., ECCV 2024)
``mala``      magnitude-aware linear attention (Rectifying Magnitude Neglect in Linear Attention,
              Fan et al., ICCV 2025)
=========== ================================================================================

Precision policy. Linear attention sums over all tokens before it divides (or normalises), so
in fp16 the sums overflow (65504 is fp16's largest value) and the division returns inf/NaN.
Each mixer runs its attention core, :meth:`TokenMixer.attend`, in fp32 whatever the input dtype
and with autocast switched off, and declares which ops that core holds in :attr:`TokenMixer.fp32_ops`
so exporters (TensorRT, CoreML, ONNX fp16 converters) can keep the same ops in fp32;
:func:`fp32_regions` lists them for a whole model.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d, trunc_normal_
from torch import nn

from edgezoo.blocks.mbconv import ConvNormAct
from edgezoo.kernels import linear_attention as fused_linear_attention
from edgezoo.kernels import use_kernels

__all__ = [
    "TOKEN_MIXERS",
    "AgentAttention",
    "FocusedLinearAttention",
    "LiteMLA",
    "MagnitudeAwareLinearAttention",
    "TokenMixer",
    "adaptive_pool_matrix",
    "apply_rope",
    "create_token_mixer",
    "fp32_regions",
    "resize_map",
    "resolve_mixer",
    "rope_2d",
    "run_fp32",
]

_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps")


def run_fp32(fn: Callable[..., torch.Tensor], *tensors: torch.Tensor) -> torch.Tensor:
    """``fn(*tensors)`` computed in fp32 (fp64 stays fp64) with autocast disabled; the result has the
    first input's dtype."""
    dtype, device = tensors[0].dtype, tensors[0].device.type
    args = [t.float() if t.dtype in (torch.float16, torch.bfloat16) else t for t in tensors]
    if device in _AUTOCAST_DEVICES and torch.is_autocast_enabled(device):
        with torch.autocast(device, enabled=False):
            out = fn(*args)
    else:
        out = fn(*args)
    return out.to(dtype)


def adaptive_pool_matrix(size: int, out: int, like: torch.Tensor) -> torch.Tensor:
    """``(out, size)`` averaging matrix equal to ``adaptive_avg_pool1d`` from ``size`` to ``out`` bins.

    Written with plain tensor ops so it exports (ONNX, ``torch.export``) for any size, including
    ``out > size`` where PyTorch's pooling repeats inputs.
    """
    i = torch.arange(out, device=like.device)
    start = torch.div(i * size, out, rounding_mode="floor")
    end = torch.div((i + 1) * size + out - 1, out, rounding_mode="floor")
    j = torch.arange(size, device=like.device)
    mask = ((j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])).to(like.dtype)
    return mask / mask.sum(1, keepdim=True)


def resize_map(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``t`` (``(..., h0, w0)``, 4-D) resized bilinearly to ``(h, w)``; returned as it is when the size matches."""
    if t.shape[-2:] == (h, w):
        return t
    return F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)


class TokenMixer(nn.Module):
    """Base of the linear token mixers: ``forward(x: (B, C, H, W)) -> (B, C, H, W)``.

    Subclasses compute ``q, k, v`` with a 1x1 conv, run :meth:`attend` through :func:`run_fp32`
    and project with ``proj`` (conv + BatchNorm). ``paper`` names the source; ``fp32_ops`` lists
    the ops inside :meth:`attend` that must stay fp32 on every backend.
    """

    paper: ClassVar[str] = ""
    fp32_ops: ClassVar[tuple[str, ...]] = ()
    #: ``"auto" | "triton" | "reference"``: whether :meth:`attend` runs ``torch.ops.edgezoo.linear_attention``
    kernel_mode: str = "auto"

    def __init__(self, dim: int, head_dim: int) -> None:
        super().__init__()
        if dim % head_dim:
            raise ValueError(f"{type(self).__name__}: dim {dim} must be a multiple of head_dim {head_dim}")
        self.dim, self.head_dim, self.num_heads = dim, head_dim, dim // head_dim

    def attend(self, *tensors: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, heads, head_dim, H*W)`` (a view: channel-major, no transpose)."""
        return x.reshape(x.shape[0], self.num_heads, self.head_dim, -1)


class LiteMLA(TokenMixer):
    """Lightweight multi-scale linear attention (EfficientViT, Cai et al., ICCV 2023).

    ``q, k, v`` from a 1x1 conv are aggregated at each of ``scales`` by a depthwise kxk conv and a
    grouped 1x1 conv (one group per head and q/k/v); every scale adds ``heads`` more heads of
    ReLU linear attention ``out = (sum_n v_n k_n^T) q / (sum_n k_n^T q + eps)``. Layer names follow
    timm's and the official ``LiteMLA`` (their checkpoints load), ``eps=1e-5`` timm's (the official
    code uses 1e-15). The tensors stay channel-major ``(B, heads, d, N)``: no transposes of ``q``/``v``
    or of the output, and no ones-column padding of ``v`` for the denominator.
    """

    paper = "EfficientViT: Multi-Scale Linear Attention for High-Resolution Dense Prediction, Cai et al., ICCV 2023"
    fp32_ops = ("matmul", "sum", "add", "div")

    def __init__(self, dim: int, head_dim: int = 32, heads_ratio: float = 1.0, scales: tuple[int, ...] = (5,),
                 eps: float = 1e-5, norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d) -> None:
        heads = int(dim // head_dim * heads_ratio)
        super().__init__(heads * head_dim, head_dim)
        total = heads * head_dim
        self.eps = eps
        self.qkv = ConvNormAct(dim, 3 * total, 1, norm_layer=None, act_layer=None)
        self.aggreg = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(3 * total, 3 * total, s, padding=s // 2, groups=3 * total, bias=False),
                nn.Conv2d(3 * total, 3 * total, 1, groups=3 * heads, bias=False),
            )
            for s in scales
        )
        self.proj = ConvNormAct(total * (1 + len(scales)), dim, 1, norm_layer=norm_layer, act_layer=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        qkv = self.qkv(x)
        qkv = torch.cat([qkv, *(op(qkv) for op in self.aggreg)], dim=1)
        q, k, v = qkv.reshape(B, -1, 3 * self.head_dim, H * W).split(self.head_dim, dim=2)
        if use_kernels(self.kernel_mode, q):  # the fused op accumulates in fp32 itself
            out = fused_linear_attention(F.relu(q), F.relu(k), v, self.eps, 1.0, False, False)
        else:
            out = run_fp32(self.attend, F.relu(q), F.relu(k), v)
        return self.proj(out.reshape(B, -1, H, W))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """ReLU linear attention on ``(B, heads, d, N)`` tensors (q, k already non-negative)."""
        num = (v @ k.transpose(-1, -2)) @ q
        den = k.sum(-1, keepdim=True).transpose(-1, -2) @ q
        return num / (den + self.eps)


class FocusedLinearAttention(TokenMixer):
    """Focused linear attention (FLatten Transformer, Han et al., ICCV 2023).

    The focusing function ``f(x) = ||x|| / ||x**p|| * x**p`` (on ``relu(x) + 1e-6`` divided by a
    learnable per-channel softplus scale) sharpens the ReLU kernel's attention towards the most
    similar keys; a depthwise kxk conv on ``v`` shared by all heads restores the rank that the
    low-rank linear attention map loses. The paper's learnable absolute positional encoding is
    added to ``k`` before the focusing function (``k_pos=True``, the default): a ``(1, dim, S, S)``
    map, ``S = pos_size``, zero-initialised as in the paper's code, resized bilinearly when the
    feature map is not ``S x S``. ``k_pos=False`` is the position-free simplification (the module
    then has no size-tied parameter). The paper's spatial reduction of k/v is left out (attention
    here runs at stride 16/32).
    """

    paper = "FLatten Transformer: Vision Transformer using Focused Linear Attention, Han et al., ICCV 2023"
    fp32_ops = ("pow", "norm", "matmul", "mean", "div", "softplus")

    def __init__(self, dim: int, head_dim: int = 32, focusing_factor: float = 3.0, kernel_size: int = 5,
                 norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d, k_pos: bool = True,
                 pos_size: int = 7) -> None:
        super().__init__(dim, head_dim)
        self.focusing_factor = focusing_factor
        self.qkv = ConvNormAct(dim, 3 * dim, 1, norm_layer=None, act_layer=None)
        self.scale = nn.Parameter(torch.zeros(1, dim, 1))
        self.k_pos = nn.Parameter(torch.zeros(1, dim, pos_size, pos_size)) if k_pos else None
        self.dwc = nn.Conv2d(head_dim, head_dim, kernel_size, padding=kernel_size // 2, groups=head_dim)
        self.proj = ConvNormAct(dim, dim, 1, norm_layer=norm_layer, act_layer=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(x).reshape(B, 3, C, H * W).unbind(1)
        if self.k_pos is not None:
            k = k + resize_map(self.k_pos, H, W).flatten(2)
        out = run_fp32(self.attend, q, k, v, self.scale)
        rank = self.dwc(v.reshape(B * self.num_heads, self.head_dim, H, W))
        return self.proj(out.reshape(B, C, H, W) + rank.reshape(B, C, H, W))

    def _focus(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        x = (F.relu(x) + 1e-6) / scale
        norm = x.norm(dim=1, keepdim=True)
        x = x**self.focusing_factor
        return self._split_heads(x * (norm / x.norm(dim=1, keepdim=True)))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``(B, C, N)`` q, k, v -> ``(B, heads, d, N)`` focused linear attention."""
        scale = F.softplus(scale)
        q, k, v = self._focus(q, scale), self._focus(k, scale), self._split_heads(v)
        if use_kernels(self.kernel_mode, q):
            return fused_linear_attention(q, k, v, 1e-6, 1.0, True, False)
        n = q.shape[-1]
        z = 1.0 / (k.mean(-1, keepdim=True).transpose(-1, -2) @ q + 1e-6)
        return ((v @ k.transpose(-1, -2)) / float(n)) @ q * z  # an int n is an int64 constant in ExecuTorch


class AgentAttention(TokenMixer):
    """Agent attention (Han et al., ECCV 2024): softmax attention through a few agent tokens.

    ``agent_size**2`` agent tokens are the queries average-pooled to an ``agent_size`` grid. They
    first gather from all tokens (``softmax(A K^T / sqrt(d) + B1) V``), then broadcast back
    (``softmax(Q A^T / sqrt(d) + B2)``), linear in the number of tokens; a depthwise 3x3 conv on
    ``v`` restores feature diversity. The agent biases are the paper's: ``B1``/``B2`` each the sum of
    a 7x7 learnable map per (head, agent) resized to the feature size (bilinear) and, with
    ``rc_bias=True`` (the default), a per-row plus a per-column bias per (head, agent) on a
    ``feature_size`` grid (``ah + aw`` for the agents' gather, ``ha + wa`` for the broadcast; resized
    along their axis when the map has another size). The row/column biases start at zero
    (``rc_bias_std=0.02`` draws them as the paper's code does), so a fresh module equals the
    ``rc_bias=False`` simplification, which keeps only the resized 7x7 maps.
    """

    paper = "Agent Attention: On the Integration of Softmax and Linear Attention, Han et al., ECCV 2024"
    fp32_ops = ("matmul", "softmax")

    def __init__(self, dim: int, head_dim: int = 32, agent_size: int = 7, kernel_size: int = 3,
                 bias_size: int = 7, norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d, rc_bias: bool = True,
                 feature_size: int = 7, rc_bias_std: float = 0.0) -> None:
        super().__init__(dim, head_dim)
        self.agent_size = agent_size
        agents = agent_size * agent_size
        self.qkv = ConvNormAct(dim, 3 * dim, 1, norm_layer=None, act_layer=None)
        self.an_bias = nn.Parameter(torch.zeros(self.num_heads, agents, bias_size, bias_size))
        self.na_bias = nn.Parameter(torch.zeros(self.num_heads, agents, bias_size, bias_size))
        trunc_normal_(self.an_bias, std=0.02)
        trunc_normal_(self.na_bias, std=0.02)
        self.rc_bias = rc_bias
        if rc_bias:
            h, s = self.num_heads, feature_size
            self.ah_bias = nn.Parameter(torch.zeros(h, agents, s, 1))
            self.aw_bias = nn.Parameter(torch.zeros(h, agents, 1, s))
            self.ha_bias = nn.Parameter(torch.zeros(h, agents, s, 1))
            self.wa_bias = nn.Parameter(torch.zeros(h, agents, 1, s))
            if rc_bias_std > 0:
                for p in (self.ah_bias, self.aw_bias, self.ha_bias, self.wa_bias):
                    trunc_normal_(p, std=rc_bias_std)
        self.dwc = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.proj = ConvNormAct(dim, dim, 1, norm_layer=norm_layer, act_layer=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(x)
        q, k, v = qkv.reshape(B, 3, C, H, W).unbind(1)
        p = self.agent_size
        agents = adaptive_pool_matrix(H, p, q) @ q @ adaptive_pool_matrix(W, p, q).transpose(0, 1)
        an = F.interpolate(self.an_bias, size=(H, W), mode="bilinear", align_corners=False)
        na = F.interpolate(self.na_bias, size=(H, W), mode="bilinear", align_corners=False)
        if self.rc_bias:  # (h, A, H, 1) + (h, A, 1, W): one bias per row and one per column
            an = an + resize_map(self.ah_bias, H, 1) + resize_map(self.aw_bias, 1, W)
            na = na + resize_map(self.ha_bias, H, 1) + resize_map(self.wa_bias, 1, W)
        out = run_fp32(self.attend, *(self._split_heads(t) for t in (q, k, v, agents)),
                       an.flatten(2)[None], na.flatten(2)[None])
        return self.proj(out.reshape(B, C, H, W) + self.dwc(v))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor, an: torch.Tensor,
               na: torch.Tensor) -> torch.Tensor:
        """``(B, heads, d, N)`` q, k, v and ``(B, heads, d, A)`` agents; biases ``(1, heads, A, N)``."""
        scale = self.head_dim**-0.5
        gather = torch.softmax((a.transpose(-1, -2) * scale) @ k + an, dim=-1)  # (B, h, A, N)
        agent_v = v @ gather.transpose(-1, -2)  # (B, h, d, A)
        broadcast = torch.softmax((q.transpose(-1, -2) * scale) @ a + na.transpose(-1, -2), dim=-1)  # (B, h, N, A)
        return agent_v @ broadcast.transpose(-1, -2)


class MagnitudeAwareLinearAttention(TokenMixer):
    """Magnitude-aware linear attention, MALA (Fan et al., "Rectifying Magnitude Neglect in Linear
    Attention", ICCV 2025).

    Plain linear attention divides by ``phi(q) . sum(phi(k))``, so scaling a query leaves its
    attention unchanged. MALA weights token ``j`` by ``beta * phi(q).phi(k_j) - gamma`` with
    ``beta = 1 + 1/z``, ``gamma = z / N`` and ``z = phi(q).mean(phi(k)) / sqrt(d)``: the weights
    still sum to one, but a larger query gives a sharper distribution, as in softmax attention.
    ``phi = elu + 1``; a depthwise 5x5 conv on ``v`` (LePE) adds local position as in the paper's
    models, and so does the LayerNorm on the input (the paper's pre-norm): MALA's output grows with
    the product of the q, k, v magnitudes, which EfficientViT's norm-free residual stream would let
    explode (x100 inputs reach inf within three blocks without it). As in the paper, the
    numerator runs on rotary-embedded ``phi(q)``, ``phi(k)`` (``rope=True``: 2-D RoPE, :func:`rope_2d`)
    while ``z`` uses them unrotated, and the output is gated: ``proj((attn + lepe) * o)`` with ``o``
    a fourth 1x1 projection of the input (``output_gate=True``). ``rope=False, output_gate=False`` is
    the simplification (and the form the fused ``linear_attention`` kernel runs; with RoPE the
    numerator and ``z`` see different keys, so the reference path runs).
    """

    paper = "Rectifying Magnitude Neglect in Linear Attention, Fan et al., ICCV 2025"
    fp32_ops = ("layer_norm", "elu", "matmul", "mean", "div", "mul", "sub")

    def __init__(self, dim: int, head_dim: int = 32, kernel_size: int = 5,
                 norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d, rope: bool = True,
                 output_gate: bool = True, rope_base: float = 10000.0) -> None:
        super().__init__(dim, head_dim)
        if rope and head_dim % 4:
            raise ValueError(f"MALA's 2-D RoPE needs head_dim divisible by 4, got {head_dim} (or pass rope=False)")
        self.rope, self.rope_base = rope, rope_base
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.qkv = ConvNormAct(dim, 3 * dim, 1, norm_layer=None, act_layer=None)
        self.gate = ConvNormAct(dim, dim, 1, norm_layer=None, act_layer=None) if output_gate else None
        self.lepe = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.proj = ConvNormAct(dim, dim, 1, norm_layer=norm_layer, act_layer=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        x = run_fp32(self._prenorm, x, self.norm.weight, self.norm.bias)
        q, k, v = self.qkv(x).reshape(B, 3, C, H, W).unbind(1)
        heads = [self._split_heads(t) for t in (q, k, v)]
        if self.rope:
            cos, sin = rope_2d(H, W, self.head_dim, self.rope_base, q)
            out = run_fp32(self.attend, *heads, cos, sin)
        else:
            out = run_fp32(self.attend, *heads)
        out = out.reshape(B, C, H, W) + self.lepe(v)
        return self.proj(out if self.gate is None else out * self.gate(x))

    def _prenorm(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        # reshape: the ExecuTorch export swaps ``norm`` for a ChannelLayerNorm, whose affine is (1, C, 1, 1)
        x = F.layer_norm(x.permute(0, 2, 3, 1), (self.dim,), weight.reshape(-1), bias.reshape(-1), self.norm.eps)
        return x.permute(0, 3, 1, 2)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor | None = None,
               sin: torch.Tensor | None = None) -> torch.Tensor:
        """MALA on ``(B, heads, d, N)`` tensors; with ``cos``/``sin`` (``(d, N)``, :func:`rope_2d`) the
        numerator's ``phi(q)``, ``phi(k)`` are rotary-embedded."""
        scale, n = self.head_dim**-0.5, q.shape[-1]
        q, k = F.elu(q) + 1.0, F.elu(k) + 1.0
        if cos is None and use_kernels(self.kernel_mode, q):
            return fused_linear_attention(q, k, v, 1e-6, scale, True, True)
        z = (k.mean(-1, keepdim=True).transpose(-1, -2) @ q) * scale  # (B, h, 1, N)
        if cos is not None:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        kv = (v @ k.transpose(-1, -2)) * (scale / n)  # (B, h, d, d)
        return (kv @ q) * (1.0 + 1.0 / (z + 1e-6)) - v.mean(-1, keepdim=True) * z


def rope_2d(h: int, w: int, dim: int, base: float, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)``, each ``(dim, h*w)``, of a 2-D rotary position embedding (RoFormer, Su et al., 2021, on a
    grid): channel pairs ``(2i, 2i+1)`` of the first half rotate by ``y * theta_i``, those of the second half
    by ``x * theta_i``, ``theta_i = base ** (-i / (dim / 4))`` for ``i < dim / 4``."""
    quarter = dim // 4
    dt = torch.float64 if like.dtype == torch.float64 else torch.float32
    theta = base ** (-torch.arange(quarter, device=like.device, dtype=dt) / quarter)
    # the grid by broadcasting: with a dynamic size, torch's dynamo ONNX export of ``repeat_interleave(w)`` /
    # ``repeat(h)`` gave rows of different lengths (onnxruntime: Concat's "non concat axis dimensions must match")
    ys = torch.arange(h, device=like.device, dtype=dt)[:, None].expand(h, w).reshape(-1)
    xs = torch.arange(w, device=like.device, dtype=dt)[None, :].expand(h, w).reshape(-1)
    angle = torch.cat([theta[:, None] * ys[None], theta[:, None] * xs[None]]).repeat_interleave(2, dim=0)
    return angle.cos().to(like.dtype), angle.sin().to(like.dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs ``(2i, 2i+1)`` of ``x`` (``(..., d, N)``) by the angles whose cos/sin are given."""
    pairs = x.unflatten(-2, (-1, 2))
    rotated = torch.stack([-pairs[..., 1, :], pairs[..., 0, :]], dim=-2).flatten(-3, -2)
    return x * cos + rotated * sin


#: Mixer name -> class; every class takes ``(dim, head_dim=..., norm_layer=..., **options)``.
TOKEN_MIXERS: dict[str, type[TokenMixer]] = {
    "litemla": LiteMLA,
    "flatten": FocusedLinearAttention,
    "agent": AgentAttention,
    "mala": MagnitudeAwareLinearAttention,
}


def resolve_mixer(name: str) -> type[TokenMixer]:
    """The mixer class registered as ``name`` (case-insensitive); ``ValueError`` suggests close names."""
    key = name.lower()
    if key not in TOKEN_MIXERS:
        close = difflib.get_close_matches(key, list(TOKEN_MIXERS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown token mixer {name!r}{hint} (choose from {', '.join(TOKEN_MIXERS)})")
    return TOKEN_MIXERS[key]


def create_token_mixer(name: str, dim: int, head_dim: int = 32,
                       norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d, **kwargs) -> TokenMixer:
    """Build the token mixer ``name`` (see :data:`TOKEN_MIXERS`) for ``dim`` channels."""
    return resolve_mixer(name)(dim, head_dim=head_dim, norm_layer=norm_layer, **kwargs)


def fp32_regions(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """``{qualified module name: ops}`` of every token mixer whose ``attend`` must run in fp32."""
    return {name: m.fp32_ops for name, m in model.named_modules() if isinstance(m, TokenMixer) and m.fp32_ops}
