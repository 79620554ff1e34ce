"""The HTTP endpoints: OpenAI's (/v1/chat/completions, /v1/completions, /v1/models) and
llama.cpp server's (/health, /tokenize, /detokenize, /apply-template, /metrics, /slots).

Handlers never call the engine: they check the request (schemas.py), prepare it with the
model's own request logic (Model.prepare_chat / prepare_completion, in a worker thread since
tokenizing a long prompt takes a while), submit a Job to the scheduler and relay its events,
as one JSON response or as server-sent events."""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response

from bitnet.completions import ResultBuilder
from bitnet.errors import BitnetError
from bitnet.generation import Emission
from bitnet.server import sse
from bitnet.server.errors import ApiError, error_body, json_error_text
from bitnet.server.jobs import Failed, Finished, Job
from bitnet.server.scheduler import NotReady, QueueFull, Scheduler
from bitnet.server.schemas import (
    ApplyTemplateRequest,
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
)

router = APIRouter()
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left; it never reaches anyone


# ---- helpers ---------------------------------------------------------------------------------------
def _scheduler(request: Request) -> Scheduler:
    return request.app.state.scheduler


def _ready_model(request: Request):
    scheduler = _scheduler(request)
    if scheduler.state != "ready":
        raise ApiError(503, scheduler.status_message(), code="unavailable", headers=_retry_after(request))
    return scheduler.model


def _retry_after(request: Request) -> dict:
    return {"Retry-After": str(request.app.state.settings.retry_after_s)}


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


async def read_body(request: Request, schema: type[BaseModel]) -> BaseModel:
    """The JSON body as `schema` (a ValidationError becomes a 400 in errors.py)."""
    raw = await request.body()
    try:
        data = json.loads(raw or b"{}", parse_constant=_reject_constant)
    except RecursionError:
        raise ApiError(400, "the request body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, NaN/Infinity, a huge integer
        raise ApiError(400, f"the request body is not valid JSON: {json_error_text(exc)}") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(data).__name__}")
    return schema.model_validate(data)


async def _in_worker(fn, *args, **kwargs):
    """Run a model method that tokenizes (no engine calls) off the event loop; its errors are 400s."""
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except BitnetError as exc:
        raise ApiError(400, str(exc)) from None


# ---- generation ---------------------------------------------------------------------------------------
@router.post("/v1/chat/completions")
@router.post("/chat/completions", include_in_schema=False)
async def chat_completions(request: Request):
    body = await read_body(request, ChatCompletionRequest)
    return await _generate(request, body, chat=True)


@router.post("/v1/completions")
@router.post("/completions", include_in_schema=False)
async def completions(request: Request):
    body = await read_body(request, CompletionRequest)
    return await _generate(request, body, chat=False)


async def _generate(request: Request, body, chat: bool):
    model = _ready_model(request)
    settings, scheduler = request.app.state.settings, _scheduler(request)
    kwargs = body.prepare_kwargs(settings.n_predict)
    if chat:
        prepared = await _in_worker(model.prepare_chat, body.messages_as_dicts(), **kwargs)
    else:
        prepared = await _in_worker(model.prepare_completion, body.prompt, **kwargs)
    builder = ResultBuilder(chat, settings.model_id, len(prepared.prompt_ids),
                            logprobs=prepared.options.logprobs is not None)
    job = Job(prepared, asyncio.get_running_loop(), on_cancel=scheduler.wake)
    try:
        scheduler.submit(job)
    except QueueFull as exc:
        raise ApiError(503, str(exc), code="server_busy", headers=_retry_after(request)) from None
    except NotReady as exc:
        raise ApiError(503, str(exc), code="unavailable", headers=_retry_after(request)) from None
    if body.stream:
        return sse.EventStreamResponse(_stream_events(job, builder, body.include_usage), on_disconnect=job.cancel)
    return await _collect(request, job, builder)


async def _collect(request: Request, job: Job, builder: ResultBuilder) -> Response:
    """Wait for the whole generation; a client that leaves meanwhile cancels it."""
    watcher = asyncio.ensure_future(_cancel_on_disconnect(request, job))
    ended = False
    try:
        while True:
            event = await job.events.get()
            if isinstance(event, Emission):
                builder.push(event)
                continue
            ended = True
            if isinstance(event, Finished):
                return JSONResponse(builder.result())
            if isinstance(event, Failed):
                raise ApiError(event.status, event.message)
            return Response(status_code=CLIENT_CLOSED_REQUEST)
    finally:
        watcher.cancel()
        if not ended:
            job.cancel()


