"""Request bodies as pydantic models: the type and range of every field, checked before anything
reaches the engine. Strict types (a string is not a number, 1.0 is not an integer, NaN and
Infinity are refused), unknown fields ignored (clients send many), ranges as OpenAI documents
them where it does and as the C API can hold otherwise. The models turn into keyword arguments
of `Model.prepare_completion` / `prepare_chat`, the request logic the Python API runs too."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from bitnet.generation import MAX_TOP_LOGPROBS

INT32_MAX = 2**31 - 1  # what the C API holds for counts
UINT64_MAX = 2**64 - 1  # the sampler's seed
MAX_STOPS = 16
MAX_STOP_CHARS = 256  # each token re-checks every stop's prefixes: keep that cheap
DEFAULT_COMPLETION_MAX_TOKENS = 16  # OpenAI's default for /v1/completions, and Model.create_completion's
# top_p = 0 (allowed by OpenAI) keeps only the most likely token; the sampler wants top_p > 0.
SMALLEST_TOP_P = float(np.finfo(np.float32).tiny)

Count = Annotated[int, Field(ge=0, le=INT32_MAX)]
TokenId = Annotated[int, Field(ge=0, le=INT32_MAX)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
Multiplier = Annotated[float, Field(gt=0.0, le=100.0)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
StopString = Annotated[str, Field(max_length=MAX_STOP_CHARS)]
_SURROGATES = re.compile(r"[\ud800-\udfff]")


def _replace_surrogates(text: str) -> str:
    """JSON may carry lone surrogates ("\\ud800"); as U+FFFD, what the tokenizer makes of them
    too, text we send back (a rendered template, say) stays encodable as UTF-8."""
    return _SURROGATES.sub("\ufffd", text) if _SURROGATES.search(text) else text


Text = Annotated[str, AfterValidator(_replace_surrogates)]


class RequestModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)


class StreamOptions(RequestModel):
    include_usage: bool = False


MAX_N = 128  # choices per request; the server's --n-max is the working limit
MAX_BATCH = 64  # prompts per /v1/completions request
BiasValue = Annotated[float, Field(ge=-100.0, le=100.0)]


class JsonSchemaFormat(RequestModel):
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None  # the schema is always enforced: strict or not, the output conforms


class ResponseFormat(RequestModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")  # llama.cpp's json_object with a schema

    def constraint(self) -> tuple[str, Any] | None:
        """("json_schema", schema) for the JSON formats, None for text."""
        if self.type == "text":
            return None
        if self.type == "json_schema":
            if self.json_schema is None or self.json_schema.schema_ is None:
                raise ValueError("response_format json_schema needs json_schema.schema")
            return "json_schema", self.json_schema.schema_
        return "json_schema", self.schema_  # json_object: any object, or llama.cpp's schema


class GenerationFields(RequestModel):
    """The fields of both completion endpoints (OpenAI's names, llama.cpp's where they differ)."""

    model: str | None = None  # one model per server: any name is accepted
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Count | None = None
    n_predict: Annotated[int, Field(ge=-1, le=INT32_MAX)] | None = None  # llama.cpp's; -1: no limit
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Probability | None = None
    top_k: Count | None = None
    min_p: Probability | None = None
    seed: Annotated[int, Field(ge=-1, le=UINT64_MAX)] | None = None  # -1: a random one (llama.cpp)
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    repetition_penalty: Multiplier | None = None
    repeat_penalty: Multiplier | None = None  # llama.cpp's name
    repeat_last_n: Annotated[int, Field(ge=-1, le=INT32_MAX)] | None = None
    stop: Annotated[list[StopString], Field(max_length=MAX_STOPS)] | None = None
    n: Annotated[int, Field(ge=1, le=MAX_N)] | None = None
    user: str | None = None
    logit_bias: dict[str, BiasValue] | None = None  # token id (as a string) -> bias
    response_format: ResponseFormat | None = None
    json_schema: dict[str, Any] | None = None  # llama.cpp's
    grammar: str | None = None  # llama.cpp's GBNF

    @field_validator("logit_bias")
    @classmethod
    def _integer_keys(cls, value: dict | None) -> dict | None:
        for key in value or {}:
            if not key.strip().isdigit():
                raise ValueError(f"logit_bias keys must be token ids, got {key[:40]!r}")
        return value

    def constraint(self) -> tuple[str, Any] | None:
        """The output constraint asked for: ("json_schema", schema | None) or ("gbnf", text)."""
        asked = [c for c in (self.response_format.constraint() if self.response_format else None,
                             ("json_schema", self.json_schema) if self.json_schema is not None else None,
                             ("gbnf", self.grammar) if self.grammar is not None else None) if c is not None]
        if len(asked) > 1:
            raise ValueError("give one of response_format, json_schema and grammar")
        return asked[0] if asked else None

    def bias_by_id(self) -> dict[int, float] | None:
        return {int(k): v for k, v in self.logit_bias.items()} if self.logit_bias else None

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop_string(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def generation_kwargs(self, default_max_tokens: int | None, server_max_tokens: int) -> dict:
        """Keyword arguments for Model.prepare_*: the sampling fields that were given, and
        max_tokens held to the server's cap (server_max_tokens < 0: no cap but the context)."""
        kw: dict[str, Any] = {}
        for name in ("temperature", "top_k", "min_p", "presence_penalty", "frequency_penalty", "repeat_last_n"):
            value = getattr(self, name)
            if value is not None:
                kw[name] = value
        if self.top_p is not None:
            kw["top_p"] = self.top_p or SMALLEST_TOP_P
        penalty = self.repeat_penalty if self.repeat_penalty is not None else self.repetition_penalty
        if penalty is not None:
            kw["repeat_penalty"] = penalty
        if self.seed is not None and self.seed >= 0:
            kw["seed"] = self.seed
        kw["stop"] = self.stop
        kw["max_tokens"] = _capped(self._requested_max_tokens(default_max_tokens), server_max_tokens)
        return kw

    def _requested_max_tokens(self, default: int | None) -> int | None:
        for value in (getattr(self, "max_completion_tokens", None), self.max_tokens, self.n_predict):
            if value is not None:
                return None if value < 0 else value
        return default

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


