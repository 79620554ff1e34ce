"""microsoft/bitnet-b1.58-2B-4T's architecture in PyTorch, for quantization-aware training.

The block, as transformers' BitNetForCausalLM computes it (and our engine, DESIGN.md section 2):

    a = attn_norm(h)
    q, k, v = Wq a, Wk a, Wv a                  RoPE on q, k (rotate-half, theta 500000)
    h = h + Wo attn_sub_norm(softmax(q k^T / sqrt(d) + causal) v)
    f = ffn_norm(h)
    h = h + Wdown ffn_sub_norm(relu(Wgate f)^2 * (Wup f))
    logits = embed^T final_norm(h)              tied head, kept in float

Every W above is a `TernaryLinear`: in the forward pass its weight is ternarized per tensor by
absmean and its input quantized per token to int8 by absmax, exactly the arithmetic of
transformers' AutoBitLinear (DESIGN.md section 3), so the trained master weights export to a
checkpoint that computes what training measured. Both quantizers pass gradients straight
through (the straight-through estimator of the BitNet b1.58 recipe). Only the embedding (and
with it the tied head) and the norms stay in float.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

ABSMEAN_EPS = 1e-5  # the floors of transformers' WeightQuant / ActQuant
ABSMAX_EPS = 1e-5


@dataclass(frozen=True)
class TinyConfig:
    """The hyper-parameters config.json carries (2B-4T: 2560 / 6912 / 30 layers / 20 / 5 heads)."""

    vocab_size: int
    hidden_size: int = 256
    intermediate_size: int = 768
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 512
    rope_theta: float = 500000.0
    rms_norm_eps: float = 1e-5

    def __post_init__(self):
        hd, rem = divmod(self.hidden_size, self.num_attention_heads)
        if rem or self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("hidden_size must split into num_attention_heads, and those into KV groups")
        if self.hidden_size % 128 or self.intermediate_size % 128 or hd % 2:
            raise ValueError("hidden_size and intermediate_size must be multiples of 128 (I2_S blocks)")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def to_dict(self) -> dict:
        return asdict(self)


def absmean_scale(w: torch.Tensor) -> torch.Tensor:
    """1 / max(mean|W|, eps) in f32, the mean summed in f64 and rounded once: the converter's
    absmean_ternarize (bitnet/convert/ternary.py), so export gives the codes training used."""
    mean_abs = (w.detach().abs().sum(dtype=torch.float64) / w.numel()).float()
    return 1.0 / mean_abs.clamp(min=ABSMEAN_EPS)


class _TernaryWeight(torch.autograd.Function):
    """W -> t * (1/s), t = clamp(round(W * s), -1, 1), s = 1/mean|W|; gradient straight through."""

    @staticmethod
    def forward(ctx, w):
        s = absmean_scale(w)
        return (w * s).round().clamp(-1, 1) * (1.0 / s)

    @staticmethod
    def backward(ctx, grad):
        return grad


class _Int8Activation(torch.autograd.Function):
    """x -> q / s per row, s = 127 / max|x|, q = clamp(round(x * s), -128, 127); gradient straight
    through. Half-to-even rounding, the scale divided back out, as transformers' ActQuant."""

    @staticmethod
    def forward(ctx, x):
        s = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=ABSMAX_EPS)
        return (x * s).round().clamp(-128, 127) / s

    @staticmethod
    def backward(ctx, grad):
        return grad


class TernaryLinear(nn.Linear):
    """BitLinear of BitNet b1.58: ternary weights (absmean), int8 activations (absmax), no bias."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features, bias=False)

    def forward(self, x):
        return F.linear(_Int8Activation.apply(x), _TernaryWeight.apply(self.weight))


class RMSNorm(nn.Module):
    """transformers' BitNetRMSNorm: x * rsqrt(mean(x^2) + eps) * weight, in f32."""

    def __init__(self, n: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rope_tables(cfg: TinyConfig, n_pos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [n_pos, head_dim] of rotate-half RoPE, as transformers' default rope."""
    dim = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
    freqs = torch.arange(n_pos, dtype=torch.float)[:, None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Block(nn.Module):
    def __init__(self, cfg: TinyConfig):
        super().__init__()
        d, hd, kv = cfg.hidden_size, cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
        self.n_head, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, hd
        self.input_layernorm = RMSNorm(d, cfg.rms_norm_eps)
        self.q_proj, self.k_proj = TernaryLinear(d, d), TernaryLinear(d, kv)
        self.v_proj, self.o_proj = TernaryLinear(d, kv), TernaryLinear(d, d)
        self.attn_sub_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(d, cfg.rms_norm_eps)
        self.gate_proj = TernaryLinear(d, cfg.intermediate_size)
        self.up_proj = TernaryLinear(d, cfg.intermediate_size)
        self.down_proj = TernaryLinear(cfg.intermediate_size, d)
        self.ffn_sub_norm = RMSNorm(cfg.intermediate_size, cfg.rms_norm_eps)

    def attention(self, x, cos, sin):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.n_kv != self.n_head)
        return self.o_proj(self.attn_sub_norm(out.transpose(1, 2).reshape(b, t, -1)))

    def forward(self, h, cos, sin):
        h = h + self.attention(self.input_layernorm(h), cos, sin)
        f = self.post_attention_layernorm(h)
        return h + self.down_proj(self.ffn_sub_norm(F.relu(self.gate_proj(f)).square() * self.up_proj(f)))


class TinyBitNet(nn.Module):
    """The whole model; parameter names are the hub checkpoint's, less `model.` and `.mlp`/`.self_attn`
    (export.py maps them)."""

    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        cos, sin = rope_tables(cfg, cfg.max_position_embeddings)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, 0.02) embedding, as 2B-4T's config (initializer_range); linear masters scaled
        by 1/sqrt(fan-in), whose absolute size the absmean quantizer divides out anyway."""
        nn.init.normal_(self.embed_tokens.weight, std=0.02)
        for m in self.modules():
            if isinstance(m, TernaryLinear):
                nn.init.normal_(m.weight, std=1.0 / math.sqrt(m.in_features))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [batch, t] -> logits [batch, t, vocab]."""
        t = ids.shape[1]
        if t > self.cfg.max_position_embeddings:
            raise ValueError(f"{t} tokens exceed max_position_embeddings {self.cfg.max_position_embeddings}")
        cos, sin = self.rope_cos[:t], self.rope_sin[:t]
        h = self.embed_tokens(ids)
        for layer in self.layers:
            h = layer(h, cos, sin)
        return F.linear(self.norm(h), self.embed_tokens.weight)

    def n_params(self) -> dict[str, int]:
        ternary = sum(m.weight.numel() for m in self.modules() if isinstance(m, TernaryLinear))
        total = sum(p.numel() for p in self.parameters())
        return {"total": total, "ternary": ternary, "embedding": self.embed_tokens.weight.numel()}
