"""Dummy BitNet embedding models (--model-size embedding-0.6b / embedding-270m of
utils/generate-dummy-bitnet-model.py): random ternary weights in the published shapes, the
embedding converter's tensor names and keys (embedding_models.py), a synthetic vocabulary of the
published size. Weights are drawn as dummy.py draws them (same chunks, seeds and scales);
Gemma3's own norms are stored as w of (1 + w), so they are drawn around 0.

Shapes (docs/embedding-models.md): bitnet-embedding-0.6b is Qwen3-Embedding-0.6B's config
(vocabulary 151669: what bitnet.cpp's 595.78M-parameter count of its teacher implies);
bitnet-embedding-270m is Gemma3-270m's (sliding window 512, every sixth layer global).
"""

from __future__ import annotations

import numpy as np

from bitnet.convert import synthetic_vocab
from bitnet.convert.dtypes import FLOAT_TYPES
from bitnet.convert.dummy import OUTTYPES, _embedding, _linear, _random_uniform, _rng, write_model
from bitnet.convert.embedding_models import _ATTN, _GEMMA3_NORMS, _MLP, _QWEN3_NORMS, embedding_config
from bitnet.convert.hf_bitnet import TensorJob

_QWEN3_06B = dict(model_type="qwen3", hidden_size=1024, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                  intermediate_size=3072, num_hidden_layers=28, vocab_size=151669, max_position_embeddings=32768,
                  rope_theta=1000000.0, rms_norm_eps=1e-6, hidden_act="silu")
_GEMMA3_270M = dict(model_type="gemma3_text", hidden_size=640, num_attention_heads=4, num_key_value_heads=1,
                    head_dim=256, intermediate_size=2048, num_hidden_layers=18, vocab_size=262144,
                    max_position_embeddings=32768, rope_theta=10000.0, rope_local_base_freq=10000.0,
                    rms_norm_eps=1e-6, query_pre_attn_scalar=256, sliding_window=512, sliding_window_pattern=6,
                    hidden_activation="gelu_pytorch_tanh")
EMBEDDING_SIZES = {"embedding-0.6b": _QWEN3_06B, "embedding-270m": _GEMMA3_270M}  # fmt: skip


def _norm(name: str, n: int, seed: int, center: float) -> TensorJob:
    produce = lambda: [(center + _random_uniform(_rng(seed, name, 0), n, -0.1, 0.1)).astype(np.float32)]
    return TensorJob(name, (n,), FLOAT_TYPES["f32"][0], 4 * n, produce)


def generate_embedding(outfile, size: str, outtype: str = "i2_s", *, seed: int = 0, n_vocab: int | None = None,
                       n_layer: int | None = None, embedding_type: str = "f16", name: str | None = None,
                       overwrite: bool = False, progress: bool = True):  # fmt: skip
    if outtype not in ("i2_s", "f16"):
        raise ValueError(f"embedding models are written as i2_s or f16, not {outtype!r}")
    cfg = dict(EMBEDDING_SIZES[size.lower()])
    cfg.update({k: v for k, v in (("vocab_size", n_vocab), ("num_hidden_layers", n_layer)) if v is not None})
    hp, fam, extra = embedding_config(cfg)
    ot = OUTTYPES[outtype]
    center = 0.0 if fam.gemma else 1.0  # Gemma's (1 + w)
    jobs = [_embedding("token_embd.weight", hp, embedding_type, seed)]
    for i in range(hp.n_layer):
        for _, gguf, kind, shape_of in _ATTN + (_GEMMA3_NORMS if fam.gemma else _QWEN3_NORMS) + _MLP:
            tensor, shape = f"blk.{i}.{gguf}.weight", shape_of(hp)
            if kind == "norm":
                jobs.append(_norm(tensor, shape[0], seed, center))
                continue
            jobs.append(_linear(tensor, *shape, ot, seed))
            jobs.append(_norm(f"blk.{i}.{gguf}_norm_in.weight", shape[1], seed, 1.0))
    jobs.append(_norm("output_norm.weight", hp.n_embd, seed, center))
    arch = fam.gguf_arch
    fields = [("general.architecture", arch, "string"), ("general.name", name or f"dummy-bitnet-{size}", "string"),
              ("general.description", f"random ternary weights (seed {seed}); not a trained model", "string"),
              ("general.file_type", ot.file_type, "u32"), ("general.quantization_version", 2, "u32"),
              ("general.alignment", 32, "u32"), *hp.gguf_fields(arch), *extra,
              *synthetic_vocab.gguf_tokenizer_fields(hp.n_vocab)]  # fmt: skip
    if arch == "qwen3":  # the appended end token that last-token pooling reads, as the converter writes
        fields.append(("tokenizer.ggml.add_eos_token", True, "bool"))
    return write_model(outfile, fields, jobs, progress, overwrite)
