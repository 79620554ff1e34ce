"""The jobs of one HTTP request: one per prompt and per choice (n), in the order OpenAI numbers
the choices (prompt-major: prompt i's choice j has index i * n + j), sharing one event queue.

The n choices of a prompt share a jobs.PromptShare, so the scheduler computes the prompt once;
choice j samples with seed + j, so that they differ when sampling and are reproducible."""

from __future__ import annotations

import asyncio
import dataclasses

from bitnet.completions import ResultBuilder, merge_results, new_stream_id
from bitnet.generation import Emission, GenerationRequest
from bitnet.server.jobs import Cancelled, Failed, Finished, Job, PromptShare

SEED_MODULUS = 2**64  # the sampler's seed is a uint64


class Run:
    def __init__(self, prepared: list[GenerationRequest], n: int, scheduler, chat: bool, model_id: str,
                 null_usage: bool = False):  # fmt: skip
        loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        self.scheduler, self.n = scheduler, n
        self.prompts = [p.prompt_ids for p in prepared]
        stream_id = new_stream_id("chatcmpl-" if chat else "cmpl-")
        self.jobs: list[Job] = []
        self.builders: list[ResultBuilder] = []
        for request in prepared:
            share = PromptShare(request.prompt_ids) if n > 1 else None
            for choice in range(n):
                seeded = dataclasses.replace(request, seed=(request.seed + choice) % SEED_MODULUS)
                index = len(self.jobs)
                self.jobs.append(Job(seeded, loop, on_cancel=scheduler.wake, events=self.events, index=index,
                                     share=share))
                self.builders.append(ResultBuilder(chat, model_id, len(request.prompt_ids),
                                                   logprobs=request.options.logprobs is not None, index=index,
                                                   stream_id=stream_id, null_usage=null_usage))
        self.finished: dict[int, Finished] = {}
        self.n_open = len(self.jobs)

    def submit(self) -> None:
        """Queue every job, or none (QueueFull / NotReady from the scheduler)."""
        self.scheduler.submit_all(self.jobs)

    def cancel(self) -> None:
        for job in self.jobs:
            job.cancel()

    async def next_event(self, timeout: float | None = None) -> tuple[int, object]:
        """(choice index, event); an end event (Finished, Failed, Cancelled) closes that choice."""
        index, event = await asyncio.wait_for(self.events.get(), timeout)
        if isinstance(event, Finished):
            self.finished[index] = event
        if isinstance(event, (Finished, Failed, Cancelled)):
            self.n_open -= 1
        return index, event

    @property
    def done(self) -> bool:
        return self.n_open == 0

    def push(self, index: int, emission: Emission) -> list[dict]:
        return self.builders[index].push(emission)

    # ---- usage over all choices: each prompt counted once, as OpenAI does for n > 1 ----------------
    def usage_counts(self) -> tuple[int, int, int]:
        n_prompt = sum(len(p) for p in self.prompts)
        n_gen = sum(b.n_gen for b in self.builders)
        n_cached = 0
        for i in range(len(self.prompts)):  # the choice that computed the prompt reused the least
            own = [self.finished[j].n_cached for j in range(i * self.n, (i + 1) * self.n) if j in self.finished]
            n_cached += min(own, default=0)
        return n_prompt, n_gen, n_cached

    def result(self) -> dict:
        n_prompt, n_gen, n_cached = self.usage_counts()
        if len(self.builders) == 1:
            return self.builders[0].result(n_cached)
        return merge_results([b.result() for b in self.builders], n_prompt, n_gen, n_cached)

    def usage_chunk(self) -> dict:
        n_prompt, n_gen, n_cached = self.usage_counts()
        return self.builders[0].usage_chunk(n_prompt, n_gen, n_cached)
