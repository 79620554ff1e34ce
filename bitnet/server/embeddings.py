"""POST /v1/embeddings (OpenAI's request and response) on Model.embed_with_usage.

`input` is a string, a list of strings, a list of token ids, or a list of token-id lists;
`encoding_format` float (JSON numbers) or base64 (little-endian float32 bytes, what the openai
client decodes). The server's limits hold: the body cap (middleware), max_prompt_bytes per
text and n_ctx tokens per input (Model), at most MAX_INPUTS inputs; one embedding batch runs at a
time, off the event loop, on contexts of its own (the scheduler's generation slots are untouched).
"""

from __future__ import annotations

import asyncio
import base64
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import Field

from bitnet.errors import BitnetError
from bitnet.server.errors import ApiError
from bitnet.server.routes import _ready_model, read_body
from bitnet.server.schemas import RequestModel, Text, TokenId

MAX_INPUTS = 2048  # OpenAI's limit per request
router = APIRouter()
_one_at_a_time = asyncio.Lock()

TokenList = Annotated[list[TokenId], Field(min_length=1)]


class EmbeddingRequest(RequestModel):
    input: Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_INPUTS)] | TokenList | Annotated[
        list[TokenList], Field(min_length=1, max_length=MAX_INPUTS)]  # fmt: skip
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


def _inputs(value) -> list:
    if isinstance(value, str):
        return [value]
    if value and isinstance(value[0], int):
        return [value]  # one token list
    return list(value)


def _encode(vector: np.ndarray, fmt: str):
    if fmt == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


@router.post("/v1/embeddings")
@router.post("/embeddings", include_in_schema=False)
async def embeddings(request: Request):
    body = await read_body(request, EmbeddingRequest)
    model = _ready_model(request)
    n_embd = model.native.n_embd
    if body.dimensions is not None and body.dimensions != n_embd:
        raise ApiError(400, f"this model's embeddings have {n_embd} dimensions, not {body.dimensions}",
                       param="dimensions")  # fmt: skip
    async with _one_at_a_time:
        try:
            vectors, n_tokens = await run_in_threadpool(model.embed_with_usage, _inputs(body.input))
        except BitnetError as exc:
            raise ApiError(400, str(exc), param="input") from None
    data = [{"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
            for i, v in enumerate(vectors)]  # fmt: skip
    return {"object": "list", "data": data, "model": request.app.state.settings.model_id,
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}}  # fmt: skip
