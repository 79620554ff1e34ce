"""Property tests (hypothesis) for the Python side of hostile input: tokenizer metadata, text,
chat messages and templates, and GGUF bytes through the engine binding.

Every property is "works, or raises BitnetError": any other exception, a hang (a per-example
time limit) or a crash of the process is a finding. Deterministic (derandomize=True, no example
database), so CI sees the same examples every run; the C++ loader has its own libFuzzer
harness (tests/fuzz/).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import warnings
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bitnet.chat import BITNET_CHAT_TEMPLATE, render_chat  # noqa: E402
from bitnet.convert.tokenizer_meta import gguf_tokenizer_fields  # noqa: E402
from bitnet.errors import BitnetError  # noqa: E402
from bitnet.tokenizer import Tokenizer  # noqa: E402
from tests.tokenizer_fixture import write_test_tokenizer  # noqa: E402

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
HANG_SECONDS = 10  # per example: far above the slowest legitimate case (well under 1 s)


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float = HANG_SECONDS):
    """Turn a hang into a test failure (SIGALRM; pytest runs tests on the main thread)."""

    def on_alarm(signum, frame):
        raise Hang(f"no result after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ---- strategies -----------------------------------------------------------------------------

# Strings a hostile file could hold: anything Unicode has, lone surrogates included, and the
# spellings the tokenizer treats specially.
odd_text = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=12),  # lone surrogates too
    st.sampled_from(["", " ", "a b", "a  b", " a", "\n", "\x00", "<|eot_id|>", "<0x0A>", "Ġ", "\ud800", "\U0010ffff"]),
)
big_ints = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([-1, 0, 1, 309, 310, 311, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64]),
)
json_values = st.recursive(
    st.none() | st.booleans() | big_ints | st.floats() | odd_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=3),
    max_leaves=8,
)

TOKENIZER_KEYS = [
    "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id", "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.add_bos_token", "tokenizer.chat_template",
]  # fmt: skip
LIST_KEYS = ["tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges"]
ID_KEYS = [k for k in TOKENIZER_KEYS if k.endswith("_id")]

mutations = st.one_of(
    st.tuples(st.just("delete"), st.sampled_from(TOKENIZER_KEYS)),
    st.tuples(st.just("set"), st.sampled_from(TOKENIZER_KEYS), json_values),
    st.tuples(st.just("set"), st.sampled_from(ID_KEYS), big_ints),
    st.tuples(st.just("item"), st.sampled_from(LIST_KEYS), st.integers(0, 10**6), json_values),
    st.tuples(st.just("item"), st.sampled_from(LIST_KEYS), st.integers(0, 10**6), odd_text),
    st.tuples(st.just("item"), st.just("tokenizer.ggml.token_type"), st.integers(0, 10**6), big_ints),
    st.tuples(st.just("append"), st.sampled_from(LIST_KEYS), json_values),
    st.tuples(st.just("truncate"), st.sampled_from(LIST_KEYS), st.integers(0, 400)),
)


def mutate(meta: dict, ops) -> dict:
    meta = {k: list(v) if isinstance(v, list) else v for k, v in meta.items()}
    for op, key, *args in ops:
        if op == "delete":
            meta.pop(key, None)
        elif op == "set":
            meta[key] = args[0]
        elif not isinstance(meta.get(key), list):
            continue
        elif op == "item" and meta[key]:
            meta[key][args[0] % len(meta[key])] = args[1]
        elif op == "append":
            meta[key].append(args[0])
        elif op == "truncate":
            del meta[key][args[0] :]
    return meta


# ---- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def valid_meta(tmp_path_factory) -> dict:
    """Tokenizer metadata of a small vocab (300 BPE + 10 special), as the engine hands it over (JSON)."""
    d = tmp_path_factory.mktemp("tok")
    write_test_tokenizer(d, vocab_size=300)
    return json.loads(json.dumps({key: value for key, value, _ in gguf_tokenizer_fields(d)}))


@pytest.fixture(scope="module")
def tokenizer(valid_meta) -> Tokenizer:
    return Tokenizer.from_gguf_metadata(valid_meta)


@pytest.fixture(scope="module")
def mini_gguf(tmp_path_factory) -> bytes:
    """The bytes of the fuzz corpus's smallest valid model (~27 KB)."""
    import numpy as np

    from tests.fuzz.make_corpus import mini_model, write

    path = tmp_path_factory.mktemp("gguf") / "mini.gguf"
    write(path, *mini_model(np.random.default_rng(0)))
    return path.read_bytes()


