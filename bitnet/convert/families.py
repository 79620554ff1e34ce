"""The ternary model families the converter reads: one row each (DESIGN §2, "architectures are data").

A row says which config.json `architectures` it covers, which GGUF architecture it is written
as (and the one llama.cpp knows, for TQ1_0/TQ2_0 files meant for it too), the defaults
transformers' config class applies, the names of its sub-norm modules, whether the q/k rows
are permuted for llama.cpp's "normal" RoPE, and which tokenizer it ships.

    family        HF class             GGUF arch      act    theta   eps   sub-norms        q/k permuted  tokenizer
    bitnet-2b4t   BitNetForCausalLM    bitnet-b1.58   relu2  500000  1e-5  attn/ffn_sub     no            BPE
    1bitllm       BitnetForCausalLM    bitnet         silu   10000   1e-6  inner_attn_ln /  no            SentencePiece
                                                                           ffn_layernorm
    llama-bitnet  LlamaForCausalLM     llama          silu   10000   1e-6  none             yes           BPE
      (Llama3-8B-1.58, Falcon3-*-1.58bit, Falcon-E: ternary only with a `bitnet` quantization_config)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    hf_architectures: tuple[str, ...]
    gguf_arch: str  # general.architecture of our i2_s / float files
    tq_arch: str  # general.architecture of TQ1_0 / TQ2_0 files (a name llama.cpp reads)
    default_act: str
    default_rope_theta: float
    default_rms_eps: float
    attn_sub_norm: str | None  # HF module under self_attn / mlp, or None without sub-norms
    ffn_sub_norm: str | None
    permute_qk: bool  # llama.cpp's `llama` expects attn_q/attn_k rows in "normal" RoPE order
    needs_bitnet_quantization: bool  # a plain float checkpoint of this class is not ternary
    tokenizer: str  # "bpe" (tokenizer.json) or "spm" (tokenizer.model)
    examples: str


FAMILIES = (
    Family("bitnet-2b4t", ("BitNetForCausalLM",), "bitnet-b1.58", "bitnet", "relu2", 500000.0, 1e-5,
           "self_attn.attn_sub_norm", "mlp.ffn_sub_norm", False, False, "bpe",
           "microsoft/bitnet-b1.58-2B-4T and its -bf16 master"),
    Family("1bitllm", ("BitnetForCausalLM",), "bitnet", "bitnet", "silu", 10000.0, 1e-6,
           "self_attn.inner_attn_ln", "mlp.ffn_layernorm", False, False, "spm",
           "1bitLLM/bitnet_b1_58-large, -3B"),
    Family("llama-bitnet", ("LlamaForCausalLM",), "llama", "llama", "silu", 10000.0, 1e-6,
           None, None, True, True, "bpe",
           "HF1BitLLM/Llama3-8B-1.58-100B-tokens, tiiuae/Falcon3-*-1.58bit, tiiuae/Falcon-E-*"),
)  # fmt: skip


def find_family(architectures: list) -> Family | None:
    """The row whose HF class is among config.json's `architectures` (exact, case-sensitive:
    BitNetForCausalLM and 1bitLLM's BitnetForCausalLM are different models)."""
    for family in FAMILIES:
        if any(a in family.hf_architectures for a in architectures):
            return family
    return None


def supported_list() -> str:
    return "; ".join(f"{', '.join(f.hf_architectures)} ({f.examples})" for f in FAMILIES)
