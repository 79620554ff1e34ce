"""`Model`: the package's front door, shaped like llama-cpp-python's `Llama`."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bitnet import chat, completions
from bitnet.engine import NativeContext, NativeModel, NativeSampler
from bitnet.errors import BitnetError
from bitnet.generation import SamplingOptions, TextStream
from bitnet.tokenizer import Tokenizer


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class Model:
    """A GGUF model loaded into the engine, with its tokenizer and chat template.

    >>> m = Model("model.gguf", n_threads=2, n_ctx=2048)
    >>> m.generate("Once upon a time", max_tokens=16, temperature=0)
    """

    def __init__(self, model_path: str | os.PathLike, n_threads: int | None = None, n_ctx: int = 2048,
                 seed: int | None = None, verbose: bool = False):
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        if n_threads is not None and n_threads < 1:
            raise BitnetError(f"n_threads must be >= 1, got {n_threads}")
        if n_ctx is not None and n_ctx < 0:
            raise BitnetError(f"n_ctx must be >= 0 (0 = the model's training context), got {n_ctx}")
        self.model_path = str(path)
        self.native = NativeModel(path)
        self.metadata = self.native.metadata()
        self.tokenizer = Tokenizer.from_gguf_metadata(self.metadata)
        self.chat_template = self.metadata.get("tokenizer.chat_template")
        self.n_vocab = self.native.n_vocab
        self.n_ctx = n_ctx or self.native.n_ctx_train
        self.n_threads = n_threads or default_threads()
        self.seed = seed
        self.verbose = verbose
        self.last_timings: dict = {}
        self._ctx: NativeContext | None = None
        self._ctx_tokens: list[int] = []  # what the persistent context's KV cache holds
        if verbose:
            print(f"bitnet: {self.native.desc}", flush=True)

    # ---- tokens ------------------------------------------------------------------------
    def tokenize(self, text: str | bytes, add_bos: bool = True, special: bool = True) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return self.tokenizer.encode(text, add_bos=add_bos, special=special)

    def detokenize(self, ids) -> str:
        return self.tokenizer.decode(list(ids))

    # ---- raw logits ------------------------------------------------------------------------
    def logits(self, token_ids) -> np.ndarray:
        """float32 [len(token_ids), n_vocab], computed in a fresh context."""
        ids = list(token_ids)
        if not ids:
            raise BitnetError("logits() needs at least one token id")
        ctx = NativeContext(self.native, len(ids), self.n_threads)
        try:
            return ctx.decode(ids, all_logits=True)
        finally:
            ctx.close()

    # ---- generation --------------------------------------------------------------------------
    def generate(self, prompt: str | list[int], max_tokens: int | None = 128, temperature: float = 0.8,
                 top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0,
                 seed: int | None = None, stop: str | list[str] | None = None, stream: bool = False,
                 **options):
        """Text generated after `prompt`: a str, or an iterator of pieces when stream=True."""
        opts = self._options(max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                             min_p=min_p, repeat_penalty=repeat_penalty, seed=seed, stop=stop, **options)
        ids = self._prompt_ids(prompt)
        pieces = self._stream_text(ids, opts)
        if stream:
            return (piece for piece, _ in pieces if piece)
        return "".join(piece for piece, _ in pieces)

    def generate_tokens(self, prompt: str | list[int], max_tokens: int | None = 128, **options) -> Iterator[int]:
        """Sampled token ids after `prompt`, stopping at an end-of-generation token."""
        opts = self._options(max_tokens=max_tokens, **options)
        return self._tokens(self._prompt_ids(prompt), opts)

    def create_completion(self, prompt: str | list[int], max_tokens: int | None = 16, stream: bool = False,
                          **options):
        """OpenAI "text_completion" dict, or an iterator of its stream chunks."""
        opts = self._options(max_tokens=max_tokens, **options)
        ids = self._prompt_ids(prompt)
        name = Path(self.model_path).name
        if stream:
            return self._completion_chunks(ids, opts, name)
        text, reason = self._collect(ids, opts)
        return completions.completion(name, text, reason, len(ids), self.last_timings["n_gen"])

    __call__ = create_completion

    def create_chat_completion(self, messages: list[dict], max_tokens: int | None = None, stream: bool = False,
                               **options):
        """OpenAI "chat.completion" dict, or an iterator of "chat.completion.chunk" dicts."""
        ids = self._chat_ids(messages)
        opts = self._options(max_tokens=max_tokens, **options)
        name = Path(self.model_path).name
        if stream:
            return self._chat_chunks(ids, opts, name)
        text, reason = self._collect(ids, opts)
        return completions.chat_completion(name, text, reason, len(ids), self.last_timings["n_gen"])

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        tok = self.tokenizer
        return chat.render_chat(messages, self.chat_template,
                                bos_token=tok.token_text(tok.bos_id) if tok.bos_id is not None else "",
                                eos_token=tok.token_text(tok.eos_id) if tok.eos_id is not None else "",
                                add_generation_prompt=add_generation_prompt)

    def close(self):
        if self._ctx is not None:
            self._ctx.close()
            self._ctx = None
        self.native.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- internals -----------------------------------------------------------------------------
    def _options(self, stop=None, **kw) -> SamplingOptions:
        aliases = {"max_completion_tokens": "max_tokens", "n_predict": "max_tokens", "temp": "temperature",
                   "repetition_penalty": "repeat_penalty"}
        kw = {aliases.get(k, k): v for k, v in kw.items()}
        known = SamplingOptions.__dataclass_fields__
        unknown = sorted(set(kw) - set(known))
        if unknown:
            raise BitnetError(f"unknown generation option(s): {', '.join(unknown)}")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        opts = SamplingOptions(**{k: v for k, v in kw.items() if v is not None or k == "max_tokens"}, stop=stops)
        if opts.max_tokens is None or opts.max_tokens < 0:
            opts.max_tokens = None
        return opts

    def _prompt_ids(self, prompt) -> list[int]:
        if isinstance(prompt, str):
            ids = self.tokenize(prompt)
        else:
            ids = [int(t) for t in prompt]
        if not ids:
            if self.tokenizer.bos_id is None:
                raise BitnetError("the prompt is empty and the model has no BOS token to start from")
            ids = [self.tokenizer.bos_id]
        bad = [t for t in ids if not 0 <= t < self.n_vocab]
        if bad:
            raise BitnetError(f"token id {bad[0]} is out of range [0, {self.n_vocab})")
        if len(ids) >= self.n_ctx:
            raise BitnetError(f"the prompt is {len(ids)} tokens but the context holds {self.n_ctx}; "
                              "shorten the prompt or raise n_ctx (-c)")
        return ids

    def _chat_ids(self, messages) -> list[int]:
        text = self.apply_chat_template(messages, add_generation_prompt=True)
        ids = self.tokenize(text, add_bos=False, special=True)
        bos = self.tokenizer.bos_id
        if self.tokenizer.add_bos_token and bos is not None and (not ids or ids[0] != bos):
            ids.insert(0, bos)
        return self._prompt_ids(ids)

    def _context(self, ids: list[int]) -> tuple[NativeContext, int]:
        """The persistent context, with as much of ids' prefix kept in its cache as possible;
        returns it and how many of ids are already cached."""
        if self._ctx is None:
            self._ctx = NativeContext(self.native, self.n_ctx, self.n_threads)
            self._ctx_tokens = []
        common = 0
        for a, b in zip(self._ctx_tokens, ids):
            if a != b:
                break
            common += 1
        common = min(common, len(ids) - 1)  # always decode one token to get logits
        self._ctx.truncate(common)
        self._ctx_tokens = self._ctx_tokens[:common]
        return self._ctx, common

    def _tokens(self, ids: list[int], opts: SamplingOptions) -> Iterator[int]:
        """Sampled token ids after the prompt; sets last_timings and self._finish_reason."""
        seed = opts.seed if opts.seed is not None else self.seed
        if seed is None or seed < 0:
            seed = secrets.randbits(63)
        sampler = NativeSampler(**opts.sampler_params(seed))
        self._finish_reason = "length"
        t0 = time.perf_counter()
        ctx, cached = self._context(ids)
        logits = ctx.decode(ids[cached:])
        self._ctx_tokens = list(ids)
        t1 = time.perf_counter()
        self.last_timings = {"n_prompt": len(ids) - cached, "prompt_ms": (t1 - t0) * 1e3, "n_gen": 0, "gen_ms": 0.0}
        for t in ids:
            sampler.accept(t)
        budget = opts.max_tokens if opts.max_tokens is not None else self.n_ctx
        try:
            while self.last_timings["n_gen"] < budget:
                token = sampler.sample(logits)
                if self.tokenizer.is_eog(token):
                    self._finish_reason = "stop"
                    break
                sampler.accept(token)
                self.last_timings["n_gen"] += 1
                self._update_gen_time(t1)
                yield token
                if ctx.n_past >= ctx.n_ctx:
                    break
                logits = ctx.decode([token])
                self._ctx_tokens.append(token)
        finally:
            self._update_gen_time(t1)
            sampler.close()

    def _update_gen_time(self, t1: float):
        tm = self.last_timings
        tm["gen_ms"] = (time.perf_counter() - t1) * 1e3
        tm["prompt_tps"] = tm["n_prompt"] / max(tm["prompt_ms"], 1e-9) * 1e3
        tm["gen_tps"] = tm["n_gen"] / max(tm["gen_ms"], 1e-9) * 1e3

    def _stream_text(self, ids: list[int], opts: SamplingOptions) -> Iterator[tuple[str, str | None]]:
        """(piece, None) while generating, then ("rest", finish_reason) once."""
        text = TextStream(opts.stop)
        tokens = self._tokens(ids, opts)
        for token in tokens:
            piece = text.push(self.tokenizer.token_to_bytes(token))
            if text.stopped:
                tokens.close()
                yield piece, "stop"
                return
            if piece:
                yield piece, None
        yield text.flush(), self._finish_reason

    def _collect(self, ids, opts) -> tuple[str, str]:
        parts, reason = [], "length"
        for piece, finish in self._stream_text(ids, opts):
            parts.append(piece)
            reason = finish or reason
        return "".join(parts), reason

    def _completion_chunks(self, ids, opts, name) -> Iterator[dict]:
        cid, created = completions.new_stream_id("cmpl-")
        for piece, finish in self._stream_text(ids, opts):
            if piece or finish:
                yield completions.completion_chunk(cid, created, name, piece, finish)

    def _chat_chunks(self, ids, opts, name) -> Iterator[dict]:
        cid, created = completions.new_stream_id("chatcmpl-")
        yield completions.chat_chunk(cid, created, name, {"role": "assistant", "content": ""}, None)
        for piece, finish in self._stream_text(ids, opts):
            if piece:
                yield completions.chat_chunk(cid, created, name, {"content": piece}, None)
            if finish:
                yield completions.chat_chunk(cid, created, name, {}, finish)
