"""A trained TinyBitNet -> microsoft/bitnet-b1.58-2B-4T's hub layout -> GGUF.

The checkpoint is what transformers loads as BitNetForCausalLM with its bitnet quantizer:
    config.json          2B-4T's keys + quantization_config {bitnet, autobitlinear, offline}
    model.safetensors    every linear layer as packed uint8 [out/4, in] (code = t + 1, output
                         row i*(out/4)+r in bits 2i..2i+1 of row r) + f32 weight_scale = mean|W|,
                         which AutoBitLinear offline multiplies by; norms f32; the embedding
                         (and tied head) f16, as the engine stores it by default
    tokenizer.json, tokenizer_config.json, generation_config.json
The codes and scales come from the converter's own absmean (bitnet/convert/ternary.py), which
model.py's forward pass matches bit for bit, so the checkpoint computes what training measured
(less the embedding's rounding to f16). Our converter then writes the GGUF from that directory,
as it would for the real 2B-4T.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bitnet.convert.ternary import absmean_ternarize, pack_hf
from bitnet.training.model import TernaryLinear, TinyBitNet

GGUF_NAME = "ggml-model-i2_s.gguf"
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj", "attn_sub_norm")  # under self_attn. in the hub names
MLP = ("gate_proj", "up_proj", "down_proj", "ffn_sub_norm")  # under mlp.


def hub_config(model: TinyBitNet, ids: dict[str, int]) -> dict:
    c = model.cfg
    return {
        "architectures": ["BitNetForCausalLM"],
        "model_type": "bitnet",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": ids["bos"],
        "eos_token_id": ids["eos"],
        "hidden_act": "relu2",
        "hidden_size": c.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": c.intermediate_size,
        "max_position_embeddings": c.max_position_embeddings,
        "num_attention_heads": c.num_attention_heads,
        "num_hidden_layers": c.num_hidden_layers,
        "num_key_value_heads": c.num_key_value_heads,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": c.vocab_size,
        "quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                "quantization_mode": "offline"},  # fmt: skip
    }


def hub_name(name: str) -> str:
    """Our parameter name -> the checkpoint's (layers.0.q_proj.weight -> model.layers.0.self_attn.q_proj.weight)."""
    parts = name.split(".")
    if parts[0] == "layers":
        group = "self_attn." if parts[2] in ATTENTION else "mlp." if parts[2] in MLP else ""
        return f"model.layers.{parts[1]}.{group}{'.'.join(parts[2:])}"
    return f"model.{name}"


def hub_tensors(model: TinyBitNet) -> dict[str, torch.Tensor]:
    ternary = {name for name, m in model.named_modules() if isinstance(m, TernaryLinear)}
    out = {}
    for name, p in model.state_dict().items():
        w = p.detach().float().cpu()
        module = name.rsplit(".", 1)[0]
        if module in ternary:
            codes, scale = absmean_ternarize(w.numpy())
            out[hub_name(name)] = torch.from_numpy(pack_hf(codes))
            out[hub_name(module) + ".weight_scale"] = torch.tensor([scale], dtype=torch.float32)
        elif name == "embed_tokens.weight":
            out[hub_name(name)] = w.half()
        else:
            out[hub_name(name)] = w.contiguous()
    return out


def export_checkpoint(model: TinyBitNet, tokenizer, out_dir, extra_files: dict[str, str] | None = None) -> Path:
    """Write the hub-layout checkpoint into out_dir (created); extra_files: {name: text} beside it."""
    from safetensors.torch import save_file

    from bitnet.training.tokenizer import save_tokenizer, special_ids

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = special_ids(tokenizer)
    save_file(hub_tensors(model), str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hub_config(model, ids), indent=2) + "\n")
    generation = {"bos_token_id": ids["bos"], "eos_token_id": [ids["eos"], ids["end_of_text"]], "do_sample": True,
                  "temperature": 0.8, "top_p": 0.95}  # fmt: skip
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    save_tokenizer(tokenizer, out)
    for name, text in (extra_files or {}).items():
        (out / name).write_text(text, encoding="utf-8")
    return out


def export_gguf(checkpoint_dir) -> Path:
    """The I2_S GGUF of an exported checkpoint, written beside it by our converter."""
    from bitnet.convert.hf_bitnet import convert

    root = Path(checkpoint_dir)
    return Path(convert(root, root / GGUF_NAME, outtype="i2_s", progress=False))

