"""The OpenAI / llama-server request fields beyond the basics, through the official client and raw
HTTP on the demo model: structured output (response_format, json_schema, grammar), logit_bias,
n choices from one prompt evaluation, batched prompts, the prompt cache across requests, and the
stream / error details (usage null, system_fingerprint, exceed_context_size_error)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from bitnet import Model
from tests.test_server_support import live_server, sse_payloads

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")
pytest.importorskip("llguidance")

DEMO = Path(__file__).resolve().parent.parent / "models" / "bitnet-b1.58-austen-5M" / "ggml-model-i2_s.gguf"
PROMPT = "It is a truth universally acknowledged"

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "mood": {"enum": ["happy", "sad", "proud"]},
        "friends": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
        "home": {"type": "object", "properties": {"town": {"type": "string", "maxLength": 16},
                                                  "rooms": {"type": "integer", "minimum": 1, "maximum": 99}},
                 "required": ["town", "rooms"], "additionalProperties": False},
    },
    "required": ["name", "age", "mood", "friends", "home"],
    "additionalProperties": False,
}  # fmt: skip


@pytest.fixture(scope="module")
def server():
    with live_server(DEMO, n_parallel=3, n_ctx=512, alias="austen") as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return server.openai()


# ---- structured output ------------------------------------------------------------------------------
def test_json_schema_output_always_validates_even_at_temperature_1(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    r = client.chat.completions.create(model="austen", messages=[{"role": "user", "content": "Describe a person."}],
                                       response_format=fmt, temperature=1.0, max_tokens=300, seed=1, n=3)
    assert len(r.choices) == 3
    for choice in r.choices:
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.message.content), PERSON)

def test_json_schema_field_streamed(server):
    for seed in range(4):  # text completions, llama.cpp's json_schema field, streamed
        body = {"prompt": PROMPT, "json_schema": PERSON, "temperature": 1.0, "max_tokens": 300, "seed": seed,
                "stream": True}
        with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as r:
            assert r.status_code == 200
            payloads = [p for p in sse_payloads(r.iter_lines()) if p != "[DONE]"]
        jsonschema.validate(json.loads("".join(p["choices"][0]["text"] for p in payloads)), PERSON)


def test_json_object_and_gbnf_grammar(server):
    with server.client() as c:
        r = c.post("/v1/completions", json={"prompt": PROMPT, "response_format": {"type": "json_object"},
                                            "temperature": 1.0, "max_tokens": 30, "seed": 3}).json()
        text, reason = r["choices"][0]["text"], r["choices"][0]["finish_reason"]
        assert text.startswith("{") and (reason == "length" or isinstance(json.loads(text), dict))
        small = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
                 "additionalProperties": False}
        fmt = {"type": "json_object", "schema": small}  # llama.cpp's json_object with a schema
        r = c.post("/v1/completions", json={"prompt": PROMPT, "response_format": fmt, "max_tokens": 30}).json()
        jsonschema.validate(json.loads(r["choices"][0]["text"]), small)
        grammar = 'root ::= ("yes" | "no") " sir"'
        for seed in range(3):
            r = c.post("/v1/completions", json={"prompt": PROMPT, "grammar": grammar, "temperature": 1.0,
                                                "seed": seed, "max_tokens": 20}).json()
            assert r["choices"][0]["text"] in ("yes sir", "no sir")


@pytest.mark.parametrize("field, value, reason", [
    ("response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "sound"}}}, "sound"),
    ("response_format", {"type": "sound"}, "response_format"),
    ("json_schema", {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}, "nowhere"),
    ("grammar", 'root ::= "a" undefined_rule', "undefined_rule"),
])  # fmt: skip
def test_invalid_schemas_and_grammars_are_400_with_a_reason(server, field, value, reason):
    r = httpx.post(server.url + "/v1/completions", json={"prompt": "Hi", field: value}, timeout=30)
    assert r.status_code == 400, r.text
    assert reason in r.json()["error"]["message"]


# ---- sampling fields ----------------------------------------------------------------------------------
def _tokens(server, text: str, add_special: bool = False) -> list[int]:
    body = {"content": text, "add_special": add_special}
    return httpx.post(server.url + "/tokenize", json=body, timeout=30).json()["tokens"]


def _text(server, ids: list[int]) -> str:
    return httpx.post(server.url + "/detokenize", json={"tokens": ids}, timeout=30).json()["content"]


def test_logit_bias_bans_and_forces(server, client):
    kw = dict(model="austen", prompt=PROMPT, max_tokens=12, temperature=0)
    first = _tokens(server, PROMPT + client.completions.create(**kw).choices[0].text)[len(_tokens(server, PROMPT))]
    banned = client.completions.create(**kw, logit_bias={str(first): -100})
    assert first not in _tokens(server, PROMPT + banned.choices[0].text)
    forced_id = _tokens(server, " Darcy")[-1]
    forced = client.completions.create(**{**kw, "max_tokens": 3}, logit_bias={str(forced_id): 100})
    assert forced.choices[0].text == _text(server, [forced_id]) * 3
    with pytest.raises(openai.BadRequestError, match="out of range"):
        client.completions.create(**kw, logit_bias={"999999": 5})


def test_n_choices_come_from_one_prompt_evaluation(server, client):
    evaluated = _count_prompt_decodes(server)
    r = client.completions.create(model="austen", prompt="Mr. Darcy said that", max_tokens=8, temperature=1.0,
                                  n=3, seed=7)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert len({c.text for c in r.choices}) > 1  # seeds differ per choice
    assert evaluated() == 1  # the prompt went through the engine once; the others copied its cache
    again = client.completions.create(model="austen", prompt="Mr. Darcy said that", max_tokens=8,
                                      temperature=1.0, n=3, seed=7)
    assert [c.text for c in again.choices] == [c.text for c in r.choices]
    assert r.usage.prompt_tokens == again.usage.prompt_tokens  # the prompt counts once, as OpenAI counts it
    with pytest.raises(openai.BadRequestError, match="n-max"):
        client.completions.create(model="austen", prompt="x", n=9)


def _count_prompt_decodes(server):
    """Count engine calls that read more than one token (prompt chunks) from now on."""
    calls = []
    for slot in server.scheduler._slots:
        original = slot.context.decode

        def spy(tokens, *a, _original=original, **kw):
            if len(tokens) > 1:
                calls.append(len(tokens))
            return _original(tokens, *a, **kw)

        slot.context.decode = spy
        slot.cached, _ = [], slot.context.truncate(0)  # nothing cached: the prompt must be computed
    return lambda: len(calls)


def test_batched_prompts_each_get_their_own_completion(server, client):
    prompts = ["Elizabeth", "Mr. Bennet", "The ball"]
    r = client.completions.create(model="austen", prompt=prompts, max_tokens=6, temperature=0, n=2)
    assert [c.index for c in r.choices] == list(range(6))
    for i, p in enumerate(prompts):
        alone = client.completions.create(model="austen", prompt=p, max_tokens=6, temperature=0)
        assert r.choices[2 * i].text == r.choices[2 * i + 1].text == alone.choices[0].text
    ids = _tokens(server, "Elizabeth", add_special=True)  # with BOS, as a text prompt gets it
    by_ids = client.completions.create(model="austen", prompt=[ids, ids], max_tokens=6, temperature=0)
    assert [c.text for c in by_ids.choices] == [r.choices[0].text] * 2


def test_penalties_change_the_output(client):
    kw = dict(model="austen", prompt=PROMPT, max_tokens=40, temperature=0)
    plain = client.completions.create(**kw).choices[0].text
    assert client.completions.create(**kw, frequency_penalty=2.0).choices[0].text != plain
    assert client.completions.create(**kw, presence_penalty=2.0).choices[0].text != plain


# ---- the prompt cache across requests ---------------------------------------------------------------------
def test_second_chat_turn_reuses_the_cache_and_gives_a_cold_servers_text():
    turn1 = [{"role": "user", "content": "Who is Mr. Darcy?"}]
    with live_server(DEMO, n_parallel=2, n_ctx=512) as warm:
        c = warm.openai()
        first = c.chat.completions.create(model="x", messages=turn1, max_tokens=16, temperature=0)
        turn2 = turn1 + [{"role": "assistant", "content": first.choices[0].message.content},
                         {"role": "user", "content": "And Elizabeth?"}]
        second = c.chat.completions.create(model="x", messages=turn2, max_tokens=16, temperature=0)
    assert second.usage.prompt_tokens_details.cached_tokens > first.usage.prompt_tokens // 2
    with live_server(DEMO, n_parallel=1, n_ctx=512) as cold:
        fresh = cold.openai().chat.completions.create(model="x", messages=turn2, max_tokens=16, temperature=0)
    assert fresh.usage.prompt_tokens_details.cached_tokens == 0
    assert fresh.choices[0].message.content == second.choices[0].message.content


# ---- spec details -------------------------------------------------------------------------------------------
def test_stream_chunks_carry_usage_null_and_a_fingerprint(server):
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": True,
            "stream_options": {"include_usage": True}}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=30) as r:
        payloads = [p for p in sse_payloads(r.iter_lines()) if p != "[DONE]"]
    assert all("usage" in p and p["usage"] is None for p in payloads[:-1])
    assert payloads[-1]["usage"]["completion_tokens"] >= 1
    assert all(p["system_fingerprint"] == payloads[0]["system_fingerprint"] for p in payloads)


def test_context_overflow_has_openai_and_llama_cpp_fields(server):
    r = httpx.post(server.url + "/v1/completions", json={"prompt": list(range(1, 600))}, timeout=30)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "exceed_context_size_error" and error["code"] == "context_length_exceeded"
    assert error["n_prompt_tokens"] == 599 and error["n_ctx"] == 512 and "599" in error["message"]


def test_alias_in_models(client):
    assert client.models.list().data[0].id == "austen"


def test_python_api_constrained_decoding_matches_the_server(client):
    from bitnet import constraints

    with Model(DEMO, n_threads=1, n_ctx=512) as m:
        ours = m.create_completion(PROMPT, max_tokens=200, temperature=0,
                                   grammar=constraints.grammar_from_json_schema(PERSON))
    theirs = client.completions.create(model="austen", prompt=PROMPT, max_tokens=200, temperature=0,
                                       extra_body={"json_schema": PERSON})
    assert theirs.choices[0].text == ours["choices"][0]["text"]


# ---- llama-server's native endpoints ------------------------------------------------------------------------
def test_llama_completion_endpoint(server, client):
    oai = client.completions.create(model="austen", prompt=PROMPT, max_tokens=12, temperature=0).choices[0].text
    with server.client() as c:
        r = c.post("/completion", json={"prompt": PROMPT, "n_predict": 12, "temperature": 0,
                                        "return_tokens": True}).json()
        assert r["content"] == oai and r["stop"] is True and r["stop_type"] == "limit"
        assert r["tokens_predicted"] == 12 == len(r["tokens"]) == r["timings"]["predicted_n"]
        assert r["tokens_evaluated"] == len(_tokens(server, PROMPT, add_special=True))
        assert r["generation_settings"]["n_ctx"] == 512 and r["model"] == "austen"
        word = oai[4:8]
        cut = c.post("/completion", json={"prompt": PROMPT, "n_predict": 12, "temperature": 0, "stop": [word]}).json()
        assert cut["content"] == oai[: oai.index(word)] and cut["stop_type"] == "word"
        assert cut["stopping_word"] == word
        with c.stream("POST", "/completion", json={"prompt": PROMPT, "n_predict": 12, "temperature": 0,
                                                   "stream": True}) as s:
            payloads = sse_payloads(s.iter_lines())
    assert "[DONE]" not in payloads and payloads[-1]["stop"] is True
    assert all(p["stop"] is False for p in payloads[:-1])
    assert "".join(p["content"] for p in payloads) == oai
    bias = httpx.post(server.url + "/completion", json={"prompt": PROMPT, "n_predict": 2, "temperature": 0,
                                                        "logit_bias": [[_tokens(server, " Darcy")[-1], False]]})
    assert bias.status_code == 200


def test_props_and_slots(server):
    props = httpx.get(server.url + "/props").json()
    assert props["total_slots"] == 3 and props["default_generation_settings"]["n_ctx"] == 512
    assert props["model_alias"] == "austen" and props["modalities"] == {"vision": False, "audio": False}
    slots = httpx.get(server.url + "/slots").json()
    assert [s["id"] for s in slots] == [0, 1, 2]
    assert all(s["is_processing"] is False and s["id_task"] == -1 and s["n_ctx"] == 512 for s in slots)


def test_stream_with_n_choices_and_a_batch(client):
    chunks = list(client.completions.create(model="austen", prompt=["Elizabeth", "The ball"], n=2, max_tokens=6,
                                            temperature=0, stream=True, stream_options={"include_usage": True}))
    texts = ["" for _ in range(4)]
    for c in chunks[:-1]:
        texts[c.choices[0].index] += c.choices[0].text
    whole = client.completions.create(model="austen", prompt=["Elizabeth", "The ball"], n=2, max_tokens=6,
                                      temperature=0)
    assert texts == [c.text for c in whole.choices]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
