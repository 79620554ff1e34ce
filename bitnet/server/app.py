"""The FastAPI application: middleware in order, the scheduler's life, the routes.

Outermost first: request counting (metrics), hardening (Host/Origin of a keyless server, body
deadline: hardening.py), CORS (only with --cors-origins, so that a browser's preflight is
answered before any key is asked for), the chat page's files (webui/; unless --no-webui), API
keys, the body cap, the JSON content type, then the routes. The scheduler starts with the app
and loads the model in its own thread, so /health answers 503 while loading; it stops after
uvicorn has drained the connections (SIGTERM)."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from bitnet import __version__
from bitnet.server import embeddings, llama_routes, routes
from bitnet.server.auth import ApiKeyAuth
from bitnet.server.errors import install_error_handlers
from bitnet.server.hardening import JsonContentType, RequestHardening
from bitnet.server.limits import RequestBodyLimit
from bitnet.server.metrics import RequestCounter, ServerMetrics
from bitnet.server.scheduler import Scheduler
from bitnet.server.settings import ServerSettings
from bitnet.server.webui import WebUI


def create_app(settings: ServerSettings, on_loaded: Callable[[str | None], None] | None = None) -> FastAPI:
    """The app for settings; on_loaded(None) once the model is ready, on_loaded(message) if it failed."""
    metrics = ServerMetrics(settings.n_parallel)
    scheduler = Scheduler(settings, metrics, on_loaded)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        scheduler.start()
        try:
            yield
        finally:
            await run_in_threadpool(scheduler.stop)

    middleware = [Middleware(RequestCounter, metrics=metrics),
                  Middleware(RequestHardening, keyless=not settings.api_keys, bind_host=settings.host,
                             allowed_hosts=settings.allowed_hosts, cors_origins=settings.cors_origins,
                             body_timeout_s=settings.body_timeout_s)]
    if settings.cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                                     allow_methods=["GET", "POST", "OPTIONS"], allow_headers=["*"], max_age=600))
    if settings.webui:  # the chat page at / (webui/): served before the key check, it holds no secret
        middleware.append(Middleware(WebUI, settings=settings))
    middleware += [Middleware(ApiKeyAuth, keys=settings.api_keys),
                   Middleware(RequestBodyLimit, max_bytes=settings.request_byte_cap),
                   Middleware(JsonContentType)]
    app = FastAPI(title="bitnet", version=__version__, lifespan=lifespan, middleware=middleware,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings, app.state.scheduler, app.state.metrics = settings, scheduler, metrics
    app.state.started = int(time.time())
    install_error_handlers(app)
    app.include_router(routes.router)
    app.include_router(llama_routes.router)
    app.include_router(embeddings.router)  # POST /v1/embeddings
    return app
