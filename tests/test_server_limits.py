"""Limits and validation over real HTTP: API keys (401), the body cap (413, also for chunked
bodies), prompts over the context (400 naming both counts), hostile numbers (hypothesis-made
JSON: every out-of-range, NaN/Inf, negative or wrongly typed value is a 400 with a one-line
message, every valid one a 200, never a 500), unknown fields ignored, CORS off unless asked,
a full queue (503 + Retry-After) and /health while the model loads (503)."""

from __future__ import annotations

import json
import signal
import time
import math
import threading

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitnet.server.scheduler import Scheduler
from tests.test_server_support import all_idle, live_server, slowed, wait_until

openai = pytest.importorskip("openai")

INT32_MAX, UINT64_MAX = 2**31 - 1, 2**64 - 1
KEYS = ("first-key", "second-key-longer")


def assert_error(r: httpx.Response, status: int, *texts: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    message = r.json()["error"]["message"]
    assert "\n" not in message and "Traceback" not in message
    for text in texts:
        assert text in message, message
    return message


# ---- API keys -------------------------------------------------------------------------------------
def test_api_keys(tiny_gguf):
    with live_server(tiny_gguf, api_keys=KEYS) as s:
        body = {"prompt": "Hi", "max_tokens": 2}
        assert_error(httpx.post(s.url + "/v1/completions", json=body), 401, "API key")
        bad = httpx.post(s.url + "/v1/completions", json=body, headers={"Authorization": "Bearer first-ke"})
        assert_error(bad, 401) and bad.headers["www-authenticate"] == "Bearer"
        assert_error(httpx.get(s.url + "/slots", headers={"Authorization": "Basic Zmlyc3Qta2V5"}), 401)
        for key in KEYS:
            ok = httpx.post(s.url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {key}"})
            assert ok.status_code == 200
        assert httpx.get(s.url + "/health").status_code == 200  # probes need no key
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=s.url + "/v1", api_key="wrong", max_retries=0).models.list()
        assert s.openai().models.list().data[0].id == "ggml-model-i2_s.gguf"


# ---- body cap, context, types ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small(tiny_gguf):
    with live_server(tiny_gguf, n_ctx=32, max_request_bytes=4096, n_predict=2, queue_size=4) as s:
        yield s


def test_body_over_the_cap_is_413_with_length_or_chunked(small):
    padded = json.dumps({"prompt": "Hi", "max_tokens": 1}).encode()
    fits = padded[:-1] + b" " * (4096 - len(padded)) + b"}"
    assert len(fits) == 4096
    assert httpx.post(small.url + "/v1/completions", content=fits,
                      headers={"Content-Type": "application/json"}).status_code == 200
    assert_error(httpx.post(small.url + "/v1/completions", content=fits + b" "), 413, "4096 bytes")

    def chunks():
        for _ in range(10):
            yield b" " * 1000

    r = httpx.post(small.url + "/v1/completions", content=chunks())  # Transfer-Encoding: chunked
    assert_error(r, 413)


def test_prompt_over_the_context_is_400_with_both_counts(small):
    long_prompt = " ".join(["word"] * 100)
    r = httpx.post(small.url + "/v1/completions", json={"prompt": long_prompt})
    message = assert_error(r, 400, "but the context holds 32")
    n_tokens = int(message.split("the prompt is ")[1].split()[0])
    assert n_tokens > 32
    with pytest.raises(openai.BadRequestError, match="context holds 32"):
        small.openai().chat.completions.create(model="x", messages=[{"role": "user", "content": long_prompt}])


def test_max_tokens_is_held_to_the_server_cap(small):
    r = small.openai().completions.create(model="x", prompt="Hi", max_tokens=1000, temperature=0)
    assert r.usage.completion_tokens <= 2


@pytest.mark.parametrize("body, field", [
    ({"prompt": "Hi", "temperature": "0.5"}, "temperature"),
    ({"prompt": "Hi", "max_tokens": 1.0}, "max_tokens"),
    ({"prompt": "Hi", "max_tokens": True}, "max_tokens"),
    ({"prompt": "Hi", "stream": "yes"}, "stream"),
    ({"prompt": "Hi", "stop": [1, 2]}, "stop"),
    ({"prompt": "Hi", "n": 0}, "n"),
    ({"prompt": "Hi", "n": 9}, "n"),  # over the server's --n-max (8 by default)
    ({"prompt": ["a", 5]}, "prompt"),
    ({"prompt": "Hi", "logit_bias": {"the": 1}}, "logit_bias"),
    ({"prompt": "Hi", "logit_bias": {"1": 101}}, "logit_bias"),
    ({"prompt": "Hi", "response_format": {"type": "sound"}}, "response_format"),
    ({"prompt": [1, -5]}, "prompt"),
    ({"prompt": "Hi", "echo": True}, "echo"),
])  # fmt: skip
def test_wrong_types_and_unsupported_values_are_400(small, body, field):
    r = httpx.post(small.url + "/v1/completions", json=body)
    assert_error(r, 400)
    assert r.json()["error"]["param"].split(".")[0] == field


@pytest.mark.parametrize("raw, text", [
    (b"{not json", "not valid JSON"),
    (b'{"prompt": "Hi", "temperature": NaN}', "NaN is not valid JSON"),
    (b'{"prompt": "Hi", "top_p": Infinity}', "Infinity is not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"prompt": "\xff"}', "not valid JSON"),
    (b"[" * 1500 + b"]" * 1500, "nested too deeply"),
], ids=["syntax", "nan", "infinity", "array", "bad-utf8", "deep"])  # fmt: skip
def test_malformed_bodies_are_400(small, raw, text):
    r = httpx.post(small.url + "/v1/completions", content=raw, headers={"Content-Type": "application/json"})
    assert_error(r, 400, text)


def test_chat_messages_are_checked(small):
    url = small.url + "/v1/chat/completions"
    assert_error(httpx.post(url, json={"messages": []}), 400, "messages")
    assert_error(httpx.post(url, json={"messages": "Hi"}), 400, "messages")
    assert_error(httpx.post(url, json={"messages": [{"role": "user", "content": 5}]}), 400, "content")
    image = [{"type": "image_url", "image_url": {"url": "http://x"}}]
    assert_error(httpx.post(url, json={"messages": [{"role": "user", "content": image}]}), 400, "text content")
    assert_error(httpx.post(url, json={"messages": [{"role": "user", "content": "Hi"}], "top_logprobs": 2}), 400,
                 "top_logprobs needs logprobs")


def test_lone_surrogates_become_replacement_characters(small):
    raw = b'{"messages": [{"role": "user", "content": "a\\ud800b"}], "max_tokens": 1}'
    headers = {"Content-Type": "application/json"}
    r = httpx.post(small.url + "/apply-template", content=raw, headers=headers)
    assert r.status_code == 200 and "a\ufffdb" in r.json()["prompt"]
    assert httpx.post(small.url + "/v1/chat/completions", content=raw, headers=headers).status_code == 200
    r = httpx.post(small.url + "/tokenize", content=b'{"content": "\\udfff"}', headers=headers)
    assert r.status_code == 200 and r.json()["tokens"]


def test_unknown_fields_are_ignored(small):
    body = {"prompt": "Hi", "max_tokens": 1, "frobnicate": {"deep": [1, 2]}, "logit_bias": {"1": 5},
            "tools": [], "response_format": {"type": "text"}}
    assert httpx.post(small.url + "/v1/completions", json=body).status_code == 200


def test_no_cors_unless_configured(small, tiny_gguf):
    origin = {"Origin": "http://example.com"}
    r = httpx.get(small.url + "/v1/models", headers=origin)
    assert "access-control-allow-origin" not in r.headers
    with live_server(tiny_gguf, cors_origins=("http://example.com",), api_keys=KEYS) as s:
        pre = httpx.options(s.url + "/v1/chat/completions", headers={
            **origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"})
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "http://example.com"
        other = httpx.options(s.url + "/v1/chat/completions", headers={
            "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in other.headers


# ---- hostile numbers (hypothesis) -----------------------------------------------------------------------
# field: (kind, lo, hi, lo_open): the documented ranges, written out here independently of schemas.py
RANGES = {
    "temperature": ("float", 0.0, 2.0, False), "top_p": ("float", 0.0, 1.0, False),
    "min_p": ("float", 0.0, 1.0, False), "presence_penalty": ("float", -2.0, 2.0, False),
    "frequency_penalty": ("float", -2.0, 2.0, False), "repetition_penalty": ("float", 0.0, 100.0, True),
    "repeat_penalty": ("float", 0.0, 100.0, True), "top_k": ("int", 0, INT32_MAX, False),
    "max_tokens": ("int", 0, INT32_MAX, False), "n_predict": ("int", -1, INT32_MAX, False),
    "seed": ("int", -1, UINT64_MAX, False), "repeat_last_n": ("int", -1, INT32_MAX, False),
    "logprobs": ("int", 0, 20, False), "n": ("int", 1, 8, False),  # 8: the default --n-max
}  # fmt: skip

numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2, 20, 21, 100, INT32_MAX, INT32_MAX + 1, UINT64_MAX, UINT64_MAX + 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, 2.0, 2.0000001, 1e-45, -1e-300, 1e300, 100.0, 100.5]),
    st.booleans(), st.none(), st.text(max_size=4), st.lists(st.integers(), max_size=2),
)  # fmt: skip


def is_valid(value, kind: str, lo, hi, lo_open: bool) -> bool:
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if kind == "int" and not isinstance(value, int):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return (value > lo if lo_open else value >= lo) and value <= hi


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=st.dictionaries(st.sampled_from(sorted(RANGES)), numbers, min_size=1, max_size=4))
def test_hostile_numbers_are_400_and_valid_ones_200(small, fields):
    body = {"prompt": "Hi", **fields}
    raw = json.dumps(body, allow_nan=True)  # NaN / Infinity as the bare words some encoders write
    r = httpx.post(small.url + "/v1/completions", content=raw, headers={"Content-Type": "application/json"},
                   timeout=30)
    valid = all(is_valid(v, *RANGES[k]) for k, v in fields.items())
    if valid:
        assert r.status_code == 200, (fields, r.text)
    else:
        assert_error(r, 400)


# ---- a full queue, a model still loading --------------------------------------------------------------------
def test_full_queue_is_503_with_retry_after(tiny_gguf, monkeypatch):
    monkeypatch.setattr(Scheduler, "_decode", slowed(Scheduler._decode, 0.02))
    with live_server(tiny_gguf, n_parallel=1, queue_size=1) as s:
        body = {"prompt": "Hi", "max_tokens": 200, "stream": True}
        with httpx.Client(base_url=s.url, timeout=30) as a, httpx.Client(base_url=s.url, timeout=30) as b:
            with a.stream("POST", "/v1/completions", json=body) as first:
                s.wait_slots(lambda slots: slots[0]["state"] == "generating", timeout=10)
                with b.stream("POST", "/v1/completions", json=body) as second:
                    assert first.status_code == second.status_code == 200
                    wait_until(lambda: s.scheduler.n_waiting == 1, 10, "the second request to queue")
                    r = httpx.post(s.url + "/v1/completions", json=body)
                    assert_error(r, 503, "busy")
                    assert r.headers["retry-after"] == "1"
                    with pytest.raises(openai.InternalServerError):
                        s.openai().completions.create(model="x", prompt="Hi", max_tokens=1)
                # the second client gave up while queued: its place is free again at once
                wait_until(lambda: s.scheduler.n_waiting == 0, 10, "the queued request to be dropped")
                assert s.slots()[0]["state"] == "generating"
        s.wait_slots(all_idle, timeout=10)
        rejected = s.app.state.metrics.registry.get_sample_value("bitnet_requests_rejected_total",
                                                                 {"reason": "queue_full"})
        assert rejected == 2


def test_health_is_503_while_the_model_loads(tiny_gguf, monkeypatch):
    release = threading.Event()
    original = Scheduler._load

    def slow_load(self):
        release.wait(30)
        original(self)

    monkeypatch.setattr(Scheduler, "_load", slow_load)
    with live_server(tiny_gguf, wait_ready=False) as s:
        r = httpx.get(s.url + "/health")
        assert r.status_code == 503 and r.json()["status"] == "loading model" and "retry-after" in r.headers
        assert_error(httpx.post(s.url + "/v1/completions", json={"prompt": "Hi"}), 503, "still loading")
        release.set()
        s.wait_ready()
        assert httpx.get(s.url + "/health").status_code == 200


# ---- a hostile chat template (issue: one request froze the server) -------------------------------
SLOW_TEMPLATE = "{% macro f(n) %}{% if n < 60 %}{{ f(n+1) }}{{ f(n+1) }}{% endif %}{% endmacro %}{{ f(0) }}"


def test_hostile_template_neither_freezes_nor_outlives_the_server(tiny_gguf, tmp_path):
    """While a template grinds in its worker process, /health and a completion are answered; the
    chat request gets a 400 within seconds, and SIGTERM during such a render ends the server."""
    from tests.gguf_edit import rewrite_gguf
    from tests.test_server_cli import start_server

    hostile = rewrite_gguf(tiny_gguf, tmp_path / "hostile.gguf",
                           set_kv={"tokenizer.chat_template": (SLOW_TEMPLATE, "string")})
    proc, url = start_server("-m", hostile, "-t", 1, "-c", 256)
    try:
        chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        answers = {}

        def post_chat(name):
            t0 = time.monotonic()
            answers[name] = (httpx.post(url + "/v1/chat/completions", json=chat, timeout=30), time.monotonic() - t0)

        client = threading.Thread(target=post_chat, args=("first",))
        client.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        assert httpx.get(url + "/health", timeout=5).status_code == 200
        assert httpx.post(url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2}, timeout=5).status_code == 200
        assert time.monotonic() - t0 < 2
        client.join(30)
        r, seconds = answers["first"]
        assert_error(r, 400, "chat template")
        assert seconds < 5  # 1.5 s at most in the worker, plus starting it on a loaded machine

        client = threading.Thread(target=post_chat, args=("second",))
        client.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        assert time.monotonic() - t0 < 10
        client.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_errors_speak_our_words_not_the_libraries(tiny_gguf):
    """A 5000-digit number used to answer with Python's sys.set_int_max_str_digits() advice, a
    wrongly typed prompt with pydantic's validator names in the field path."""
    with live_server(tiny_gguf) as s:
        body = b'{"prompt": "Hi", "max_tokens": ' + b"9" * 5000 + b"}"
        r = httpx.post(s.url + "/v1/completions", content=body, headers={"Content-Type": "application/json"})
        message = assert_error(r, 400, "more than 4300 digits")
        assert "sys." not in message
        for prompt in (5.5, {"a": 1}, [[1.5]]):
            r = httpx.post(s.url + "/v1/completions", json={"prompt": prompt, "max_tokens": 1})
            message = assert_error(r, 400, "prompt")
            assert "function-" not in message and "[" not in r.json()["error"]["param"], message


# ---- hardening: Host/Origin of a keyless server, JSON only, read timeouts ---------------------------
def test_keyless_server_checks_host_and_origin(tiny_gguf):
    """DNS rebinding: a page of evil.example whose name resolves to 127.0.0.1 sends Host:
    evil.example; a cross-site page sends its Origin. Both are refused unless allowed."""
    body = {"prompt": "Hi", "max_tokens": 1}
    with live_server(tiny_gguf, allowed_hosts=("my.host",), cors_origins=("http://app.example",)) as s:
        port = s.url.rsplit(":", 1)[1]
        for host in ("evil.example", "evil.example:" + port, "localhost.evil.example"):
            assert_error(httpx.post(s.url + "/v1/completions", json=body, headers={"Host": host}), 403, "not allowed")
        assert_error(httpx.get(s.url + "/v1/models", headers={"Host": "evil.example"}), 403, "DNS rebinding")
        assert httpx.get(s.url + "/health", headers={"Host": "bitnet-service:8080"}).status_code == 200  # probes
        for host in ("localhost:" + port, "127.0.0.1", "[::1]:" + port, "my.host", "MY.HOST:80"):
            assert httpx.post(s.url + "/v1/completions", json=body, headers={"Host": host}).status_code == 200, host
        for origin in ("http://evil.example", "null", "http://127.0.0.1:1"):
            r = httpx.post(s.url + "/v1/completions", json=body, headers={"Origin": origin})
            assert_error(r, 403, "not allowed")
        for origin in (s.url, "http://app.example"):  # the server's own page at /, and a --cors-origins one
            assert httpx.post(s.url + "/v1/completions", json=body, headers={"Origin": origin}).status_code == 200
    with live_server(tiny_gguf, api_keys=KEYS) as s:  # a key is what a web page cannot have
        r = httpx.post(s.url + "/v1/completions", json=body,
                       headers={"Host": "evil.example", "Authorization": f"Bearer {KEYS[0]}"})
        assert r.status_code == 200


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/jsonp"])
def test_post_must_be_json(small, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    r = httpx.post(small.url + "/v1/completions", content=b'{"prompt": "Hi", "max_tokens": 1}', headers=headers)
    assert_error(r, 415, "Content-Type: application/json")
    ok = httpx.post(small.url + "/v1/completions", content=b'{"prompt": "Hi", "max_tokens": 1}',
                    headers={"Content-Type": "Application/JSON; charset=utf-8"})
    assert ok.status_code == 200


def test_slow_body_is_408(tiny_gguf):
    import socket

    with live_server(tiny_gguf, body_timeout_s=1.0) as s:
        host, port = s.url.split("//")[1].split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"prompt\"")
            t0 = time.monotonic()
            reply = sock.recv(4096)
            assert reply.startswith(b"HTTP/1.1 408") and b"did not arrive within 1 s" in reply, reply
            assert time.monotonic() - t0 < 5


def test_slowloris_connections_are_dropped(tiny_gguf):
    """Connections that trickle their headers are closed after --header-timeout; the server
    keeps answering meanwhile."""
    import socket

    from tests.test_server_cli import start_server

    proc, url = start_server("-m", tiny_gguf, "-t", 1, "-c", 64, "--header-timeout", "1")
    try:
        host, port = url.split("//")[1].split(":")
        socks = [socket.create_connection((host, int(port)), timeout=10) for _ in range(200)]
        for sock in socks:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A")
        assert httpx.get(url + "/health", timeout=5).status_code == 200
        t0 = time.monotonic()
        for sock in socks:
            assert sock.recv(1024) == b""  # closed by the server
            sock.close()
        assert time.monotonic() - t0 < 5
        assert httpx.get(url + "/health", timeout=5).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
