"""Tiny Hugging Face BitNet checkpoints for tests, and transformers as the reference.

Stable API (other test files import it):

    make_bitnet_checkpoint(out_dir, *, layout="packed", linear_class="autobitlinear",
                           hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, seed=0,
                           tie_word_embeddings=True, float_dtype=None, vocab_size=None) -> Path
        Writes config.json, model.safetensors and the test tokenizer into out_dir, shaped like
        microsoft/bitnet-b1.58-2B-4T (BitNetForCausalLM, relu2, rope_theta 500000):
        layout "packed": linear weights as uint8 (out/4, in) + weight_scale, with
            quantization_config {quant_method bitnet, linear_class, quantization_mode offline};
            autobitlinear stores scale = mean|W| (multiplies), bitlinear its inverse (divides);
        layout "bf16" / "f32": float masters, no quantization_config (ternarized by absmean).
        float_dtype ("bf16" / "f32") sets the embedding, norms, lm_head and weight_scale dtype;
        default bf16 for "packed" and "bf16" (as the hub repos), f32 for "f32".
        vocab_size: the tokenizer's token count by default; a larger one pads the embedding
        (as the hub's 128256-row 2B-4T does past its tokens). Any widths (I2_S packs the flattened
        tensor: rows x width must be a multiple of 128 for an i2_s conversion).
    load_reference(model_dir) -> transformers BitNetForCausalLM, float32, eval mode, eager
        attention, computing the exact ternary math (masters: autobitlinear online); for a
        LlamaForCausalLM checkpoint with a bitnet quantization_config (hf_families.py), that class.
    reference_logits(model_dir, ids) -> np.ndarray float32 [len(ids), vocab_size]
        (1bitLLM's BitnetForCausalLM, not in transformers: onebitllm_reference.py)
    reference_linear_weights(model) -> {hf module name: (effective f32 weight [out, in])}
        The weights each BitNet linear layer of the loaded reference multiplies with.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ["TORCHDYNAMO_DISABLE"] = "1"  # transformers' unpack_weights is torch.compile'd

import numpy as np

from bitnet.convert.dtypes import f32_to_bf16
from bitnet.convert.ternary import absmean_ternarize, pack_hf
from tests.tokenizer_fixture import write_test_tokenizer

LAYOUTS = ("packed", "bf16", "f32")
# Weight scales (master std = gain / sqrt(in_features)). The blocks' outputs must outweigh
# the token's own embedding in the residual stream, or a tied head just predicts the input
# token again (gain 1: greedy repeats one token). q/k stay smaller: with gain 8 there too,
# attention logits reach the hundreds, softmax turns into argmax, and one int8 activation
# rounding flip (which any other float order can cause) moves later logits by up to ~10%,
# in transformers itself (full pass vs KV-cache steps); with 2 the worst seen was ~1%.
EMBED_STD = 1.0
LINEAR_GAIN = 8.0
QK_GAIN = 2.0
LINEAR_MODULES = (
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
)  # fmt: skip


def _config(vocab: int, n_tokens: int, layout: str, linear_class: str, hidden: int, ff: int, layers: int, heads: int,
            kv_heads: int, tied: bool, float_dtype: str) -> dict:  # fmt: skip
    config = {
        "architectures": ["BitNetForCausalLM"],
        "model_type": "bitnet",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": ff,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "hidden_act": "relu2",
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "tie_word_embeddings": tied,
        "attention_bias": False,
        "bos_token_id": n_tokens - 10,  # the tokenizer's <|begin_of_text|>
        "eos_token_id": n_tokens - 1,  # <|eot_id|>
        "torch_dtype": {"bf16": "bfloat16", "f32": "float32"}[float_dtype],
        "use_cache": True,
    }
    if layout == "packed":
        config["quantization_config"] = {
            "quant_method": "bitnet",
            "linear_class": linear_class,
            "quantization_mode": "offline",
        }
    return config


def _float(x: np.ndarray, float_dtype: str):
    """f32 -> a safetensors-ready array (bf16 through torch, which numpy cannot express)."""
    import torch

    if float_dtype == "f32":
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return torch.from_numpy(f32_to_bf16(x).view(np.int16)).view(torch.bfloat16)


def _linear_shapes(hidden: int, ff: int, heads: int, kv_heads: int) -> dict[str, tuple[int, int]]:
    hd = hidden // heads
    return {
        "self_attn.q_proj": (heads * hd, hidden),
        "self_attn.k_proj": (kv_heads * hd, hidden),
        "self_attn.v_proj": (kv_heads * hd, hidden),
        "self_attn.o_proj": (hidden, heads * hd),
        "mlp.gate_proj": (ff, hidden),
        "mlp.up_proj": (ff, hidden),
        "mlp.down_proj": (hidden, ff),
    }


def make_bitnet_checkpoint(out_dir, *, layout: str = "packed", linear_class: str = "autobitlinear",
                           hidden_size: int = 128, intermediate_size: int = 256, num_hidden_layers: int = 2,
                           num_attention_heads: int = 4, num_key_value_heads: int = 2, seed: int = 0,
                           tie_word_embeddings: bool = True, float_dtype: str | None = None,
                           vocab_size: int | None = None) -> Path:  # fmt: skip
    from safetensors.torch import save_file

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}")
    float_dtype = float_dtype or ("f32" if layout == "f32" else "bf16")
    out = Path(out_dir)
    vocab = n_tokens = write_test_tokenizer(out)
    if vocab_size is not None:
        if vocab_size < vocab:
            raise ValueError(f"vocab_size {vocab_size} is below the tokenizer's {vocab} tokens")
        vocab = vocab_size
    rng = np.random.default_rng(seed)
    hidden, ff = hidden_size, intermediate_size

    def norm_weight(n: int) -> np.ndarray:
        return (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)

    tensors = {"model.embed_tokens.weight": _float(EMBED_STD * rng.standard_normal((vocab, hidden)), float_dtype)}
    for i in range(num_hidden_layers):
        prefix = f"model.layers.{i}."
        for module, (n_out, n_in) in _linear_shapes(hidden, ff, num_attention_heads, num_key_value_heads).items():
            gain = QK_GAIN if module in ("self_attn.q_proj", "self_attn.k_proj") else LINEAR_GAIN
            master = (gain * rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)
            if layout != "packed":
                tensors[prefix + module + ".weight"] = _float(master, layout)
                continue
            codes, scale = absmean_ternarize(master)
            stored = scale if linear_class == "autobitlinear" else np.float32(1) / scale
            import torch

            tensors[prefix + module + ".weight"] = torch.from_numpy(pack_hf(codes))
            tensors[prefix + module + ".weight_scale"] = _float(np.array([stored]), float_dtype)
        for module, n in (("input_layernorm", hidden), ("post_attention_layernorm", hidden),
                          ("self_attn.attn_sub_norm", hidden), ("mlp.ffn_sub_norm", ff)):  # fmt: skip
            tensors[prefix + module + ".weight"] = _float(norm_weight(n), float_dtype)
    tensors["model.norm.weight"] = _float(norm_weight(hidden), float_dtype)
    if not tie_word_embeddings:
        tensors["lm_head.weight"] = _float(0.5 * rng.standard_normal((vocab, hidden)), float_dtype)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = _config(vocab, n_tokens, layout, linear_class, hidden, ff, num_hidden_layers, num_attention_heads,
                     num_key_value_heads, tie_word_embeddings, float_dtype)  # fmt: skip
    (out / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return out


def _architecture(model_dir) -> str:
    return json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))["architectures"][0]


def load_reference(model_dir):
    """float32 transformers model computing the checkpoint's exact ternary math."""
    import torch
    from transformers import BitNetConfig, BitNetForCausalLM, LlamaConfig, LlamaForCausalLM

    llama = _architecture(model_dir) == "LlamaForCausalLM"
    config_class, model_class = (LlamaConfig, LlamaForCausalLM) if llama else (BitNetConfig, BitNetForCausalLM)
    config = config_class.from_pretrained(model_dir)
    if getattr(config, "quantization_config", None) is None:
        # Float masters: ternarize on the fly, as in training. Set on the config (not as a
        # from_pretrained argument, which transformers refuses for unquantized weights).
        config.quantization_config = {
            "quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "online"
        }  # fmt: skip
    model = model_class.from_pretrained(
        model_dir, config=config, dtype=torch.float32, attn_implementation="eager", device_map="cpu"
    )
    # With a quantizer transformers keeps the other tensors in the file's dtype (bf16) and
    # refuses .float(); the module-level cast is exact (bf16 -> f32) and leaves uint8 alone.
    torch.nn.Module.float(model)
    return model.eval()


def reference_linear_weights(model) -> dict[str, np.ndarray]:
    """HF module name (model.layers.N.self_attn.q_proj ...) -> effective f32 weight [out, in]."""
    import torch
    from transformers.integrations.bitnet import AutoBitLinear, BitLinear, WeightQuant, unpack_weights

    out = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, BitLinear):  # y = x W^T / weight_scale
                w = unpack_weights(module.weight, dtype=torch.float32) / module.weight_scale.float()
            elif isinstance(module, AutoBitLinear):
                w = WeightQuant.apply(module.weight) if module.online_quant else module.weight * module.weight_scale
            else:
                continue
            out[name] = w.float().numpy()
    return out


def reference_logits(model_dir, ids) -> np.ndarray:
    import torch

    if _architecture(model_dir) == "BitnetForCausalLM":
        from tests import onebitllm_reference as onebit

        return onebit.reference_logits(onebit.load_1bitllm(model_dir), ids)
    model = load_reference(model_dir)
    with torch.no_grad():
        logits = model(torch.tensor([list(ids)], dtype=torch.long)).logits[0]
    return logits.float().numpy()
