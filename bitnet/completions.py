"""OpenAI-shaped results and stream chunks, shared by the Python API and the server."""

from __future__ import annotations

import time
import uuid

from bitnet.generation import Emission, TokenLogprob


def _usage(n_prompt: int, n_gen: int, n_cached: int | None = None) -> dict:
    usage = {"prompt_tokens": n_prompt, "completion_tokens": n_gen, "total_tokens": n_prompt + n_gen}
    if n_cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": n_cached}
    return usage


def merge_results(results: list[dict], n_prompt: int, n_gen: int, n_cached: int | None = None) -> dict:
    """One response holding the choices of several results (n > 1, a batch of prompts), their
    indices kept, with the usage of them all."""
    merged = dict(results[0])
    merged["choices"] = sorted((c for r in results for c in r["choices"]), key=lambda c: c["index"])
    merged["usage"] = _usage(n_prompt, n_gen, n_cached)
    return merged


def fingerprint() -> str:
    """OpenAI's system_fingerprint: the backend that produced the output (this package's version)."""
    from bitnet import __version__

    return f"fp_bitnet_{__version__}"


def completion(model: str, text: str, finish_reason: str, n_prompt: int, n_gen: int, logprobs: dict | None = None,
               cid: str | None = None, created: int | None = None) -> dict:  # fmt: skip
    return {
        "id": cid or "cmpl-" + uuid.uuid4().hex,
        "object": "text_completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}],
        "usage": _usage(n_prompt, n_gen),
    }


def completion_chunk(cid: str, created: int, model: str, text: str, finish_reason: str | None,
                     logprobs: dict | None = None) -> dict:  # fmt: skip
    return {
        "id": cid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}],
    }


def chat_completion(model: str, text: str, finish_reason: str, n_prompt: int, n_gen: int, logprobs: dict | None = None,
                    cid: str | None = None, created: int | None = None) -> dict:  # fmt: skip
    return {
        "id": cid or "chatcmpl-" + uuid.uuid4().hex,
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": logprobs,
                "finish_reason": finish_reason,
            }
        ],
        "usage": _usage(n_prompt, n_gen),
    }


def chat_chunk(cid: str, created: int, model: str, delta: dict, finish_reason: str | None,
               logprobs: dict | None = None) -> dict:  # fmt: skip
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}],
    }


def new_stream_id(prefix: str) -> tuple[str, int]:
    return prefix + uuid.uuid4().hex, int(time.time())


# ---- log-probabilities in the two OpenAI layouts ----------------------------------------------
def _top_entry(lp: TokenLogprob) -> dict:
    return {"token": lp.text, "logprob": lp.logprob, "bytes": list(lp.data)}


def chat_logprobs(entries: list[TokenLogprob]) -> dict:
    """`choices[].logprobs` of a chat completion: one record per token with its rivals."""
    return {"content": [{**_top_entry(e), "top_logprobs": [_top_entry(t) for t in e.top]} for e in entries],
            "refusal": None}


