"""OpenAI-shaped results and stream chunks, shared by the Python API and the server."""

from __future__ import annotations

import time
import uuid


def _usage(n_prompt: int, n_gen: int) -> dict:
    return {"prompt_tokens": n_prompt, "completion_tokens": n_gen, "total_tokens": n_prompt + n_gen}


def completion(model: str, text: str, finish_reason: str, n_prompt: int, n_gen: int) -> dict:
    return {
        "id": "cmpl-" + uuid.uuid4().hex,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
        "usage": _usage(n_prompt, n_gen),
    }


def completion_chunk(cid: str, created: int, model: str, text: str, finish_reason: str | None) -> dict:
    return {
        "id": cid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
    }


def chat_completion(model: str, text: str, finish_reason: str, n_prompt: int, n_gen: int) -> dict:
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": _usage(n_prompt, n_gen),
    }


def chat_chunk(cid: str, created: int, model: str, delta: dict, finish_reason: str | None) -> dict:
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def new_stream_id(prefix: str) -> tuple[str, int]:
    return prefix + uuid.uuid4().hex, int(time.time())