# ---- tokenizer ------------------------------------------------------------------------------


@settings(FUZZ, max_examples=200)
@given(ops=st.lists(mutations, min_size=1, max_size=4))
def test_tokenizer_metadata_mutations_build_or_raise_bitnet_error(valid_meta, ops):
    meta = mutate(valid_meta, ops)
    with time_limit():
        try:
            tok = Tokenizer.from_gguf_metadata(meta)
        except BitnetError:
            return
        # What built must also work, or refuse cleanly, on text and ids.
        try:
            ids = tok.encode("Hello <|eot_id|> wörld 😀\n", add_bos=True)
            tok.decode(ids)
            tok.decode([0, len(tok) - 1], skip_special=True)
        except BitnetError:
            pass


@settings(FUZZ, max_examples=200)
@given(text=st.text(), special=st.booleans())
def test_tokenizer_round_trips_any_text(tokenizer, text, special):
    with time_limit():
        ids = tokenizer.encode(text, add_bos=False, special=special)
        assert tokenizer.decode(ids) == text
        assert b"".join(tokenizer.token_to_bytes(i) for i in ids) == text.encode("utf-8")
        with_bos = tokenizer.encode(text)
        if tokenizer.add_bos_token:
            assert with_bos[0] == tokenizer.bos_id and with_bos[1:] == tokenizer.encode(text, add_bos=False)


@settings(FUZZ, max_examples=100)
@given(ids=st.lists(st.one_of(big_ints, st.floats(), st.none(), odd_text), max_size=6))
def test_tokenizer_decode_any_ids_or_raise(tokenizer, ids):
    with contextlib.suppress(BitnetError):
        assert isinstance(tokenizer.decode(ids), str)


# ---- chat templates -------------------------------------------------------------------------

ROLES = ["system", "user", "assistant", "tool"]
message_values = st.one_of(odd_text, st.text(max_size=40), json_values)
messages_strategy = st.one_of(
    json_values,
    st.lists(
        st.one_of(
            st.fixed_dictionaries({"role": st.sampled_from(ROLES), "content": st.text()}),
            st.fixed_dictionaries({"role": message_values, "content": message_values}),
            st.dictionaries(st.sampled_from(["role", "content", "name", "tool_calls"]), message_values),
            json_values,
        ),
        max_size=4,
    ),
)
# Pieces of Jinja that real and hostile templates use; joined at random they parse or not.
TEMPLATE_PIECES = [
    "{% for message in messages %}", "{% endfor %}", "{{ message['role'] }}", "{{ message['content'] | trim }}",
    "{{ messages[0]['content'] }}", "{{ messages[99]['content'] }}", "{% if add_generation_prompt %}",
    "{% endif %}", "{{ bos_token }}", "{{ eos_token }}", "{{ raise_exception('no') }}", "{{ message | tojson }}",
    "{% set ns = namespace(x=1) %}", "{% set ns._y = 2 %}", "{{ ''.__class__ }}", "{{ range(10) | list }}",
    "{% for i in range(100000) %}{% for j in range(100) %}{% endfor %}{% endfor %}",
    "{% for i in range(50000) %}{{ messages | tojson }}{% endfor %}", "{{ strftime_now('%Y') }}",
    "{% generation %}x{% endgeneration %}", "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
    "{{ 'x' * 5000 }}", "{{", "{%", "}}", "{# c #}", "text ", "\n",
]  # fmt: skip
templates = st.one_of(
    st.none(),
    st.just(BITNET_CHAT_TEMPLATE),
    st.lists(st.sampled_from(TEMPLATE_PIECES), max_size=6).map("".join),
    st.text(max_size=30),
)


