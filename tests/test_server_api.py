"""The server as OpenAI's own Python client sees it (real HTTP on 127.0.0.1): chat and text
completions, streaming or not, usage, finish reasons, stop strings, log-probabilities; greedy
output equal to Model.generate, also with several slots decoding in one batch; the llama.cpp
extras (/health, /tokenize, /detokenize, /apply-template, /slots, /metrics)."""

from __future__ import annotations

import concurrent.futures

import httpx
import pytest

from bitnet import Model
from tests.test_server_support import all_idle, live_server, sse_payloads

openai = pytest.importorskip("openai")

PROMPTS = ["Hello there", "Once upon a time", "The quick brown fox", "A B C D E F G", "1 2 3"]
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]


@pytest.fixture(scope="module")
def server(tiny_gguf):
    with live_server(tiny_gguf, n_parallel=4, metrics=True, alias="tiny") as s:
        yield s


@pytest.fixture(scope="module")
def reference(tiny_gguf):
    with Model(tiny_gguf, n_threads=1, n_ctx=256) as m:
        yield m


@pytest.fixture(scope="module")
def client(server):
    return server.openai()


# ---- completions --------------------------------------------------------------------------------
def test_completion_equals_model_generate_greedy(client, reference):
    for prompt in PROMPTS[:3]:
        r = client.completions.create(model="tiny", prompt=prompt, max_tokens=24, temperature=0)
        assert r.choices[0].text == reference.generate(prompt, max_tokens=24, temperature=0)
        assert r.object == "text_completion" and r.model == "tiny"
        assert r.usage.prompt_tokens == len(reference.tokenize(prompt))
        assert r.usage.completion_tokens == reference.last_timings["n_gen"]
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_completion_stream_equals_whole(client):
    whole = client.completions.create(model="tiny", prompt="Hello there", max_tokens=20, temperature=0)
    chunks = list(client.completions.create(model="tiny", prompt="Hello there", max_tokens=20, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_finish_reason_length_and_stop_string(client, reference):
    text = reference.generate("Hello there", max_tokens=24, temperature=0)
    r = client.completions.create(model="tiny", prompt="Hello there", max_tokens=24, temperature=0)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 24
    stop = text[3:6]
    assert stop, "the model generated too little text to pick a stop string"
    cut = client.completions.create(model="tiny", prompt="Hello there", max_tokens=24, temperature=0, stop=[stop])
    assert cut.choices[0].text == text[: text.index(stop)] and cut.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model="tiny", prompt="Hello there", max_tokens=24, temperature=0,
                                         stop=stop, stream=True)
    chunks = list(streamed)
    assert "".join(c.choices[0].text for c in chunks) == cut.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_token_id_prompt_and_seeded_sampling(client, reference):
    ids = reference.tokenize("Once upon a time")
    by_ids = client.completions.create(model="tiny", prompt=ids, max_tokens=12, temperature=0)
    assert by_ids.choices[0].text == reference.generate("Once upon a time", max_tokens=12, temperature=0)
    kw = dict(model="tiny", prompt="Once", max_tokens=16, temperature=1.0, top_p=1.0, seed=42,
              extra_body={"top_k": 0, "min_p": 0.0})
    a, b = client.completions.create(**kw), client.completions.create(**kw)
    assert a.choices[0].text == b.choices[0].text
    assert a.choices[0].text == reference.generate("Once", max_tokens=16, temperature=1.0, top_p=1.0, top_k=0,
                                                   min_p=0.0, seed=42)


def test_completion_logprobs(client):
    r = client.completions.create(model="tiny", prompt="Hello", max_tokens=6, temperature=0, logprobs=3)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == r.usage.completion_tokens
    assert all(x <= 0 for x in lp.token_logprobs) and lp.text_offset[0] == 0
    # greedy: each token is the most likely one, so its log-probability is the best of its step
    assert all(abs(max(top.values()) - x) < 1e-9 for top, x in zip(lp.top_logprobs, lp.token_logprobs))


# ---- chat -------------------------------------------------------------------------------------------
def test_chat_equals_model_and_streams(client, reference):
    r = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=16, temperature=0)
    ours = reference.create_chat_completion(MESSAGES, max_tokens=16, temperature=0)
    assert r.choices[0].message.content == ours["choices"][0]["message"]["content"]
    assert r.choices[0].message.role == "assistant" and r.object == "chat.completion"
    assert r.usage.prompt_tokens == ours["usage"]["prompt_tokens"]
    chunks = list(client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=16, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == r.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == r.choices[0].finish_reason
    assert chunks[-1].usage.total_tokens == r.usage.total_tokens


def test_chat_stop_string(client):
    full = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=24, temperature=0)
    text = full.choices[0].message.content
    stop = text[4:7]
    assert full.choices[0].finish_reason == "length" and stop
    r = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=24, temperature=0, stop=[stop])
    assert r.choices[0].message.content == text[: text.index(stop)] and r.choices[0].finish_reason == "stop"


def test_chat_max_completion_tokens_and_logprobs(client):
    r = client.chat.completions.create(model="tiny", messages=MESSAGES, max_completion_tokens=5, temperature=0,
                                       logprobs=True, top_logprobs=2)
    assert r.usage.completion_tokens == 5 and r.choices[0].finish_reason == "length"
    content = r.choices[0].logprobs.content
    assert len(content) == 5 and all(len(t.top_logprobs) == 2 for t in content)
    assert all(t.logprob == t.top_logprobs[0].logprob for t in content)  # greedy takes the best