def completion_logprobs(entries: list[TokenLogprob], text_offset: int = 0) -> dict:
    """`choices[].logprobs` of a legacy completion: parallel lists, text offsets from text_offset."""
    offsets = []
    for e in entries:
        offsets.append(text_offset)
        text_offset += len(e.text)
    return {"tokens": [e.text for e in entries], "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [{t.text: t.logprob for t in e.top} for e in entries], "text_offset": offsets}


class ResultBuilder:
    """Turns a generation's emissions into an OpenAI result, or into its stream chunks.

    One builder per request, used by Model.create_completion / create_chat_completion and by the
    server alike, so that both give the same shapes. `push` returns the chunks that an emission
    makes (none while text is held back: its tokens' log-probabilities wait for the next chunk);
    `result` is the whole response once the generation has finished.
    """

    def __init__(self, chat: bool, model: str, n_prompt: int, logprobs: bool = False, index: int = 0,
                 stream_id: tuple[str, int] | None = None, null_usage: bool = False):  # fmt: skip
        """index: the choice's place (n > 1, batches); stream_id: the (id, created) its siblings
        share; null_usage: chunks carry "usage": null (a stream whose last chunk has the usage)."""
        self.chat, self.model, self.n_prompt, self.want_logprobs = chat, model, n_prompt, logprobs
        self.index, self.null_usage = index, null_usage
        self.id, self.created = stream_id or new_stream_id("chatcmpl-" if chat else "cmpl-")
        self.fingerprint = fingerprint()
        self.n_gen = 0
        self.finish_reason: str | None = None
        self._texts: list[str] = []
        self._logprobs: list[TokenLogprob] = []
        self._sent_logprobs = 0  # how many of _logprobs have gone out in chunks
        self._sent_chars = 0

    def opening_chunks(self) -> list[dict]:
        if not self.chat:
            return []
        return [self._shaped(chat_chunk(self.id, self.created, self.model, {"role": "assistant", "content": ""}, None))]

    def _shaped(self, chunk: dict) -> dict:
        """A chunk or result with this choice's index and the fields every response carries."""
        for choice in chunk["choices"]:
            choice["index"] = self.index
        chunk["system_fingerprint"] = self.fingerprint
        if self.null_usage and "usage" not in chunk:
            chunk["usage"] = None
        return chunk

    def push(self, emission: Emission) -> list[dict]:
        if emission.token is not None:
            self.n_gen += 1
        if emission.logprob is not None:
            self._logprobs.append(emission.logprob)
        if emission.text:
            self._texts.append(emission.text)
        self.finish_reason = emission.finish_reason or self.finish_reason
        if not emission.text and not emission.finish_reason:
            return []
        chunks = self._chat_chunks(emission) if self.chat else [self._text_chunk(emission)]
        return [self._shaped(c) for c in chunks]

    def usage_chunk(self, n_prompt: int | None = None, n_gen: int | None = None, n_cached: int | None = None) -> dict:
        """The stream's last chunk when the client asked for stream_options.include_usage
        (the counts of all choices when given, else this one's)."""
        n_prompt = self.n_prompt if n_prompt is None else n_prompt
        return {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                "created": self.created, "model": self.model, "system_fingerprint": self.fingerprint,
                "choices": [], "usage": _usage(n_prompt, self.n_gen if n_gen is None else n_gen, n_cached)}

    @property
    def text(self) -> str:
        return "".join(self._texts)

    def result(self, n_cached: int | None = None) -> dict:
        text, reason = self.text, self.finish_reason or "length"
        if self.chat:
            lp = chat_logprobs(self._logprobs) if self.want_logprobs else None
            out = chat_completion(self.model, text, reason, self.n_prompt, self.n_gen, lp, self.id, self.created)
        else:
            lp = completion_logprobs(self._logprobs) if self.want_logprobs else None
            out = completion(self.model, text, reason, self.n_prompt, self.n_gen, lp, self.id, self.created)
        out["usage"] = _usage(self.n_prompt, self.n_gen, n_cached)
        return self._shaped(out)

    def _unsent_logprobs(self) -> list[TokenLogprob]:
        entries = self._logprobs[self._sent_logprobs :]
        self._sent_logprobs = len(self._logprobs)
        return entries

    def _chat_chunks(self, e: Emission) -> list[dict]:
        out = []
        if e.text:
            lp = chat_logprobs(self._unsent_logprobs()) if self.want_logprobs else None
            out.append(chat_chunk(self.id, self.created, self.model, {"content": e.text}, None, lp))
        if e.finish_reason:
            lp = chat_logprobs(self._unsent_logprobs()) if self.want_logprobs and not e.text else None
            out.append(chat_chunk(self.id, self.created, self.model, {}, e.finish_reason, lp))
        return out

    def _text_chunk(self, e: Emission) -> dict:
        lp = None
        if self.want_logprobs:
            entries = self._unsent_logprobs()
            lp = completion_logprobs(entries, self._sent_chars)
            self._sent_chars += sum(len(x.text) for x in entries)
        return completion_chunk(self.id, self.created, self.model, e.text, e.finish_reason, lp)
