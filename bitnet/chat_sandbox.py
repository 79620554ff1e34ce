"""The Jinja sandbox chat templates run in, with every way to buy time or memory capped.

A chat template comes from the model file, so it is hostile until proven otherwise. Jinja's
immutable sandbox keeps it away from Python internals; this environment also bounds its work:

- one budget of steps per render, spent by every loop iteration and every call (so nested
  loops over long strings, or macros that call themselves twice, stop early);
- operators that could build a huge value (`**`, `*`, `+`, `%`, `~`) check the result's size
  before computing it, as do `lipsum`, `range` and the string methods and filters that take a
  width or a count; any other string or list a call returns is measured too.

These give a clear error in-process. They are not a proof: the hard wall around a render of a
model's template is the worker process of chat_worker.py.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.compiler
import jinja2.nodes
import jinja2.runtime
import jinja2.sandbox

from bitnet.errors import BitnetError

# Loop iterations and calls one render may make together: a real template makes a few per
# message, so the budget is a base plus STEPS_PER_MESSAGE per message; 2^16 steps of the
# costliest kind (macro calls) take about a second.
MAX_STEPS = 1 << 16
STEPS_PER_MESSAGE = 64
MAX_INT_BITS = 1 << 12  # integers a template computes (2**4096 is far beyond any real use)
MAX_INT_ARGUMENT = 1 << 20  # a width, count or repeat handed to a call or filter
_DIGITS = re.compile(r"\d{7,}")  # a width/precision of >= 10^6 in a format string


class ChatTemplateLimitError(BitnetError):
    """A template tried to render more output, or loop more, than any real prompt needs."""


@dataclass
class _Budget:
    steps: int
    max_size: int  # longest string or list a template may build (the render's output cap)
    allowed: int = 0

    def __post_init__(self) -> None:
        self.allowed = self.steps


_budget: ContextVar[_Budget | None] = ContextVar("chat_template_budget", default=None)


def _current() -> _Budget:
    budget = _budget.get()
    if budget is None:  # rendering outside bounded_render(): use the default caps
        budget = _Budget(MAX_STEPS, 1 << 20)
        _budget.set(budget)
    return budget


def _step(n: int = 1) -> None:
    budget = _current()
    budget.steps -= n
    if budget.steps < 0:
        raise ChatTemplateLimitError(f"chat template loops or calls more than {budget.allowed} times; refusing it")


def _check_size(value: Any) -> Any:
    if isinstance(value, (str, bytes, list, tuple, dict)) and len(value) > _current().max_size:
        raise ChatTemplateLimitError(f"chat template builds a value of more than {_current().max_size} items; "
                                     "refusing it")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise ChatTemplateLimitError(f"chat template computes an integer over {MAX_INT_BITS} bits; refusing it")
    return value


def _refuse_size(n: float) -> None:
    if n > _current().max_size:
        raise ChatTemplateLimitError(f"chat template builds a value of more than {_current().max_size} items; "
                                     "refusing it")


def _check_format(spec: Any) -> None:
    if isinstance(spec, str) and _DIGITS.search(spec):
        raise ChatTemplateLimitError("chat template formats with a width of a million or more; refusing it")


def _check_arguments(args: tuple, kwargs: dict) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT_ARGUMENT:
            raise ChatTemplateLimitError(f"chat template passes {value} to a call (limit {MAX_INT_ARGUMENT}); "
                                         "refusing it")


def _sized(value: Any) -> int | None:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else None


def _bounded_power(left: Any, right: Any) -> Any:
    if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        if left.bit_length() * right > MAX_INT_BITS:
            raise ChatTemplateLimitError(f"chat template computes an integer over {MAX_INT_BITS} bits; refusing it")
    return _check_size(left**right)


def _bounded_mul(left: Any, right: Any) -> Any:
    for seq, count in ((left, right), (right, left)):
        if _sized(seq) is not None and isinstance(count, int):
            _refuse_size(_sized(seq) * count)
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise ChatTemplateLimitError(f"chat template computes an integer over {MAX_INT_BITS} bits; refusing it")
    return left * right


def _bounded_add(left: Any, right: Any) -> Any:
    if _sized(left) is not None and _sized(right) is not None:
        _refuse_size(_sized(left) + _sized(right))
    return _check_size(left + right)


def _bounded_mod(left: Any, right: Any) -> Any:
    if isinstance(left, str):
        _check_format(left)
        _refuse_size(len(left) + sum(len(str(v)) for v in (right if isinstance(right, tuple) else (right,))))
    return _check_size(left % right)


_BINOPS = {"**": _bounded_power, "*": _bounded_mul, "+": _bounded_add, "%": _bounded_mod}


def bounded_concat(values: tuple) -> str:
    """`a ~ b ~ ...`: str_join with the size checked before joining."""
    parts = [v if isinstance(v, str) else str(v) for v in values]
    _refuse_size(sum(map(len, parts)))
    return "".join(parts)


def _guard_iter(iterable: Any) -> Any:
    """Iterate as Jinja's for loop would, one budget step per item."""
    for item in iterable:
        _step()
        yield item


