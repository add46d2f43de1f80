"""The in-house rectified-flow MM-DiT: the SD3 architecture (Esser et al. 2024, section 4 and figure 2).

Pure PyTorch, the model only (saving and loading: generation.mmdit.checkpoint; the same weights in diffusers'
SD3Transformer2DModel: generation.mmdit.diffusers_export). Text tokens and image tokens keep separate weights
(two "streams") and meet only in a joint attention over the concatenated sequence [text; image]. Every block
is modulated by adaLN-Zero from the conditioning vector c = timestep embedding + pooled-text embedding.

    x (B, C, H, W) --PatchEmbed--> img (B, N, D), N = (H/p)(W/p)
    context (B, T, text_dim) --Linear--> txt (B, T, D)
    t (B,) --sinusoid(t*1000)--MLP--> + MLP(pooled) = c (B, D)
    depth x MMDiTBlock(img, txt, c)      the last block updates only img (its text stream has no output)
    FinalLayer(img, c) (B, N, p*p*C) --unpatchify--> (B, C, H, W)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class MMDiTConfig:
    in_channels: int = 4  # channels of the input image or latent (16 for the SD3 VAE, 3 for pixel space)
    sample_size: int = 32  # side of the training image/latent in pixels; sets the position-embedding scale
    patch_size: int = 2  # side p of a square patch: p x p pixels of the input become one token
    depth: int = 4  # number of MM-DiT blocks (the paper's model size d)
    hidden_size: int = 0  # token width D; 0 (or None) -> 64 * depth, as in the paper
    num_heads: int = 0  # attention heads; 0 (or None) -> depth, as in the paper (head width 64)
    text_dim: int = 384  # width of the per-token text states (384 for all-MiniLM-L6-v2, 4096 for T5-XXL)
    pooled_dim: int = 384  # width of the pooled text vector (2048 for CLIP-L + CLIP-G in SD3)
    out_channels: int = 0  # channels of the prediction; 0 (or None) -> in_channels
    mlp_ratio: float = 4.0  # MLP hidden width = mlp_ratio * hidden_size
    qk_norm: str | None = "rms"  # normalisation of queries and keys per head: "rms" (RMSNorm) or None
    pos_embed_max_size: int = 0  # side, in patches, of the fixed sin-cos position table that is cropped to
    # the image grid (SD3: 192); 0 (or None) -> sample_size // patch_size
    frequency_embedding_size: int = 256  # sinusoidal features of the timestep before its MLP
    timestep_scale: float = 1000.0  # the network embeds t * timestep_scale (SD3: t in [0, 1] -> [0, 1000])
    norm_eps: float = 1e-6  # epsilon of every LayerNorm and RMSNorm

    def __post_init__(self):
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")
        if not self.hidden_size:
            self.hidden_size = 64 * self.depth
        if not self.num_heads:
            self.num_heads = self.depth
        if not self.out_channels:
            self.out_channels = self.in_channels
        if not self.pos_embed_max_size:
            self.pos_embed_max_size = self.sample_size // self.patch_size
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.hidden_size % 4:
            raise ValueError(f"hidden_size must be a multiple of 4 (2D sin-cos), got {self.hidden_size}")
        if self.sample_size % self.patch_size:
            raise ValueError(f"sample_size {self.sample_size} is not a multiple of patch {self.patch_size}")
        if self.pos_embed_max_size < self.sample_size // self.patch_size:
            raise ValueError("pos_embed_max_size is smaller than the training grid sample_size // patch_size")
        if self.qk_norm not in ("rms", None):
            raise ValueError(f"qk_norm must be 'rms' or None, got {self.qk_norm!r}")
        if self.frequency_embedding_size % 2:
            raise ValueError("frequency_embedding_size must be even")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_hidden_size(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    @classmethod
    def from_depth(cls, depth: int, **kw) -> MMDiTConfig:
        """The paper's scaling rule: width 64 * depth, depth heads of 64 channels."""
        return cls(depth=depth, hidden_size=64 * depth, num_heads=depth, **kw)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MMDiTConfig:
        if not isinstance(d, dict):
            raise TypeError(f"an MMDiT config must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown MMDiT config fields: {unknown}")
        return cls(**d)


