"""config.json of a ternary Hugging Face checkpoint -> checked hyper-parameters -> GGUF keys.

The family (families.py) comes from config.json's `architectures`. Defaults are that family's
config-class defaults, applied only where the key is absent; the converter then writes every
value explicitly, so a GGUF reader never depends on an implied default.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from bitnet.convert.families import FAMILIES, Family, find_family, supported_list

ARCH = "bitnet-b1.58"  # the architecture of BitNet-b1.58-2B-4T files (the dummy generator's too)
ACTIVATIONS = ("relu2", "silu")
MAX_INT = 2**31 - 1  # the engine holds every hyper-parameter in an int32
REQUIRED_INTS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


@dataclass(frozen=True)
class HParams:
    name: str | None
    n_vocab: int
    n_ctx: int
    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    rope_theta: float
    rms_eps: float
    hidden_act: str
    tied: bool  # tie_word_embeddings: no separate lm_head
    linear_class: str  # how a packed checkpoint's weight_scale applies (see ternary.py)
    family: Family = FAMILIES[0]
    linear_norms: bool = False  # quantization_config.use_rms_norm: an RMSNorm inside every BitLinear
    linear_norm_eps: float = 1e-6

    def gguf_fields(self, arch: str = ARCH) -> list[tuple[str, object, str]]:
        a = arch
        extra = [(f"{a}.linear_norm_rms_epsilon", self.linear_norm_eps, "f32")] if self.linear_norms else []
        if self.head_dim * self.n_head != self.n_embd:  # readers derive it otherwise
            extra += [(f"{a}.attention.key_length", self.head_dim, "u32"),
                      (f"{a}.attention.value_length", self.head_dim, "u32")]  # fmt: skip
        return extra + [
            (f"{a}.vocab_size", self.n_vocab, "u32"),
            (f"{a}.context_length", self.n_ctx, "u32"),
            (f"{a}.embedding_length", self.n_embd, "u32"),
            (f"{a}.block_count", self.n_layer, "u32"),
            (f"{a}.feed_forward_length", self.n_ff, "u32"),
            (f"{a}.attention.head_count", self.n_head, "u32"),
            (f"{a}.attention.head_count_kv", self.n_head_kv, "u32"),
            (f"{a}.rope.dimension_count", self.head_dim, "u32"),
            (f"{a}.rope.freq_base", self.rope_theta, "f32"),
            (f"{a}.attention.layer_norm_rms_epsilon", self.rms_eps, "f32"),
            (f"{a}.hidden_act", self.hidden_act, "string"),
        ]


def _positive_int(config: dict, key: str, default: int | None = None) -> int:
    value = config.get(key, default)
    if value is None:
        raise ValueError(f"config.json lacks {key!r}")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_INT:
        raise ValueError(f"config.json: {key} must be a positive integer up to {MAX_INT}, got {value!r:.80}")
    return value


def _bool(config: dict, key: str, default: bool = False) -> bool:
    value = config.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValueError(f"config.json: {key} must be true or false, got {value!r:.80}")
    return value


def _positive_float(config: dict, key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"config.json: {key} must be a positive finite number, got {value!r:.80}")
    return float(value)


def _rope_theta(config: dict, default: float) -> float:
    params = _section(config, "rope_parameters")
    scaling = _section(config, "rope_scaling")
    for kind in (params.get("rope_type"), scaling.get("rope_type"), scaling.get("type")):
        if kind not in (None, "default"):
            raise ValueError(f"config.json: RoPE scaling {kind!r} is not supported (only plain RoPE)")
    theta = config.get("rope_theta", params.get("rope_theta", default))
    return _positive_float(config, "rope_theta", theta)


def _section(config: dict, key: str) -> dict:
    """A nested object of config.json ({} when absent); anything else is a malformed config."""
    value = config.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"config.json: {key} must be an object, got {type(value).__name__}")  # noqa: TRY004
    return value


@dataclass(frozen=True)
class _Quantization:
    linear_class: str
    linear_norms: bool
    linear_norm_eps: float


def _quantization(config: dict, family: Family) -> _Quantization:
    """transformers' BitNetQuantConfig, with its defaults (bitlinear, no norms, eps 1e-6)."""
    if config.get("quantization_config") is None:
        if family.needs_bitnet_quantization:
            raise ValueError(
                f"config.json: a {', '.join(family.hf_architectures)} checkpoint without a bitnet "
                "quantization_config holds float weights, not a ternary model; the converter supports "
                + supported_list()
            )
        return _Quantization("bitlinear", False, 1e-6)
    quant = _section(config, "quantization_config")
    method = quant.get("quant_method")
    if method != "bitnet":
        raise ValueError(f"config.json: quantization method {method!r} is not supported (only 'bitnet')")
    linear_class = quant.get("linear_class", "bitlinear")
    if linear_class not in ("bitlinear", "autobitlinear"):
        raise ValueError(f"config.json: unknown BitNet linear_class {linear_class!r}")
    kept = quant.get("modules_to_not_convert") or []
    kept_float = [str(m) for m in (kept if isinstance(kept, list) else [kept]) if m != "lm_head"]
    if kept_float:  # those layers would be plain float linears, which the engine does not run
        raise ValueError(f"config.json: layers kept in float ({', '.join(kept_float)}) are not supported")
    eps = quant.get("rms_norm_eps")
    eps = 1e-6 if eps is None else _positive_float(config, "quantization_config.rms_norm_eps", eps)
    return _Quantization(linear_class, _bool(quant, "use_rms_norm"), eps)


