"""A SentencePiece tokenizer.model -> llama.cpp's `llama` tokenizer keys (1bitLLM's models).

tokenizer.model is a protobuf ModelProto; we read the few fields llama.cpp's converter reads
with a small wire-format decoder (no protobuf dependency):

    ModelProto      1: pieces (repeated SentencePiece)  2: trainer_spec  3: normalizer_spec
    SentencePiece   1: piece (string)  2: score (float)  3: type (1 normal, 2 unknown,
                    3 control, 4 user-defined, 5 unused, 6 byte)
    TrainerSpec     3: model_type (1 unigram, 2 BPE)  35: byte_fallback
                    40: unk_id  41: bos_id  42: eos_id  43: pad_id
    NormalizerSpec  1: name  3: add_dummy_prefix  4: remove_extra_whitespaces (defaults true)

GGUF: tokenizer.ggml.model "llama", tokens (the pieces, "▁" for spaces), scores, token_type
(the piece types, which are llama.cpp's token types), add_space_prefix; added tokens past the
pieces (tokenizer.json / added_tokens.json) follow, then [PAD{id}] up to the model's vocab.
Only what our tokenizer reproduces exactly is accepted: BPE models with the identity
normalizer and no whitespace folding (Llama's settings).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from bitnet.convert.tokenizer_meta import Vocab
from bitnet.tokenizer import TOKEN_TYPE_CONTROL, TOKEN_TYPE_UNUSED, TOKEN_TYPE_USER_DEFINED

WIRE_VARINT, WIRE_FIXED64, WIRE_BYTES, WIRE_FIXED32 = 0, 1, 2, 5
SPM_BPE = 2


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated or malformed varint")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def _fields(buf: bytes) -> list[tuple[int, int, object]]:
    """(field number, wire type, value) of a message: ints, floats (fixed32) or bytes."""
    out, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == WIRE_VARINT:
            value, pos = _varint(buf, pos)
        elif wire == WIRE_FIXED32:
            value, pos = struct.unpack_from("<f", buf, pos)[0] if pos + 4 <= len(buf) else None, pos + 4
        elif wire == WIRE_FIXED64:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == WIRE_BYTES:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf) or value is None:
            raise ValueError("truncated protobuf message")
        out.append((number, wire, value))
    return out


def _message(fields, number: int) -> dict[int, object]:
    """The last occurrence of a sub-message, as {field: value} (later values win, as in protobuf)."""
    body = b"".join(v for n, w, v in fields if n == number and w == WIRE_BYTES)
    return {n: v for n, _, v in _fields(body)}


def read_spm_model(path: Path) -> dict:
    """pieces [(text, score, type)], model_type, byte_fallback, special ids, normalizer settings."""
    try:
        top = _fields(path.read_bytes())
        pieces = []
        for n, w, body in top:
            if n == 1 and w == WIRE_BYTES:
                p = {k: v for k, _, v in _fields(body)}
                pieces.append((p.get(1, b"").decode("utf-8"), float(p.get(2, 0.0)), int(p.get(3, 1))))
        trainer, normalizer = _message(top, 2), _message(top, 3)
    except (ValueError, UnicodeDecodeError, struct.error) as e:
        raise ValueError(f"{path}: not a SentencePiece model ({e})") from None
    if not pieces:
        raise ValueError(f"{path}: not a SentencePiece model (no pieces)")
    return {
        "pieces": pieces,
        "model_type": int(trainer.get(3, 1)),
        "byte_fallback": bool(trainer.get(35, 0)),
        "ids": {"unknown": trainer.get(40, 0), "bos": trainer.get(41, 1), "eos": trainer.get(42, 2),
                "padding": trainer.get(43, -1)},  # fmt: skip
        "normalizer": bytes(normalizer.get(1, b"")).decode("utf-8", "replace"),
        "add_dummy_prefix": bool(normalizer.get(3, 1)),
        "remove_extra_whitespaces": bool(normalizer.get(4, 1)),
    }


def _added_tokens(root: Path) -> dict[int, tuple[str, bool]]:
    """id -> (text, special) of tokens added on top of the pieces (HF's extra ids, e.g. <pad>)."""
    tok_json = root / "tokenizer.json"
    if tok_json.is_file():
        data = json.loads(tok_json.read_text(encoding="utf-8"))
        return {int(t["id"]): (t["content"], bool(t.get("special"))) for t in data.get("added_tokens", [])}
    added = root / "added_tokens.json"
    if added.is_file():
        return {int(i): (text, True) for text, i in json.loads(added.read_text(encoding="utf-8")).items()}
    return {}


def spm_vocab(root: Path, n_vocab: int | None) -> Vocab:
    """The vocabulary fields, with the special ids of the trainer spec; BOS is added by default (Llama's)."""
    path = root / "tokenizer.model"
    if not path.is_file():
        raise ValueError(f"{root}: no tokenizer.model (this model family uses a SentencePiece tokenizer)")
    spm = read_spm_model(path)
    if spm["model_type"] != SPM_BPE:
        raise ValueError(f"{path}: SentencePiece model type {spm['model_type']} is not supported (only BPE)")
    if spm["normalizer"] not in ("identity", "") or spm["remove_extra_whitespaces"]:
        raise ValueError(
            f"{path}: SentencePiece normalizer {spm['normalizer']!r} (remove_extra_whitespaces="
            f"{spm['remove_extra_whitespaces']}) is not supported (only identity without whitespace folding)"
        )
    vocab = list(spm["pieces"])  # (text, score, type) by id

    def pad_to(n: int) -> None:
        vocab.extend((f"[PAD{i}]", -1000.0, TOKEN_TYPE_UNUSED) for i in range(len(vocab), n))

    for i, (text, special) in sorted(_added_tokens(root).items()):
        if i < len(vocab):
            if vocab[i][0] != text:
                raise ValueError(f"added token {text!r} reuses id {i} of piece {vocab[i][0]!r}")
            continue
        pad_to(i)
        vocab.append((text, 0.0, TOKEN_TYPE_CONTROL if special else TOKEN_TYPE_USER_DEFINED))
    if n_vocab is not None:
        if n_vocab < len(vocab):
            raise ValueError(f"model vocab_size {n_vocab} is smaller than the tokenizer's {len(vocab)} tokens")
        pad_to(n_vocab)
    tokens, scores, types = (list(column) for column in zip(*vocab))
    fields = [
        ("tokenizer.ggml.model", "llama", "string"),
        ("tokenizer.ggml.tokens", tokens, "string_array"),
        ("tokenizer.ggml.scores", scores, "f32_array"),
        ("tokenizer.ggml.token_type", types, "i32_array"),
        ("tokenizer.ggml.add_space_prefix", spm["add_dummy_prefix"], "bool"),
        ("tokenizer.ggml.remove_extra_whitespaces", False, "bool"),
    ]
    ids = {k: v for k, v in spm["ids"].items() if isinstance(v, int) and 0 <= v < len(spm["pieces"])}
    return Vocab(fields, tokens, types, ids, lambda bos_text: True)