# ----------------------------------------------------------------------------------------------------------
# Embeddings


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(M,) positions -> (M, dim) features [sin(pos * w_k), cos(pos * w_k)], w_k = 10000^(-2k/dim)."""
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega  # (dim/2,)
    angles = positions.double()[:, None] * omega[None, :]  # (M, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(dim: int, grid_size: int, base_size: int) -> torch.Tensor:
    """Fixed 2D sin-cos table of a grid_size x grid_size grid, rows flattened row-major -> (G*G, dim).

    As in SD3/diffusers: coordinates are arange(G) * base_size / G (so the training grid of side base_size
    spans the same range as the whole table), the first half of the channels encodes the column (x), the
    second half the row (y).
    """
    coords = torch.arange(grid_size, dtype=torch.float32) / (grid_size / base_size)  # (G,)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")  # (G, G) each
    emb_x = sincos_1d(dim // 2, cols.reshape(-1))  # (G*G, dim/2)
    emb_y = sincos_1d(dim // 2, rows.reshape(-1))  # (G*G, dim/2)
    return torch.cat([emb_x, emb_y], dim=1).float()  # (G*G, dim)


def timestep_features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) timesteps (already scaled, e.g. t*1000) -> (B, dim) float32 features [cos(t w_k), sin(t w_k)]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None, :]  # (B, dim/2)
    return torch.cat([angles.cos(), angles.sin()], dim=1)


class PatchEmbed(nn.Module):
    """p x p patches -> tokens (a strided conv), plus the fixed 2D sin-cos positions cropped to the grid."""

    pos_embed: torch.Tensor  # (G*G, D) buffer, G = pos_embed_max_size

    def __init__(self, cfg: MMDiTConfig):
        super().__init__()
        self.patch_size = cfg.patch_size
        self.max_size = cfg.pos_embed_max_size
        p = cfg.patch_size
        self.proj = nn.Conv2d(cfg.in_channels, cfg.hidden_size, kernel_size=p, stride=p)
        table = sincos_2d(cfg.hidden_size, cfg.pos_embed_max_size, base_size=cfg.sample_size // p)
        self.register_buffer("pos_embed", table, persistent=True)  # (G*G, D), G = pos_embed_max_size

    def cropped_pos_embed(self, h: int, w: int) -> torch.Tensor:
        """The centre h x w window of the G x G table -> (h*w, D), as SD3 crops it."""
        if h > self.max_size or w > self.max_size:
            raise ValueError(f"image grid {h}x{w} patches exceeds pos_embed_max_size {self.max_size}")
        top, left = (self.max_size - h) // 2, (self.max_size - w) // 2
        table = self.pos_embed.view(self.max_size, self.max_size, -1)  # (G, G, D)
        return table[top : top + h, left : left + w].reshape(h * w, -1)  # (h*w, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        h, w = H // self.patch_size, W // self.patch_size
        x = self.proj(x)  # (B, D, h, w)
        x = x.permute(0, 2, 3, 1).reshape(B, h * w, -1)  # (B, N, D), contiguous
        return x + self.cropped_pos_embed(h, w)


class TimestepEmbedder(nn.Module):
    """Timestep -> 256 sinusoidal features -> MLP -> (B, D)."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        features = timestep_features(t, self.frequency_embedding_size)  # (B, 256) float32
        return self.mlp(features.to(next(self.mlp.parameters()).dtype))  # (B, D), in the weights' dtype


