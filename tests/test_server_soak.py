"""A bounded soak: concurrent streaming clients for a fixed number of requests against 1, 2 and 4
slots; every request completes (none lost, no error) and the slots are decoded together. The
aggregate tokens/s is reported, never asserted (utils/server_benchmark.py measures it, server and clients apart)."""

from __future__ import annotations

import pytest

from bitnet.server.benchmark import run_load
from tests.test_server_support import all_idle, live_server

CLIENTS, REQUESTS_PER_CLIENT, MAX_TOKENS = 4, 4, 32


@pytest.mark.parametrize("parallel", [1, 2, 4])
def test_soak_all_requests_complete(tiny_gguf, parallel, record_property):
    with live_server(tiny_gguf, n_parallel=parallel, queue_size=CLIENTS) as s:
        result = run_load(s.url, CLIENTS, REQUESTS_PER_CLIENT, MAX_TOKENS)
        s.wait_slots(all_idle, 10)
        health = s.client().get("/health").json()
        registry = s.app.state.metrics.registry
    assert result.errors == []
    assert result.n_completed == result.n_requests == CLIENTS * REQUESTS_PER_CLIENT
    assert health["queue_depth"] == 0 and health["slots_processing"] == 0
    assert registry.get_sample_value("bitnet_generation_tokens_total") == result.completion_tokens
    if parallel > 1:  # the slots really were decoded together
        assert registry.get_sample_value("bitnet_decode_batch_sequences_bucket", {"le": "1.0"}) < \
            registry.get_sample_value("bitnet_decode_batch_sequences_count")
    record_property("aggregate_tokens_per_s", round(result.tokens_per_s, 1))
    print(f"\nparallel {parallel}: {result.n_completed} requests, {result.completion_tokens} tokens, "
          f"{result.tokens_per_s:.0f} tokens/s aggregate (tiny model, in-process clients)")
