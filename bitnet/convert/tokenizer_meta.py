"""GGUF tokenizer metadata from a Hugging Face tokenizer directory.

Reads tokenizer.json (+ tokenizer_config.json, generation_config.json, config.json) and
returns the `tokenizer.*` key/value pairs llama.cpp defines, so that our engine and other
GGUF readers rebuild the same tokenizer. Two kinds, what the ternary families ship:
Llama-3 style byte-level BPE (2B-4T, Llama3-8B-1.58, Falcon3, Falcon-E) here, and
SentencePiece BPE (1bitLLM) in tokenizer_spm.py; anything else is refused by name rather than
written with a pre-tokenizer that would mis-tokenize.

Byte-level BPE token ids:
            0 .. n_bpe-1   BPE vocab (type 1 normal)
            n_bpe ..       added tokens (3 control if special, 4 user-defined otherwise)
            holes / up to n_vocab: "[PAD{id}]" (type 5 unused), as llama.cpp's converter does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The vocabulary conventions are defined once, beside the tokenizer that reads them back.
from bitnet.tokenizer import (
    LLAMA3_SPLIT_REGEX,
    QWEN2_SPLIT_REGEX,
    TOKEN_TYPE_CONTROL,
    TOKEN_TYPE_NORMAL,
    TOKEN_TYPE_UNUSED,
    TOKEN_TYPE_USER_DEFINED,
)

Field = tuple[str, object, str]


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")  # noqa: TRY004 (one error type for bad files)
    return data


def _read_optional_json(path: Path) -> dict:
    return _read_json(path) if path.is_file() else {}


def _token_content(value: Any) -> str | None:
    """tokenizer_config.json stores special tokens as a string or an AddedToken dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _check_supported(tok: dict) -> str:
    """The llama.cpp pre-tokenizer name of a byte-level BPE tokenizer.json we reproduce, or ValueError."""
    model = tok.get("model") or {}
    kind = model.get("type") or ("BPE" if "merges" in model else None)
    if kind != "BPE":
        raise ValueError(f"tokenizer model {kind or 'unknown'!r} is not supported yet (only byte-level BPE)")
    if model.get("byte_fallback"):
        raise ValueError("tokenizer model 'BPE' with byte_fallback (SentencePiece-style) is not supported yet")
    normalizer = (tok.get("normalizer") or {}).get("type")
    if normalizer not in (None, "NFC"):
        raise ValueError(f"tokenizer normalizer {normalizer!r} is not supported yet")
    if (tok.get("decoder") or {}).get("type") != "ByteLevel":
        raise ValueError("tokenizer decoder is not ByteLevel: only byte-level BPE is supported yet")
    pre = tok.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    regexes = [
        (s.get("pattern", {}).get("Regex"), s.get("behavior"), s.get("invert", False))
        for s in steps
        if s.get("type") == "Split"
    ]
    byte_level = [s for s in steps if s.get("type") == "ByteLevel"]
    # (normalizer, split regex) -> llama.cpp's name: Llama-3's, and Qwen2's (NFC, single digits).
    known = {(None, LLAMA3_SPLIT_REGEX): "llama-bpe", ("NFC", QWEN2_SPLIT_REGEX): "qwen2"}
    pre_name = known.get((normalizer, regexes[0][0])) if len(regexes) == 1 else None
    if (
        pre_name is None
        or regexes[0][1:] != ("Isolated", False)
        or len(byte_level) != 1
        or byte_level[0].get("use_regex", True)
    ):
        raise ValueError(
            "tokenizer pre-tokenizer is not Llama-3's or Qwen2's (Split regex + ByteLevel): not supported yet"
        )
    return pre_name


def _parse_merges(raw: list) -> list[str]:
    merges = []
    for m in raw:
        if isinstance(m, str):
            merges.append(m)
        elif isinstance(m, list) and len(m) == 2 and all(isinstance(p, str) for p in m):
            merges.append(f"{m[0]} {m[1]}")
        else:
            raise ValueError(f"tokenizer.json: malformed merge {m!r}")
    return merges


