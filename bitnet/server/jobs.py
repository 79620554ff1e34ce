"""A generation request on its way between the event loop and the scheduler thread.

The handler that receives a request makes a Job and submits it; the scheduler thread runs it
and sends back events (`Emission`s of bitnet.generation, then one `Finished`, `Failed` or
`Cancelled`) through an asyncio queue, the only thing the two sides share besides the job's
cancel flag."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bitnet.generation import GenerationRequest

_job_ids = itertools.count(1)


@dataclass
class Finished:
    """The generation ended (its last Emission has the finish reason)."""

    n_prompt: int
    n_cached: int  # prompt tokens reused from the slot's cache
    n_gen: int
    prompt_ms: float = 0.0  # llama.cpp's timings
    gen_ms: float = 0.0
    slot: int = -1


class PromptShare:
    """The n choices of one prompt: the first to start computes the prompt; the others copy its
    KV cache and sample their first token from the same logits (one prompt evaluation)."""

    def __init__(self, prompt_ids: list[int]):
        self.prompt_ids = prompt_ids
        self.owner: Job | None = None  # the job computing the prompt
        self.logits = None  # the prompt's last-position logits, once computed
        self.source = None  # the slot whose cache held the prompt when it was computed

    def holder(self, slots) -> object | None:
        """A slot whose cache still starts with the whole prompt."""
        n = len(self.prompt_ids)
        candidates = ([self.source] if self.source is not None else []) + list(slots)
        return next((s for s in candidates if s.cached[:n] == self.prompt_ids), None)


@dataclass
class Failed:
    status: int
    message: str


@dataclass
class Cancelled:
    """The client left; nothing more will come."""


class Job:
    def __init__(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop,
                 on_cancel: Callable[[], None] | None = None, events: asyncio.Queue | None = None,
                 index: int = 0, share: PromptShare | None = None):  # fmt: skip
        self.id = next(_job_ids)
        self.request = request
        # (index, event) pairs: the choices of one HTTP request share one queue
        self.events: asyncio.Queue = events if events is not None else asyncio.Queue()
        self.index = index
        self.share = share
        self.t_submitted = time.monotonic()
        self.t_cancelled: float | None = None
        self._loop = loop
        self._on_cancel = on_cancel
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Stop the job (any thread; again is harmless): the scheduler frees its slot at its next step."""
        if not self._cancelled.is_set():
            self.t_cancelled = time.monotonic()
            self._cancelled.set()
            if self._on_cancel is not None:
                self._on_cancel()

    def emit(self, event) -> None:
        """Hand an event to the event loop (called on the scheduler thread)."""
        try:
            self._loop.call_soon_threadsafe(self.events.put_nowait, (self.index, event))
        except RuntimeError:  # the loop is closed: the server is gone, nobody is listening
            pass
