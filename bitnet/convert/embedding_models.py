"""BitNet embedding checkpoints (microsoft/bitnet-embedding-0.6b on Qwen3, -270m on Gemma3) -> GGUF.

The published layout (docs/embedding-models.md): a Qwen3Model / Gemma3TextModel whose every
linear layer `<module>.weight` carries its own input RMSNorm `<module>.norm.weight`, tensor names
with or without the `model.` prefix, float masters (ternarized per tensor by absmean here, as
bitnet.cpp's converter does) or packed uint8 + weight_scale. GGUF names are bitnet.cpp's
(`blk.N.attn_q_norm_in`, `post_attention_norm`, `post_ffw_norm`, ...); norms are written f32
as stored (Gemma's `1 + w` is applied by the engine, as the architecture row says), lm_head is
dropped (an embedding model needs none). Streams one tensor at a time, like hf_bitnet.convert.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bitnet.convert.hf_bitnet import (
    FILE_TYPES,
    IGNORED_SUFFIXES,
    TensorJob,
    _check_outfile,
    _Planner,
    _write_tensors,
    open_checkpoint,
)
from bitnet.convert.hparams import HParams
from bitnet.gguf_writer import GGUFWriter

OUTTYPES = ("f32", "f16", "i2_s")  # bitnet.cpp's choices
POOLING_TYPES = {"none": 0, "mean": 1, "cls": 2, "last": 3}  # gguf-py's PoolingType


@dataclass(frozen=True)
class EmbeddingFamily:
    gguf_arch: str
    default_act: str
    gemma: bool  # post-norms, sliding window, embedding scale (the engine's row); HF key names too


FAMILIES = {
    "qwen3": EmbeddingFamily("qwen3", "silu", False),
    "gemma3_text": EmbeddingFamily("gemma3", "gelu_pytorch_tanh", True),
}
ARCHITECTURES = {"Qwen3Model": "qwen3", "Qwen3ForCausalLM": "qwen3", "Gemma3TextModel": "gemma3_text",
                 "Gemma3ForCausalLM": "gemma3_text"}  # fmt: skip

# Per layer: HF module -> (GGUF name, kind, shape from the hparams); linears also get <name>_norm_in.
_ATTN = [
    ("input_layernorm", "attn_norm", "norm", lambda h: (h.n_embd,)),
    ("self_attn.q_proj", "attn_q", "linear", lambda h: (h.n_head * h.head_dim, h.n_embd)),
    ("self_attn.k_proj", "attn_k", "linear", lambda h: (h.n_head_kv * h.head_dim, h.n_embd)),
    ("self_attn.v_proj", "attn_v", "linear", lambda h: (h.n_head_kv * h.head_dim, h.n_embd)),
    ("self_attn.o_proj", "attn_output", "linear", lambda h: (h.n_embd, h.n_head * h.head_dim)),
    ("self_attn.q_norm", "attn_q_norm", "norm", lambda h: (h.head_dim,)),
    ("self_attn.k_norm", "attn_k_norm", "norm", lambda h: (h.head_dim,)),
]
_MLP = [
    ("mlp.gate_proj", "ffn_gate", "linear", lambda h: (h.n_ff, h.n_embd)),
    ("mlp.up_proj", "ffn_up", "linear", lambda h: (h.n_ff, h.n_embd)),
    ("mlp.down_proj", "ffn_down", "linear", lambda h: (h.n_embd, h.n_ff)),
]
_QWEN3_NORMS = [("post_attention_layernorm", "ffn_norm", "norm", lambda h: (h.n_embd,))]
_GEMMA3_NORMS = [
    ("post_attention_layernorm", "post_attention_norm", "norm", lambda h: (h.n_embd,)),
    ("pre_feedforward_layernorm", "ffn_norm", "norm", lambda h: (h.n_embd,)),
    ("post_feedforward_layernorm", "post_ffw_norm", "norm", lambda h: (h.n_embd,)),
]


def _int(cfg: dict, key: str, default=None) -> int:
    v = cfg.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"config.json: {key!r} must be a positive integer, got {v!r}")
    return v


def _float(cfg: dict, key: str, default: float) -> float:
    v = cfg.get(key)
    v = default if v is None else v
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise ValueError(f"config.json: {key!r} must be a positive number, got {v!r}")
    return float(v)


def _family(cfg: dict) -> EmbeddingFamily:
    model_type = cfg.get("model_type")
    if model_type not in FAMILIES:
        archs = cfg.get("architectures") or []
        model_type = next((ARCHITECTURES[a] for a in archs if a in ARCHITECTURES), model_type)
    if model_type not in FAMILIES:
        raise ValueError(f"config.json: model_type {cfg.get('model_type')!r} is not a BitNet embedding backbone "
                         f"(supported: {', '.join(FAMILIES)})")
    return FAMILIES[model_type]


def _swa_fields(cfg: dict, arch: str, n_layer: int, rope_theta: float) -> list:
    """Gemma3's sliding window: every p-th layer global (layer_types or sliding_window_pattern)."""
    window = cfg.get("sliding_window")
    if not window:
        return []
    types = cfg.get("layer_types")
    if types:
        full = [i for i, t in enumerate(types) if t == "full_attention"]
        pattern = full[0] + 1 if full else n_layer + 1
        regular = all((t == "full_attention") == ((i + 1) % pattern == 0) for i, t in enumerate(types))
        if len(types) != n_layer or not regular:
            raise ValueError("config.json: layer_types is not a regular sliding/full pattern; not supported")
    else:
        pattern = cfg.get("sliding_window_pattern", cfg.get("_sliding_window_pattern", 6))
    local_theta = _float(cfg, "rope_local_base_freq", rope_theta)
    return [(f"{arch}.attention.sliding_window", _int({"w": window}, "w"), "u32"),
            (f"{arch}.attention.sliding_window_pattern", _int({"p": pattern}, "p"), "u32"),
            (f"{arch}.rope.freq_base_swa", local_theta, "f32")]  # fmt: skip


