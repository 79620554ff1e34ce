"""Tiny BitNet embedding checkpoints in the published layout (microsoft/bitnet-embedding-0.6b:
Qwen3Model; -270m: Gemma3TextModel; every linear with its own input norm `<module>.norm.weight`;
bf16 float masters) and an independent PyTorch reference of their forward pass, written from
the published structure (docs/embedding-models.md), not from our engine.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from tests.tokenizer_fixture import TRAINING_TEXT

QWEN2_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPM_VOCAB = 640
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def write_gemma_spm_tokenizer(out: Path) -> int:
    """tokenizer.model shaped like Gemma3's: SentencePiece BPE, byte fallback, identity
    normalization, no dummy prefix, digits split, Gemma's ids (pad 0, eos 1, bos 2, unk 3); BOS
    added. No tokenizer.json (Gemma's is not byte-level BPE): the converter reads this file."""
    import sentencepiece as spm

    out.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TRAINING_TEXT.splitlines()), model_prefix=str(out / "tokenizer"), vocab_size=SPM_VOCAB,
        model_type="bpe", byte_fallback=True, normalization_rule_name="identity", add_dummy_prefix=False,
        remove_extra_whitespaces=False, split_digits=True, allow_whitespace_only_pieces=True,
        character_coverage=0.995, pad_id=0, eos_id=1, bos_id=2, unk_id=3, minloglevel=2,
    )  # fmt: skip
    (out / "tokenizer.vocab").unlink()
    cfg = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<bos>", "eos_token": "<eos>",
           "pad_token": "<pad>", "unk_token": "<unk>", "tokenizer_class": "GemmaTokenizer"}  # fmt: skip
    (out / "tokenizer_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    return SPM_VOCAB


def write_qwen_tokenizer(out: Path) -> int:
    """A small tokenizer shaped like Qwen2 / Qwen3's: NFC, single-digit split regex, byte-level
    BPE without ignore_merges, no BOS, <|endoftext|> after the vocab. Returns the token count."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(byte_fallback=False, ignore_merges=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])  # fmt: skip
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator(TRAINING_TEXT.splitlines(keepends=True), trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL])
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    cfg = {"bos_token": None, "eos_token": "<|im_end|>", "tokenizer_class": "Qwen2Tokenizer"}
    (out / "tokenizer_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    return tok.get_vocab_size(with_added_tokens=True)

# Small shapes with the published models' traits: head_dim != hidden / heads, GQA, Gemma3's
# sliding window (2 sliding layers then a global one) with its own RoPE base.
SHAPES = {
    "qwen3": dict(hidden_size=256, num_attention_heads=4, num_key_value_heads=2, head_dim=128,
                  intermediate_size=512, num_hidden_layers=2, rope_theta=1000000.0, rms_norm_eps=1e-6),
    "gemma3_text": dict(hidden_size=256, num_attention_heads=2, num_key_value_heads=1, head_dim=128,
                        intermediate_size=512, num_hidden_layers=3, rope_theta=1000000.0, rms_norm_eps=1e-6,
                        rope_local_base_freq=10000.0, sliding_window=4, query_pre_attn_scalar=128,
                        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                        hidden_activation="gelu_pytorch_tanh"),
}  # fmt: skip
ARCHS = {"qwen3": "Qwen3Model", "gemma3_text": "Gemma3TextModel"}


def make_embedding_checkpoint(out_dir, model_type: str, seed: int = 0, prefix: str = "") -> Path:
    """Write config.json, tokenizer files and model.safetensors (bf16) for a random model."""
    import torch
    from safetensors.torch import save_file

    out = Path(out_dir)
    n_vocab = write_qwen_tokenizer(out) if model_type == "qwen3" else write_gemma_spm_tokenizer(out)
    cfg = dict(SHAPES[model_type], model_type=model_type, architectures=[ARCHS[model_type]], vocab_size=n_vocab,
               max_position_embeddings=512, tie_word_embeddings=True, torch_dtype="bfloat16")
    rng = np.random.default_rng(seed)
    gemma = model_type == "gemma3_text"
    E, H, KV, D, F = (cfg[k] for k in ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
                                       "intermediate_size"))  # fmt: skip

    def norm(n):  # Gemma stores w of (1 + w): near 0; others near 1
        return (0.0 if gemma else 1.0) + 0.2 * rng.standard_normal(n)

    t = {f"{prefix}embed_tokens.weight": rng.standard_normal((n_vocab, E)) * (0.05 if gemma else 1.0),
         f"{prefix}norm.weight": norm(E)}  # fmt: skip
    linears = {"self_attn.q_proj": (H * D, E), "self_attn.k_proj": (KV * D, E), "self_attn.v_proj": (KV * D, E),
               "self_attn.o_proj": (E, H * D), "mlp.gate_proj": (F, E), "mlp.up_proj": (F, E),
               "mlp.down_proj": (E, F)}  # fmt: skip
    norms = ["input_layernorm", "post_attention_layernorm"]
    norms += ["pre_feedforward_layernorm", "post_feedforward_layernorm"] if gemma else []
    for i in range(cfg["num_hidden_layers"]):
        p = f"{prefix}layers.{i}."
        for name, shape in linears.items():
            t[p + name + ".weight"] = rng.standard_normal(shape) * 0.05
            t[p + name + ".norm.weight"] = 1.0 + 0.2 * rng.standard_normal(shape[1])  # BitLinear's own: plain w
        for name in norms:
            t[p + name + ".weight"] = norm(E)
        t[p + "self_attn.q_norm.weight"] = norm(D)
        t[p + "self_attn.k_norm.weight"] = norm(D)
    tensors = {k: torch.tensor(v, dtype=torch.float32).to(torch.bfloat16) for k, v in t.items()}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return out


class Reference:
    """The published forward pass in float64 PyTorch (DESIGN section 3 judges against float64:
    float32 lands on the other side of an int8 rounding boundary now and then): BitLinear =
    RMSNorm(x) * norm_w -> int8 absmax activations -> absmean-ternary weights; Qwen3 / Gemma3
    blocks around it; causal."""

    def __init__(self, model_dir, double: bool = True):
        import torch
        from safetensors.torch import load_file

        self.torch = torch
        d = Path(model_dir)
        self.cfg = json.loads((d / "config.json").read_text())
        raw = load_file(str(d / "model.safetensors"))
        self.w = {k.removeprefix("model."): v.double() if double else v.float() for k, v in raw.items()}
        self.gemma = self.cfg["model_type"] == "gemma3_text"

    def rms(self, x, w, one_plus=False):
        eps = self.cfg["rms_norm_eps"]
        y = x * self.torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        return y * ((1.0 + w) if one_plus else w)

    def bitlinear(self, x, name):
        torch = self.torch
        x = self.rms(x, self.w[name + ".norm.weight"])
        s = 127.0 / x.abs().amax(-1, keepdim=True).clamp(min=1e-5)
        xq = (x * s).round().clamp(-128, 127) / s
        w = self.w[name + ".weight"]
        ws = 1.0 / w.abs().mean().clamp(min=1e-5)
        return torch.nn.functional.linear(xq, (w * ws).round().clamp(-1, 1) / ws)

    def rope(self, x, theta):  # x [heads, n, d], rotate-half
        torch = self.torch
        n, d = x.shape[1], x.shape[2]
        inv = 1.0 / theta ** (torch.arange(0, d, 2, dtype=x.dtype) / d)
        ang = torch.arange(n, dtype=x.dtype)[:, None] * inv[None, :]
        cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
        rot = torch.cat([-x[..., d // 2 :], x[..., : d // 2]], -1)
        return x * cos + rot * sin

    def layer(self, x, i):
        torch, c, g = self.torch, self.cfg, self.gemma
        p = f"layers.{i}."
        H, KV, D = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        n = x.shape[0]
        h = self.rms(x, self.w[p + "input_layernorm.weight"], g)
        q = self.bitlinear(h, p + "self_attn.q_proj").view(n, H, D).transpose(0, 1)
        k = self.bitlinear(h, p + "self_attn.k_proj").view(n, KV, D).transpose(0, 1)
        v = self.bitlinear(h, p + "self_attn.v_proj").view(n, KV, D).transpose(0, 1)
        q = self.rms(q, self.w[p + "self_attn.q_norm.weight"], g)
        k = self.rms(k, self.w[p + "self_attn.k_norm.weight"], g)
        sliding = g and c["layer_types"][i] == "sliding_attention"
        theta = c["rope_local_base_freq"] if sliding else c["rope_theta"]
        q, k = self.rope(q, theta), self.rope(k, theta)
        k, v = k.repeat_interleave(H // KV, 0), v.repeat_interleave(H // KV, 0)
        scale = c["query_pre_attn_scalar"] ** -0.5 if g else D**-0.5
        pos = torch.arange(n)
        allowed = pos[None, :] <= pos[:, None]
        if sliding:
            allowed &= pos[:, None] - pos[None, :] < c["sliding_window"]
        scores = (q @ k.transpose(1, 2)) * scale
        att = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1) @ v
        o = self.bitlinear(att.transpose(0, 1).reshape(n, H * D), p + "self_attn.o_proj")
        if g:
            o = self.rms(o, self.w[p + "post_attention_layernorm.weight"], True)
        x = x + o
        ffn_norm = "pre_feedforward_layernorm" if g else "post_attention_layernorm"
        h = self.rms(x, self.w[p + ffn_norm + ".weight"], g)
        gate = self.bitlinear(h, p + "mlp.gate_proj")
        act = torch.nn.functional.gelu(gate, approximate="tanh") if g else torch.nn.functional.silu(gate)
        m = self.bitlinear(act * self.bitlinear(h, p + "mlp.up_proj"), p + "mlp.down_proj")
        if g:
            m = self.rms(m, self.w[p + "post_feedforward_layernorm.weight"], True)
        return x + m

    def hidden(self, ids) -> np.ndarray:
        """Final hidden states after the output norm, [len(ids), hidden_size]."""
        with self.torch.no_grad():
            x = self.w["embed_tokens.weight"][self.torch.tensor(ids)]
            if self.gemma:
                x = x * math.sqrt(self.cfg["hidden_size"])
            for i in range(self.cfg["num_hidden_layers"]):
                x = self.layer(x, i)
            return self.rms(x, self.w["norm.weight"], self.gemma).numpy()

    def embed(self, ids) -> np.ndarray:
        """Last-token pooling, L2-normalized."""
        v = self.hidden(ids)[-1].astype(np.float64)
        return (v / np.linalg.norm(v)).astype(np.float32)


def repack_as_uint8(src_dir, out_dir) -> Path:
    """The same model with every linear weight packed as BitNetForCausalLM packs it (uint8, 4 codes
    a byte, + weight_scale = mean|W|, the `autobitlinear` convention): the other ternary layout
    our converters read."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from bitnet.convert.ternary import absmean_ternarize, pack_hf

    src, out = Path(src_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.suffix in (".json", ".model"):  # config and tokenizer
            shutil.copy(f, out / f.name)
    tensors = {}
    for name, t in load_file(str(src / "model.safetensors")).items():
        if name.endswith("_proj.weight"):
            codes, scale = absmean_ternarize(t.float().numpy())
            tensors[name] = torch.from_numpy(pack_hf(codes))
            tensors[name[: -len("weight")] + "weight_scale"] = torch.tensor([float(scale)], dtype=torch.float32)
        else:
            tensors[name] = t
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out
