"""Hyper-parameters of a GGUF model, read as the engine's loader reads them (src/model.cpp's
architecture table and read_hparams); the engine has already validated the file."""

from __future__ import annotations

from dataclasses import dataclass

# general.architecture -> (activation, RoPE theta, sub-norms, RoPE style), as src/model.cpp.
ARCHITECTURES = {
    "bitnet-b1.58": ("relu2", 500000.0, True, "neox"),
    "bitnet-25": ("relu2", 500000.0, True, "neox"),
    "bitnet": ("silu", 10000.0, True, "neox"),
    "llama": ("silu", 10000.0, False, "normal"),
}


@dataclass
class HParams:
    arch: str
    n_embd: int
    n_layer: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_vocab: int
    n_ctx_train: int
    rms_eps: float
    rope_theta: float
    act: str  # relu2 | silu
    has_sub_norms: bool
    rope: str  # neox | normal
    has_linear_norms: bool  # Falcon-E: an RMSNorm on each linear layer's input
    linear_norm_eps: float


def read_hparams(kv: dict, tensor_names, n_vocab: int) -> HParams:
    """kv: the GGUF key-values; tensor_names: every tensor's name; n_vocab: token_embd's rows."""
    arch = kv["general.architecture"]
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r} (supported: {', '.join(ARCHITECTURES)})")
    act, theta, sub_norms, rope = ARCHITECTURES[arch]
    if arch == "bitnet" and kv.get("tokenizer.ggml.model") == "gpt2":  # 2B-4T as upstream names it
        act, theta = "relu2", 500000.0
    p = arch + "."
    n_embd, n_head = int(kv[p + "embedding_length"]), int(kv[p + "attention.head_count"])
    for key in (p + "hidden_act", p + "hidden_activation", "bitnet.hidden_act"):
        if key in kv:
            act = kv[key]
            break
    return HParams(
        arch=arch, n_embd=n_embd, n_layer=int(kv[p + "block_count"]), n_ff=int(kv[p + "feed_forward_length"]),
        n_head=n_head, n_head_kv=int(kv.get(p + "attention.head_count_kv", n_head)),
        head_dim=int(kv.get(p + "attention.key_length", n_embd // n_head)), n_vocab=n_vocab,
        n_ctx_train=int(kv.get(p + "context_length", 4096)),
        rms_eps=float(kv.get(p + "attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(kv.get(p + "rope.freq_base", theta)), act=act, has_sub_norms=sub_norms, rope=rope,
        has_linear_norms="blk.0.attn_q.input_norm.weight" in tensor_names,
        linear_norm_eps=float(kv.get(p + "linear_norm_rms_epsilon", 1e-6)),
    )  # fmt: skip
