"""Chat templates rendered like transformers' apply_chat_template, with a safe fallback."""

from __future__ import annotations

import time
import warnings

import pytest

from bitnet.chat import BITNET_CHAT_TEMPLATE, ChatTemplateLimitError, render_chat
from bitnet.chat_worker import ChatTemplate, TemplateWorker
from bitnet.errors import BitnetError
from tests.tokenizer_fixture import BITNET_2B4T_CHAT_TEMPLATE, write_test_tokenizer

CHATS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "  You are terse.\n"}, {"role": "user", "content": "2+2?"}],
    [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi <|eot_id|> there"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Café, 中文, 😀 and\ttabs\n\nnew lines"},
    ],
    [{"role": "user", "content": ""}],
]

# A template exercising what chat templates use: namespace, loop controls, tojson (which must
# not HTML-escape), filters, {% generation %}, conditionals on roles, raise_exception paths.
RICH_TEMPLATE = """\
{%- set ns = namespace(n_user=0) -%}
{{- bos_token -}}
{%- for message in messages -%}
    {%- if message['role'] == 'user' %}{% set ns.n_user = ns.n_user + 1 %}{% endif -%}
    {%- if message['role'] == 'assistant' -%}
        {% generation %}{{ message['content'] | tojson }}{% endgeneration %}
    {%- else -%}
        <{{ message['role'] | upper }}>{{ message['content'] | tojson(indent=2) }}{{ eos_token }}
    {% endif -%}
    {%- if loop.index > 10 %}{% break %}{% endif -%}
{%- endfor -%}
users={{ ns.n_user }} {{ {'a': '<&>', 'b': [1, 2]} | tojson(sort_keys=True) }}
{%- if add_generation_prompt %}[GEN]{% endif -%}
"""