def test_content_parts_are_joined(client):
    parts = [{"type": "text", "text": "H"}, {"type": "text", "text": "i!"}]
    a = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": parts}], max_tokens=8,
                                       temperature=0)
    b = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi!"}], max_tokens=8,
                                       temperature=0)
    assert a.choices[0].message.content == b.choices[0].message.content


# ---- batching keeps greedy output exact --------------------------------------------------------------
def test_concurrent_greedy_requests_equal_model_generate(server, reference):
    """Four slots decoding in one batched pass give each request what it gets alone."""
    expected = {p: reference.generate(p, max_tokens=40, temperature=0) for p in PROMPTS}

    def ask(prompt):
        c = server.openai()
        return c.completions.create(model="tiny", prompt=prompt, max_tokens=40, temperature=0).choices[0].text

    with concurrent.futures.ThreadPoolExecutor(len(PROMPTS)) as pool:
        got = dict(zip(PROMPTS, pool.map(ask, PROMPTS)))
    assert got == expected


def test_prefix_reuse_keeps_output_exact(server, reference):
    """A request that extends the last one's prompt reuses that slot's cache, with the same output."""
    base = "A shared prefix and then one ending"
    longer = base + " and some more"
    registry = server.app.state.metrics.registry

    def reused():
        return registry.get_sample_value("bitnet_prompt_tokens_cached_total")

    with server.client() as c:
        c.post("/v1/completions", json={"prompt": base, "max_tokens": 4, "temperature": 0}).raise_for_status()
        before = reused()
        r = c.post("/v1/completions", json={"prompt": longer, "max_tokens": 12, "temperature": 0}).json()
    assert reused() - before >= len(reference.tokenize(base)) - 1
    assert r["choices"][0]["text"] == reference.generate(longer, max_tokens=12, temperature=0)


# ---- the other endpoints ---------------------------------------------------------------------------------
def test_models_and_health(server, client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny"]
    h = httpx.get(server.url + "/health").json()
    assert h["status"] == "ok" and h["slots_idle"] + h["slots_processing"] == 4


def test_tokenize_detokenize_apply_template(server, reference):
    with server.client() as c:
        ids = c.post("/tokenize", json={"content": "Hello there"}).json()["tokens"]
        assert ids == reference.tokenize("Hello there", add_bos=False)
        with_bos = c.post("/tokenize", json={"content": "Hello there", "add_special": True}).json()["tokens"]
        assert with_bos == reference.tokenize("Hello there")
        pieces = c.post("/tokenize", json={"content": "Hello", "with_pieces": True}).json()["tokens"]
        assert "".join(p["piece"] for p in pieces) == "Hello"
        assert c.post("/detokenize", json={"tokens": ids}).json()["content"] == "Hello there"
        bad = c.post("/detokenize", json={"tokens": [reference.n_vocab]})
        assert bad.status_code == 400 and "out of range" in bad.json()["error"]["message"]
        prompt = c.post("/apply-template", json={"messages": MESSAGES}).json()["prompt"]
        assert prompt == reference.apply_chat_template(MESSAGES)


def test_slots_and_metrics(server, client):
    client.completions.create(model="tiny", prompt="Hi", max_tokens=3, temperature=0)
    slots = server.slots()
    assert len(slots) == 4 and all_idle(slots) and {s["id"] for s in slots} == {0, 1, 2, 3}
    text = httpx.get(server.url + "/metrics").text
    for name in ("bitnet_generation_tokens_total", "bitnet_prompt_tokens_total", "bitnet_slots_busy",
                 "bitnet_decode_batch_sequences_bucket", 'bitnet_http_requests_total{path="/v1/completions"'):
        assert name in text, name


def test_sse_wire_format(server):
    """What a client without the SDK sees: `data: {...}` events, then `data: [DONE]`."""
    body = {"messages": MESSAGES, "max_tokens": 4, "temperature": 0, "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        payloads = sse_payloads(r.iter_lines())
    assert payloads[-1] == "[DONE]"
    assert all(p["object"] == "chat.completion.chunk" for p in payloads[:-1])


# ---- the Python API gives what the server gives ---------------------------------------------------------
def _without_ids(result: dict) -> dict:
    """A result without what differs by design: ids, times, names, and the cache each side had."""
    out = {k: v for k, v in result.items() if k not in ("id", "created", "model")}
    if out.get("usage"):
        out["usage"] = {k: v for k, v in out["usage"].items() if k != "prompt_tokens_details"}
    return out


@pytest.mark.parametrize("chat", [True, False], ids=["chat", "completion"])
def test_python_api_and_server_give_the_same_results(server, reference, chat):
    if chat:
        kw = dict(max_tokens=10, temperature=0, logprobs=True, top_logprobs=2, stop=["zz"])
        ours = reference.create_chat_completion(MESSAGES, **kw)
        body = {"messages": MESSAGES, **kw}
    else:
        kw = dict(max_tokens=10, temperature=0, logprobs=2, stop=["zz"])
        ours = reference.create_completion("Hello there", **kw)
        body = {"prompt": "Hello there", **kw}
    path = "/v1/chat/completions" if chat else "/v1/completions"
    with server.client() as c:
        theirs = c.post(path, json=body).json()
        with c.stream("POST", path, json={**body, "stream": True, "stream_options": {"include_usage": True}}) as r:
            streamed = [p for p in sse_payloads(r.iter_lines()) if p != "[DONE]"]
    assert _without_ids(theirs) == _without_ids(ours)
    local = list((reference.create_chat_completion(MESSAGES, stream=True, stream_options={"include_usage": True},
                                                   **kw) if chat else
                  reference.create_completion("Hello there", stream=True, stream_options={"include_usage": True},
                                              **kw)))  # fmt: skip
    assert [_without_ids(x) for x in streamed] == [_without_ids(x) for x in local]