def read_embedding_config(model_dir: Path) -> tuple[HParams, EmbeddingFamily, list]:
    """The hyper-parameters, the family, and the GGUF keys beyond HParams.gguf_fields."""
    try:
        cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{model_dir}: no config.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{model_dir / 'config.json'}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{model_dir / 'config.json'}: not a JSON object")
    return embedding_config(cfg, _pooling(model_dir))


def embedding_config(cfg: dict, pooling: int = POOLING_TYPES["last"]) -> tuple[HParams, EmbeddingFamily, list]:
    """read_embedding_config for a config.json already read (the dummy generator's too)."""
    fam = _family(cfg)
    if cfg.get("rope_scaling"):
        raise ValueError("config.json: rope_scaling is not supported (plain RoPE only)")
    if cfg.get("attention_bias"):
        raise ValueError("config.json: attention_bias is not supported (these models have none)")
    if cfg.get("use_bidirectional_attention"):
        raise ValueError("config.json: bidirectional attention is not supported (causal only)")
    n_embd, n_head = _int(cfg, "hidden_size"), _int(cfg, "num_attention_heads")
    hp = HParams(
        name=None, n_vocab=_int(cfg, "vocab_size"), n_ctx=_int(cfg, "max_position_embeddings", 32768),
        n_embd=n_embd, n_ff=_int(cfg, "intermediate_size"), n_layer=_int(cfg, "num_hidden_layers"),
        n_head=n_head, n_head_kv=_int(cfg, "num_key_value_heads", n_head),
        head_dim=_int(cfg, "head_dim", n_embd // n_head), rope_theta=_float(cfg, "rope_theta", 1e6),
        rms_eps=_float(cfg, "rms_norm_eps", 1e-6),
        hidden_act=cfg.get("hidden_activation") or cfg.get("hidden_act") or fam.default_act,
        tied=True, linear_class=cfg.get("linear_class", "autobitlinear"),
    )  # fmt: skip
    if hp.hidden_act not in ("silu", "gelu_pytorch_tanh"):
        raise ValueError(f"config.json: activation {hp.hidden_act!r} is not supported (silu, gelu_pytorch_tanh)")
    extra = [(f"{fam.gguf_arch}.pooling_type", pooling, "u32")]
    if hp.head_dim * hp.n_head == hp.n_embd:  # written always, as bitnet.cpp does (gguf_fields: otherwise)
        extra += [(f"{fam.gguf_arch}.attention.{k}_length", hp.head_dim, "u32") for k in ("key", "value")]
    if fam.gemma:
        scale = _float(cfg, "query_pre_attn_scalar", hp.head_dim) ** -0.5
        extra += [(f"{fam.gguf_arch}.attention.scale", scale, "f32")]
        extra += _swa_fields(cfg, fam.gguf_arch, hp.n_layer, hp.rope_theta)
    return hp, fam, extra


def _pooling(model_dir: Path) -> int:
    """sentence-transformers' modules.json -> <dir>/config.json of its Pooling module (what
    bitnet.cpp's converter reads); without one, last-token pooling, as the model cards say."""
    try:
        modules = json.loads((model_dir / "modules.json").read_text(encoding="utf-8"))
        pooling_dir = next(m["path"] for m in modules if str(m.get("type", "")).endswith("Pooling"))
        pooling = json.loads((model_dir / pooling_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, StopIteration, KeyError, TypeError):
        return POOLING_TYPES["last"]
    for key, kind in (("pooling_mode_mean_tokens", "mean"), ("pooling_mode_cls_token", "cls"),
                      ("pooling_mode_lasttoken", "last")):  # fmt: skip
        if pooling.get(key):
            return POOLING_TYPES[kind]
    return POOLING_TYPES["last"]


def _tokenizer_fields(model_dir: Path, hp: HParams, fam: EmbeddingFamily) -> list:
    """tokenizer.json (byte-level BPE), else tokenizer.model (SentencePiece). Qwen3 appends its
    <|endoftext|> to every text (bitnet.cpp's converter: the token last-token pooling reads)."""
    from bitnet.convert.tokenizer_meta import gguf_tokenizer_fields

    try:
        fields = gguf_tokenizer_fields(model_dir, n_vocab=hp.n_vocab, kind="bpe")
    except (ValueError, FileNotFoundError):
        if not (model_dir / "tokenizer.model").is_file():
            raise
        fields = gguf_tokenizer_fields(model_dir, n_vocab=hp.n_vocab, kind="spm")
    if fam.gguf_arch == "qwen3":
        tokens = next(v for k, v, _ in fields if k == "tokenizer.ggml.tokens")
        if "<|endoftext|>" in tokens:
            fields = [f for f in fields if f[0] != "tokenizer.ggml.eos_token_id"]
            fields.append(("tokenizer.ggml.eos_token_id", tokens.index("<|endoftext|>"), "u32"))
        fields.append(("tokenizer.ggml.add_eos_token", True, "bool"))
    return fields


def plan_embedding_tensors(ckpt, hp: HParams, fam: EmbeddingFamily, outtype: str) -> list[TensorJob]:
    p = _Planner(ckpt, hp, outtype)
    prefix = "model." if "model.embed_tokens.weight" in ckpt else ""
    jobs = [p.float_tensor("token_embd.weight", f"{prefix}embed_tokens.weight", (hp.n_vocab, hp.n_embd), None)]
    layer_tensors = _ATTN + (_GEMMA3_NORMS if fam.gemma else _QWEN3_NORMS) + _MLP
    for i in range(hp.n_layer):
        for hf, gguf, kind, shape_of in layer_tensors:
            hf_name, shape = f"{prefix}layers.{i}.{hf}", shape_of(hp)
            if kind == "norm":
                jobs.append(p.float_tensor(f"blk.{i}.{gguf}.weight", hf_name + ".weight", shape, "f32"))
                continue
            jobs.append(p.linear(f"blk.{i}.{gguf}.weight", hf_name, shape))
            jobs.append(p.float_tensor(f"blk.{i}.{gguf}_norm_in.weight", hf_name + ".norm.weight", (shape[1],), "f32"))
    jobs.append(p.float_tensor("output_norm.weight", f"{prefix}norm.weight", (hp.n_embd,), "f32"))
    p.used.add("lm_head.weight")  # an embedding model has no use for a head
    extra = [n for n in p.leftovers() if not n.endswith(IGNORED_SUFFIXES)]
    if extra:
        raise ValueError(f"checkpoint has tensors that are not part of a BitNet {fam.gguf_arch} embedding model: "
                         f"{', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}")
    return jobs


def convert_embedding(model_dir, outfile, outtype: str = "i2_s", progress: bool = True) -> Path:
    """Convert a BitNet embedding checkpoint directory to a GGUF file; return its path."""
    if outtype not in OUTTYPES:
        raise ValueError(f"unknown outtype {outtype!r} (choose from {', '.join(OUTTYPES)})")
    model_dir, outfile = Path(model_dir), Path(outfile)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory {model_dir} does not exist")
    hp, fam, extra = read_embedding_config(model_dir)
    ckpt = open_checkpoint(model_dir)
    jobs = plan_embedding_tensors(ckpt, hp, fam, outtype)
    tokenizer_fields = _tokenizer_fields(model_dir, hp, fam)
    _check_outfile(outfile, model_dir, ckpt)
    arch = fam.gguf_arch
    with GGUFWriter(outfile) as w:
        w.add_kv("general.architecture", arch, "string")
        w.add_kv("general.name", model_dir.resolve().name, "string")
        w.add_kv("general.file_type", FILE_TYPES[outtype], "u32")
        w.add_kv("general.quantization_version", 2, "u32")
        w.add_kv("general.alignment", 32, "u32")
        for key, value, kind in (*hp.gguf_fields(arch), *extra, *tokenizer_fields):
            w.add_kv(key, value, kind)
        for job in jobs:
            w.add_tensor(job.name, job.ne, job.ggml_type, job.n_bytes)
        w.write_header()
        _write_tensors(w, jobs, progress, after_each=ckpt.release_pages)
    return outfile