class PooledTextEmbedder(nn.Module):
    """Pooled text vector (B, pooled_dim) -> MLP -> (B, D); added to the timestep embedding."""

    def __init__(self, pooled_dim: int, hidden_size: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(pooled_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.mlp(pooled)


# ----------------------------------------------------------------------------------------------------------
# Transformer


class RMSNorm(nn.Module):
    """x / rms(x) * weight over the last dimension."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # weight in x's dtype: under bf16 autocast x arrives in bf16 and the fused kernel needs equal dtypes
        return F.rms_norm(x, (x.shape[-1],), self.weight.to(x.dtype), self.eps)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (B, L, D) * (1 + scale) + shift, with shift and scale (B, 1, D)."""
    return torch.addcmul(shift, x, 1 + scale)


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q k^T / sqrt(hd)) v for (B, H, L, hd) inputs, in v's dtype; attn_mask (B, 1, 1, L) bool, True for
    keys that may be attended.

    On CUDA torch picks the kernel (2.11 on an H200 picks cuDNN's, 1.4x faster than its flash kernel there:
    bench/results/sdpa_layout_h200.log). On the CPU, torch's fused kernels are slow for the demo model's small
    heads, in bf16 most of all; measured forward + backward of one block's attention (batch 32, 4 heads of 32,
    73 tokens, 2 threads): flash float32 6.4 ms, flash bf16 15-18 ms, written out with bf16 products and a
    float32 softmax 2.9 ms. So low-precision inputs on the CPU (bf16 autocast training) take the written-out
    form, float32 inputs the fused float32 kernel."""
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    if q.dtype in (torch.bfloat16, torch.float16):
        scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, H, Lq, L), in the low precision
        scores = scores.float()
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        return scores.softmax(-1).to(v.dtype) @ v
    with torch.autocast("cpu", enabled=False):
        return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=attn_mask).to(v.dtype)


class JointAttention(nn.Module):
    """Attention over [text; image] tokens with separate QKV, Q/K norms and output projections per modality.

    With context_pre_only (the last block) the text tokens only give keys and values: no text queries are
    computed and there is no text output projection.
    """

    def __init__(self, cfg: MMDiTConfig, context_pre_only: bool):
        super().__init__()
        D = cfg.hidden_size
        self.num_heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.context_pre_only = context_pre_only
        self.img_qkv = nn.Linear(D, 3 * D)  # fused q, k, v of the image stream
        self.txt_qkv = nn.Linear(D, 3 * D)  # fused q, k, v of the text stream (the last block uses k, v only;
        # its q rows stay so that every block has the same layout, as diffusers' add_q_proj does)

        def qk_norm():
            return RMSNorm(cfg.head_dim, cfg.norm_eps) if cfg.qk_norm == "rms" else nn.Identity()

        self.img_q_norm, self.img_k_norm = qk_norm(), qk_norm()
        self.txt_q_norm = None if context_pre_only else qk_norm()  # no text queries in the last block
        self.txt_k_norm = qk_norm()
        self.img_out = nn.Linear(D, D)
        self.txt_out = None if context_pre_only else nn.Linear(D, D)

    def forward(
        self, img: torch.Tensor, txt: torch.Tensor, attn_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, N, D = img.shape
        T = txt.shape[1]
        H, hd = self.num_heads, self.head_dim
        q_i, k_i, v_i = self.img_qkv(img).view(B, N, 3, H, hd).unbind(2)  # (B, N, H, hd) each
        q_t, k_t, v_t = self.txt_qkv(txt).view(B, T, 3, H, hd).unbind(2)  # (B, T, H, hd) each
        q_i, k_i = self.img_q_norm(q_i), self.img_k_norm(k_i)
        k_t = self.txt_k_norm(k_t)
        k = torch.cat([k_t, k_i], dim=1).transpose(1, 2)  # (B, H, T+N, hd)
        v = torch.cat([v_t, v_i], dim=1).transpose(1, 2)  # (B, H, T+N, hd)
        if self.txt_q_norm is None:  # context_pre_only
            q = q_i.transpose(1, 2)  # (B, H, N, hd): only image tokens ask
        else:
            q = torch.cat([self.txt_q_norm(q_t), q_i], dim=1).transpose(1, 2)  # (B, H, T+N, hd)
        out = attention(q, k, v, attn_mask)  # (B, H, Lq, hd)
        out = out.transpose(1, 2).reshape(B, -1, D)  # (B, Lq, D)
        if self.txt_out is None:  # context_pre_only
            return self.img_out(out), None
        txt_out, img_out = out.split([T, N], dim=1)
        return self.img_out(img_out), self.txt_out(txt_out)  # (B, N, D), (B, T, D)


class MMDiTBlock(nn.Module):
    """One MM-DiT block: adaLN-Zero per stream (shift/scale/gate for attention and MLP), joint attention,
    separate MLPs. With context_pre_only the text stream only gets shift/scale for its attention input."""

    def __init__(self, cfg: MMDiTConfig, context_pre_only: bool = False):
        super().__init__()
        D = cfg.hidden_size
        self.eps = cfg.norm_eps
        self.context_pre_only = context_pre_only
        self.img_mod = nn.Linear(D, 6 * D)  # -> shift, scale, gate (attention), shift, scale, gate (MLP)
        self.txt_mod = nn.Linear(D, 2 * D if context_pre_only else 6 * D)
        self.attn = JointAttention(cfg, context_pre_only)
        self.img_mlp = MLP(D, cfg.mlp_hidden_size)
        self.txt_mlp = None if context_pre_only else MLP(D, cfg.mlp_hidden_size)

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), eps=self.eps)

    def forward(
        self, img: torch.Tensor, txt: torch.Tensor, c_act: torch.Tensor, attn_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # img (B, N, D), txt (B, T, D), c_act = silu(c) (B, D)
        i_mod = self.img_mod(c_act)[:, None]  # (B, 1, 6D)
        i_shift_a, i_scale_a, i_gate_a, i_shift_m, i_scale_m, i_gate_m = i_mod.chunk(6, -1)
        t_mod = self.txt_mod(c_act)[:, None]  # (B, 1, 2D) or (B, 1, 6D)
        if self.context_pre_only:
            t_shift_a, t_scale_a = t_mod.chunk(2, -1)  # (B, 1, D) each
        else:
            t_shift_a, t_scale_a, t_gate_a, t_shift_m, t_scale_m, t_gate_m = t_mod.chunk(6, -1)

        img_attn, txt_attn = self.attn(
            modulate(self.norm(img), i_shift_a, i_scale_a),
            modulate(self.norm(txt), t_shift_a, t_scale_a),
            attn_mask,
        )
        # gated residuals x + gate * f(x) as one addcmul kernel each (eager mode: half the passes over x)
        img = torch.addcmul(img, i_gate_a, img_attn)
        img = torch.addcmul(img, i_gate_m, self.img_mlp(modulate(self.norm(img), i_shift_m, i_scale_m)))
        if self.txt_mlp is None:  # context_pre_only
            return img, None
        txt = torch.addcmul(txt, t_gate_a, txt_attn)
        txt = torch.addcmul(txt, t_gate_m, self.txt_mlp(modulate(self.norm(txt), t_shift_m, t_scale_m)))
        return img, txt


class FinalLayer(nn.Module):
    """adaLN (shift, scale) + Linear to p*p*C_out values per token."""

    def __init__(self, cfg: MMDiTConfig):
        super().__init__()
        self.eps = cfg.norm_eps
        self.adaLN = nn.Linear(cfg.hidden_size, 2 * cfg.hidden_size)  # -> shift, scale
        self.linear = nn.Linear(cfg.hidden_size, cfg.patch_size**2 * cfg.out_channels)

    def forward(self, img: torch.Tensor, c_act: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN(c_act)[:, None].chunk(2, -1)  # (B, 1, D) each
        img = modulate(F.layer_norm(img, (img.shape[-1],), eps=self.eps), shift, scale)
        return self.linear(img)  # (B, N, p*p*C_out)


class MMDiT(nn.Module):
    def __init__(self, config: MMDiTConfig):
        super().__init__()
        self.config = config
        D = config.hidden_size
        self.patch_embed = PatchEmbed(config)
        self.t_embedder = TimestepEmbedder(D, config.frequency_embedding_size)
        self.pooled_embedder = PooledTextEmbedder(config.pooled_dim, D)
        self.context_embedder = nn.Linear(config.text_dim, D)
        self.blocks = nn.ModuleList(
            [MMDiTBlock(config, context_pre_only=(i == config.depth - 1)) for i in range(config.depth)]
        )
        self.final_layer = FinalLayer(config)
        self.initialize_weights()

    def initialize_weights(self):
        """DiT initialisation: Xavier linears, zero biases, zero adaLN modulation and output (adaLN-Zero)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        proj = self.patch_embed.proj
        nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
        nn.init.zeros_(proj.bias)
        for mlp in (self.t_embedder.mlp, self.pooled_embedder.mlp):
            nn.init.normal_(mlp[0].weight, std=0.02)
            nn.init.normal_(mlp[2].weight, std=0.02)
        zero = [self.final_layer.adaLN, self.final_layer.linear]
        zero += [m for block in self.blocks for m in (block.img_mod, block.txt_mod)]
        for module in zero:
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def unpatchify(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(B, h*w, p*p*C) with channels ordered (p, q, C) -> (B, C, h*p, w*p)."""
        B, p, C = x.shape[0], self.config.patch_size, self.config.out_channels
        x = x.view(B, h, w, p, p, C)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(B, C, h * p, w * p)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        pooled: torch.Tensor,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, C, H, W) noisy sample, t (B,) or scalar in [0, 1], context (B, T, text_dim) text token
        states, pooled (B, pooled_dim), context_mask (B, T) bool, True for real tokens (padding is never
        attended).
        Returns the prediction (B, C_out, H, W): the velocity for rectified flow, the noise for eps models."""
        cfg = self.config
        B, C, H, W = x.shape
        if C != cfg.in_channels or H % cfg.patch_size or W % cfg.patch_size:
            raise ValueError(
                f"x has shape {tuple(x.shape)}; expected (B, {cfg.in_channels}, H, W), H and W "
                f"multiples of {cfg.patch_size}"
            )
        if context.ndim != 3 or context.shape[0] != B or context.shape[2] != cfg.text_dim:
            raise ValueError(f"context has shape {tuple(context.shape)}; expected ({B}, T, {cfg.text_dim})")
        if pooled.shape != (B, cfg.pooled_dim):
            raise ValueError(f"pooled has shape {tuple(pooled.shape)}; expected ({B}, {cfg.pooled_dim})")
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(B) if t.ndim == 0 else t
        if t.shape != (B,):
            raise ValueError(f"t has shape {tuple(t.shape)}; expected ({B},) or a scalar")

        img = self.patch_embed(x)  # (B, N, D)
        c = self.t_embedder(t * cfg.timestep_scale) + self.pooled_embedder(pooled)  # (B, D)
        c_act = F.silu(c)  # every adaLN takes silu(c)
        txt = self.context_embedder(context)  # (B, T, D)
        attn_mask = None
        if context_mask is not None:
            if context_mask.shape != context.shape[:2]:
                raise ValueError(
                    f"context_mask has shape {tuple(context_mask.shape)}; expected {tuple(context.shape[:2])}"
                )
            image_keys = torch.ones(B, img.shape[1], dtype=torch.bool, device=x.device)
            keep = torch.cat([context_mask.to(device=x.device, dtype=torch.bool), image_keys], 1)
            attn_mask = keep[:, None, None, :]  # (B, 1, 1, T+N): which keys every query may attend to
        for block in self.blocks:
            img, txt = block(img, txt, c_act, attn_mask)
        out = self.final_layer(img, c_act)  # (B, N, p*p*C_out)
        return self.unpatchify(out, H // cfg.patch_size, W // cfg.patch_size)
