"""The scheduler: one thread that owns the engine and runs every request, batched.

The engine's contexts are not thread-safe, so every engine call (loading, prefill, decode,
sampling) happens on this one thread; request handlers on the event loop only submit jobs and
read their events. Each turn of the loop:

  1. admit waiting jobs into free slots (the slot whose cache shares the longest prefix wins);
  2. drop jobs whose client left (their slot is free within one step);
  3. prefill: one chunk of at most batch_size prompt tokens per slot still reading its prompt,
     so a cancel is seen between chunks and a long prompt does not stall the others; the n
     choices of one prompt compute it once (jobs.PromptShare): the others copy its KV cache;
  4. decode: ONE batched pass (bitnet.engine.decode_multi) gives the next token of every
     generating slot: several sequences for about the price of one, bit-identical to decoding
     each alone, which is why continuous batching keeps greedy output exact. With --device cuda
     the slots are a GPU slot pool's (bitnet/gpu/batch.py: the same guarantee), and a greedy
     request's token is picked on the GPU, so only its id crosses to the host.

An engine error fails the request it belongs to (500) and resets that slot; the others go on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from bitnet.cli.common import describe_error, one_line
from bitnet.engine import NativeContext, decode_multi
from bitnet.errors import BitnetError
from bitnet.generation import Emission, Generation
from bitnet.server.jobs import Cancelled, Failed, Finished, Job
from bitnet.server.metrics import ServerMetrics
from bitnet.server.settings import ServerSettings
from bitnet.server.slots import Slot

log = logging.getLogger("bitnet.server")


class QueueFull(Exception):
    """Every slot is busy and the waiting queue is full."""


class NotReady(Exception):
    """The model is still loading, failed to load, or the server is stopping."""


class Scheduler:
    def __init__(self, settings: ServerSettings, metrics: ServerMetrics,
                 on_loaded: Callable[[str | None], None] | None = None):  # fmt: skip
        self.settings = settings
        self.metrics = metrics
        self.model = None  # bitnet.Model once loaded (its tokenizer serves the handlers too)
        self.state = "loading"  # loading -> ready -> stopped, or failed
        self.error: str | None = None
        self._on_loaded = on_loaded  # (None) when ready, (message) when loading failed
        self._cond = threading.Condition()
        self._pending: deque[Job] = deque()
        self._slots: list[Slot] = []
        self._pool = None  # the GPU's slot pool (--device cuda)
        self._decode_multi = _engine_decode_multi  # the device's: (contexts, tokens, argmax_only) -> rows
        self.device_description = ""
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="bitnet-scheduler", daemon=True)

    # ---- the event loop's side ----------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Finish: fail what is still queued or running (503) and free the engine."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def submit(self, job: Job) -> None:
        self.submit_all([job])

    def submit_all(self, jobs: list[Job]) -> None:
        """Queue the jobs of one request (its choices, its prompts) together: they take one place
        in the queue's count, so a request with n choices is not refused for its own size."""
        with self._cond:
            if self.state != "ready" or self._stopping:
                raise NotReady(self.status_message())
            busy = sum(s.job is not None for s in self._slots)
            if busy + len(self._pending) >= len(self._slots) + self.settings.queue_size:
                self.metrics.rejected.labels("queue_full").inc()
                raise QueueFull(f"all {len(self._slots)} slots are busy and {len(self._pending)} requests are "
                                "waiting; retry later")
            self._pending.extend(jobs)
            self.metrics.queue_depth.set(len(self._pending))
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def status_message(self) -> str:
        if self.state == "loading":
            return "the model is still loading; retry in a moment"
        if self.state == "failed":
            return f"the model failed to load: {self.error}"
        return "the server is shutting down"

    def slots_snapshot(self) -> list[dict]:
        return [s.snapshot() for s in list(self._slots)]

    @property
    def n_waiting(self) -> int:
        return len(self._pending)

    # ---- the scheduler thread ---------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._load()
        except BaseException as exc:  # noqa: BLE001 (any load failure is reported, as one line)
            self.error = describe_error(exc)
            self.state = "failed"
            if self._on_loaded is not None:
                self._on_loaded(self.error)
            else:
                log.error("the model failed to load: %s", self.error)
            return
        if self._on_loaded is not None:
            self._on_loaded(None)
        try:
            while self._turn():
                pass
        finally:
            self._close()

    def _load(self) -> None:
        from bitnet.model import Model

        s = self.settings
        model = Model(s.model_path, n_threads=s.n_threads, n_ctx=s.n_ctx, model_sha256=s.model_sha256,
                      device=s.device, head_act=s.head_act)
        try:
            slots = [Slot(i, context) for i, context in enumerate(self._new_contexts(model))]
        except BaseException:
            if self._pool is not None:
                self._pool.close()
            model.close()
            raise
        with self._cond:
            self.model, self._slots, self.state = model, slots, "ready"
        log.info("model ready: %s; %d slot(s) of %d tokens, %d thread(s); %s", model.native.desc, len(slots),
                 model.n_ctx, model.n_threads, self.device_description)

    def _new_contexts(self, model) -> list:
        """One context per slot: the engine's, or a GPU slot pool's (one cache, batched steps)."""
        s = self.settings
        if model.gpu_model is None:
            from bitnet import engine

            self.device_description = f"device cpu, kernels {engine.isa()}"
            return [NativeContext(model.native, model.n_ctx, model.n_threads) for _ in range(s.n_parallel)]
        from bitnet.gpu.batch import SlotPool

        self._pool = SlotPool(model.gpu_model, s.n_parallel, model.n_ctx, s.cache_type_k, s.cache_type_v)
        self._decode_multi = self._pool.decode_multi
        self.device_description = f"device {s.device} ({model.gpu_model.device_name}), KV cache " \
                                  f"{s.cache_type_k}/{s.cache_type_v}"
        return self._pool.contexts

    def _turn(self) -> bool:
        """One step of every slot; False when it is time to stop."""
        admitted = self._admit()
        if admitted is None:
            return False
        try:
            for slot, job in admitted:
                self._start(slot, job)
            self._drop_cancelled()
            self._prefill()
            self._decode()
        except Exception as exc:  # noqa: BLE001 (a bug here must not kill the thread that serves everyone)
            log.exception("scheduler step failed")
            for slot in self._slots:
                if slot.job is not None:
                    self._fail(slot, exc)
        return True

    def _admit(self) -> list[tuple[Slot, Job]] | None:
        """Hand waiting jobs to free slots (waiting while there is nothing to do); None: stop."""
        admitted = []
        with self._cond:
            while not self._stopping and not self._pending and all(s.job is None for s in self._slots):
                self._cond.wait()
            if self._stopping:
                return None
            if any(job.cancelled for job in self._pending):  # a client gave up waiting: free its place
                for job in [j for j in self._pending if j.cancelled]:
                    self._pending.remove(job)
                    job.emit(Cancelled())
            while self._pending:
                free = [s for s in self._slots if s.job is None]
                if not free:
                    break
                job = self._pending.popleft()
                ids = job.request.prompt_ids
                slot = max(free, key=lambda s: (s.reusable_prefix(ids), -s.last_used))
                slot.job = job  # reserved: counted as busy from now on
                admitted.append((slot, job))
            self._update_gauges()
        return admitted

    def _start(self, slot: Slot, job: Job) -> None:
        try:
            generation = Generation(self.model.tokenizer, job.request)
        except BitnetError as exc:  # e.g. sampler parameters the engine refuses
            self._release(slot)
            job.emit(Failed(400, one_line(str(exc))))
            return
        try:
            slot.start(job, generation)
        except Exception as exc:  # noqa: BLE001 (the slot's context refused: fail this request only)
            generation.close()
            self._fail(slot, exc)
            return
        if job.request.options.max_tokens == 0:  # nothing to generate: no need to read the prompt
            self.metrics.cached_prompt_tokens.inc(slot.n_reused)
            job.emit(generation.finish("length"))
            self._finish(slot)
            return
        share = job.share
        if share is None:
            self.metrics.cached_prompt_tokens.inc(slot.n_reused)
        elif share.logits is not None:  # a sibling choice computed the prompt already
            self._take_shared_prompt(slot)
        elif share.owner is None:
            share.owner = job
            self.metrics.cached_prompt_tokens.inc(slot.n_reused)
        else:
            slot.state = "waiting"

    def _take_shared_prompt(self, slot: Slot) -> None:
        """Start generating from a sibling's computed prompt (its KV cache copied); computes the
        prompt itself when no slot holds it any more."""
        share = slot.job.share
        holder = share.holder(self._slots)
        if holder is None:
            slot.state = "prefill"
            return
        try:
            slot.take_prompt_from(holder)
        except Exception as exc:  # noqa: BLE001
            self._fail(slot, exc)
            return
        self.metrics.cached_prompt_tokens.inc(slot.n_reused)
        slot.state = "generating"
        self._advance(slot, share.logits)

    def _start_waiting(self) -> None:
        """Slots waiting for a sibling's prompt: take it once computed, compute it if the sibling left."""
        for slot in self._slots:
            if slot.state != "waiting":
                continue
            share = slot.job.share
            if share.logits is not None:
                self._take_shared_prompt(slot)
            elif share.owner is None or share.owner.cancelled:
                share.owner = slot.job
                slot.state = "prefill"

    def _drop_cancelled(self) -> None:
        for slot in self._slots:
            job = slot.job
            if job is not None and job.cancelled:
                if job.t_cancelled is not None:
                    self.metrics.cancel_seconds.observe(time.monotonic() - job.t_cancelled)
                self.metrics.cancelled.inc()
                self._release(slot)
                job.emit(Cancelled())

    def _prefill(self) -> None:
        for slot in self._slots:
            if slot.state != "prefill":
                continue
            try:
                logits = slot.prefill(self.settings.batch_size)
            except Exception as exc:  # noqa: BLE001 (an engine error fails this request only)
                self._fail(slot, exc)
                continue
            if logits is not None:
                slot.state = "generating"
                share = slot.job.share
                if share is not None and share.logits is None:
                    share.logits, share.source = logits.copy(), slot
                self._advance(slot, logits)
        self._start_waiting()

    def _decode(self) -> None:
        active = [s for s in self._slots if s.state == "generating" and s.next_token is not None]
        if not active:
            return
        tokens = [s.next_token for s in active]
        try:
            rows = self._decode_multi([s.context for s in active], tokens, [s.generation.argmax_only for s in active])
        except Exception:  # noqa: BLE001 (a refused batch changes nothing: find whose token it was)
            self._decode_one_by_one(active)
            return
        self.metrics.batch_sequences.observe(len(active))
        for slot, token, row in zip(active, tokens, rows):
            slot.cached.append(token)
            self._advance(slot, row)

    def _decode_one_by_one(self, active: list[Slot]) -> None:
        for slot in active:
            try:
                row = slot.context.decode([slot.next_token])
            except Exception as exc:  # noqa: BLE001
                self._fail(slot, exc)
                continue
            slot.cached.append(slot.next_token)
            self._advance(slot, row)

    def _advance(self, slot: Slot, logits) -> None:
        """Sample the slot's next token from its logits and send what it gives to the client."""
        job = slot.job
        try:
            emission: Emission = slot.generation.step(logits)
        except Exception as exc:  # noqa: BLE001
            self._fail(slot, exc)
            return
        if slot.t_first_token is None:
            slot.t_first_token = time.monotonic()
            self.metrics.time_to_first_token.observe(slot.t_first_token - job.t_submitted)
        if emission.token is not None:
            self.metrics.generated_tokens.inc()
        job.emit(emission)
        if emission.finish_reason:
            self._finish(slot)
        elif len(slot.cached) >= slot.n_ctx:  # no room to decode the token just sampled
            job.emit(slot.generation.finish("length"))
            self._finish(slot)
        else:
            slot.next_token = emission.token

    def _finish(self, slot: Slot) -> None:
        job, gen = slot.job, slot.generation
        n_prompt = len(job.request.prompt_ids)
        self.metrics.prompt_tokens.inc(n_prompt)
        self.metrics.request_seconds.observe(time.monotonic() - job.t_submitted)
        t_first = slot.t_first_token or time.monotonic()
        done = Finished(n_prompt=n_prompt, n_cached=slot.n_reused, n_gen=gen.n_gen,
                        prompt_ms=(t_first - slot.t_started) * 1e3, gen_ms=(time.monotonic() - t_first) * 1e3,
                        slot=slot.index)
        self._release(slot)
        job.emit(done)

    def _fail(self, slot: Slot, exc: BaseException) -> None:
        job = slot.job
        message = describe_error(exc)
        if isinstance(exc, BitnetError):
            log.error("request %s failed: %s", job.id, message)
        else:
            log.error("request %s failed", job.id, exc_info=exc)
        self.metrics.engine_errors.inc()
        slot.reset_cache()
        self._release(slot)
        job.emit(Failed(500, f"the engine failed on this request: {message}"))

    def _release(self, slot: Slot) -> None:
        share = slot.job.share if slot.job is not None else None
        if share is not None and share.owner is slot.job and share.logits is None:
            share.owner = None  # a waiting sibling computes the prompt instead
        with self._cond:
            slot.release()
            self._update_gauges()

    def _update_gauges(self) -> None:
        self.metrics.slots_busy.set(sum(s.job is not None for s in self._slots))
        self.metrics.queue_depth.set(len(self._pending))

    def _close(self) -> None:
        """Stopping: whatever is left gets a 503, then the engine is freed."""
        with self._cond:
            self.state = "stopped"
            leftovers = [s.release() for s in self._slots if s.job is not None] + list(self._pending)
            self._pending.clear()
        for job in leftovers:
            job.emit(Failed(503, "the server is shutting down"))
        for slot in self._slots:
            slot.context.close()
        if self._pool is not None:
            self._pool.close()
        if self.model is not None:
            self.model.close()


def _engine_decode_multi(contexts: list, tokens: list[int], argmax_only: list[bool]) -> list:
    """The CPU's batched step: logits rows (the host samples every one)."""
    if len(contexts) == 1:
        return [contexts[0].decode(tokens)]
    return list(decode_multi(contexts, tokens))