class _BoundedCodeGenerator(jinja2.compiler.CodeGenerator):
    def visit_Concat(self, node: jinja2.nodes.Concat, frame: jinja2.compiler.Frame) -> None:
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


def _bounded_replace(s: Any, old: Any, new: Any, count: Any = None) -> Any:
    if isinstance(s, str) and isinstance(old, str) and isinstance(new, str):
        hits = s.count(old) if old else len(s) + 1
        _refuse_size(len(s) + hits * len(new))
    return s.replace(old, new) if count is None else s.replace(old, new, count)


# Filters that build strings of a size their arguments choose get a size check before they
# run; every filter's result is measured after it.
_PRECHECKED_FILTERS = {"format": lambda s, *a, **k: _check_format(s)}


class BoundedSandbox(jinja2.sandbox.ImmutableSandboxedEnvironment):
    """The immutable sandbox with Jinja's operator hooks and call hook bounding every render."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset(_BINOPS)
    bounded_concat = staticmethod(bounded_concat)
    guard_iter = staticmethod(_guard_iter)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals["lipsum"] = _bounded_lipsum(self.globals["lipsum"])
        self.filters = {name: bounded_filter(name, f) for name, f in self.filters.items()}

    def _parse(self, source: str, name: str | None, filename: str | None) -> jinja2.nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(jinja2.nodes.For):
            # environment.guard_iter(<iterable>): Jinja allows no custom node types
            guard = jinja2.nodes.EnvironmentAttribute("guard_iter", lineno=loop.lineno)
            loop.iter = jinja2.nodes.Call(guard, [loop.iter], [], None, None, lineno=loop.lineno)
        return tree

    def call_binop(self, context: jinja2.runtime.Context, op: str, left: Any, right: Any) -> Any:
        return _BINOPS[op](left, right)

    def call(__self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _step()
        if not getattr(__obj, "checks_own_arguments", False):
            _check_arguments(args, kwargs)
        if isinstance(__obj, jinja2.runtime.LoopContext) and args:  # recursive loop: loop(children)
            args = (_guard_iter(args[0]), *args[1:])
        method = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        owner = getattr(method, "__self__", None)
        if isinstance(owner, str):
            if getattr(method, "__name__", "") in ("format", "format_map"):
                _check_format(owner)
            if getattr(method, "__name__", "") == "replace" and len(args) >= 2:
                return _check_size(_bounded_replace(owner, *args))
        return _check_size(super().call(__context, __obj, *args, **kwargs))

    def format_string(self, s: str, args: tuple, kwargs: dict, format_func: Any = None) -> str:
        _check_format(s)
        return _check_size(super().format_string(s, args, kwargs, format_func))


def bounded_filter(name: str, f: Any) -> Any:
    """f with its arguments and its result checked (every filter of BoundedSandbox is one)."""
    precheck = _PRECHECKED_FILTERS.get(name)
    replace = name == "replace"

    def bounded(*args: Any, **kwargs: Any) -> Any:
        _step()
        # The value a filter applies to comes first (after a context or environment argument).
        _check_arguments(tuple(a for a in args[1:] if not isinstance(a, (jinja2.runtime.Context, jinja2.Environment))),
                         kwargs)
        values = [a for a in args if not isinstance(a, (jinja2.runtime.Context, jinja2.Environment,
                                                         jinja2.nodes.EvalContext))]
        if precheck is not None and values:
            precheck(*values)
        if replace and len(values) >= 3:
            s, old, new = (str(v) if not isinstance(v, str) else v for v in values[:3])
            _refuse_size(len(s) + (s.count(old) if old else len(s) + 1) * len(new))
        return _check_size(f(*args, **kwargs))

    for attr in ("jinja_pass_arg",):  # keep pass_context / pass_environment / pass_eval_context
        if hasattr(f, attr):
            setattr(bounded, attr, getattr(f, attr))
    return bounded


def _bounded_lipsum(lipsum: Any) -> Any:
    def bounded(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002
        if not all(isinstance(v, int) for v in (n, min, max)) or n * max > _current().max_size // 8:
            raise ChatTemplateLimitError("chat template asks lipsum() for too much text; refusing it")
        return lipsum(n=n, html=html, min=min, max=max)

    return bounded


class bounded_render:  # noqa: N801 (a context manager used like a function)
    """`with bounded_render(max_size): ...`: one render's budget of steps and its size cap."""

    def __init__(self, max_size: int, steps: int = MAX_STEPS):
        self._budget = _Budget(steps, max_size)

    def __enter__(self) -> None:
        self._token = _budget.set(self._budget)

    def __exit__(self, *exc: Any) -> None:
        _budget.reset(self._token)

