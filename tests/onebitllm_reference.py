"""A float32 reference forward of a BitNet b1.58 transformer, written from the published equations.

1bitLLM's BitnetForCausalLM (the bitnet_b1_58-* models) is not in transformers, and loading it
with AutoModelForCausalLM silently builds a plain Llama (DESIGN §2), so its reference is this
file, from the equations of its modeling_bitnet.py and the BitNet b1.58 paper, in torch f32:

    RMSNorm(x) * w          = w * (x / sqrt(mean(x^2) + eps))
    BitLinear(x, W)         = ActQuant(x) @ W^T
        ActQuant(x)         = clamp(round(x * s), -128, 127) / s,  s = 127 / max(max|x|, 1e-5) per token
        W (masters)         = clamp(round(W0 * t), -1, 1) / t,     t = 1 / max(mean|W0|, 1e-5) per tensor
    attention               causal softmax(q k^T / sqrt(d)) v, rotate-half RoPE on q and k
    attention output        o(inner_attn_ln(attn))
    FFN                     down(ffn_layernorm(silu(gate(h)) * up(h)))
    logits                  lm_head(norm(x))

`reference_logits(layers, ...)` takes the effective (ternary * scale) weights, so the same code
checks a file whose TQ blocks carry different scales (tests/test_tq.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LINEAR_KEYS = {"wq": "self_attn.q_proj", "wk": "self_attn.k_proj", "wv": "self_attn.v_proj",
               "wo": "self_attn.o_proj", "wg": "mlp.gate_proj", "wu": "mlp.up_proj", "wd": "mlp.down_proj"}  # fmt: skip


@dataclass
class ReferenceModel:
    embed: object  # torch f32 [vocab, n_embd]
    head: object
    norm: object
    layers: list[dict] = field(default_factory=list)  # wq.. (effective weights), attn_norm, ffn_norm, sub-norms
    n_head: int = 1
    n_head_kv: int = 1
    rope_theta: float = 10000.0
    eps: float = 1e-5
    act: str = "silu"


def weight_quant(w):
    import torch

    t = 1.0 / w.abs().mean().clamp(min=1e-5)
    return torch.clamp(torch.round(w * t), -1, 1) / t


def _rms_norm(x, w, eps):
    import torch

    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _bitlinear(x, w):
    import torch

    s = 127.0 / x.abs().max(dim=-1, keepdim=True).values.clamp(min=1e-5)
    return (torch.clamp(torch.round(x * s), -128, 127) / s) @ w.T


def _rope(x, pos, theta):
    import torch

    hd = x.shape[-1]
    inv_freq = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd)
    angles = pos[:, None].float() * inv_freq[None, :]
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    rotated = torch.cat([-x[..., hd // 2 :], x[..., : hd // 2]], -1)
    return x * cos[:, None, :] + rotated * sin[:, None, :]


def _attention(m: ReferenceModel, layer: dict, h):
    import torch

    n, hd = h.shape[0], layer["wq"].shape[0] // m.n_head
    pos = torch.arange(n)
    q = _rope(_bitlinear(h, layer["wq"]).view(n, m.n_head, hd), pos, m.rope_theta)
    k = _rope(_bitlinear(h, layer["wk"]).view(n, m.n_head_kv, hd), pos, m.rope_theta)
    v = _bitlinear(h, layer["wv"]).view(n, m.n_head_kv, hd)
    group = m.n_head // m.n_head_kv
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scores = torch.einsum("qhd,khd->hqk", q, k) / hd**0.5
    scores = scores.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
    a = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(n, -1)
    if "attn_sub_norm" in layer:
        a = _rms_norm(a, layer["attn_sub_norm"], m.eps)
    return _bitlinear(a, layer["wo"])


def _ffn(m: ReferenceModel, layer: dict, h):
    import torch

    g, u = _bitlinear(h, layer["wg"]), _bitlinear(h, layer["wu"])
    a = torch.nn.functional.silu(g) * u if m.act == "silu" else torch.relu(g) ** 2 * u
    if "ffn_sub_norm" in layer:
        a = _rms_norm(a, layer["ffn_sub_norm"], m.eps)
    return _bitlinear(a, layer["wd"])


def reference_logits(m: ReferenceModel, ids) -> np.ndarray:
    import torch

    with torch.no_grad():
        x = m.embed[torch.tensor(list(ids))]
        for layer in m.layers:
            x = x + _attention(m, layer, _rms_norm(x, layer["attn_norm"], m.eps))
            x = x + _ffn(m, layer, _rms_norm(x, layer["ffn_norm"], m.eps))
        return (_rms_norm(x, m.norm, m.eps) @ m.head.T).numpy()


def load_1bitllm(model_dir) -> ReferenceModel:
    """A 1bitLLM checkpoint (fp16 masters) as its training-time math: weights ternarized per tensor."""
    from safetensors.torch import load_file

    root = Path(model_dir)
    cfg = json.loads((root / "config.json").read_text())
    t = {k: v.float() for k, v in load_file(str(root / "model.safetensors")).items()}
    heads = cfg["num_attention_heads"]
    m = ReferenceModel(t["model.embed_tokens.weight"], t["lm_head.weight"], t["model.norm.weight"], n_head=heads,
                       n_head_kv=cfg.get("num_key_value_heads", heads), rope_theta=cfg.get("rope_theta", 10000.0),
                       eps=cfg["rms_norm_eps"], act=cfg["hidden_act"])  # fmt: skip
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        layer = {key: weight_quant(t[p + hf + ".weight"]) for key, hf in LINEAR_KEYS.items()}
        layer.update(attn_norm=t[p + "input_layernorm.weight"], ffn_norm=t[p + "post_attention_layernorm.weight"],
                     attn_sub_norm=t[p + "self_attn.inner_attn_ln.weight"],
                     ffn_sub_norm=t[p + "mlp.ffn_layernorm.weight"])  # fmt: skip
        m.layers.append(layer)
    return m
