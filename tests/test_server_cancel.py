"""Clients that leave and engines that fail: a disconnect mid-stream, mid-prefill (streaming or
not) frees the slot within 1 s (checked on /slots), and stops the work within a step; an engine
error fails only its own request with a 500 and a message, and the server goes on."""

from __future__ import annotations

import socket
import threading

import httpx
import pytest

from bitnet.errors import BitnetError
from bitnet.server import scheduler as scheduler_module
from bitnet.server.scheduler import Scheduler
from bitnet.server.slots import Slot
from tests.test_server_support import FREED_WITHIN_S, LOADED_MACHINE_SLACK_S, all_idle, live_server, slowed, wait_until

LONG_PROMPT = " ".join(f"w{i}" for i in range(60))
FREED_DEADLINE_S = FREED_WITHIN_S + LOADED_MACHINE_SLACK_S


def cancelled_count(server) -> float:
    return server.app.state.metrics.registry.get_sample_value("bitnet_requests_cancelled_total")


def test_disconnect_mid_stream_frees_the_slot(tiny_gguf, monkeypatch):
    monkeypatch.setattr(Scheduler, "_decode", slowed(Scheduler._decode, 0.02))
    with live_server(tiny_gguf) as s:
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 200, "stream": True}
        with httpx.Client(base_url=s.url, timeout=30) as c:
            with c.stream("POST", "/v1/chat/completions", json=body) as r:
                lines = r.iter_lines()
                for _ in range(6):  # the role chunk and a few tokens: it is generating
                    next(lines)
                assert s.slots()[0]["state"] == "generating"
        took = s.wait_slots(all_idle, FREED_DEADLINE_S)
        print(f"slot freed {took * 1e3:.0f} ms after a disconnect mid-stream")
        assert cancelled_count(s) == 1
        generated = s.app.state.metrics.registry.get_sample_value("bitnet_generation_tokens_total")
        assert generated < 200  # it stopped, long before its max_tokens


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_disconnect_mid_prefill_frees_the_slot(tiny_gguf, monkeypatch, stream):
    """batch_size=1 reads the prompt one token per engine call: a cancel is seen between two."""
    monkeypatch.setattr(Slot, "prefill", slowed(Slot.prefill, 0.02))
    with live_server(tiny_gguf, batch_size=1) as s:
        body = {"prompt": LONG_PROMPT, "max_tokens": 4, "stream": stream}
        raw = httpx.Request("POST", s.url + "/v1/completions", json=body)
        conn = socket.create_connection(("127.0.0.1", s.port))
        head = "".join(f"{k}: {v}\r\n" for k, v in raw.headers.items())
        conn.sendall(f"POST /v1/completions HTTP/1.1\r\n{head}\r\n".encode() + raw.read())
        s.wait_slots(lambda slots: slots[0]["state"] == "prefill" and slots[0]["n_cached"] >= 3, 10)
        conn.close()
        took = s.wait_slots(all_idle, FREED_DEADLINE_S)
        print(f"slot freed {took * 1e3:.0f} ms after a disconnect mid-prefill ({'stream' if stream else 'whole'})")
        n_prompt = s.slots()[0]["n_cached"]
        assert n_prompt < 60  # the prefill stopped part way
        assert cancelled_count(s) == 1


def test_engine_error_fails_only_that_request(tiny_gguf, monkeypatch):
    original = Slot.prefill
    calls = {"n": 0}

    def failing_once(self, n_tokens):
        calls["n"] += 1
        if calls["n"] == 1:
            raise BitnetError("simulated engine failure")
        return original(self, n_tokens)

    monkeypatch.setattr(Slot, "prefill", failing_once)
    with live_server(tiny_gguf) as s, s.client() as c:
        r = c.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 4})
        assert r.status_code == 500
        assert r.json()["error"]["message"] == "the engine failed on this request: simulated engine failure"
        ok = c.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 4, "temperature": 0})
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] >= 1
        assert c.get("/health").json()["status"] == "ok"
        assert s.app.state.metrics.registry.get_sample_value("bitnet_engine_errors_total") == 1


def test_engine_error_mid_stream_is_an_error_event(tiny_gguf, monkeypatch):
    with live_server(tiny_gguf) as s:
        original = Scheduler._advance

        def fail_third_token(self, slot, logits):
            if slot.generation.n_gen == 2:
                raise BitnetError("simulated sampler failure")
            return original(self, slot, logits)

        monkeypatch.setattr(Scheduler, "_advance", fail_third_token)
        body = {"prompt": "Hi", "max_tokens": 10, "stream": True}
        with httpx.stream("POST", s.url + "/v1/completions", json=body, timeout=30) as r:
            text = r.read().decode()
        assert r.status_code == 200 and '"error"' in text and "[DONE]" not in text
        monkeypatch.undo()
        s.wait_slots(all_idle, 10)
        assert httpx.post(s.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2}).status_code == 200


def test_a_failed_batch_is_retried_one_by_one(tiny_gguf, monkeypatch):
    """decode_multi refusing a batch changes nothing: each sequence is decoded alone instead."""
    from bitnet import Model

    refused = []

    def refuse(*args, **kwargs):
        refused.append(1)
        raise BitnetError("simulated batch failure")

    original_admit = Scheduler._admit

    def admit_both_at_once(self):  # so that the two requests surely share decode steps
        wait_until(lambda: len(self._pending) >= 2 or self._stopping, 10, "both requests to arrive")
        monkeypatch.setattr(Scheduler, "_admit", original_admit)
        return original_admit(self)

    monkeypatch.setattr(scheduler_module, "decode_multi", refuse)
    monkeypatch.setattr(Scheduler, "_admit", admit_both_at_once)
    prompts = ["Hello there", "Once upon a time"]
    with Model(tiny_gguf, n_threads=1, n_ctx=256) as m:
        expected = [m.generate(p, max_tokens=20, temperature=0) for p in prompts]
    with live_server(tiny_gguf, n_parallel=2) as s:
        results = [None, None]

        def ask(i):
            with s.client() as c:
                results[i] = c.post("/v1/completions", json={"prompt": prompts[i], "max_tokens": 20,
                                                              "temperature": 0}).json()["choices"][0]["text"]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert refused and results == expected
