"""llama-server's native endpoints, shaped as llama.cpp's tools/server shapes them: /completion
(its request fields, its response with tokens, stop_type, timings; streaming as `data:` lines
with no [DONE]) and /props. The request runs through the same scheduler as OpenAI's routes."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import Field, field_validator
from starlette.responses import JSONResponse, Response

from bitnet import __version__
from bitnet.generation import Emission, SamplingOptions
from bitnet.server import routes, sse
from bitnet.server.errors import error_body
from bitnet.server.jobs import Cancelled, Failed, Finished
from bitnet.server.runs import Run
from bitnet.server.schemas import MAX_TOP_LOGPROBS, CompletionRequest

router = APIRouter()
_SAMPLING_DEFAULTS = SamplingOptions()


class LlamaCompletionRequest(CompletionRequest):
    n_probs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    cache_prompt: bool = True  # a slot always keeps its cache; accepted for compatibility
    return_tokens: bool = False

    @field_validator("logit_bias", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        """llama.cpp's [[id, bias], ...] form; a bias of false bans the token."""
        if isinstance(value, list):
            out = {}
            for pair in value:
                if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], int)):
                    raise ValueError("logit_bias pairs must be [token id, bias]")
                out[str(pair[0])] = -100.0 if pair[1] is False else pair[1]
            return out
        return value

    def prepare_kwargs(self, server_max_tokens: int) -> dict:
        kw = self.generation_kwargs(None, server_max_tokens)
        kw["logprobs"] = self.n_probs or None
        return kw


def _stop_type(reason: str | None, stopped_word: str) -> str:
    if reason == "length":
        return "limit"
    return "word" if stopped_word else ("eos" if reason == "stop" else "none")


def _settings_of(request: Request, body: LlamaCompletionRequest | None = None) -> dict:
    """generation_settings / default_generation_settings: what the sampler runs with."""
    s = request.app.state.settings
    d = _SAMPLING_DEFAULTS
    params = {"n_predict": s.n_predict, "temperature": d.temperature, "top_k": d.top_k, "top_p": d.top_p,
              "min_p": d.min_p, "repeat_last_n": d.repeat_last_n, "repeat_penalty": d.repeat_penalty,
              "presence_penalty": d.presence_penalty, "frequency_penalty": d.frequency_penalty, "seed": -1,
              "stop": [], "n_probs": 0, "grammar": "", "stream": False}
    if body is not None:
        for name in ("temperature", "top_k", "top_p", "min_p", "repeat_last_n", "presence_penalty",
                     "frequency_penalty", "seed", "stop", "n_probs", "grammar", "stream"):
            if getattr(body, name) is not None:
                params[name] = getattr(body, name)
        params["n_predict"] = body.n_predict if body.n_predict is not None else params["n_predict"]
    return {"n_ctx": s.n_ctx, "model": s.model_id, **params}


@router.post("/completion")
async def completion(request: Request):
    body = await routes.read_body(request, LlamaCompletionRequest)
    model = routes._ready_model(request)
    settings, scheduler = request.app.state.settings, routes._scheduler(request)
    kwargs = body.prepare_kwargs(settings.n_predict)
    kwargs.update(await routes.steering_kwargs(model, body))
    try:
        prepared = [await routes._in_worker(model.prepare_completion, p, **kwargs) for p in body.prompts()]
    except routes.ContextOverflowApiError as exc:
        return exc.response()
    run = Run(prepared, 1, scheduler, False, settings.model_id)
    routes.submit_run(request, run)
    state = _LlamaResult(request, body, run)
    if body.stream:
        return sse.EventStreamResponse(state.stream(), on_disconnect=run.cancel)
    try:
        await routes.collect_with(request, run, state.on_emission)
    except routes.ClientGone:
        return Response(status_code=routes.CLIENT_CLOSED_REQUEST)
    results = [state.final(i) for i in range(len(prepared))]
    return JSONResponse(results[0] if len(results) == 1 else results)