async def _cancel_on_disconnect(request: Request, job: Job) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
    job.cancel()


async def _stream_events(job: Job, builder: ResultBuilder, include_usage: bool):
    ended = False
    try:
        for chunk in builder.opening_chunks():
            yield sse.event(chunk)
        while True:
            try:
                event = await asyncio.wait_for(job.events.get(), sse.KEEPALIVE_S)
            except asyncio.TimeoutError:  # waiting for a slot, or a long prefill
                yield sse.KEEPALIVE
                continue
            if isinstance(event, Emission):
                for chunk in builder.push(event):
                    yield sse.event(chunk)
                continue
            ended = True
            if isinstance(event, Finished):
                if include_usage:
                    yield sse.event(builder.usage_chunk())
                yield sse.DONE
            elif isinstance(event, Failed):  # headers are sent: the error travels as an event
                yield sse.event(error_body(event.status, event.message))
            return
    finally:
        if not ended:
            job.cancel()


# ---- model information and text utilities --------------------------------------------------------------
@router.get("/v1/models")
@router.get("/models", include_in_schema=False)
async def models(request: Request):
    settings, scheduler = request.app.state.settings, _scheduler(request)
    entry = {"id": settings.model_id, "object": "model", "created": request.app.state.started, "owned_by": "bitnet"}
    model = scheduler.model
    if model is not None:
        entry["meta"] = {"n_ctx": model.n_ctx, "n_ctx_train": model.native.n_ctx_train, "n_vocab": model.n_vocab,
                         "n_embd": model.native.n_embd, "n_layer": model.native.n_layer,
                         "architecture": model.native.arch, "size_bytes": model.native.size_bytes}
    return {"object": "list", "data": [entry]}


@router.get("/health")
async def health(request: Request):
    scheduler = _scheduler(request)
    if scheduler.state == "ready":
        slots = scheduler.slots_snapshot()
        busy = sum(s["state"] != "idle" for s in slots)
        return {"status": "ok", "slots_idle": len(slots) - busy, "slots_processing": busy,
                "queue_depth": scheduler.n_waiting}
    status = {"loading": "loading model", "failed": "error"}.get(scheduler.state, "unavailable")
    return JSONResponse({"status": status, "message": scheduler.status_message()}, status_code=503,
                        headers=_retry_after(request))


@router.post("/tokenize")
async def tokenize(request: Request):
    body = await read_body(request, TokenizeRequest)
    model = _ready_model(request)
    ids = await _in_worker(model.tokenize, body.content, add_bos=body.add_special, special=True)
    if body.with_pieces:
        pieces = [model.tokenizer.token_to_bytes(t).decode("utf-8", errors="replace") for t in ids]
        return {"tokens": [{"id": t, "piece": p} for t, p in zip(ids, pieces)]}
    return {"tokens": ids}


@router.post("/detokenize")
async def detokenize(request: Request):
    body = await read_body(request, DetokenizeRequest)
    model = _ready_model(request)
    bad = next((t for t in body.tokens if t >= model.n_vocab), None)
    if bad is not None:
        raise ApiError(400, f"token id {bad} is out of range [0, {model.n_vocab})", param="tokens")
    return {"content": await _in_worker(model.detokenize, body.tokens)}


@router.post("/apply-template")
async def apply_template(request: Request):
    body = await read_body(request, ApplyTemplateRequest)
    model = _ready_model(request)
    text = await _in_worker(model.apply_chat_template, body.messages_as_dicts(),
                            add_generation_prompt=body.add_generation_prompt)
    return {"prompt": text}


# ---- operations -------------------------------------------------------------------------------------------
@router.get("/metrics")
async def metrics(request: Request):
    if not request.app.state.settings.metrics:
        raise ApiError(404, "metrics are off: start the server with --metrics")
    m = request.app.state.metrics
    return Response(m.exposition(), media_type=m.content_type)


@router.get("/slots")
async def slots(request: Request):
    _ready_model(request)
    return _scheduler(request).slots_snapshot()
