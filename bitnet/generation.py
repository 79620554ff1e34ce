"""One generation after its prompt, step by step: sampling, budgets, end-of-generation tokens,
stop strings, incremental UTF-8 and log-probabilities. `Model` and the server's scheduler both
drive a `Generation` (the one feeds it a context's logits in a loop, the other a row of a
batched decode), so a request gives the same tokens, text and finish reason through either."""

from __future__ import annotations

import codecs
import math
from dataclasses import dataclass, field

import numpy as np

from bitnet.errors import BitnetError


@dataclass
class SamplingOptions:
    """What a caller may ask of one generation. Names follow llama-cpp-python / OpenAI."""

    max_tokens: int | None = 128  # None or < 0: until end of generation or a full context
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    logprobs: int | None = None  # None: off; k >= 0: each token's log-probability and its k best rivals
    # Greedy only: verify prompt-lookup drafts in batches (bitnet.speculation); None = where it pays.
    lookup_decoding: bool | None = None
    logit_bias: dict[int, float] | None = None  # token id -> added to its logit before sampling
    grammar: str | None = None  # an llguidance grammar (bitnet.constraints): only text it accepts

    def sampler_params(self, seed: int) -> dict:
        return dict(
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
            repeat_last_n=self.repeat_last_n,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            seed=seed,
        )


class TextStream:
    """Accumulates token bytes and releases text that is final: complete UTF-8 characters, and
    never a part that might turn out to be the beginning of a stop string."""

    def __init__(self, stop: list[str] | None = None):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = [s for s in (stop or []) if s]
        self.text = ""  # everything decoded so far
        self._emitted = 0
        self.stopped = False

    def push(self, data: bytes) -> str:
        """Add one token's bytes; return the text that may be shown now."""
        if self.stopped:
            return ""
        self.text += self._decoder.decode(data)
        hit = self._find_stop()
        if hit is not None:
            self.stopped = True
            self.text = self.text[:hit]
            return self._release(hit)
        return self._release(len(self.text) - self._partial_stop_suffix())

    def flush(self) -> str:
        """End of generation: release everything still held back."""
        if not self.stopped:
            self.text += self._decoder.decode(b"", final=True)
        return self._release(len(self.text))

    def _release(self, end: int) -> str:
        piece = self.text[self._emitted : end] if end > self._emitted else ""
        self._emitted = max(self._emitted, end)
        return piece

    def _find_stop(self) -> int | None:
        longest = max((len(s) for s in self._stops), default=0)
        start = max(0, self._emitted - longest)
        hits = [i for i in (self.text.find(s, start) for s in self._stops) if i >= 0]
        return min(hits) if hits else None

    def _partial_stop_suffix(self) -> int:
        held = 0
        for s in self._stops:
            for n in range(min(len(s) - 1, len(self.text)), held, -1):
                if self.text.endswith(s[:n]):
                    held = n
                    break
        return held


def _bias_arrays(bias: dict[int, float] | None) -> tuple[np.ndarray, np.ndarray] | None:
    if not bias:
        return None
    ids = np.fromiter((int(t) for t in bias), dtype=np.int64, count=len(bias))
    return ids, np.fromiter((float(v) for v in bias.values()), dtype=np.float32, count=len(bias))


MAX_TOP_LOGPROBS = 20  # OpenAI's limit for top_logprobs


@dataclass
class GenerationRequest:
    """A checked request: the prompt's token ids, the options and the resolved seed."""

    prompt_ids: list[int]
    options: SamplingOptions
    seed: int


@dataclass
class TokenLogprob:
    """A token's log-probability under the model (log-softmax of its raw logits)."""

    token: int
    text: str
    data: bytes  # the token's bytes (its text may be part of a UTF-8 character)
    logprob: float
    top: list[TokenLogprob] = field(default_factory=list)  # the most likely tokens at this step


@dataclass
class Emission:
    """What one step of a generation gives."""

    text: str  # text that became final at this step ("" while a character or stop string is open)
    token: int | None  # the sampled token; None when the step only ended the generation
    logprob: TokenLogprob | None = None
    finish_reason: str | None = None  # "stop" or "length" when this step ended the generation