def parse_config(config: dict) -> HParams:
    archs = config.get("architectures") or []
    archs = archs if isinstance(archs, list) else [archs]
    family = find_family(archs)
    if family is None:
        found = ", ".join(map(str, archs)) or f"model_type {config.get('model_type')!r}"
        raise ValueError(f"this is a {found} checkpoint; the converter supports {supported_list()}")
    quant = _quantization(config, family)
    ints = {k: _positive_int(config, k) for k in REQUIRED_INTS}
    n_embd, n_head = ints["hidden_size"], ints["num_attention_heads"]
    n_head_kv = _positive_int(config, "num_key_value_heads", n_head)
    if "head_dim" in config and config["head_dim"] is not None:
        head_dim = _positive_int(config, "head_dim")
    elif n_embd % n_head:
        raise ValueError(f"config.json: hidden_size {n_embd} is not a multiple of num_attention_heads {n_head}")
    else:
        head_dim = n_embd // n_head
    if n_head % n_head_kv:
        raise ValueError(f"config.json: num_key_value_heads {n_head_kv} does not divide num_attention_heads {n_head}")
    act = config.get("hidden_act", family.default_act)
    if act not in ACTIVATIONS:
        raise ValueError(f"config.json: hidden_act {act!r} is not supported (only {', '.join(ACTIVATIONS)})")
    if _bool(config, "attention_bias") or _bool(config, "mlp_bias"):
        raise ValueError("config.json: attention/MLP biases are not supported")
    name = config.get("_name_or_path")
    return HParams(
        name=name if isinstance(name, str) and name else None,
        n_vocab=ints["vocab_size"],
        n_ctx=_positive_int(config, "max_position_embeddings", 2048),
        n_embd=n_embd,
        n_ff=ints["intermediate_size"],
        n_layer=ints["num_hidden_layers"],
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        rope_theta=_rope_theta(config, family.default_rope_theta),
        rms_eps=_positive_float(config, "rms_norm_eps", config.get("rms_norm_eps", family.default_rms_eps)),
        hidden_act=act,
        tied=_bool(config, "tie_word_embeddings"),
        linear_class=quant.linear_class,
        family=family,
        linear_norms=quant.linear_norms,
        linear_norm_eps=quant.linear_norm_eps,
    )


def read_config(model_dir) -> HParams:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir}: no config.json (not a Hugging Face model directory)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object")  # noqa: TRY004 (bad file content)
    return parse_config(config)
