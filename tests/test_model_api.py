"""The Python API (DESIGN section 4): generation, streaming, stop strings, OpenAI shapes,
context reuse and errors."""

import numpy as np
import pytest

from bitnet import BitnetError, Model
from bitnet.generation import TextStream


# ---- TextStream: incremental UTF-8 and stop strings ---------------------------------------
def feed(stream: TextStream, chunks) -> str:
    return "".join(stream.push(c) for c in chunks) + stream.flush()


def test_text_stream_joins_split_utf8():
    euro = "€".encode()  # 3 bytes
    s = TextStream()
    assert s.push(euro[:1]) == "" and s.push(euro[1:2]) == ""
    assert s.push(euro[2:] + b"!") == "€!"


def test_text_stream_stops_at_a_stop_string_across_pieces():
    s = TextStream(["END"])
    out = [s.push(b"abc E"), s.push(b"N"), s.push(b"D tail")]
    assert "".join(out) == "abc " and s.stopped
    assert s.text == "abc "


def test_text_stream_releases_a_held_prefix_that_was_not_a_stop():
    s = TextStream(["<|x|>"])
    assert s.push(b"a<|") == "a"
    assert s.push(b"y") == "<|y"
    assert feed(TextStream(["zz"]), [b"z"]) == "z"


# ---- generation -------------------------------------------------------------------------------
def test_greedy_is_deterministic_and_stream_equals_whole(tiny_model):
    whole = tiny_model.generate("Hello there", max_tokens=16, temperature=0)
    pieces = list(tiny_model.generate("Hello there", max_tokens=16, temperature=0, stream=True))
    assert whole and "".join(pieces) == whole
    assert tiny_model.generate("Hello there", max_tokens=16, temperature=0) == whole


def test_seed_reproduces_sampling(tiny_model):
    kw = dict(max_tokens=24, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    a = list(tiny_model.generate_tokens("Once", seed=42, **kw))
    b = list(tiny_model.generate_tokens("Once", seed=42, **kw))
    c = list(tiny_model.generate_tokens("Once", seed=43, **kw))
    assert a == b and a != c


def test_context_reuse_gives_the_same_tokens_as_a_fresh_model(tiny_model, tiny_gguf):
    tiny_model.generate("A shared prefix and then one ending", max_tokens=8, temperature=0)
    reused = list(tiny_model.generate_tokens("A shared prefix and then another", max_tokens=12, temperature=0))
    with Model(tiny_gguf, n_threads=2, n_ctx=256) as fresh:
        assert list(fresh.generate_tokens("A shared prefix and then another", max_tokens=12, temperature=0)) == reused


def test_generated_tokens_follow_the_logits(tiny_model):
    prompt = tiny_model.tokenize("The quick brown fox")
    out = list(tiny_model.generate_tokens(prompt, max_tokens=6, temperature=0))
    logits = tiny_model.logits(prompt + out)
    assert out == [int(np.argmax(logits[len(prompt) - 1 + i])) for i in range(len(out))]


def test_max_tokens_and_timings(tiny_model):
    tiny_model.generate("Hi", max_tokens=5, temperature=0, stop=None)
    t = tiny_model.last_timings
    assert t["n_gen"] <= 5 and t["n_prompt"] >= 1 and t["prompt_ms"] > 0


def test_stop_string_ends_generation(tiny_model):
    text = tiny_model.generate("Hello there", max_tokens=24, temperature=0)
    stop = text[3:6]
    assert stop, "the model generated too little text to pick a stop string"
    cut = tiny_model.create_completion("Hello there", max_tokens=24, temperature=0, stop=[stop])
    assert cut["choices"][0]["text"] == text[: text.index(stop)]
    assert cut["choices"][0]["finish_reason"] == "stop"


# ---- OpenAI shapes -------------------------------------------------------------------------------
def test_completion_shape(tiny_model):
    r = tiny_model.create_completion("Hello", max_tokens=4, temperature=0)
    assert r["object"] == "text_completion" and r["choices"][0]["finish_reason"] in ("stop", "length")
    u = r["usage"]
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] and u["completion_tokens"] <= 4
    chunks = list(tiny_model.create_completion("Hello", max_tokens=4, temperature=0, stream=True))
    assert "".join(c["choices"][0]["text"] for c in chunks) == r["choices"][0]["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == r["choices"][0]["finish_reason"]


def test_chat_completion_shape_and_stream(tiny_model):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    r = tiny_model.create_chat_completion(messages, max_tokens=6, temperature=0)
    assert r["object"] == "chat.completion"
    assert r["choices"][0]["message"]["role"] == "assistant"
    chunks = list(tiny_model.create_chat_completion(messages, max_tokens=6, temperature=0, stream=True))
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == r["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == r["choices"][0]["finish_reason"]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


def test_chat_prompt_has_one_bos(tiny_model):
    ids = tiny_model._chat_ids([{"role": "user", "content": "Hi"}])
    assert ids.count(tiny_model.tokenizer.bos_id) == 1 and ids[0] == tiny_model.tokenizer.bos_id


# ---- errors ------------------------------------------------------------------------------------------
def test_prompt_longer_than_context_names_both_numbers(tiny_gguf):
    with Model(tiny_gguf, n_threads=1, n_ctx=8) as m:
        with pytest.raises(BitnetError, match=r"prompt is \d+ tokens but the context holds 8"):
            m.generate("one two three four five six seven eight nine ten eleven", max_tokens=1)


def test_bad_token_ids_and_options_are_refused(tiny_model):
    with pytest.raises(BitnetError, match="out of range"):
        tiny_model.logits([tiny_model.n_vocab])
    with pytest.raises(BitnetError, match="unknown generation option"):
        tiny_model.generate("x", max_tokens=1, temprature=0.5)
    with pytest.raises(BitnetError, match="invalid sampler parameters"):
        tiny_model.generate("x", max_tokens=1, top_p=float("nan"))


def test_missing_and_non_gguf_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        Model(tmp_path / "nope.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"this is not a model" * 10)
    with pytest.raises(BitnetError, match="not a GGUF file"):
        Model(junk)
