"""Prompt-lookup drafts for lossless speculative decoding (no draft model).

When the text repeats itself (code, lists, quoting the prompt), the tokens that followed the
last few tokens the previous time they occurred are a good guess of what comes next. The guess
is checked in one batched forward pass over [last token] + draft: row j of its logits is exactly
what plain decoding would compute at that position (per-row quantization, exact integer
products, per-row float order), so the sampler picks from each row in turn and the draft is
kept up to the first token it would not have picked. Greedy output is identical by construction.

    history:  ... a b c X Y Z ... a b c          suffix "a b c" seen before, followed by X Y Z
    draft:    X Y Z                              verify [c', X, Y, Z] in one pass
"""

from __future__ import annotations

# Longest first. Even a single token's last successor is worth a pass: verifying one draft token
# costs ~3% more than plain decoding (below), so it pays from a few percent acceptance on
# (measured on the demo model's greedy text: 1.57x against 1.47x with 3- and 2-grams only).
NGRAM_SIZES = (3, 2, 1)
# A batch of n tokens costs little more than one while the weights' bytes, not the arithmetic,
# set the pace (`bitnet-bench -b`, 2B-4T shape, 2 threads: 1.03x the time of one token for 2,
# ~1.1x for 3-5, 1.75x for 8; one thread, where a core has more bandwidth to keep up with:
# 1.02x for 2, 1.22x for 4, 1.43x for 5), so drafts stay at 4 tokens or fewer.
MAX_DRAFT = 4
START_DRAFT = 2
# Below this many bytes of weights a model is read from cache, not memory: a batch then costs
# about as much as its tokens one by one, and drafts cannot pay (measured: x0.83-0.97 on 5 MB).
LOOKUP_MIN_MODEL_BYTES = 64 << 20


def use_lookup(requested: bool | None, model_bytes: int) -> bool:
    """Whether to draft: as requested, or (None) where decoding is bound by memory."""
    return requested if requested is not None else model_bytes >= LOOKUP_MIN_MODEL_BYTES


class NgramIndex:
    """Where each n-gram of the history last occurred with a token after it."""

    def __init__(self, tokens: list[int]):
        self.tokens: list[int] = []
        self._next: dict[tuple[int, ...], int] = {}  # n-gram -> index of the token that followed it
        for t in tokens:
            self.append(t)

    def append(self, token: int) -> None:
        i = len(self.tokens)  # the index `token` takes; the n-grams just before it now have a successor
        for n in NGRAM_SIZES:
            if i >= n:
                self._next[tuple(self.tokens[i - n : i])] = i
        self.tokens.append(token)

    def draft(self, max_tokens: int) -> list[int]:
        """Up to max_tokens tokens that followed the longest suffix seen before; [] if none."""
        for n in NGRAM_SIZES:
            if len(self.tokens) < n:
                continue
            start = self._next.get(tuple(self.tokens[-n:]))
            if start is not None:
                return self.tokens[start : start + max_tokens]
        return []


class DraftLength:
    """How many tokens to draft: doubles after a fully accepted draft, halves after a draft whose
    first token was wrong, so that text that does not repeat costs (nearly) nothing."""

    def __init__(self):
        self.value = START_DRAFT

    def update(self, n_drafted: int, n_accepted: int) -> None:
        if n_accepted == n_drafted:
            self.value = min(MAX_DRAFT, self.value * 2)
        elif n_accepted == 0:
            self.value = max(1, self.value // 2)


def decode_steps(ctx, generation, logits, history: list[int], lookup: bool):
    """Drive `generation` from the context's logits for the last prompt token until it ends,
    yielding its emissions; with lookup, drafts from the history are verified in batches.

    history: the tokens the context's KV cache holds, kept equal to it (the caller reuses it as
    a cached prefix). Every row the sampler sees is the row plain decoding would compute there.
    """
    index = NgramIndex(history) if lookup else None
    length = DraftLength()
    rows, draft = [logits], []
    while True:
        top = len(history)  # the cache holds history; its last len(draft) tokens are the draft
        for j, row in enumerate(rows):
            emission = generation.step(row)
            if emission.finish_reason or j == len(draft) or emission.token != draft[j]:
                break
            if index is not None:
                index.append(emission.token)  # an accepted draft token: already in the cache
            yield emission
        # rows[j] was computed after draft[:j]: the drafts after those leave the cache.
        keep = top - len(draft) + j
        if keep < top:
            ctx.truncate(keep)
            del history[keep:]
        yield emission
        if emission.finish_reason:
            return
        if draft:
            length.update(len(draft), j)
        room = ctx.n_ctx - ctx.n_past  # positions left for [token] + draft
        if room < 1:
            yield generation.finish("length")
            return
        token = emission.token
        draft = []
        if index is not None:
            index.append(token)
            budget = min(length.value, room - 1)
            if generation.max_tokens is not None:  # the row after the last draft token gives one more
                budget = min(budget, generation.max_tokens - generation.n_gen - 1)
            draft = index.draft(budget) if budget > 0 else []
        out = ctx.decode([token] + draft, all_logits=bool(draft))
        history.append(token)
        history.extend(draft)
        rows = list(out) if draft else [out]