def _capped(requested: int | None, cap: int) -> int | None:
    if cap < 0:
        return requested
    return cap if requested is None else min(requested, cap)


class ChatMessage(RequestModel):
    role: Annotated[Text, Field(min_length=1)]
    content: Text = ""  # also OpenAI's list of content parts, joined (text parts only)

    @field_validator("content", mode="before")
    @classmethod
    def _text_of_parts(cls, value: Any) -> Any:
        if value is None:  # an assistant message that only called tools
            return ""
        if not isinstance(value, list):
            return value
        texts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ValueError(f"only text content parts are supported, got {str(kind)[:40]!r}")
            texts.append(part["text"])
        return "".join(texts)


class ChatCompletionRequest(GenerationFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Count | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None

    def messages_as_dicts(self) -> list[dict]:
        return [{"role": m.role, "content": m.content} for m in self.messages]

    def prepare_kwargs(self, server_max_tokens: int) -> dict:
        kw = self.generation_kwargs(None, server_max_tokens)
        kw["logprobs"] = bool(self.logprobs)
        kw["top_logprobs"] = self.top_logprobs
        return kw


class CompletionRequest(GenerationFields):
    # a string, a list of ids, or a batch: a list of strings / of lists of ids
    prompt: Text | list[TokenId] | Annotated[list[Text | list[TokenId]], Field(min_length=1, max_length=MAX_BATCH)] = ""
    logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    echo: bool = False
    best_of: Annotated[int, Field(ge=1, le=1)] | None = None

    def prompts(self) -> list:
        """The batch of prompts (one for a single prompt)."""
        p = self.prompt
        if isinstance(p, list) and p and isinstance(p[0], (str, list)):
            return list(p)
        return [p]

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool) -> bool:
        if value:
            raise ValueError("echo is not supported")
        return value

    def prepare_kwargs(self, server_max_tokens: int) -> dict:
        kw = self.generation_kwargs(DEFAULT_COMPLETION_MAX_TOKENS, server_max_tokens)
        kw["logprobs"] = self.logprobs
        return kw


class TokenizeRequest(RequestModel):
    content: Text
    add_special: bool = False  # llama.cpp's default: no BOS
    with_pieces: bool = False


class DetokenizeRequest(RequestModel):
    tokens: list[TokenId]


class ApplyTemplateRequest(RequestModel):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    add_generation_prompt: bool = True

    def messages_as_dicts(self) -> list[dict]:
        return [{"role": m.role, "content": m.content} for m in self.messages]
