"""The HTTP endpoints: OpenAI's (/v1/chat/completions, /v1/completions, /v1/models) and
llama.cpp server's (/health, /tokenize, /detokenize, /apply-template, /metrics, /slots; /completion
and /props are in llama_routes.py).

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

from bitnet import constraints
from bitnet.errors import BitnetError, ContextOverflow
from bitnet.generation import Emission
from bitnet.server import sse
from bitnet.server.errors import ApiError, error_body, json_error_text
from bitnet.server.jobs import Cancelled, Failed
from bitnet.server.runs import Run
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
    except ContextOverflow as exc:
        raise ContextOverflowApiError(exc) from None
    except BitnetError as exc:
        raise ApiError(400, str(exc)) from None


class ContextOverflowApiError(Exception):
    """A prompt too long for the context: OpenAI's error shape with llama.cpp's fields added."""

    def __init__(self, exc: ContextOverflow):
        super().__init__(str(exc))
        self.exc = exc

    def response(self) -> JSONResponse:
        body = error_body(400, str(self.exc), code="context_length_exceeded")
        body["error"].update(type="exceed_context_size_error", n_prompt_tokens=self.exc.n_prompt_tokens,
                             n_ctx=self.exc.n_ctx)
        return JSONResponse(body, status_code=400)


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
    n = body.n or 1
    if n > settings.n_max:
        raise ApiError(400, f"n is {n} but this server gives at most {settings.n_max} choices (--n-max)", param="n")
    kwargs = body.prepare_kwargs(settings.n_predict)
    kwargs.update(await steering_kwargs(model, body))
    try:
        if chat:
            prepared = [await _in_worker(model.prepare_chat, body.messages_as_dicts(), **kwargs)]
        else:
            prepared = [await _in_worker(model.prepare_completion, p, **kwargs) for p in body.prompts()]
    except ContextOverflowApiError as exc:
        return exc.response()
    run = Run(prepared, n, scheduler, chat, settings.model_id, null_usage=body.stream and body.include_usage)
    submit_run(request, run)
    if body.stream:
        return sse.EventStreamResponse(_stream_events(run, body.include_usage), on_disconnect=run.cancel)
    try:
        await collect(request, run)
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return JSONResponse(run.result())


async def steering_kwargs(model, body) -> dict:
    """logit_bias (ids checked against the vocabulary) and the grammar of response_format /
    json_schema / grammar (compiled and checked in a worker: a bad one is a 400 with the reason)."""
    kw = {}
    bias = body.bias_by_id()
    if bias:
        bad = next((t for t in bias if t >= model.n_vocab), None)
        if bad is not None:
            raise ApiError(400, f"logit_bias: token id {bad} is out of range [0, {model.n_vocab})", param="logit_bias")
        kw["logit_bias"] = bias
    try:
        asked = body.constraint()
    except ValueError as exc:
        raise ApiError(400, str(exc), param="response_format") from None
    if asked is not None:
        kw["grammar"] = await _in_worker(_compile_grammar, model, *asked)
    return kw


def _compile_grammar(model, kind: str, spec) -> str:
    compile_spec = constraints.grammar_from_json_schema if kind == "json_schema" else constraints.grammar_from_gbnf
    grammar = compile_spec(spec)
    constraints.check_grammar(grammar, model.tokenizer)
    return grammar


def submit_run(request: Request, run: Run) -> None:
    try:
        run.submit()
    except QueueFull as exc:
        raise ApiError(503, str(exc), code="server_busy", headers=_retry_after(request)) from None
    except NotReady as exc:
        raise ApiError(503, str(exc), code="unavailable", headers=_retry_after(request)) from None


async def collect(request: Request, run: Run) -> None:
    await collect_with(request, run, run.push)


async def collect_with(request: Request, run: Run, on_emission) -> None:
    """Wait for every choice, handing each emission to on_emission(index, emission); a client
    that leaves meanwhile cancels them, a failure fails all."""
    watcher = asyncio.ensure_future(_cancel_on_disconnect(request, run))
    try:
        while not run.done:
            index, event = await run.next_event()
            if isinstance(event, Emission):
                on_emission(index, event)
            elif isinstance(event, Failed):
                raise ApiError(event.status, event.message)
            elif isinstance(event, Cancelled):
                raise ClientGone()
    finally:
        watcher.cancel()
        if not run.done:
            run.cancel()


class ClientGone(Exception):
    """The client left before its answer was ready (answered 499, which nobody reads)."""


async def _cancel_on_disconnect(request: Request, run: Run) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
    run.cancel()


async def _stream_events(run: Run, include_usage: bool):
    try:
        for builder in run.builders:
            for chunk in builder.opening_chunks():
                yield sse.event(chunk)
        while not run.done:
            try:
                index, event = await run.next_event(sse.KEEPALIVE_S)
            except asyncio.TimeoutError:  # waiting for a slot, or a long prefill
                yield sse.KEEPALIVE
                continue
            if isinstance(event, Emission):
                for chunk in run.push(index, event):
                    yield sse.event(chunk)
            elif isinstance(event, Failed):  # headers are sent: the error travels as an event
                yield sse.event(error_body(event.status, event.message))
                return
            elif isinstance(event, Cancelled):
                return
        if include_usage:
            yield sse.event(run.usage_chunk())
        yield sse.DONE
    finally:
        if not run.done:
            run.cancel()


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
