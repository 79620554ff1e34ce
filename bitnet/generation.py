"""Turning a stream of token ids into a stream of text: incremental UTF-8 and stop strings."""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field


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
