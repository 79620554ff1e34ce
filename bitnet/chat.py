"""Chat templates: render a conversation to the prompt text a model was trained on.

Templates are Jinja, rendered the way transformers' `apply_chat_template` does (sandboxed,
trim_blocks + lstrip_blocks, `raise_exception`, `strftime_now`, a non-escaping `tojson`), so
that a model's own template gives the same prompt here as there. A template comes from the
model file, so it is untrusted: it runs in the immutable sandbox, its loops and its output are
bounded (chat_sandbox.py), and when it is missing or broken we fall back to BitNet's own format
with a warning. `Model` renders a model's template through chat_worker.ChatTemplate, which adds
the hard wall of a worker process.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.sandbox
import jinja2.utils

from bitnet.chat_sandbox import (
    MAX_STEPS,
    STEPS_PER_MESSAGE,
    BoundedSandbox,
    ChatTemplateLimitError,
    _step,
    bounded_filter,
    bounded_render,
)
from bitnet.errors import BitnetError

# microsoft/bitnet-b1.58-2B-4T's template: "<bos>System: ...<|eot_id|>User: ...<|eot_id|>Assistant: "
BITNET_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = message['role'] | capitalize + ': '+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}"
)

# Output allowed beyond twice the messages' own text: no real prompt comes near it.
MAX_RENDERED_CHARS = 1 << 20
MAX_RANGE_ITEMS = MAX_STEPS  # kept for callers of the old name


def _bounded_range(*args: int) -> range:
    items = jinja2.sandbox.safe_range(*args)  # also refuses a single range over 100k items
    _step(len(items))
    return items


_bounded_range.checks_own_arguments = True  # a range over 100k items is safe_range's error


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent=None, separators=None, sort_keys: bool = False) -> str:
    # Jinja's own tojson HTML-escapes (<, >, &, '), which would change the prompt.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _Namespace(jinja2.utils.Namespace):
    """namespace() that refuses underscore names, which reach Python internals."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # Jinja's signature trick: a "self" key stays allowed
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"chat template may not set {name!r} on a namespace")


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` (marks assistant text for training): renders the body."""

    tags: ClassVar[set[str]] = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body).set_lineno(lineno)


@functools.lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    env = BoundedSandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = bounded_filter("tojson", _tojson)
    env.globals.update(
        raise_exception=_raise_exception, strftime_now=_strftime_now, namespace=_Namespace, range=_bounded_range
    )
    return env.from_string(template)


def _check_messages(messages: Any) -> list[dict[str, str]]:
    """Plain {role, content} copies: the template sees nothing but strings."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise BitnetError("messages must be a non-empty list of {'role': str, 'content': str} dicts")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise BitnetError(f"messages[{i}] is a {type(message).__name__}, expected a dict with 'role' and 'content'")
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not role:
            raise BitnetError(f"messages[{i}]['role'] must be a non-empty string, got {role!r}")
        if not isinstance(content, str):
            raise BitnetError(f"messages[{i}]['content'] must be a string, got {type(content).__name__}")
        checked.append({"role": str(role), "content": str(content)})
    return checked


def _render(template: str, messages: list[dict[str, str]], limit: int, **context: Any) -> str:
    compiled = _compile(template)
    with bounded_render(limit, MAX_STEPS + STEPS_PER_MESSAGE * len(messages)):
        pieces, n_chars = [], 0
        for piece in compiled.generate(messages=messages, tools=None, documents=None, **context):
            n_chars += len(piece)
            if n_chars > limit:
                raise ChatTemplateLimitError(f"chat template renders more than {limit} characters; refusing it")
            pieces.append(piece)
        return "".join(pieces)


def render_chat(
    messages: Sequence[Mapping[str, str]],
    template: str | None = None,
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    max_chars: int = MAX_RENDERED_CHARS,
) -> str:
    """Prompt text for messages, as transformers' apply_chat_template(tokenize=False) renders it.

    template: the model's Jinja chat template (tokenizer.chat_template); None, empty, or one
    that fails to parse or render falls back to BITNET_CHAT_TEMPLATE with a warning.
    The result usually starts with bos_token: tokenize it without adding another BOS.
    Raises BitnetError for malformed messages and ChatTemplateLimitError (a BitnetError) for
    a template that renders more than max_chars beyond twice the messages' text.
    """
    checked, limit = prepare_messages(messages, max_chars)
    context = {"bos_token": bos_token, "eos_token": eos_token, "add_generation_prompt": add_generation_prompt}
    if template:
        outcome, value = render_untrusted(template, checked, limit, context)
        if outcome == "text":
            return value
        if outcome == "limit":
            raise ChatTemplateLimitError(value)
        warn_fallback(value)
    return _render(BITNET_CHAT_TEMPLATE, checked, limit, **context)


def prepare_messages(messages: Any, max_chars: int = MAX_RENDERED_CHARS) -> tuple[list[dict[str, str]], int]:
    """Checked plain copies of the messages, and the render's output cap in characters."""
    checked = _check_messages(messages)
    return checked, max_chars + 2 * sum(len(m["content"]) + len(m["role"]) for m in checked)


def render_untrusted(template: str, checked: list[dict[str, str]], limit: int, context: dict) -> tuple[str, str]:
    """Render a model's template in this process: ("text", prompt), ("limit", why it was
    stopped) or ("failed", why it does not work); never raises for the template's sake."""
    try:
        return "text", _render(template, checked, limit, **context)
    except ChatTemplateLimitError as e:
        return "limit", str(e)
    except MemoryError:
        return "limit", "chat template needs more memory than a prompt may; refusing it"
    except Exception as e:  # noqa: BLE001 (any parse or render failure of an untrusted template)
        return "failed", " ".join(f"{type(e).__name__}: {e}".split())[:200]


def check_template(template: str) -> str | None:
    """None if the template compiles, else why not (one line)."""
    try:
        _compile(template)
    except Exception as e:  # noqa: BLE001 (any parse failure of an untrusted template)
        return " ".join(f"{type(e).__name__}: {e}".split())[:200]
    return None


def warn_fallback(reason: str) -> None:
    warnings.warn(f"chat template failed ({reason}); using the built-in BitNet template", stacklevel=3)
