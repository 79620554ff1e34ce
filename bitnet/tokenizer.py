"""The model's tokenizer, rebuilt from GGUF metadata with Hugging Face `tokenizers`.

Two kinds (`tokenizer.ggml.model`): "gpt2", byte-level BPE (below), and "llama", SentencePiece
BPE with scores and byte fallback (tokenizer_spm.py).

A GGUF file carries llama.cpp's tokenizer keys (`tokenizer.ggml.*`): the token strings in id
order, one type per token (1 normal, 3 control, 4 user-defined, 5 unused), the BPE merges as
"a b" strings and the pre-tokenizer's name. We rebuild the same byte-level BPE that Hugging
Face would load from the original tokenizer.json, by serializing that tokenizer.json in memory:
only that route lets added tokens keep their ids (holes and all).

Ids and bytes: normal tokens are spelled in GPT-2's byte alphabet (each byte 0..255 mapped to
a printable character, e.g. ' ' -> 'Ġ'); `token_to_bytes` maps them back so a stream of tokens
can be turned into UTF-8 as the bytes arrive. Control and user-defined tokens are plain text.
"""

from __future__ import annotations

import json
import operator
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from bitnet.errors import BitnetError
from bitnet.tokenizer_spm import build_spm_tokenizer, check_split_work, spm_token_bytes

TOKEN_TYPE_NORMAL = 1
TOKEN_TYPE_UNKNOWN = 2
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4
TOKEN_TYPE_UNUSED = 5

LLAMA3_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen2's: Llama-3's with single digits (\p{N}, not \p{N}{1,3}).
QWEN2_SPLIT_REGEX = LLAMA3_SPLIT_REGEX.replace(r"\p{N}{1,3}", r"\p{N}")

# tokenizer.ggml.pre -> (split regex, ignore_merges). Every name here is Llama-3's pre-tokenizer
# in llama.cpp; "default" (files written before the key existed) is taken as Llama-3's too,
# since the only byte-level BPE ternary models are Llama-3 derived.
PRE_TOKENIZERS = {
    "llama-bpe": (LLAMA3_SPLIT_REGEX, True),
    "llama3": (LLAMA3_SPLIT_REGEX, True),
    "llama-v3": (LLAMA3_SPLIT_REGEX, True),
    "falcon3": (LLAMA3_SPLIT_REGEX, True),
    "falcon_e": (LLAMA3_SPLIT_REGEX, True),  # bitnet.cpp / ik_llama.cpp's name for Falcon-E
    "default": (LLAMA3_SPLIT_REGEX, True),
    "qwen2": (QWEN2_SPLIT_REGEX, False),  # Qwen2 / Qwen3 (bitnet-embedding-0.6b); NFC first (below)
}
# Pre-tokenizers whose tokenizer.json normalizes text to Unicode NFC before splitting.
NFC_PRE_TOKENIZERS = frozenset({"qwen2"})

# Longest token text accepted, in characters: real vocabularies stay under a few hundred; this
# keeps every per-token step of building a tokenizer bounded.
MAX_TOKEN_CHARS = 1024

EOG_TOKEN_NAMES = frozenset({"<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"})


