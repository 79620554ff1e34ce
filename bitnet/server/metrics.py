"""Prometheus metrics (prometheus_client), one registry per app so that several servers in one
process (the tests) do not share counters. Always counted, served at /metrics with --metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# The routes whose requests are counted by path; anything else is "other", so that a scanner
# trying random URLs cannot blow up the number of series.
COUNTED_PATHS = frozenset({
    "/v1/chat/completions", "/chat/completions", "/v1/completions", "/completions", "/v1/models", "/models",
    "/health", "/tokenize", "/detokenize", "/apply-template", "/metrics", "/slots",
})  # fmt: skip
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class ServerMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, n_slots: int):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("bitnet_http_requests", "HTTP requests by path and status", ["path", "status"],
                                registry=r)
        self.rejected = Counter("bitnet_requests_rejected", "Generation requests refused before running",
                                ["reason"], registry=r)
        self.cancelled = Counter("bitnet_requests_cancelled", "Generations stopped because the client left",
                                 registry=r)
        self.engine_errors = Counter("bitnet_engine_errors", "Generations failed by an engine error", registry=r)
        self.prompt_tokens = Counter("bitnet_prompt_tokens", "Prompt tokens of finished requests", registry=r)
        self.cached_prompt_tokens = Counter("bitnet_prompt_tokens_cached",
                                            "Prompt tokens reused from a slot's KV cache", registry=r)
        self.generated_tokens = Counter("bitnet_generation_tokens", "Tokens generated", registry=r)
        self.slots_total = Gauge("bitnet_slots", "Slots (sequences decoded together)", registry=r)
        self.slots_busy = Gauge("bitnet_slots_busy", "Slots running a request", registry=r)
        self.queue_depth = Gauge("bitnet_queue_depth", "Requests waiting for a slot", registry=r)
        self.batch_sequences = Histogram("bitnet_decode_batch_sequences", "Sequences per batched decode step",
                                         buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64), registry=r)
        self.time_to_first_token = Histogram("bitnet_time_to_first_token_seconds",
                                             "From submission to the first generated token",
                                             buckets=SECONDS_BUCKETS, registry=r)
        self.request_seconds = Histogram("bitnet_generation_seconds", "From submission to the end of a generation",
                                         buckets=SECONDS_BUCKETS, registry=r)
        self.cancel_seconds = Histogram("bitnet_cancel_latency_seconds",
                                        "From the client leaving to its slot being free", buckets=SECONDS_BUCKETS,
                                        registry=r)
        self.slots_total.set(n_slots)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class RequestCounter:
    """ASGI middleware counting every HTTP response by path and status."""

    def __init__(self, app, metrics: ServerMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        label = path if path in COUNTED_PATHS else "other"
        status = {"code": 0}

        async def counting_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.metrics.requests.labels(label, str(status["code"] or 500)).inc()