class _LlamaResult:
    """Per prompt: text, tokens, and the final object llama-server sends."""

    def __init__(self, request: Request, body: LlamaCompletionRequest, run: Run):
        self.request, self.body, self.run = request, body, run
        self.tokens: list[list[int]] = [[] for _ in run.jobs]
        self.prompt_texts = [p if isinstance(p, str) else "" for p in body.prompts()]

    def on_emission(self, index: int, emission: Emission) -> dict | None:
        self.run.push(index, emission)
        if emission.token is not None:
            self.tokens[index].append(emission.token)
        if not emission.text:
            return None
        out = {"index": index, "content": emission.text, "tokens": [emission.token] if emission.token is not None
               else [], "stop": False, "id_slot": -1, "tokens_predicted": len(self.tokens[index]),
               "tokens_evaluated": len(self.run.prompts[index])}  # fmt: skip
        return out

    def final(self, index: int, streaming: bool = False) -> dict:
        builder, done = self.run.builders[index], self.run.finished.get(index)
        stops = [s for s in (self.body.stop or []) if s]
        text = builder.text
        stopped_word = ""
        if builder.finish_reason == "stop" and stops:  # which stop string cut it (the tokens' text goes on)
            full = self.request.app.state.scheduler.model.detokenize(self.tokens[index])
            stopped_word = next((s for s in stops if full[len(text):].startswith(s)), "")
        n_prompt, n_gen = len(self.run.prompts[index]), builder.n_gen
        prompt_ms, gen_ms = (done.prompt_ms, done.gen_ms) if done else (0.0, 0.0)
        n_evaluated = n_prompt - (done.n_cached if done else 0)
        return {
            "index": index, "content": "" if streaming else text,
            "tokens": self.tokens[index] if self.body.return_tokens and not streaming else [],
            "id_slot": done.slot if done else -1, "stop": True, "model": self.request.app.state.settings.model_id,
            "tokens_predicted": n_gen, "tokens_evaluated": n_prompt,
            "generation_settings": _settings_of(self.request, self.body), "prompt": self.prompt_texts[index],
            "has_new_line": "\n" in text, "truncated": False,
            "stop_type": _stop_type(builder.finish_reason, stopped_word), "stopping_word": stopped_word,
            "tokens_cached": n_prompt + n_gen,
            "timings": {"cache_n": done.n_cached if done else 0, "prompt_n": n_evaluated, "prompt_ms": prompt_ms,
                        "prompt_per_token_ms": prompt_ms / max(n_evaluated, 1),
                        "prompt_per_second": 1e3 * n_evaluated / prompt_ms if prompt_ms > 0 else 0.0,
                        "predicted_n": n_gen, "predicted_ms": gen_ms,
                        "predicted_per_token_ms": gen_ms / max(n_gen, 1),
                        "predicted_per_second": 1e3 * n_gen / gen_ms if gen_ms > 0 else 0.0},
        }  # fmt: skip

    async def stream(self):
        run = self.run
        try:
            while not run.done:
                try:
                    index, event = await run.next_event(sse.KEEPALIVE_S)
                except asyncio.TimeoutError:
                    yield sse.KEEPALIVE
                    continue
                if isinstance(event, Emission):
                    chunk = self.on_emission(index, event)
                    if chunk is not None:
                        yield sse.event(chunk)
                elif isinstance(event, Finished):
                    yield sse.event(self.final(index, streaming=True))
                elif isinstance(event, Failed):
                    yield sse.event(error_body(event.status, event.message))
                    return
                elif isinstance(event, Cancelled):
                    return
        finally:
            if not run.done:
                run.cancel()


@router.get("/props")
async def props(request: Request):
    settings, scheduler = request.app.state.settings, routes._scheduler(request)
    model = scheduler.model
    tok = model.tokenizer if model is not None else None
    return {
        "default_generation_settings": {"id": 0, "id_task": -1, "n_ctx": settings.n_ctx, "speculative": False,
                                        "is_processing": False, "params": _settings_of(request)},
        "total_slots": settings.n_parallel,
        "model_path": settings.model_path,
        "model_alias": settings.model_id,
        "chat_template": (model.chat_template or "") if model is not None else "",
        "bos_token": tok.token_text(tok.bos_id) if tok is not None and tok.bos_id is not None else "",
        "eos_token": tok.token_text(tok.eos_id) if tok is not None and tok.eos_id is not None else "",
        "modalities": {"vision": False, "audio": False},
        "build_info": f"bitnet {__version__}",
    }