def _build_vocab(tok: dict, n_vocab: int | None) -> tuple[list[str], list[int]]:
    by_id: dict[int, tuple[str, int]] = {}
    vocab = tok["model"]["vocab"]
    if not isinstance(vocab, dict) or not vocab:
        raise ValueError("tokenizer.json: the model's vocab is empty or not an object; not a usable tokenizer")
    for text, idx in vocab.items():
        by_id[_token_index(idx, text)] = (text, TOKEN_TYPE_NORMAL)
    for added in tok.get("added_tokens", []):
        idx, text = _token_index(added["id"], added["content"]), added["content"]
        if not isinstance(text, str):
            raise ValueError(f"tokenizer.json: added token {idx} has no text")
        if idx in by_id and by_id[idx][0] != text:
            raise ValueError(f"tokenizer.json: added token {text!r} reuses id {idx} of {by_id[idx][0]!r}")
        by_id[idx] = (text, TOKEN_TYPE_CONTROL if added.get("special") else TOKEN_TYPE_USER_DEFINED)
    n_tok = max(by_id) + 1 if by_id else 0
    if n_vocab is not None and n_vocab > MAX_VOCAB:
        raise ValueError(f"model vocab_size {n_vocab} is over the engine's limit of {MAX_VOCAB}")
    if n_vocab is not None:
        if n_vocab < n_tok:
            raise ValueError(f"model vocab_size {n_vocab} is smaller than the tokenizer's {n_tok} tokens")
        n_tok = n_vocab
    tokens, types = [], []
    for i in range(n_tok):
        text, kind = by_id.get(i, (f"[PAD{i}]", TOKEN_TYPE_UNUSED))
        tokens.append(text)
        types.append(kind)
    return tokens, types


MAX_VOCAB = 1 << 22  # the engine's limit on a vocabulary (src/model.cpp kMaxVocab)
MAX_TOKEN_ID = MAX_VOCAB - 1


def _token_index(value: Any, text: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKEN_ID:
        raise ValueError(f"tokenizer.json: token {str(text)[:40]!r} has id {value!r:.40}, not an integer in "
                         f"[0, {MAX_TOKEN_ID}]")
    return value


def _default_add_bos(tok: dict, bos: str | None) -> bool:
    """Llama-3 adds BOS through a TemplateProcessing post-processor, not a config flag."""
    post = tok.get("post_processor") or {}
    steps = post.get("processors", []) if post.get("type") == "Sequence" else [post]
    for step in steps:
        if step.get("type") == "TemplateProcessing":
            first = (step.get("single") or [{}])[0]
            return "SpecialToken" in first and first["SpecialToken"].get("id") == bos
    return False


def _config_id(configs: list[dict], key: str) -> int | None:
    """First id for key in generation_config.json then config.json (a list means several)."""
    for cfg in configs:
        value = cfg.get(key)
        if isinstance(value, list) and value:
            value = value[0]
        if value is None or value == []:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key} in generation_config.json or config.json must be an integer token id, "
                             f"got {value!r:.40}")
        return value
    return None


@dataclass
class Vocab:
    """A tokenizer file read for GGUF: its vocabulary fields, and what the special-token keys need."""

    fields: list[Field]
    tokens: list[str]
    types: list[int]
    model_ids: dict[str, int]  # special ids the tokenizer file itself names (SentencePiece's trainer spec)
    default_add_bos: Callable[[str | None], bool]  # (BOS text) -> add BOS, when tokenizer_config.json is silent


