"""Tiny random checkpoints of the other ternary families, in their hub layouts, for tests.

    make_llama_bitnet_checkpoint(out_dir, *, linear_class="bitlinear", use_rms_norm=False, tied=False,
                                 hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                 num_attention_heads=8, num_key_value_heads=4, head_dim=None,
                                 rope_theta=1000042.0, seed=0, structured=False) -> Path
        LlamaForCausalLM with transformers' `bitnet` quantization_config and packed uint8 weights +
        weight_scale, shaped like HF1BitLLM/Llama3-8B-1.58 and tiiuae/Falcon3-*-1.58bit
        ("bitlinear": stored 1/mean|W|, untied bf16 lm_head) or tiiuae/Falcon-E ("autobitlinear",
        offline); use_rms_norm adds the RMSNorm inside every BitLinear (`<linear>.rms_norm.weight`).
        The reference is transformers' own LlamaForCausalLM (hf_models.reference_logits).
    make_1bitllm_checkpoint(out_dir, *, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                            num_attention_heads=8, seed=0) -> Path
        1bitLLM/bitnet_b1_58-*'s layout: BitnetForCausalLM, fp16 masters (ternarized at conversion),
        sub-norms `self_attn.inner_attn_ln` / `mlp.ffn_layernorm`, SiLU, theta 1e4, untied lm_head, and a
        SentencePiece tokenizer.model (BPE, byte fallback) trained here, plus one added token. Its
        reference is onebitllm_reference.py (the class is not in transformers).
    Heads of 32 dimensions, as hf_models' checkpoints: wider heads make these random models'
    attention so sharp that one float-order difference flips an int8 code and moves later
    logits by more than DESIGN §3's bound, in the reference itself as much as in ours.
    structured=True gives the weights per-channel structure, as trained models have (each FFN
    neuron and each input channel its own gain): what the I2_S layout detector relies on.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bitnet.convert.ternary import absmean_ternarize, pack_hf
from tests.hf_models import EMBED_STD, LINEAR_GAIN, QK_GAIN, _float
from tests.tokenizer_fixture import TRAINING_TEXT, write_test_tokenizer

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")  # fmt: skip
SPM_VOCAB = 700  # pieces of the trained SentencePiece model


def _shapes(hidden: int, ff: int, heads: int, kv_heads: int, hd: int) -> dict[str, tuple[int, int]]:
    return {
        "self_attn.q_proj": (heads * hd, hidden), "self_attn.k_proj": (kv_heads * hd, hidden),
        "self_attn.v_proj": (kv_heads * hd, hidden), "self_attn.o_proj": (hidden, heads * hd),
        "mlp.gate_proj": (ff, hidden), "mlp.up_proj": (ff, hidden), "mlp.down_proj": (hidden, ff),
    }  # fmt: skip


class _Weights:
    """Master weights of one model: N(0, gain^2 / fan_in), optionally with per-channel gains."""

    def __init__(self, rng: np.random.Generator, hidden: int, ff: int, structured: bool):
        self.rng = rng
        gains = lambda n: rng.lognormal(0.0, 0.6, n) if structured else np.ones(n)
        self.neuron, self.channel = gains(ff), gains(hidden)  # FFN neurons; residual input channels

    def linear(self, module: str, n_out: int, n_in: int) -> np.ndarray:
        gain = QK_GAIN if module in ("self_attn.q_proj", "self_attn.k_proj") else LINEAR_GAIN
        w = gain * self.rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)
        if module in ("mlp.gate_proj", "mlp.up_proj"):
            w = w * self.neuron[:, None] * self.channel[None, :]
        elif module == "mlp.down_proj":
            w = w * self.neuron[None, :]
        elif module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            w = w * self.channel[None, :]
        return w.astype(np.float32)

    def norm(self, n: int) -> np.ndarray:
        return (1.0 + 0.2 * self.rng.standard_normal(n)).astype(np.float32)


def _save(out: Path, tensors: dict, config: dict) -> Path:
    from safetensors.torch import save_file

    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return out


def make_llama_bitnet_checkpoint(out_dir, *, linear_class: str = "bitlinear", use_rms_norm: bool = False,
                                 tied: bool = False, hidden_size: int = 256, intermediate_size: int = 512,
                                 num_hidden_layers: int = 2, num_attention_heads: int = 8,
                                 num_key_value_heads: int = 4, head_dim: int | None = None,
                                 rope_theta: float = 1000042.0, seed: int = 0,
                                 structured: bool = False) -> Path:  # fmt: skip
    import torch

    out = Path(out_dir)
    vocab = write_test_tokenizer(out)
    rng = np.random.default_rng(seed)
    hd = head_dim or hidden_size // num_attention_heads
    w = _Weights(rng, hidden_size, intermediate_size, structured)
    tensors = {"model.embed_tokens.weight": _float(EMBED_STD * rng.standard_normal((vocab, hidden_size)), "bf16")}
    shapes = _shapes(hidden_size, intermediate_size, num_attention_heads, num_key_value_heads, hd)
    for i in range(num_hidden_layers):
        p = f"model.layers.{i}."
        for module, (n_out, n_in) in shapes.items():
            codes, scale = absmean_ternarize(w.linear(module, n_out, n_in))
            stored = scale if linear_class == "autobitlinear" else np.float32(1) / scale
            tensors[p + module + ".weight"] = torch.from_numpy(pack_hf(codes))
            tensors[p + module + ".weight_scale"] = _float(np.array([stored]), "bf16")
            if use_rms_norm:
                tensors[p + module + ".rms_norm.weight"] = _float(w.norm(n_in), "bf16")
        tensors[p + "input_layernorm.weight"] = _float(w.norm(hidden_size), "bf16")
        tensors[p + "post_attention_layernorm.weight"] = _float(w.norm(hidden_size), "bf16")
    tensors["model.norm.weight"] = _float(w.norm(hidden_size), "bf16")
    if not tied:
        tensors["lm_head.weight"] = _float(0.5 * rng.standard_normal((vocab, hidden_size)), "bf16")
    quant = {"quant_method": "bitnet", "linear_class": linear_class, "modules_to_not_convert": ["lm_head"]}
    if linear_class == "autobitlinear":
        quant["quantization_mode"] = "offline"
    if use_rms_norm:
        quant.update(use_rms_norm=True, rms_norm_eps=1e-6)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
        "hidden_size": hidden_size, "intermediate_size": intermediate_size, "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads, "num_key_value_heads": num_key_value_heads, "head_dim": hd,
        "hidden_act": "silu", "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "rope_theta": rope_theta,
        "tie_word_embeddings": tied, "attention_bias": False, "mlp_bias": False, "bos_token_id": vocab - 10,
        "eos_token_id": vocab - 1, "torch_dtype": "bfloat16", "quantization_config": quant,
    }  # fmt: skip
    return _save(out, tensors, config)


def write_spm_tokenizer(out: Path) -> int:
    """tokenizer.model (SentencePiece BPE with byte fallback, Llama's settings) + config; the token count."""
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TRAINING_TEXT.splitlines()), model_prefix=str(out / "tokenizer"),
        vocab_size=SPM_VOCAB, model_type="bpe", byte_fallback=True, normalization_rule_name="identity",
        add_dummy_prefix=True, remove_extra_whitespaces=False, split_digits=True, allow_whitespace_only_pieces=True,
        character_coverage=0.995, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2,
    )  # fmt: skip
    (out / "tokenizer.vocab").unlink()
    (out / "added_tokens.json").write_text(json.dumps({"<pad>": SPM_VOCAB}), encoding="utf-8")
    config = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
              "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}  # fmt: skip
    (out / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return SPM_VOCAB + 1


def make_1bitllm_checkpoint(out_dir, *, hidden_size: int = 256, intermediate_size: int = 512,
                            num_hidden_layers: int = 2, num_attention_heads: int = 8,
                            seed: int = 0) -> Path:  # fmt: skip
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = write_spm_tokenizer(out) + 1  # one embedding row past the tokens, as the hub's 32002 rows
    rng = np.random.default_rng(seed)
    w = _Weights(rng, hidden_size, intermediate_size, structured=False)
    f16 = lambda x: torch.from_numpy(np.asarray(x, np.float16))
    tensors = {"model.embed_tokens.weight": f16(EMBED_STD * rng.standard_normal((vocab, hidden_size)))}
    hd = hidden_size // num_attention_heads
    for i in range(num_hidden_layers):
        p = f"model.layers.{i}."
        for module, (n_out, n_in) in _shapes(hidden_size, intermediate_size, num_attention_heads,
                                             num_attention_heads, hd).items():  # fmt: skip
            tensors[p + module + ".weight"] = f16(w.linear(module, n_out, n_in))
        norms = {"input_layernorm": hidden_size, "post_attention_layernorm": hidden_size,
                 "self_attn.inner_attn_ln": hidden_size, "mlp.ffn_layernorm": intermediate_size}
        for module, n in norms.items():
            tensors[p + module + ".weight"] = f16(w.norm(n))
    tensors["model.norm.weight"] = f16(w.norm(hidden_size))
    tensors["lm_head.weight"] = f16(0.5 * rng.standard_normal((vocab, hidden_size)))
    config = {
        "architectures": ["BitnetForCausalLM"], "model_type": "llama", "vocab_size": vocab,
        "hidden_size": hidden_size, "intermediate_size": intermediate_size, "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads, "num_key_value_heads": num_attention_heads,
        "hidden_act": "silu", "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": SPM_VOCAB,
        "torch_dtype": "float16", "input_bits": 8, "weight_bits": 1,
    }  # fmt: skip
    return _save(out, tensors, config)
