"""Text embeddings: token ids -> final hidden states (the engine, many texts per batch) ->
pooling -> normalization, as llama-embedding does for the BitNet embedding models.

Pooling comes from the file's `<arch>.pooling_type` (gguf-py's PoolingType: 1 mean, 2 cls,
3 last), last-token when absent; --embd-normalize follows llama-embedding: -1 none, 0 max-abs
scaled to int16, 1 taxicab, 2 euclidean (L2, the default), p > 2 the p-norm.
"""

from __future__ import annotations

import operator

import numpy as np

from bitnet.engine import NativeContext, hidden_multi
from bitnet.errors import BitnetError

POOLING_TYPES = {0: "none", 1: "mean", 2: "cls", 3: "last"}
POOLINGS = ("mean", "cls", "last")
MAX_SEQS_PER_PASS = 8  # contexts kept for batching; each holds its own KV cache and scratch


def model_pooling(metadata: dict) -> str:
    arch = metadata.get("general.architecture", "")
    value = metadata.get(f"{arch}.pooling_type")
    name = POOLING_TYPES.get(value, "last") if isinstance(value, int) else "last"
    return "last" if name == "none" else name


def pool(hidden: np.ndarray, kind: str) -> np.ndarray:
    """One vector from a text's [n_tokens, n_embd] hidden states."""
    if kind == "mean":
        return hidden.mean(axis=0, dtype=np.float64).astype(np.float32)
    if kind == "cls":
        return hidden[0].copy()
    if kind == "last":
        return hidden[-1].copy()
    raise BitnetError(f"unknown pooling {kind!r} (choose from {', '.join(POOLINGS)})")


def normalize(x: np.ndarray, p: int = 2) -> np.ndarray:
    """Rows of x normalized as llama-embedding's --embd-normalize p."""
    x = np.asarray(x, dtype=np.float32)
    if p < 0:
        return x
    a = np.abs(x.astype(np.float64))
    if p == 0:
        norm = a.max(axis=-1, keepdims=True) / 32760.0
    elif p == 1:
        norm = a.sum(axis=-1, keepdims=True)
    elif p == 2:
        norm = np.sqrt((a * a).sum(axis=-1, keepdims=True))
    else:
        norm = (a**p).sum(axis=-1, keepdims=True) ** (1.0 / p)
    return (x / np.where(norm > 0, norm, 1.0)).astype(np.float32)


class Embedder:
    """Runs token lists through a model, up to MAX_SEQS_PER_PASS texts per batched pass."""

    def __init__(self, model):
        self.model = model
        self._contexts: list[NativeContext] = []

    def token_ids(self, item) -> list[int]:
        m = self.model
        if isinstance(item, (str, bytes, bytearray)):
            ids = m.tokenize(item)
            tok = m.tokenizer
            if m.metadata.get("tokenizer.ggml.add_eos_token") is True and tok.eos_id is not None:
                ids.append(tok.eos_id)
        else:
            try:
                ids = [operator.index(t) for t in item]
            except TypeError:
                raise BitnetError("each input must be a text or a list of integer token ids") from None
            m._check_vocab(ids)
        if not ids:
            raise BitnetError("cannot embed an empty input (no tokens)")
        if len(ids) > m.n_ctx:
            raise BitnetError(f"an input is {len(ids)} tokens but the context holds {m.n_ctx}; "
                              "shorten it or raise n_ctx")
        return ids

    def _contexts_for(self, n: int) -> list[NativeContext]:
        m = self.model
        while len(self._contexts) < n:  # the first one runs the batch: it gets the threads
            threads = m.n_threads if not self._contexts else 1
            self._contexts.append(NativeContext(m.native, m.n_ctx, threads))
        for c in self._contexts[:n]:
            c.truncate(0)
        return self._contexts[:n]

    def hidden_states(self, id_lists: list[list[int]]) -> list[np.ndarray]:
        out = []
        for start in range(0, len(id_lists), MAX_SEQS_PER_PASS):
            group = id_lists[start : start + MAX_SEQS_PER_PASS]
            hidden = hidden_multi(self._contexts_for(len(group)), group)
            ends = np.cumsum([len(g) for g in group])
            out.extend(np.split(hidden, ends[:-1]))
        return out

    def embed(self, inputs, pooling: str | None = None, normalize_p: int = 2) -> tuple[np.ndarray, int]:
        """([len(inputs), n_embd] float32, total tokens) for a list of texts or token-id lists."""
        kind = pooling or model_pooling(self.model.metadata)
        if kind not in POOLINGS:
            raise BitnetError(f"unknown pooling {kind!r} (choose from {', '.join(POOLINGS)})")
        id_lists = [self.token_ids(x) for x in inputs]
        if not id_lists:
            return np.zeros((0, self.model.native.n_embd), np.float32), 0
        vectors = np.stack([pool(h, kind) for h in self.hidden_states(id_lists)])
        return normalize(vectors, normalize_p), sum(len(ids) for ids in id_lists)

    def close(self):
        for c in self._contexts:
            c.close()
        self._contexts = []