def _gpt2_byte_alphabet() -> dict[str, int]:
    """GPT-2's printable stand-in character for each byte, inverted: char -> byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + n)
            n += 1
    return {c: b for b, c in chars.items()}


BYTE_OF_CHAR = _gpt2_byte_alphabet()


def _get(meta: Mapping[str, Any], key: str, kind: type, default: Any = None) -> Any:
    value = meta.get(key, default)
    if value is not default and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        raise BitnetError(f"GGUF key {key} has type {type(value).__name__}, expected {kind.__name__}")
    return value


def _split_merges(merges: list[str]) -> list[tuple[str, str]]:
    """Merges "a b" -> pairs (a, b). Byte-level tokens never hold a space or a newline, so
    the usual file is split in one pass over a joined string; anything else goes one by one."""
    joined = "\n".join(merges)
    if joined.count(" ") == len(merges) and joined.count("\n") == max(len(merges) - 1, 0):
        parts = joined.replace(" ", "\n").split("\n") if merges else []
        return list(zip(parts[0::2], parts[1::2]))
    return [_split_merge(m) for m in merges]


def _split_merge(merge: str) -> tuple[str, str]:
    # Split at the first space after the first character, as llama.cpp does, so that a
    # token spelled with a leading space (possible outside the byte alphabet) still parses.
    cut = merge.find(" ", 1)
    if cut < 0:
        raise BitnetError(f"GGUF tokenizer merge {merge!r} has no space between its two tokens")
    return merge[:cut], merge[cut + 1 :]


def _build_hf(tokens: list[str], types: list[int], merges: list[str], pre: str,
              ignore_merges: bool | None = None) -> HFTokenizer:  # fmt: skip
    """The Hugging Face tokenizer that the original tokenizer.json would load as.

    Built in memory (no JSON round trip: ~3x faster on a 128k vocab). Added tokens keep their
    ids only if their text is in the BPE vocab, so every id goes into it: control, user-defined
    and unused tokens too. With ignore_merges a whole pre-token found in the vocab is taken as
    is, so that is harmless only while no such token is a single pre-token by itself;
    `_added_tokens_reachable` checks it, and the (slower) JSON route handles the odd vocab.
    """
    regex, pre_ignores_merges = PRE_TOKENIZERS[pre]
    ignore_merges = pre_ignores_merges if ignore_merges is None else ignore_merges
    pairs = _split_merges(merges)
    pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    others = [
        i for i, kind in enumerate(types) if kind in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED, TOKEN_TYPE_UNUSED)
    ]
    vocab = dict(zip(reversed(tokens), range(len(tokens) - 1, -1, -1)))  # first id of a text wins
    if any(vocab[tokens[i]] != i for i in others) or _added_tokens_reachable(pre_tokenizer, tokens, others):
        nfc = pre in NFC_PRE_TOKENIZERS
        return HFTokenizer.from_str(_tokenizer_json(tokens, types, pairs, regex, ignore_merges, nfc))
    hf = HFTokenizer(models.BPE(vocab, pairs, ignore_merges=ignore_merges, byte_fallback=False))
    if pre in NFC_PRE_TOKENIZERS:
        hf.normalizer = normalizers.NFC()
    hf.pre_tokenizer = pre_tokenizer
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens(
        [AddedToken(tokens[i], special=True, normalized=False) for i in others if types[i] == TOKEN_TYPE_CONTROL]
    )
    hf.add_tokens(
        [AddedToken(tokens[i], special=False, normalized=False) for i in others if types[i] == TOKEN_TYPE_USER_DEFINED]
    )
    return hf


def _added_tokens_reachable(pre_tokenizer, tokens: list[str], ids: list[int]) -> bool:
    """True if some text pre-tokenizes to exactly one piece spelled like a non-normal token."""
    for i in ids:
        spelled = tokens[i]
        try:  # the text whose byte-level spelling this token is
            text = bytes(BYTE_OF_CHAR[c] for c in spelled).decode("utf-8")
        except (KeyError, UnicodeDecodeError):
            continue  # no input spells it: BPE only ever sees byte-alphabet pieces of valid UTF-8
        pieces = pre_tokenizer.pre_tokenize_str(text)
        if len(pieces) == 1 and pieces[0][0] == spelled:
            return True
    return False


def _tokenizer_json(tokens, types, pairs, regex: str, ignore_merges: bool, nfc: bool = False) -> str:
    """tokenizer.json text with the exact layout of the original: added tokens outside the BPE vocab."""
    vocab, added = {}, []
    for i, (text, kind) in enumerate(zip(tokens, types)):
        if kind in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED):
            added.append(
                {
                    "id": i,
                    "content": text,
                    "single_word": False,
                    "lstrip": False,
                    "rstrip": False,
                    "normalized": False,
                    "special": kind == TOKEN_TYPE_CONTROL,
                }
            )
        elif kind != TOKEN_TYPE_UNUSED:
            vocab.setdefault(text, i)
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    spec = {
        "version": "1.0",
        "added_tokens": added,
        "normalizer": {"type": "NFC"} if nfc else None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
                byte_level,
            ],
        },
        "post_processor": None,
        "decoder": byte_level,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": ignore_merges,
            "vocab": vocab,
            "merges": pairs,
        },
    }
    return json.dumps(spec, ensure_ascii=False)


class Tokenizer:
    """The tokenizer of a GGUF model; ids equal Hugging Face's (byte-level BPE) or SentencePiece's."""

    def __init__(self, hf: HFTokenizer, tokens: list[str], types: list[int], special_ids: Mapping[str, Any],
                 spm_prefix: bool | None = None):  # fmt: skip
        self._hf = hf
        # SentencePiece: None for byte-level BPE, else whether a dummy prefix space is added (and
        # so stripped again when decoding).
        self._spm_prefix = spm_prefix
        self._tokens = tokens
        self._types = types
        self._bytes: list[bytes | None] = [None] * len(tokens)
        self._lock = threading.Lock()  # encode_special_tokens is tokenizer-wide state
        self.n_vocab = len(tokens)
        self.bos_id: int | None = special_ids.get("bos")
        self.eos_id: int | None = special_ids.get("eos")
        self.eot_id: int | None = special_ids.get("eot")
        self.pad_id: int | None = special_ids.get("padding")
        self.add_bos_token: bool = bool(special_ids.get("add_bos")) and self.bos_id is not None
        named = {hf.token_to_id(name) for name in EOG_TOKEN_NAMES} - {None}
        named = {i for i in named if types[i] == TOKEN_TYPE_CONTROL}
        listed = {special_ids.get(k) for k in ("eos", "eot", "eom")} - {None}
        self.eog_ids: frozenset[int] = frozenset(named | listed)

    @classmethod
    def from_gguf_metadata(cls, meta: Mapping[str, Any]) -> Tokenizer:
        """Build from GGUF key -> value (arrays as lists), e.g. `Model.metadata`."""
        model = _get(meta, "tokenizer.ggml.model", str)
        if model not in _BUILDERS:
            raise BitnetError(
                f"tokenizer model {model!r} is not supported (supported: 'gpt2', byte-level BPE; 'llama', "
                "SentencePiece BPE); convert the model from its checkpoint"
            )
        tokens = _get(meta, "tokenizer.ggml.tokens", list)
        if not tokens or set(map(type, tokens)) != {str}:
            raise BitnetError("GGUF key tokenizer.ggml.tokens is missing or not a list of strings")
        longest = max(range(len(tokens)), key=lambda i: len(tokens[i]))
        if len(tokens[longest]) > MAX_TOKEN_CHARS:
            raise BitnetError(f"GGUF tokenizer token {longest} is {len(tokens[longest])} characters long, over the "
                              f"limit of {MAX_TOKEN_CHARS}")
        types = _get(meta, "tokenizer.ggml.token_type", list) or [TOKEN_TYPE_NORMAL] * len(tokens)
        if len(types) != len(tokens) or not set(map(type, types)) <= {int}:
            raise BitnetError(f"GGUF key tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens")
        special_ids: dict[str, Any] = {"add_bos": _get(meta, "tokenizer.ggml.add_bos_token", bool, True)}
        for name in ("bos", "eos", "eot", "eom", "padding"):
            idx = _get(meta, f"tokenizer.ggml.{name}_token_id", int)
            if idx is not None:
                if not 0 <= idx < len(tokens):
                    raise BitnetError(f"GGUF key tokenizer.ggml.{name}_token_id = {idx} is outside the vocab")
                special_ids[name] = idx
        if "eot" not in special_ids and "<|eot_id|>" in tokens:
            special_ids["eot"] = tokens.index("<|eot_id|>")
        build, spm_prefix = _BUILDERS[model](meta, tokens, types)
        try:
            hf = build()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # noqa: BLE001 (tokenizers raises Exception, or a Rust panic, on a bad vocab/merge)
            raise BitnetError(f"GGUF tokenizer metadata is inconsistent: {str(e)[:200]}") from None
        return cls(hf, tokens, types, special_ids, spm_prefix)

    def encode(self, text: str, add_bos: bool = True, special: bool = True) -> list[int]:
        """Token ids of text. add_bos: prepend BOS if the model asks for one (llama.cpp's rule);
        special: match control-token text like "<|eot_id|>"; False tokenizes it as plain text."""
        if not isinstance(text, str):
            raise BitnetError(f"can only tokenize str, not {type(text).__name__}")
        with self._lock:
            self._hf.encode_special_tokens = not special
            try:
                ids = self._hf.encode(text, add_special_tokens=False).ids
            finally:
                self._hf.encode_special_tokens = False
        if add_bos and self.add_bos_token:
            ids.insert(0, self.bos_id)
        return ids

    def holds_special_text(self, text: str) -> bool:
        """True if text contains the text of a special (control) token."""
        with self._lock:
            ids = self._hf.encode(text, add_special_tokens=False).ids
        return any(self._types[i] in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_UNKNOWN) for i in ids)

    def encode_with_plain_spans(self, text: str, spans: list[tuple[int, int]]) -> list[int]:
        """encode(text, add_bos=False, special=True), except that special-token text lying inside
        one of spans (character ranges: the messages' own text) is tokenized as plain text.

        The text is cut at the genuine special tokens only and each piece between them tokenized
        without special-token matching, which is what Hugging Face does to the pieces between
        special tokens anyway; so a text whose spans hold no special-token text gives exactly
        the ids of encode()."""
        if not isinstance(text, str):
            raise BitnetError(f"can only tokenize str, not {type(text).__name__}")
        with self._lock:
            encoding = self._hf.encode(text, add_special_tokens=False)
        ids, offsets = encoding.ids, encoding.offsets
        special = (TOKEN_TYPE_CONTROL, TOKEN_TYPE_UNKNOWN)

        def inside(a: int, b: int) -> bool:
            return any(start <= a and b <= end for start, end in spans)

        genuine = [(i, a, b) for i, (a, b) in zip(ids, offsets) if self._types[i] in special and not inside(a, b)]
        if len(genuine) == sum(self._types[i] in special for i in ids):
            return ids  # no special-token text in the spans
        out, pos = [], 0
        for i, a, b in genuine:
            if a > pos:
                out += self.encode(text[pos:a], add_bos=False, special=False)
            out.append(i)
            pos = b
        if pos < len(text):
            out += self.encode(text[pos:], add_bos=False, special=False)
        return out

    def token_to_bytes(self, token_id: int) -> bytes:
        """Raw bytes of one token (may be a partial UTF-8 sequence); b"" for unused ids."""
        idx = self._check_id(token_id)
        cached = self._bytes[idx]
        if cached is None:
            cached = self._bytes[idx] = self._spell(idx)
        return cached

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """Text of ids; invalid UTF-8 (a cut multi-byte character) becomes U+FFFD."""
        parts = []
        skipped = (TOKEN_TYPE_CONTROL, TOKEN_TYPE_UNKNOWN) if self._spm_prefix is not None else (TOKEN_TYPE_CONTROL,)
        for token_id in ids:
            i = self._check_id(token_id)
            if skip_special and self._types[i] in skipped:
                continue
            parts.append(self.token_to_bytes(i))
        text = b"".join(parts).decode("utf-8", errors="replace")
        if self._spm_prefix and text.startswith(" "):  # the dummy prefix (HF's Strip decoder)
            text = text[1:]
        return text

    def is_eog(self, token_id: int) -> bool:
        """True for tokens that end generation (eos, eot, and end-of-turn control tokens)."""
        return token_id in self.eog_ids

    def token_text(self, token_id: int) -> str:
        """The token as stored in the vocab (byte-alphabet spelling for normal tokens)."""
        return self._tokens[self._check_id(token_id)]

    def token_type(self, token_id: int) -> int:
        return self._types[self._check_id(token_id)]

    def _check_id(self, token_id: int) -> int:
        try:
            idx = operator.index(token_id)  # accepts numpy integers, refuses floats
        except TypeError:
            raise BitnetError(f"token id {token_id!r} is not an integer") from None
        if not 0 <= idx < self.n_vocab:
            raise BitnetError(f"token id {token_id!r} is outside the vocab (0..{self.n_vocab - 1})")
        return idx

    def _spell(self, token_id: int) -> bytes:
        text, kind = self._tokens[token_id], self._types[token_id]
        if self._spm_prefix is not None:
            return spm_token_bytes(text, kind)
        if kind == TOKEN_TYPE_UNUSED:
            return b""
        if kind in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED):
            return text.encode("utf-8")
        try:
            return bytes(BYTE_OF_CHAR[c] for c in text)
        except KeyError:  # not byte-alphabet spelled: HF's ByteLevel decoder keeps it as is
            return text.encode("utf-8")

    def __len__(self) -> int:
        return self.n_vocab

    def __repr__(self) -> str:
        return f"Tokenizer(n_vocab={self.n_vocab}, bos={self.bos_id}, eos={self.eos_id}, eog={sorted(self.eog_ids)})"


# -- per-model builders: (metadata, tokens, types) -> (build the HF tokenizer, SentencePiece prefix) ----
def _bpe_builder(meta: Mapping[str, Any], tokens: list[str], types: list[int]):
    pre = _get(meta, "tokenizer.ggml.pre", str, "default")
    if pre not in PRE_TOKENIZERS:
        raise BitnetError(f"tokenizer pre-tokenizer {pre!r} is not supported yet (known: {', '.join(PRE_TOKENIZERS)})")
    merges = _get(meta, "tokenizer.ggml.merges", list)
    if merges is None or not set(map(type, merges)) <= {str}:
        raise BitnetError("GGUF key tokenizer.ggml.merges is missing or not a list of strings")
    ignore_merges = _get(meta, "tokenizer.ggml.ignore_merges", bool)
    return (lambda: _build_hf(tokens, types, merges, pre, ignore_merges)), None


def _spm_builder(meta: Mapping[str, Any], tokens: list[str], types: list[int]):
    scores = _get(meta, "tokenizer.ggml.scores", list)
    if scores is None or len(scores) != len(tokens) or not set(map(type, scores)) <= {float, int}:
        raise BitnetError("GGUF key tokenizer.ggml.scores is missing or does not have one number per token")
    if _get(meta, "tokenizer.ggml.remove_extra_whitespaces", bool, False):
        raise BitnetError("SentencePiece with remove_extra_whitespaces is not supported (only Llama's settings)")
    prefix = _get(meta, "tokenizer.ggml.add_space_prefix", bool, True)
    check_split_work(tokens, types)
    return (lambda: build_spm_tokenizer(tokens, types, [float(x) for x in scores], prefix)), prefix


_BUILDERS = {"gpt2": _bpe_builder, "llama": _spm_builder}