def _bpe_vocab(root: Path, n_vocab: int | None) -> Vocab:
    """Byte-level BPE (tokenizer.json)."""
    tok_path = root / "tokenizer.json"
    if not tok_path.is_file():
        if (root / "tokenizer.model").is_file():
            raise ValueError(
                "tokenizer model 'SentencePiece' (tokenizer.model) is not supported yet for this model family "
                "(only 1bitLLM's BitnetForCausalLM ships one)"
            )
        raise ValueError(f"{root}: no tokenizer.json found")
    tok = _read_json(tok_path)
    pre_name = _check_supported(tok)
    tokens, types = _build_vocab(tok, n_vocab)
    fields: list[Field] = [
        ("tokenizer.ggml.model", "gpt2", "string"),
        ("tokenizer.ggml.pre", pre_name, "string"),
        ("tokenizer.ggml.tokens", tokens, "string_array"),
        ("tokenizer.ggml.token_type", types, "i32_array"),
        ("tokenizer.ggml.merges", _parse_merges(tok["model"].get("merges", [])), "string_array"),
    ]
    if not tok["model"].get("ignore_merges", False):  # llama.cpp assumes Llama-3's True; say so when not
        fields.append(("tokenizer.ggml.ignore_merges", False, "bool"))
    return Vocab(fields, tokens, types, {}, lambda bos_text: _default_add_bos(tok, bos_text))


def _chat_template(root: Path, cfg: dict) -> str | None:
    template = cfg.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if not isinstance(template, str) and (root / "chat_template.jinja").is_file():
        template = (root / "chat_template.jinja").read_text(encoding="utf-8")
    return template if isinstance(template, str) and template else None


def gguf_tokenizer_fields(model_dir, n_vocab: int | None = None, kind: str = "bpe") -> list[Field]:
    """(key, value, kind) for every tokenizer.* GGUF key; kind names the GGUF value type.

    kind: "bpe" (tokenizer.json, byte-level BPE) or "spm" (tokenizer.model, SentencePiece BPE).
    n_vocab: the model's vocab_size (embedding rows) when it exceeds the tokenizer's count;
    the token list is padded to it. Raises ValueError for tokenizers we cannot reproduce.
    """
    root = Path(model_dir)
    if kind == "spm":
        from bitnet.convert.tokenizer_spm import spm_vocab

        vocab = spm_vocab(root, n_vocab)
    else:
        vocab = _bpe_vocab(root, n_vocab)
    fields, tokens, types = vocab.fields, vocab.tokens, vocab.types
    cfg = _read_optional_json(root / "tokenizer_config.json")
    id_configs = [_read_optional_json(root / "generation_config.json"), _read_optional_json(root / "config.json")]
    ids = {t: i for i, t in enumerate(tokens) if types[i] != TOKEN_TYPE_UNUSED}

    def special_id(name: str) -> int | None:
        found = _config_id(id_configs, f"{name}_token_id")  # checked even when the text below wins
        if found is not None and not 0 <= found < len(tokens):
            raise ValueError(f"{name} token id {found} is outside the vocab (0..{len(tokens) - 1})")
        text = _token_content(cfg.get(name + "_token"))
        if text is not None and text in ids:
            return ids[text]
        return found if found is not None else vocab.model_ids.get({"pad": "padding", "unk": "unknown"}.get(name, name))

    special = {"bos": special_id("bos"), "eos": special_id("eos"), "eot": ids.get("<|eot_id|>"),
               "padding": special_id("pad"), "unknown": special_id("unk") if kind == "spm" else None}  # fmt: skip
    add_bos = cfg.get("add_bos_token")
    if not isinstance(add_bos, bool):
        add_bos = vocab.default_add_bos(tokens[special["bos"]] if special["bos"] is not None else None)
    for key, value in special.items():
        if value is not None:
            if not 0 <= value < len(tokens):
                raise ValueError(f"{key} token id {value} is outside the vocab (0..{len(tokens) - 1})")
            fields.append((f"tokenizer.ggml.{key}_token_id", value, "u32"))
    fields.append(("tokenizer.ggml.add_bos_token", add_bos, "bool"))
    template = _chat_template(root, cfg)
    if template:
        fields.append(("tokenizer.chat_template", template, "string"))
    return fields
