"""A slot: one sequence's place in the engine, its KV cache and the tokens that cache holds.

A slot keeps its cache after a request ends, so the next request that starts with the same
tokens (the same system prompt, the conversation so far) skips that part of the prefill. Only
the scheduler thread touches a slot's engine objects."""

from __future__ import annotations

import time

import numpy as np

from bitnet.generation import Generation
from bitnet.server.jobs import Job


class Slot:
    def __init__(self, index: int, context):
        self.index = index
        self.context = context  # a NativeContext, or a GPU pool's SlotContext (same interface)
        self.n_ctx = self.context.n_ctx
        self.cached: list[int] = []  # the tokens in the KV cache, in order
        self.job: Job | None = None
        self.generation: Generation | None = None
        self.state = "idle"  # idle -> prefill (or waiting for a sibling's prompt) -> generating -> idle
        self.n_reused = 0  # prompt tokens of the current job found in the cache
        self.next_token: int | None = None  # sampled, to be decoded in the next batched step
        self.t_first_token: float | None = None
        self.t_started = 0.0
        self.last_used = 0.0

    # ---- the cache -------------------------------------------------------------------------
    def reusable_prefix(self, ids: list[int]) -> int:
        """How many of ids the cache already holds; at least one token is always decoded, for its logits."""
        n = 0
        for a, b in zip(self.cached, ids):
            if a != b:
                break
            n += 1
        return min(n, len(ids) - 1)

    def reset_cache(self) -> None:
        """Forget the cache (after an engine error, its content is not known for sure)."""
        self.cached = []
        try:
            self.context.truncate(0)
        except Exception:  # noqa: BLE001 (a context that cannot even truncate is re-made at next use)
            pass

    # ---- a job's life ------------------------------------------------------------------------
    def start(self, job: Job, generation: Generation) -> None:
        reuse = self.reusable_prefix(job.request.prompt_ids)
        self.context.truncate(reuse)
        del self.cached[reuse:]
        self.job, self.generation, self.n_reused = job, generation, reuse
        self.state, self.next_token, self.t_first_token = "prefill", None, None
        self.t_started = time.monotonic()

    def take_prompt_from(self, holder: Slot) -> None:
        """Hold the job's whole prompt by copying it from holder's cache (instead of computing it)."""
        ids = self.job.request.prompt_ids
        if holder is not self:
            self.context.copy_prefix_from(holder.context, len(ids))
        else:
            self.context.truncate(len(ids))
        self.cached = list(ids)
        self.n_reused = len(ids)

    @property
    def prompt_left(self) -> int:
        return len(self.job.request.prompt_ids) - len(self.cached)

    def prefill(self, n_tokens: int) -> np.ndarray | None:
        """Decode the next n_tokens of the prompt; the last position's logits once it is all in."""
        ids = self.job.request.prompt_ids
        start = len(self.cached)
        piece = ids[start : start + n_tokens]
        last = start + len(piece) == len(ids)
        logits = self.context.decode(piece, want_logits=last)
        self.cached.extend(piece)
        return logits if last else None

    def release(self) -> Job | None:
        job = self.job
        if self.generation is not None:
            self.generation.close()
        self.job, self.generation, self.next_token = None, None, None
        self.state, self.last_used = "idle", time.monotonic()
        return job

    def snapshot(self) -> dict:
        """What /slots shows (read from the event loop: plain attributes, no engine calls)."""
        job, gen = self.job, self.generation
        return {
            "id": self.index,
            "id_task": job.id if job is not None else -1,  # llama-server's fields, then ours
            "is_processing": job is not None,
            "speculative": False,
            "next_token": {"has_next_token": self.state == "generating", "n_decoded": gen.n_gen if gen else 0,
                           "n_remain": self._remaining(gen)},
            "state": self.state,
            "n_ctx": self.n_ctx,
            "n_cached": len(self.cached),
            "job_id": job.id if job is not None else None,
            "n_prompt_tokens": len(job.request.prompt_ids) if job is not None else 0,
            "n_prompt_tokens_reused": self.n_reused if job is not None else 0,
            "n_generated": gen.n_gen if gen is not None else 0,
        }

    @staticmethod
    def _remaining(gen: Generation | None) -> int:
        if gen is None or gen.max_tokens is None:
            return -1
        return max(gen.max_tokens - gen.n_gen, 0)
