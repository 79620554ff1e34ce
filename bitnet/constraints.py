"""Constrained decoding: a grammar (JSON Schema, GBNF, Lark, regex) turned into a token mask per
step by llguidance, and applied to the logits before the sampler sees them.

Why llguidance (over xgrammar and outlines-core, all three install here): it is a
self-contained wheel (xgrammar pulls in torch, transformers and triton), computes a mask over a
128k vocabulary in about 0.1 ms with no per-grammar index to build up front (outlines-core
compiles a regex index over the whole vocabulary for each schema), covers the most JSON Schema
(anyOf/oneOf, $ref, patterns, formats, min/max items) and reads llama.cpp's GBNF; llama-server
itself can link it.

Overlap: after a token is accepted, the next mask is computed on a worker thread while the
engine decodes that token (llguidance and the ctypes call into the engine both release the
GIL), so the caller only waits for what is left of it when the logits arrive.
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from bitnet.errors import BitnetError

TOKEN_TYPE_CONTROL = 3  # GGUF token types whose text a grammar must never produce
TOKEN_TYPE_USER_DEFINED = 4
_SPECIAL_MARK = b"\xff"  # llguidance's prefix for tokens that are not text
_ADDITIVE = np.array([-np.inf, 0.0], dtype=np.float32)  # a mask bit -> what it adds to a logit

_ll_tokenizers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_ll_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _llguidance():
    try:
        import llguidance
    except ImportError:  # pragma: no cover (the server extra installs it)
        raise BitnetError("structured output needs the llguidance package: pip install llguidance") from None
    return llguidance


def _mask_pool() -> ThreadPoolExecutor:
    global _pool
    with _ll_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bitnet-mask")
        return _pool


class _Vocab:
    """Our tokenizer as llguidance's TokenizerWrapper expects it: token bytes and a tokenize call."""

    def __init__(self, tokenizer):
        self._tok = tokenizer
        self.eos_token_id = tokenizer.eos_id if tokenizer.eos_id is not None else min(tokenizer.eog_ids, default=0)
        self.bos_token_id = tokenizer.bos_id
        self.tokens = [self._token_bytes(i) for i in range(len(tokenizer))]
        self.special_token_ids = [i for i in range(len(tokenizer)) if self.tokens[i].startswith(_SPECIAL_MARK)]

    def _token_bytes(self, i: int) -> bytes:
        data = self._tok.token_to_bytes(i)
        if self._tok.token_type(i) in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED) and data.startswith(b"<"):
            return _SPECIAL_MARK + data
        return data

    def __call__(self, text: str | bytes) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return self._tok.encode(text, add_bos=False, special=False)


def ll_tokenizer(tokenizer):
    """llguidance's view of a tokenizer, built once per tokenizer (about a second for 128k tokens)."""
    with _ll_lock:
        cached = _ll_tokenizers.get(tokenizer)
    if cached is not None:
        return cached
    llg = _llguidance()
    eog = sorted(tokenizer.eog_ids) or None
    built = llg.LLTokenizer(llg.TokenizerWrapper(_Vocab(tokenizer)), n_vocab=len(tokenizer), eos_token=eog)
    with _ll_lock:
        return _ll_tokenizers.setdefault(tokenizer, built)


# ---- grammars from request fields ----------------------------------------------------------------
def grammar_from_json_schema(schema: dict | bool | None) -> str:
    """llguidance grammar for JSON text matching schema (None: any JSON object)."""
    llg = _llguidance()
    if schema is None:
        schema = {"type": "object"}
    if not isinstance(schema, (dict, bool)):
        raise BitnetError("a JSON schema must be an object (or true/false)")
    try:
        # Compact separators keep the output short; any whitespace the schema allows is still valid JSON.
        return llg.LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults={"whitespace_flexible": False})
    except (ValueError, TypeError) as exc:
        raise BitnetError(f"invalid JSON schema: {exc}") from None


def grammar_from_gbnf(text: str) -> str:
    """llguidance grammar from llama.cpp's GBNF (or Lark) text."""
    llg = _llguidance()
    try:
        return llg.grammar_from("gbnf", text)
    except Exception as exc:  # noqa: BLE001 (the converter raises whatever its parser meets)
        raise BitnetError(f"invalid grammar: {_first_line(exc)}") from None


def check_grammar(grammar: str, tokenizer) -> None:
    """Raise BitnetError with llguidance's reason when the grammar cannot be used."""
    llg = _llguidance()
    is_error, messages = llg.LLMatcher.validate_grammar_with_warnings(grammar, ll_tokenizer(tokenizer))
    if is_error:
        raise BitnetError(f"invalid grammar: {_first_line(messages[0] if messages else 'rejected')}")


def _first_line(value) -> str:
    text = str(value).strip()
    return text.splitlines()[0][:300] if text else "rejected"


# ---- the mask during a generation ------------------------------------------------------------------
class TokenConstraint:
    """A grammar's state during one generation: the allowed tokens of the next step, computed
    ahead on a worker thread (`prefetch`), applied to a logits row (`apply`)."""

    def __init__(self, grammar: str, tokenizer):
        llg = _llguidance()
        self._ll_tok = ll_tokenizer(tokenizer)
        self._matcher = llg.LLMatcher(self._ll_tok, grammar, log_level=0)
        if self._matcher.is_error():
            raise BitnetError(f"invalid grammar: {_first_line(self._matcher.get_error())}")
        self._n_words = (self._ll_tok.vocab_size + 31) // 32
        self._pending: Future | None = None
        self.finished = False  # nothing but end-of-generation may follow: the grammar's text is complete
        self.mask_seconds = 0.0  # time spent waiting for masks (not hidden behind a decode)
        self.prefetch()

    def prefetch(self) -> None:
        """Start computing the next step's mask (returns at once)."""
        if self._pending is None:
            self._pending = _mask_pool().submit(self._allowed)

    def _allowed(self) -> np.ndarray:
        """The mask as an additive row (0 allowed, -inf not), made here, off the critical path:
        adding it is one fast pass, where a select on a random bool pattern mispredicts."""
        words = np.full(self._n_words, -1, dtype=np.int32)
        self._matcher.unsafe_compute_mask_ptr(words.ctypes.data, words.nbytes)  # releases the GIL
        bits = np.unpackbits(words.view(np.uint8), bitorder="little")[: self._ll_tok.vocab_size]
        return _ADDITIVE.take(bits)

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """logits with every token the grammar forbids at -inf (a new row: the caller's is kept)."""
        t0 = time.perf_counter()
        self.prefetch()
        allowed, self._pending = self._pending.result(), None
        self.mask_seconds += time.perf_counter() - t0
        row = np.asarray(logits, dtype=np.float32)
        if row.size == allowed.size:
            return row + allowed
        out = np.full(row.size, -np.inf, dtype=np.float32)  # ids past the tokenizer's vocabulary are never text
        n = min(row.size, allowed.size)
        out[:n] = row[:n] + allowed[:n]
        return out

    def accept(self, token: int) -> None:
        """Advance the grammar by the sampled token, and start on the next mask."""
        if not self._matcher.consume_token(int(token)):
            raise BitnetError(f"the grammar refused token {token}: {_first_line(self._matcher.get_error())}")
        # Read before the worker takes the matcher: it may not be touched while a mask is computed.
        self.finished = self._matcher.is_stopped()
        if not self.finished:
            self.prefetch()

    def close(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and not pending.cancel():
            pending.exception()  # wait: never leave a worker writing into a freed matcher (its error is moot)