@pytest.fixture(scope="module")
def auto(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("chat_tok")
    write_test_tokenizer(d)
    return transformers.AutoTokenizer.from_pretrained(str(d))


def render_like(auto, chat, template=None, add_generation_prompt=True):
    return render_chat(
        chat,
        template if template is not None else auto.chat_template,
        bos_token=auto.bos_token,
        eos_token=auto.eos_token,
        add_generation_prompt=add_generation_prompt,
    )


@pytest.mark.parametrize("chat", CHATS)
@pytest.mark.parametrize("gen", [True, False])
def test_equals_transformers(auto, chat, gen):
    expected = auto.apply_chat_template(chat, tokenize=False, add_generation_prompt=gen)
    assert render_like(auto, chat, add_generation_prompt=gen) == expected


@pytest.mark.parametrize("chat", CHATS)
def test_rich_template_equals_transformers(auto, chat):
    chat = [*chat, {"role": "assistant", "content": 'says "<b>" & more'}]
    expected = auto.apply_chat_template(chat, chat_template=RICH_TEMPLATE, tokenize=False, add_generation_prompt=True)
    assert render_like(auto, chat, RICH_TEMPLATE) == expected
    assert '"<&>"' in expected  # tojson did not escape


def test_builtin_is_2b4t_format(auto):
    assert BITNET_CHAT_TEMPLATE == BITNET_2B4T_CHAT_TEMPLATE
    chat = CHATS[2]
    text = render_chat(chat, None, bos_token="<|begin_of_text|>")
    assert text == auto.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|begin_of_text|>System: Be kind.<|eot_id|>User: Hi <|eot_id|> there<|eot_id|>")
    assert text.endswith("<|eot_id|>Assistant: ")


def test_strftime_now():
    year = time.strftime("%Y")
    assert render_chat(CHATS[0], "{{ strftime_now('%Y') }}") in {year, str(int(year) + 1)}


BROKEN_TEMPLATES = {
    "syntax error": "{% for message in messages %}{{ message['content'] }",
    "unknown tag": "{% frobnicate %}",
    "raise_exception": "{{ raise_exception('Conversation roles must alternate user/assistant') }}",
    "undefined call": "{{ messages[0].content.nonexistent() }}",
    "sandbox escape": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "namespace dunder": "{% set ns = namespace() %}{% set ns._secret = 1 %}{{ ns._secret }}",
    "mutation": "{% set x = messages.append({'role': 'user', 'content': 'x'}) %}",
    "range too big": "{% for i in range(10**9) %}{% endfor %}",
    "recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "type error": "{{ messages + 1 }}",
}


@pytest.mark.parametrize("name", BROKEN_TEMPLATES)
def test_broken_template_falls_back(name):
    with pytest.warns(UserWarning, match="built-in BitNet template"):
        text = render_chat(CHATS[1], BROKEN_TEMPLATES[name], bos_token="<s>")
    assert text == "<s>System: You are terse.<|eot_id|>User: 2+2?<|eot_id|>Assistant: "


@pytest.mark.parametrize("template", [None, ""])
def test_missing_template_uses_builtin_quietly(template):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text = render_chat(CHATS[0], template, add_generation_prompt=False)
    assert text == "User: Hello!<|eot_id|>"


def test_huge_output_is_refused_quickly():
    template = "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}"  # would be 100 MB
    t0 = time.perf_counter()
    with pytest.raises(ChatTemplateLimitError, match="more than"):
        render_chat(CHATS[0], template)
    assert time.perf_counter() - t0 < 5
    assert issubclass(ChatTemplateLimitError, BitnetError)


def test_silent_nested_loops_are_refused():
    template = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    t0 = time.perf_counter()
    with pytest.raises(ChatTemplateLimitError, match="loops"):
        render_chat(CHATS[0], template)
    assert time.perf_counter() - t0 < 5


def test_output_limit_scales_with_the_messages():
    big = [{"role": "user", "content": "word " * 400_000}]  # 2 MB of real text renders
    assert render_chat(big).startswith("User: word word")
    with pytest.raises(ChatTemplateLimitError):
        render_chat(CHATS[0], "{% for i in range(3000) %}{{ 'y' * 100 }}{% endfor %}", max_chars=100_000)


BAD_MESSAGES = [
    "hello",
    [],
    None,
    {"role": "user", "content": "hi"},
    ["hi"],
    [{"content": "no role"}],
    [{"role": "", "content": "empty role"}],
    [{"role": 3, "content": "int role"}],
    [{"role": "user"}],
    [{"role": "user", "content": None}],
    [{"role": "user", "content": [{"type": "text", "text": "parts"}]}],
    [{"role": "user", "content": "ok"}, {"role": "user", "content": b"bytes"}],
]


@pytest.mark.parametrize("messages", BAD_MESSAGES, ids=range(len(BAD_MESSAGES)))
def test_bad_messages_are_refused(messages):
    with pytest.raises(BitnetError, match="messages"):
        render_chat(messages, BITNET_CHAT_TEMPLATE)


def test_template_cannot_change_callers_messages():
    chat = [{"role": "user", "content": "hi", "extra": {"k": 1}}]
    with pytest.warns(UserWarning):
        render_chat(chat, "{% set _ = messages[0].update({'content': 'changed'}) %}x")
    assert chat == [{"role": "user", "content": "hi", "extra": {"k": 1}}]


# ---- hostile templates (issue: a chat template could freeze the server) ---------------------------
HOSTILE_TEMPLATES = {
    "huge power": "{% set x = 2**(2**33) %}",
    "nested loops over long strings": "{% for a in 'a'*10**4 %}{% for b in 'a'*10**4 %}{% endfor %}{% endfor %}",
    "repeated messages": "{% for m in messages*10**8 %}{% endfor %}",
    "format then repeat": "{{ '%s'|format('a') * 10**9 }}",
    "lipsum": "{{ lipsum(10**6) }}",
    "replace with a huge replacement": "{% set s = 'a'*100000 %}{{ s|replace('a', 'b'*100000) }}",
    "doubling with +": "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}"
                       "{% endfor %}",
    "doubling with ~": "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
                       "{% endfor %}",
    "doubling with join": "{% set ns = namespace(s='ab') %}{% for i in range(40) %}"
                          "{% set ns.s = [ns.s, ns.s]|join %}{% endfor %}",
    "doubling a list": "{% set ns = namespace(s=[1]) %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}"
                       "{% endfor %}",
    "squaring an integer": "{% set ns = namespace(n=3) %}{% for i in range(40) %}{% set ns.n = ns.n * ns.n %}"
                           "{% endfor %}",
    "printf width": "{{ '%0999999999d' % 1 }}",
    "format filter width": "{{ '%0999999999d'|format(1) }}",
    "str.format width": "{{ '{:>999999999}'.format(1) }}",
    "str.center": "{{ 'a'.center(999999999) }}",
    "slice count": "{{ [1]|slice(10**8)|list|length }}",
    "indent width": "{{ 'a\nb'|indent(10**8) }}",
    "tojson indent": "{{ messages|tojson(indent=10**8) }}",
    "macro fan-out": "{% macro f(n) %}{% if n < 60 %}{{ f(n+1) }}{{ f(n+1) }}{% endif %}{% endmacro %}{{ f(0) }}",
}


@pytest.mark.parametrize("name", HOSTILE_TEMPLATES)
def test_hostile_template_is_refused_quickly_in_process(name):
    t0 = time.perf_counter()
    with pytest.raises(ChatTemplateLimitError, match="refusing it"):
        render_chat(CHATS[0], HOSTILE_TEMPLATES[name])
    assert time.perf_counter() - t0 < 2


@pytest.mark.parametrize("name", ["huge power", "doubling with ~", "macro fan-out"])
def test_hostile_template_is_refused_by_the_worker(name):
    template = ChatTemplate(HOSTILE_TEMPLATES[name])
    try:
        t0 = time.perf_counter()
        template.render(CHATS[0])  # starts the worker
        pytest.fail("the hostile template rendered")
    except ChatTemplateLimitError:
        pass
    finally:
        template.close()
    assert time.perf_counter() - t0 < 5  # includes starting the worker on a loaded machine


def test_model_template_renders_in_the_worker_as_in_process():
    template = ChatTemplate(RICH_TEMPLATE)
    try:
        for chat in CHATS:
            assert template.render(chat, bos_token="<s>") == render_chat(chat, RICH_TEMPLATE, bos_token="<s>")
        assert template._worker._proc is not None  # it did go through the worker
    finally:
        template.close()


def test_worker_deadline_and_memory_wall():
    """What the hooks miss, the worker's deadline and address-space limit stop; the next render
    gets a fresh worker."""
    worker = TemplateWorker(memory_bytes=200 << 20)
    chat = [{"role": "user", "content": "hi"}]
    try:
        slow = {"template": HOSTILE_TEMPLATES["macro fan-out"], "messages": chat, "limit": 1 << 20, "context": {}}
        t0 = time.perf_counter()
        # 2^16 macro calls (the hooks' step budget) take well over 20 ms, so the deadline comes first
        # whatever the machine's speed; at 0.2 s a fast, idle machine reached the budget first.
        outcome, message = worker.render(slow, deadline_s=0.02)
        assert (outcome, time.perf_counter() - t0 < 1.5) == ("limit", True) and "did not render within" in message
        hungry = {"template": "{% set x = ('a' * 1000000)|list * 16 %}{% set y = x + x %}{{ y|length }}",
                  "messages": chat, "limit": 1 << 26, "context": {}}  # 32M pointers: 256 MB
        assert worker.render(hungry) == ("limit", "chat template needs more memory than a prompt may; refusing it")
        fine = {"template": "{{ messages[0].content }}!", "messages": chat, "limit": 1 << 20, "context": {}}
        assert worker.render(fine) == ("text", "hi!")
    finally:
        worker.close()


def test_broken_template_is_found_at_load():
    with pytest.warns(UserWarning, match="does not compile"):
        template = ChatTemplate(BROKEN_TEMPLATES["syntax error"])
    assert template._worker is None
    assert template.render(CHATS[0]) == "User: Hello!<|eot_id|>Assistant: "


def test_template_over_the_size_limit_falls_back_at_load():
    from bitnet.chat_worker import MAX_TEMPLATE_CHARS

    with pytest.warns(UserWarning, match=f"over the limit of {MAX_TEMPLATE_CHARS}"):
        template = ChatTemplate("{{ messages[0]['content'] }}" + " " * MAX_TEMPLATE_CHARS)
    assert template._worker is None


def test_large_real_sized_template_compiles_outside_the_render_deadline():
    """A big template (tool-calling ones run to ~20k characters) compiles in the worker under its
    own, longer deadline; the renders after it are fast."""
    big = "".join(f"{{% if messages[0]['role'] == 'r{i}' %}}{{{{ 'x{i}' }}}}{{% endif %}}" for i in range(600))
    big += "{{ messages[0]['content'] }}"
    template = ChatTemplate(big)
    try:
        assert template.render(CHATS[0]) == "Hello!"
        t0 = time.perf_counter()
        assert template.render(CHATS[0]) == "Hello!"
        assert time.perf_counter() - t0 < 0.5
    finally:
        template.close()
