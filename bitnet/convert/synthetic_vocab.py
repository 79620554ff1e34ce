"""A synthetic, valid byte-level BPE vocabulary of any size, for models with random weights.

Dummy models need a tokenizer that our engine, Hugging Face `tokenizers` and llama.cpp all load
(GGUF `tokenizer.ggml.model` "gpt2", pre-tokenizer "llama-bpe"), of exactly n_vocab tokens, and
built in well under a second without a corpus. The layout follows Llama-3's:

    ids 0..255           the 256 bytes, id = byte value, spelled in GPT-2's byte alphabet
    ids 256..            merged tokens, one merge "left right" each, in merge-rank order
    [PAD<id>] ...        unused filler, only when the merge pool below runs out (huge vocabs)
    last n_special ids   control tokens in Llama-3's order: <|begin_of_text|>, <|end_of_text|>,
                         <|reserved_special_token_0..3|>, <|start_header_id|>, <|end_header_id|>,
                         <|reserved_special_token_4|>, <|eot_id|>, then reserved 5, 6, ...
                         (n_special = 256 for 128256 tokens: BOS 128000, EOS 128001, EOT 128009)

Merges come from English-like letter patterns, taken level by level and, inside a level, most
frequent first (product of letter frequencies), until the vocabulary is full. A pattern such as
"Ġaa|a" means: a space and two lower-case letters (a token of the level before), merged with one
more lower-case letter. Every merge's two parts are tokens of earlier levels, so they exist before
it (what BPE needs to reach a token).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from bitnet.tokenizer import BYTE_OF_CHAR, TOKEN_TYPE_CONTROL, TOKEN_TYPE_NORMAL, TOKEN_TYPE_UNUSED

CHAR_OF_BYTE = {b: c for c, b in BYTE_OF_CHAR.items()}
SPACE, NEWLINE, TAB, CR = CHAR_OF_BYTE[0x20], CHAR_OF_BYTE[0x0A], CHAR_OF_BYTE[0x09], CHAR_OF_BYTE[0x0D]
MIN_VOCAB = 512
MAX_SPECIAL = 256

# Weights are rough probabilities of a character in English text, so that longer strings weigh
# less: a lower-case letter its frequency, an upper-case one CAPITAL_WEIGHT times that.
LETTER_FREQ = dict(zip("etaoinshrdlcumwfgypbvkjxqz", (
    .127, .091, .082, .075, .070, .067, .063, .061, .060, .043, .040, .028, .028, .024, .024, .022, .020,
    .020, .019, .015, .010, .008, .0015, .0015, .001, .0007)))  # fmt: skip
SPACE_WEIGHT = 0.18
CAPITAL_WEIGHT = 0.15
DIGIT_WEIGHT = 0.05

# Pattern characters: "Ġ" a literal space; "a" any lower-case letter; "A" any upper-case letter;
# "0" any digit; "|" splits the merge into its left and right parts.
MERGE_LEVELS = (
    ("Ġ|a", "Ġ|A", "a|a", "A|a", "0|0"),
    ("Ġa|a", "ĠA|a", "aa|a", "00|0"),
    ("Ġaa|a", "aa|aa", "ĠAa|a", "Aa|a"),
    ("Ġaaa|a",),
)
PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
# Literal merges placed before the pattern merges of the same level (whitespace, code, clitics).
LITERAL_MERGES = (
    [(SPACE, SPACE), (NEWLINE, NEWLINE), (TAB, TAB), (CR, NEWLINE)]
    + [("'", c) for c in "stmd"]
    + [(pair[0], pair[1]) for pair in ("()", "[]", "{}", "==", "->", "//", "::", "**", "--", "..")]
    + [(p, NEWLINE) for p in ".,:"]
    + [(SPACE, p) for p in PUNCTUATION],
    [(SPACE * 2, SPACE * 2), (NEWLINE * 2, NEWLINE), ("'", "re"), ("'", "ve"), ("'", "ll")],
    [(SPACE * 4, SPACE * 4)],
    [],
)

LLAMA3_FIRST_SPECIALS = (
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|reserved_special_token_2|>", "<|reserved_special_token_3|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|reserved_special_token_4|>", "<|eot_id|>",
)  # fmt: skip
BOS, EOS, EOT = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"

# The chat template of microsoft/bitnet-b1.58-2B-4T (its tokenizer_config.json).
BITNET_2B4T_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = message['role'] | capitalize + ': '+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}"
)

_CLASSES = {  # pattern character -> (alphabet, weight of each character)
    "a": (list(LETTER_FREQ), list(LETTER_FREQ.values())),
    "A": ([c.upper() for c in LETTER_FREQ], [CAPITAL_WEIGHT * f for f in LETTER_FREQ.values()]),
    "0": (list("0123456789"), [DIGIT_WEIGHT] * 10),
    SPACE: ([SPACE], [SPACE_WEIGHT]),
}


@dataclass(frozen=True)
class Vocab:
    tokens: list[str]
    types: list[int]
    merges: list[str]  # "left right", rank order
    bos_id: int
    eos_id: int
    eot_id: int


def n_special_tokens(n_vocab: int) -> int:
    """Size of the control-token block at the end: 256 for Llama-3's 128256, fewer for small vocabs."""
    return min(MAX_SPECIAL, max(16, n_vocab // 128))


def special_tokens(n: int) -> list[str]:
    names = list(LLAMA3_FIRST_SPECIALS[:n])
    names += [f"<|reserved_special_token_{i}|>" for i in range(5, 5 + n - len(names))]
    return names


def _pattern_weights(pattern: str) -> np.ndarray:
    """Weight of every string a pattern spells (product of its characters' weights), flat in
    row-major order of the character choices."""
    w = np.ones(())
    for c in pattern.replace("|", ""):
        w = np.multiply.outer(w, np.array(_CLASSES[c][1]))
    return w.reshape(-1)


def _pattern_texts(pattern: str, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (left, right) strings of the given flat indices of a pattern, as numpy string arrays."""
    chars = pattern.replace("|", "")
    digits = np.unravel_index(index, [len(_CLASSES[c][0]) for c in chars])
    spelled = [np.array(_CLASSES[c][0])[d] for c, d in zip(chars, digits)]
    cut = pattern.index("|")
    join = lambda parts: functools.reduce(np.char.add, parts)
    return join(spelled[:cut]), join(spelled[cut:])


def _level_merges(level: int, limit: int) -> list[tuple[str, str]]:
    """A level's first `limit` merges in the order they are taken: literals, then pattern merges
    by falling weight (ties in pattern order: deterministic). A level holds up to half a million
    candidates; all are weighed, only those taken are spelled."""
    merges = list(LITERAL_MERGES[level])[:limit]
    patterns = MERGE_LEVELS[level]
    weights = [_pattern_weights(p) for p in patterns]
    owner = np.repeat(np.arange(len(patterns)), [w.size for w in weights])
    start = np.cumsum([0] + [w.size for w in weights])
    taken = np.argsort(-np.concatenate(weights), kind="stable")[: max(limit - len(merges), 0)]
    left, right = np.empty(len(taken), dtype=object), np.empty(len(taken), dtype=object)
    for p, pattern in enumerate(patterns):
        mine = owner[taken] == p
        left[mine], right[mine] = _pattern_texts(pattern, taken[mine] - start[p])
    return merges + list(zip(left.tolist(), right.tolist()))


def build_vocab(n_vocab: int) -> Vocab:
    """The synthetic vocabulary of exactly n_vocab tokens (deterministic: no seed)."""
    if n_vocab < MIN_VOCAB:
        raise ValueError(f"vocabulary size {n_vocab} is too small (at least {MIN_VOCAB})")
    n_special = n_special_tokens(n_vocab)
    n_bpe = n_vocab - n_special
    tokens = [CHAR_OF_BYTE[b] for b in range(256)]
    known = set(tokens)
    merges = []
    for level in range(len(MERGE_LEVELS)):
        if len(tokens) == n_bpe:
            break
        for left, right in _level_merges(level, n_bpe - len(tokens)):
            text = left + right
            if text in known or left not in known or right not in known:
                continue  # a literal already spelled by a pattern, or one whose parts are missing
            tokens.append(text)
            known.add(text)
            merges.append(f"{left} {right}")
    types = [TOKEN_TYPE_NORMAL] * len(tokens)
    tokens += [f"[PAD{i}]" for i in range(len(tokens), n_bpe)]
    types += [TOKEN_TYPE_UNUSED] * (n_bpe - len(types))
    tokens += special_tokens(n_special)
    types += [TOKEN_TYPE_CONTROL] * n_special
    first = LLAMA3_FIRST_SPECIALS.index
    return Vocab(tokens, types, merges, n_bpe + first(BOS), n_bpe + first(EOS), n_bpe + first(EOT))


def gguf_tokenizer_fields(n_vocab: int) -> list[tuple[str, object, str]]:
    """(key, value, kind) for the tokenizer.* GGUF keys, as bitnet.convert.tokenizer_meta writes them."""
    v = build_vocab(n_vocab)
    return [
        ("tokenizer.ggml.model", "gpt2", "string"),
        ("tokenizer.ggml.pre", "llama-bpe", "string"),
        ("tokenizer.ggml.tokens", v.tokens, "string_array"),
        ("tokenizer.ggml.token_type", v.types, "i32_array"),
        ("tokenizer.ggml.merges", v.merges, "string_array"),
        ("tokenizer.ggml.bos_token_id", v.bos_id, "u32"),
        ("tokenizer.ggml.eos_token_id", v.eos_id, "u32"),
        ("tokenizer.ggml.eot_token_id", v.eot_id, "u32"),
        ("tokenizer.ggml.add_bos_token", True, "bool"),
        ("tokenizer.chat_template", BITNET_2B4T_CHAT_TEMPLATE, "string"),
    ]
