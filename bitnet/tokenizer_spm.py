"""SentencePiece BPE (GGUF `tokenizer.ggml.model` = "llama") rebuilt with Hugging Face `tokenizers`.

SentencePiece encodes a text by escaping spaces as "▁" (after prepending one: the dummy
prefix), splitting it into characters, then repeatedly merging the adjacent pair whose merged
piece has the highest score (leftmost first on ties) while that piece is a normal piece of
the vocabulary; characters outside the vocabulary become their UTF-8 bytes (<0xNN> pieces).
A BPE whose merges are every (left, right) split of every normal piece, ranked by the merged
piece's score, makes the same choices, so that is what we build (transformers' converter does
the same; we leave out control, unknown and byte pieces as merge results, as SentencePiece
never produces them from text). Control tokens in the text are matched as whole tokens, and
the text after one gets its own dummy prefix, as llama.cpp and the legacy Llama tokenizer do.
"""

from __future__ import annotations

from tokenizers import AddedToken, decoders, models, normalizers
from tokenizers import Tokenizer as HFTokenizer

from bitnet.errors import BitnetError

TOKEN_TYPE_NORMAL, TOKEN_TYPE_UNKNOWN, TOKEN_TYPE_CONTROL = 1, 2, 3
TOKEN_TYPE_USER_DEFINED, TOKEN_TYPE_UNUSED, TOKEN_TYPE_BYTE = 4, 5, 6
SPACE = "▁"
# Building the merges tries every cut of every normal piece: work (and merge text) grows with
# the square of a piece's length. A vocabulary trained with SentencePiece's default
# max_piece_length (16) needs at most 16 x its total length; a crafted one of "a", "aa",
# "aaa", ... would need the cube of its piece count. Allowed: 16 x the total plus a floor that
# leaves room for a few long pieces, so building stays linear in the vocabulary's size.
SPLIT_WORK_PER_CHAR = 16
SPLIT_WORK_FLOOR = 1 << 24


def check_split_work(tokens: list[str], types: list[int]) -> None:
    """BitnetError if building the merges would cost more than the vocabulary's size allows."""
    lengths = [len(t) for t, kind in zip(tokens, types) if kind in (TOKEN_TYPE_NORMAL, TOKEN_TYPE_USER_DEFINED)]
    work, budget = sum(n * n for n in lengths), SPLIT_WORK_PER_CHAR * sum(lengths) + SPLIT_WORK_FLOOR
    if work > budget:
        raise BitnetError(f"SentencePiece vocabulary has too many long pieces (building it would take {work} steps, "
                          f"the limit for its size is {budget}); refusing it")


def spm_merges(tokens: list[str], types: list[int], scores: list[float]) -> list[tuple[str, str]]:
    """Every split of every normal piece into two normal pieces, best merged score first
    (call check_split_work first: the cost grows with the square of a piece's length)."""
    normal = {t: i for i, t in enumerate(tokens) if types[i] in (TOKEN_TYPE_NORMAL, TOKEN_TYPE_USER_DEFINED)}
    ranked = []
    for piece, i in normal.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in normal and right in normal:
                ranked.append((-scores[i], i, cut, left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def byte_of_piece(piece: str) -> int | None:
    """0xNN for a byte piece spelled <0xNN>, else None."""
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        try:
            return int(piece[3:5], 16)
        except ValueError:
            return None
    return None


def build_spm_tokenizer(tokens: list[str], types: list[int], scores: list[float],
                        add_space_prefix: bool) -> HFTokenizer:  # fmt: skip
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    unk = next((tokens[i] for i, kind in enumerate(types) if kind == TOKEN_TYPE_UNKNOWN), None)
    byte_fallback = any(kind == TOKEN_TYPE_BYTE for kind in types)
    hf = HFTokenizer(
        models.BPE(vocab, spm_merges(tokens, types, scores), unk_token=unk, fuse_unk=True, byte_fallback=byte_fallback)
    )
    steps = [normalizers.Prepend(SPACE)] if add_space_prefix else []
    hf.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", SPACE)])
    decode = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    hf.decoder = decoders.Sequence(decode + ([decoders.Strip(" ", 1, 0)] if add_space_prefix else []))
    special = [i for i, kind in enumerate(types) if kind in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_UNKNOWN)]
    user = [i for i, kind in enumerate(types) if kind == TOKEN_TYPE_USER_DEFINED]
    hf.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False) for i in special])
    hf.add_tokens([AddedToken(tokens[i], special=False, normalized=False) for i in user])
    return hf


def spm_token_bytes(piece: str, kind: int) -> bytes:
    """The bytes a token stands for: "▁" is a space, <0xNN> one byte, control text as is."""
    if kind == TOKEN_TYPE_UNUSED:
        return b""
    if kind == TOKEN_TYPE_BYTE and byte_of_piece(piece) is not None:
        return bytes([byte_of_piece(piece)])
    if kind == TOKEN_TYPE_NORMAL:
        return piece.replace(SPACE, " ").encode("utf-8")
    return piece.encode("utf-8")