class Generation:
    """Sampling after a prompt whose logits the caller computes: `step(logits)` per token.

    Ends with finish_reason "stop" at an end-of-generation token (not emitted) or a stop string
    (cut before it), "length" once max_tokens tokens are out; a caller whose context is full
    ends it with `finish("length")`. Holds a native sampler: create, use and close it on the
    thread that runs the engine.
    """

    def __init__(self, tokenizer, request: GenerationRequest):
        from bitnet.engine import NativeSampler  # the engine only where a generation runs

        opts = request.options
        self.options = opts
        self.tokenizer = tokenizer
        self.max_tokens = opts.max_tokens  # None: until the context is full
        self.n_logprobs = opts.logprobs
        self.n_gen = 0
        self.finish_reason: str | None = None
        self._text = TextStream(opts.stop)
        self._bias = _bias_arrays(opts.logit_bias)
        self._constraint = None
        if opts.grammar is not None:
            from bitnet.constraints import TokenConstraint

            self._constraint = TokenConstraint(opts.grammar, tokenizer)
        self._sampler = NativeSampler(**opts.sampler_params(request.seed))
        for t in request.prompt_ids:
            self._sampler.accept(t)

    @property
    def argmax_only(self) -> bool:
        """Whether the next token is just the argmax of the raw logits (lowest id on ties; NaN
        and -inf never): greedy, with no penalties, logit_bias, grammar or log-probabilities.
        Then it may be picked where the logits are (on a GPU) and handed to step() as an int."""
        o = self.options
        penalties = o.repeat_last_n != 0 and ((o.repeat_penalty > 0 and o.repeat_penalty != 1)
                                              or o.frequency_penalty != 0 or o.presence_penalty != 0)
        return not (o.temperature > 0) and not penalties and self._bias is None and self._constraint is None \
            and self.n_logprobs is None

    def step(self, logits: np.ndarray | int) -> Emission:
        """Sample the next token from the logits of the last position (or take the token already
        picked from them, an int, where argmax_only)."""
        if self.max_tokens is not None and self.n_gen >= self.max_tokens:  # max_tokens=0
            return self.finish("length")
        if isinstance(logits, int):
            if logits < 0:
                raise BitnetError("no token to pick: every logit is NaN or -inf")
            token = logits
        else:
            token = self._sampler.sample(self._steered(logits))
        if self.tokenizer.is_eog(token):
            return self.finish("stop")
        self._sampler.accept(token)
        if self._constraint is not None:
            self._constraint.accept(token)
        self.n_gen += 1
        logprob = self._logprob(logits, token) if self.n_logprobs is not None else None
        text = self._text.push(self.tokenizer.token_to_bytes(token))
        if self._text.stopped or (self._constraint is not None and self._constraint.finished):
            self.finish_reason = "stop"  # a stop string, or the grammar's text is complete
            return Emission(text + self._text.flush(), token, logprob, "stop")
        if self.max_tokens is not None and self.n_gen >= self.max_tokens:
            self.finish_reason = "length"
            return Emission(text + self._text.flush(), token, logprob, "length")
        return Emission(text, token, logprob)

    def finish(self, reason: str) -> Emission:
        """End the generation now: release the text still held back."""
        self.finish_reason = self.finish_reason or reason
        return Emission(self._text.flush(), None, None, self.finish_reason)

    def close(self):
        self._sampler.close()
        if self._constraint is not None:
            self._constraint.close()

    @property
    def mask_seconds(self) -> float:
        """Time step() waited for grammar masks (what the overlap with decoding did not hide)."""
        return self._constraint.mask_seconds if self._constraint is not None else 0.0

    def _steered(self, logits: np.ndarray) -> np.ndarray:
        """The logits the sampler sees: logit_bias added, then the grammar's forbidden tokens at -inf."""
        if self._bias is not None:
            ids, values = self._bias
            logits = np.array(logits, dtype=np.float32, copy=True)
            ok = ids < logits.size
            logits[ids[ok]] += values[ok]
        if self._constraint is not None:
            logits = self._constraint.apply(logits)
        return logits

    def _logprob(self, logits: np.ndarray, token: int) -> TokenLogprob:
        row = np.asarray(logits, dtype=np.float64)
        peak = float(row.max())
        log_total = peak + math.log(float(np.exp(row - peak).sum()))
        top = []
        if self.n_logprobs:
            k = min(self.n_logprobs, row.size)
            best = np.argpartition(-row, k - 1)[:k]
            best = best[np.argsort(-row[best], kind="stable")]
            top = [self._entry(int(t), float(row[t]) - log_total) for t in best]
        return self._entry(token, float(row[token]) - log_total, top)

    def _entry(self, token: int, logprob: float, top=()) -> TokenLogprob:
        data = self.tokenizer.token_to_bytes(token)
        # -9999 stands for a probability that underflows, as OpenAI reports it; JSON has no -inf
        logprob = logprob if math.isfinite(logprob) else -9999.0
        return TokenLogprob(token, data.decode("utf-8", errors="replace"), data, logprob, list(top))