@settings(FUZZ, max_examples=200)
@given(messages=messages_strategy, template=templates, bos=odd_text, add_generation_prompt=st.booleans())
def test_render_chat_renders_or_raises_bitnet_error(messages, template, bos, add_generation_prompt):
    with time_limit(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a broken template falls back to the built-in one with a warning
        try:
            out = render_chat(messages, template, bos_token=bos, add_generation_prompt=add_generation_prompt)
        except BitnetError:
            return
    assert isinstance(out, str)


# Hostile expressions: operands that are big or long and operators, filters and methods that
# multiply them; nested a few deep, inside loops or a namespace that keeps doubling a value.
HOSTILE_OPERANDS = ["2", "10**6", "2**40", "(2**33)", "'ab'", "('a'*1000)", "messages", "[1, 2]", "range(1000)",
                    "lipsum(3)", "ns.v", "message['content']", "'%0999d'", "'{:>99}'", "-1", "0"]
HOSTILE_BINARY = ["**", "*", "+", "%", "~", "//", "-"]
HOSTILE_UNARY = ["|string", "|list", "|join", "|replace('a', 'bbbb')", "|center(5000)", "|format(1)",
                 "|indent(9999)", "|tojson(indent=99)", "|slice(99)|list", "|batch(3)|list", "|reverse|list",
                 "|wordwrap(5)", "|length", ".upper()", ".center(9999)", ".format(1)", ".join(['x', 'y'])",
                 ".replace('a', 'aaaa')", ".split('a')", "|sum", "|unique|list"]


@st.composite
def hostile_expression(draw, depth=0):
    if depth >= 3 or draw(st.integers(0, 2)) == 0:
        return draw(st.sampled_from(HOSTILE_OPERANDS))
    if draw(st.booleans()):
        left, right = draw(hostile_expression(depth + 1)), draw(hostile_expression(depth + 1))
        return f"({left} {draw(st.sampled_from(HOSTILE_BINARY))} {right})"
    return f"({draw(hostile_expression(depth + 1))}){draw(st.sampled_from(HOSTILE_UNARY))}"


@st.composite
def hostile_template(draw):
    expr = draw(hostile_expression())
    body = draw(st.sampled_from([
        "{{ E }}", "{% set x = E %}{{ x|length if x is sized else x }}",
        "{% for m in messages %}{% for i in range(100) %}{{ E }}{% endfor %}{% endfor %}",
        "{% set ns = namespace(v='ab') %}{% for i in range(40) %}{% set ns.v = E %}{% endfor %}{{ ns.v|length }}",
        "{% macro f(n) %}{% if n < 30 %}{{ f(n + 1) }}{{ E }}{{ f(n + 1) }}{% endif %}{% endmacro %}{{ f(0) }}",
        "{% for a in E %}{% for b in E %}{{ a }}{% endfor %}{% endfor %}",
    ]))  # fmt: skip
    return body.replace("E", expr)


@settings(FUZZ, max_examples=150)
@given(template=hostile_template())
def test_hostile_expressions_render_or_refuse_within_two_seconds(template):
    """The sandbox hooks (chat_sandbox.py): whatever a template computes, an answer or a
    BitnetError comes within 2 s and without a MemoryError."""
    import time

    t0 = time.perf_counter()
    with time_limit(2.0), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            render_chat([{"role": "user", "content": "hi"}], template)
        except BitnetError:
            pass
    assert time.perf_counter() - t0 < 2.0


# Tokenizer builder: vocabularies of random pieces (families of ever longer pieces included)
# with random types and scores; building takes time linear in their size, or refuses them.
piece_alphabet = st.sampled_from(["a", "b", "▁", "<", "|", ">", "é", "中", "0"])


@st.composite
def spm_vocabulary(draw):
    pieces = draw(st.lists(st.text(piece_alphabet, min_size=1, max_size=12), max_size=200))
    if draw(st.booleans()):  # a family "a", "aa", "aaa", ... up to a drawn length
        pieces += [draw(piece_alphabet) * k for k in range(1, draw(st.integers(1, 1500)))]
    tokens = ["<unk>", "<s>", "</s>", *pieces]
    kinds = st.sampled_from([1, 1, 1, 2, 3, 4, 5, 6])
    types = [2, 3, 3] + draw(st.lists(kinds, min_size=len(pieces), max_size=len(pieces)))
    scores = draw(st.lists(st.floats(-100, 100), min_size=len(tokens), max_size=len(tokens)))
    return {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types,
            "tokenizer.ggml.scores": scores, "tokenizer.ggml.add_space_prefix": draw(st.booleans())}


@st.composite
def bpe_vocabulary(draw):
    pieces = sorted(set(draw(st.lists(st.text(piece_alphabet, min_size=1, max_size=8), min_size=1, max_size=200))))
    merges = draw(st.lists(st.tuples(st.sampled_from(pieces), st.sampled_from(pieces)), max_size=200))
    types = draw(st.lists(st.sampled_from([1, 1, 1, 3, 4, 5]), min_size=len(pieces), max_size=len(pieces)))
    return {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": pieces, "tokenizer.ggml.token_type": types,
            "tokenizer.ggml.merges": [f"{a} {b}" for a, b in merges]}


@settings(FUZZ, max_examples=60)
@given(meta=st.one_of(spm_vocabulary(), bpe_vocabulary()), text=st.text(piece_alphabet, max_size=30))
def test_tokenizer_builder_builds_or_refuses_quickly(meta, text):
    import time

    t0 = time.perf_counter()
    with time_limit(2.0):
        try:
            tok = Tokenizer.from_gguf_metadata(meta)
        except BitnetError:
            return
        ids = tok.encode(text, add_bos=False)
    assert time.perf_counter() - t0 < 2.0
    assert all(0 <= i < tok.n_vocab for i in ids)


# ---- GGUF bytes through the engine ------------------------------------------------------------


def load_gguf_bytes(data: bytes) -> None:
    """Write data to a file and load it with the engine: loads (then read it all) or BitnetError."""
    from bitnet.engine import NativeContext, NativeModel

    fd, name = tempfile.mkstemp(suffix=".gguf")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        with time_limit():
            try:
                model = NativeModel(name)
            except BitnetError:
                return
            try:
                meta = model.metadata()  # every value through value_json + json.loads
                with contextlib.suppress(BitnetError):
                    Tokenizer.from_gguf_metadata(meta)
                ctx = NativeContext(model, 4, 1)
                ctx.decode([0, model.n_vocab - 1], all_logits=True)
                ctx.close()
            finally:
                model.close()
    finally:
        Path(name).unlink()


@settings(FUZZ, max_examples=150)
@given(data=st.one_of(st.binary(max_size=256), st.binary(min_size=24, max_size=64).map(lambda b: b"GGUF" + b)))
def test_gguf_arbitrary_bytes_load_or_raise(data):
    load_gguf_bytes(data)


@settings(FUZZ, max_examples=250)
@given(data=st.data())
def test_gguf_flipped_or_truncated_file_loads_or_raises(mini_gguf, data):
    n = len(mini_gguf)
    header = 1600  # the key/values and tensor infos end near byte 1500; data follows
    position = st.one_of(st.integers(0, header), st.integers(0, n - 1))
    flips = data.draw(st.lists(st.tuples(position, st.integers(0, 255)), max_size=6))
    cut = data.draw(st.one_of(st.just(n), st.integers(0, n)))
    buf = bytearray(mini_gguf)
    for pos, value in flips:
        buf[pos] = value
    load_gguf_bytes(bytes(buf[:cut]))
