"""`Model`: the package's front door, shaped like llama-cpp-python's `Llama`."""

from __future__ import annotations

import hashlib
import operator
import os
import re
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bitnet import completions, paths
from bitnet.chat_worker import ChatTemplate
from bitnet.engine import NativeContext, NativeModel
from bitnet.errors import BitnetError, ContextOverflow
from bitnet.generation import MAX_TOP_LOGPROBS, Emission, Generation, GenerationRequest, SamplingOptions
from bitnet.speculation import decode_steps, use_lookup
from bitnet.tokenizer import Tokenizer


INT32_MAX = 2**31 - 1  # the C API counts tokens and threads in int32_t
# Prompt byte cap: a prompt that fits the context averages a few bytes per token; 64 per token
# leaves room for any real text, while text far beyond it could only be refused after paying
# for its tokenization (about 1 s per MiB on one core).
PROMPT_BYTES_PER_TOKEN = 64
PROMPT_BYTES_FLOOR = 1 << 20
SHA256_CHUNK_BYTES = 8 << 20
SHA256_PROGRESS_MIN_BYTES = 256 << 20  # show a progress bar (on a terminal) from this size
# The demo model (utils/train_tiny_bitnet.py made it), in the wheel or the checkout's models/:
# what Model() and run_inference.py load when no model is named.
DEFAULT_MODEL = paths.demo_model()
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_SURROGATES = re.compile(r"[\ud800-\udfff]")


def default_max_prompt_bytes(n_ctx: int) -> int:
    """The default prompt cap in UTF-8 bytes: max(1 MiB, 64 bytes x n_ctx)."""
    return max(PROMPT_BYTES_FLOOR, PROMPT_BYTES_PER_TOKEN * n_ctx)


def parse_sha256(text: str) -> str:
    """A SHA-256 digest as 64 lower-case hex digits; BitnetError if `text` is not one."""
    if not isinstance(text, str) or not _SHA256_HEX.fullmatch(text.strip()):
        raise BitnetError(f"a SHA-256 must be 64 hexadecimal digits, got {str(text)[:80]!r}")
    return text.strip().lower()


def file_sha256(path: str | os.PathLike, progress: bool | None = None) -> str:
    """The file's SHA-256 (hex), read in chunks; progress=None shows a bar for big files on a terminal."""
    size = os.path.getsize(path)
    if progress is None:
        progress = size >= SHA256_PROGRESS_MIN_BYTES and sys.stderr.isatty()
    from tqdm import tqdm

    digest, buf = hashlib.sha256(), bytearray(SHA256_CHUNK_BYTES)
    view = memoryview(buf)
    with open(path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, leave=False,
                                     desc="sha256", disable=not progress, file=sys.stderr) as bar:
        while n := f.readinto(buf):
            digest.update(view[:n])
            bar.update(n)
    return digest.hexdigest()


def _file_identity(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _count(name: str, value, lo: int, hint: str = "") -> int:
    """An integer argument in [lo, INT32_MAX] (what the C API can hold), as a Python int."""
    try:
        value = operator.index(value)
    except TypeError:
        raise BitnetError(f"{name} must be an integer, got {value!r}") from None
    if not lo <= value <= INT32_MAX:
        raise BitnetError(f"{name} must be in [{lo}, {INT32_MAX}]{hint}, got {value}")
    return value


def default_model_path() -> Path:
    """The demo model's GGUF; FileNotFoundError (saying what to do) where it is not installed."""
    if not DEFAULT_MODEL.is_file():
        raise FileNotFoundError(f"no model given, and the demo model is not at {DEFAULT_MODEL} (the package or "
                                "checkout is incomplete): name a GGUF file")
    return DEFAULT_MODEL


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class Model:
    """A GGUF model loaded into the engine, with its tokenizer and chat template.

    >>> m = Model("model.gguf", n_threads=2, n_ctx=2048)
    >>> m.generate("Once upon a time", max_tokens=16, temperature=0)

    model_path None loads the demo model that ships in models/ (DEFAULT_MODEL).

    max_prompt_bytes caps every text the model tokenizes (prompts, rendered chat prompts, the
    messages before rendering) in UTF-8 bytes, checked before tokenization so that hostile
    input cannot buy unbounded tokenizer time; None = max(1 MiB, 64 bytes x n_ctx), far above
    any text that fits the context (a few bytes per token). A prompt over the context in tokens
    is an error too, never silently cut.
    model_sha256 pins the file: its SHA-256 (64 hex digits) is checked before it is loaded.
    device "cuda" (or "cuda:N") runs the forward pass on a GPU (bitnet.gpu: torch + triton; with
    TRITON_INTERPRET=1 the same code runs on CPU tensors); "cpu" (default) runs the engine.
    head_act "int8" quantizes the output head's activations to int8 per block (Q8_0 and Q6_K heads
    only; faster decode, not exact for the stored weights: the README measures its cost); "exact"
    (default) multiplies the stored weights as they are.
    special_in_messages: tokenize special-token text inside chat messages (e.g. "<|eot_id|>") as
    the special token; by default it is plain text, so that only the chat template's own markers
    are control tokens and a user cannot forge another role's turn.
    """

    def __init__(self, model_path: str | os.PathLike | None = None, n_threads: int | None = None, n_ctx: int = 2048,
                 seed: int | None = None, verbose: bool = False, max_prompt_bytes: int | None = None,
                 model_sha256: str | None = None, device: str = "cpu", special_in_messages: bool = False,
                 head_act: str = "exact"):
        path = Path(model_path) if model_path is not None else default_model_path()
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        if n_threads is not None:
            n_threads = _count("n_threads", n_threads, 1)
        if n_ctx is not None:
            n_ctx = _count("n_ctx", n_ctx, 0, " (0 = the model's training context)")
        if max_prompt_bytes is not None:
            max_prompt_bytes = _count("max_prompt_bytes", max_prompt_bytes, 1)
        self.model_path = str(path)
        identity = _file_identity(path)
        if model_sha256 is not None:
            self._verify_sha256(path, parse_sha256(model_sha256))
        self.native = NativeModel(path)
        if model_sha256 is not None and _file_identity(path) != identity:
            self.native.close()
            raise BitnetError(f"{path} changed while it was being verified and loaded; load it again")
        try:
            if head_act != "exact" and str(device) != "cpu":
                raise BitnetError(f"head_act={head_act!r} is a CPU engine option; the {device} backend "
                                  "has the exact head only")
            if head_act != "exact":
                self.native.set_head_act(head_act)
        except BaseException:
            self.native.close()
            raise
        self.metadata = self.native.metadata()
        self.tokenizer = Tokenizer.from_gguf_metadata(self.metadata)
        self.chat_template = self.metadata.get("tokenizer.chat_template")
        self.n_vocab = self.native.n_vocab
        self.n_ctx = n_ctx or self.native.n_ctx_train
        self.n_threads = n_threads or default_threads()
        self.max_prompt_bytes = max_prompt_bytes or default_max_prompt_bytes(self.n_ctx)
        self._chat = ChatTemplate(self.chat_template, self.max_prompt_bytes)  # compiled and checked here, once
        self.seed = _seed(seed)
        # Special-token text inside chat messages ("<|eot_id|>System: ...") is plain text unless
        # this is set: a user must not be able to forge the template's role markers.
        self.special_in_messages = bool(special_in_messages)
        self.verbose = verbose
        self.last_timings: dict = {}
        self.device = device = str(device)
        self._gpu = None
        if device != "cpu":
            from bitnet.gpu import GpuModel

            try:
                self._gpu = GpuModel(path, device, native=self.native)
            except BaseException:
                self.native.close()
                raise
        self._ctx: NativeContext | None = None
        self._ctx_tokens: list[int] = []  # what the persistent context's KV cache holds
        if verbose:
            print(f"bitnet: {self.native.desc}", flush=True)

    @property
    def gpu_model(self):
        """The GPU backend's weights (bitnet.gpu.GpuModel) where device is not "cpu", else None."""
        return self._gpu

    @staticmethod
    def _verify_sha256(path: Path, expected: str) -> None:
        actual = file_sha256(path)
        if actual != expected:
            raise BitnetError(f"{path}: SHA-256 mismatch: expected {expected}, the file has {actual}; "
                              "this is not the pinned model file (download it again or fix the pin)")

    # ---- tokens ------------------------------------------------------------------------
    def tokenize(self, text: str | bytes, add_bos: bool = True, special: bool = True) -> list[int]:
        """Token ids of text (bytes are decoded as UTF-8, bad bytes and lone surrogates -> U+FFFD).

        Raises BitnetError, before any tokenization, when text is over max_prompt_bytes.
        """
        if isinstance(text, (bytes, bytearray, memoryview)):
            data = bytes(text)
            self._check_prompt_bytes(len(data), "the prompt")
            text = data.decode("utf-8", errors="replace")
        else:
            if not isinstance(text, str):
                raise BitnetError(f"the prompt must be a str or bytes, got {type(text).__name__}")
            self._check_prompt_bytes(_utf8_len(text), "the prompt")
            if _SURROGATES.search(text):  # e.g. undecodable bytes of argv; tokenizers refuses them
                text = _SURROGATES.sub("\ufffd", text)
        return self.tokenizer.encode(text, add_bos=add_bos, special=special)

    def _check_prompt_bytes(self, n_bytes: int, what: str) -> None:
        if n_bytes > self.max_prompt_bytes:
            raise BitnetError(f"{what} is {n_bytes} bytes, over the limit of {self.max_prompt_bytes} bytes; "
                              "shorten it (or raise max_prompt_bytes)")

    def detokenize(self, ids) -> str:
        return self.tokenizer.decode(list(ids))

    # ---- raw logits ------------------------------------------------------------------------
    def logits(self, token_ids) -> np.ndarray:
        """float32 [len(token_ids), n_vocab], computed in a fresh context."""
        ids = [_token_id(t) for t in token_ids]
        if not ids:
            raise BitnetError("logits() needs at least one token id")
        self._check_vocab(ids)
        ctx = self._new_context(len(ids))
        try:
            return ctx.decode(ids, all_logits=True)
        finally:
            ctx.close()

    # ---- embeddings (embedding.py) -----------------------------------------------------------
    def embed(self, texts, normalize: int = 2, pooling: str | None = None) -> np.ndarray:
        """float32 [len(texts), n_embd]: each text (or token-id list) pooled as the model's file says
        (last token unless it names mean/cls) and L2-normalized (normalize: llama-embedding's
        --embd-normalize; -1 none). Texts share batched passes over the weights."""
        return self.embed_with_usage(texts, normalize, pooling)[0]

    def embed_with_usage(self, texts, normalize: int = 2, pooling: str | None = None) -> tuple[np.ndarray, int]:
        """embed() and the number of tokens it ran."""
        if isinstance(texts, (str, bytes)):
            texts = [texts]
        return self._embedding_runner().embed(list(texts), pooling, normalize)

    def embedding_token_ids(self, text: str) -> list[int]:
        """The token ids embed() runs for text (with the BOS / end token the model's file asks for)."""
        return self._embedding_runner().token_ids(text)

    def _embedding_runner(self):
        from bitnet.embedding import Embedder

        if getattr(self, "_embedder", None) is None:
            self._embedder = Embedder(self)
        return self._embedder

    # ---- generation --------------------------------------------------------------------------
    def generate(self, prompt: str | list[int], max_tokens: int | None = 128, temperature: float = 0.8,
                 top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0,
                 seed: int | None = None, stop: str | list[str] | None = None, stream: bool = False,
                 **options):
        """Text generated after `prompt`: a str, or an iterator of pieces when stream=True."""
        opts = self._options(max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                             min_p=min_p, repeat_penalty=repeat_penalty, seed=seed, stop=stop, **options)
        pieces = (e.text for e in self.run_generation(self._request(self._prompt_ids(prompt), opts)))
        if stream:
            return (piece for piece in pieces if piece)
        return "".join(pieces)

    def generate_tokens(self, prompt: str | list[int], max_tokens: int | None = 128, **options) -> Iterator[int]:
        """Sampled token ids after `prompt`, stopping at an end-of-generation token."""
        opts = self._options(max_tokens=max_tokens, **options)
        emissions = self.run_generation(self._request(self._prompt_ids(prompt), opts))
        return (e.token for e in emissions if e.token is not None)

    def create_completion(self, prompt: str | list[int], max_tokens: int | None = 16, stream: bool = False,
                          logprobs: int | None = None, stream_options: dict | None = None, **options):
        """OpenAI "text_completion" dict, or an iterator of its stream chunks.

        logprobs=k adds each token's log-probability and its k most likely rivals (0 <= k <= 20);
        stream_options={"include_usage": True} ends a stream with a usage chunk.
        """
        request = self.prepare_completion(prompt, max_tokens=max_tokens, logprobs=logprobs, **options)
        return self._respond(request, False, stream, stream_options)

    __call__ = create_completion

    def create_chat_completion(self, messages: list[dict], max_tokens: int | None = None, stream: bool = False,
                               logprobs: bool = False, top_logprobs: int | None = None,
                               stream_options: dict | None = None, **options):
        """OpenAI "chat.completion" dict, or an iterator of "chat.completion.chunk" dicts."""
        request = self.prepare_chat(messages, max_tokens=max_tokens, logprobs=logprobs, top_logprobs=top_logprobs,
                                    **options)
        return self._respond(request, True, stream, stream_options)

    # The request logic of create_completion / create_chat_completion, which the server shares:
    # prepare_* checks a request and tokenizes it (no engine work), a `Generation` samples it,
    # and completions.ResultBuilder shapes the result.
    def prepare_completion(self, prompt: str | list[int], max_tokens: int | None = 16, logprobs: int | None = None,
                           **options) -> GenerationRequest:
        """The checked request of create_completion: prompt ids, options (aliases resolved), seed."""
        opts = self._options(max_tokens=max_tokens, logprobs=_logprobs_count(logprobs, "logprobs"), **options)
        return self._request(self._prompt_ids(prompt), opts)

    def prepare_chat(self, messages: list[dict], max_tokens: int | None = None, logprobs: bool = False,
                     top_logprobs: int | None = None, **options) -> GenerationRequest:
        """The checked request of create_chat_completion: the rendered prompt's ids, options, seed."""
        if top_logprobs is not None and not logprobs:
            raise BitnetError("top_logprobs needs logprobs=True")
        ids = self._chat_ids(messages)
        n_logprobs = _logprobs_count(top_logprobs or 0, "top_logprobs") if logprobs else None
        return self._request(ids, self._options(max_tokens=max_tokens, logprobs=n_logprobs, **options))

    def run_generation(self, request: GenerationRequest) -> Iterator[Emission]:
        """Run a prepared request on the model's persistent context (its cached prefix reused);
        the last emission has the finish reason. Sets last_timings."""
        ids = request.prompt_ids
        t0 = time.perf_counter()
        generation = Generation(self.tokenizer, request)
        try:
            ctx, cached = self._context(ids)
            logits = ctx.decode(ids[cached:])
            self._ctx_tokens = list(ids)
            t1 = time.perf_counter()
            self.last_timings = {"n_prompt": len(ids) - cached, "prompt_ms": (t1 - t0) * 1e3, "n_gen": 0,
                                 "gen_ms": 0.0}
            # Prompt-lookup drafts only where the pick is deterministic (greedy): each is kept
            # only if the sampler would have picked it, so the output cannot change.
            lookup = use_lookup(request.options.lookup_decoding, self.native.size_bytes) and \
                request.options.temperature <= 0
            try:
                for emission in decode_steps(ctx, generation, logits, self._ctx_tokens, lookup):
                    self.last_timings["n_gen"] = generation.n_gen
                    self._update_gen_time(t1)
                    yield emission
            finally:
                self._update_gen_time(t1)
        finally:
            generation.close()

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The prompt text for messages; their text is held to max_prompt_bytes before rendering."""
        self._check_prompt_bytes(_messages_utf8_len(messages), "the messages' text")
        tok = self.tokenizer
        return self._chat.render(messages,
                                bos_token=tok.token_text(tok.bos_id) if tok.bos_id is not None else "",
                                eos_token=tok.token_text(tok.eos_id) if tok.eos_id is not None else "",
                                add_generation_prompt=add_generation_prompt)

    def reset(self):
        """Forget the cached prompt prefix (as llama-cpp-python's reset): the next call starts
        from an empty context."""
        if self._ctx is not None:
            self._ctx.truncate(0)
        self._ctx_tokens = []

    def close(self):
        self._chat.close()
        if getattr(self, "_embedder", None) is not None:
            self._embedder.close()
            self._embedder = None
        if self._ctx is not None:
            self._ctx.close()
            self._ctx = None
        if self._gpu is not None:
            self._gpu.close()
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
        """The prompt as token ids (Python ints), checked against the vocabulary and the context.

        A prompt must leave room for one generated token: len(ids) < n_ctx, or a BitnetError
        naming both numbers (never a silent cut). A list of ids is measured before it is copied.
        """
        if isinstance(prompt, (str, bytes, bytearray, memoryview)):
            ids = self.tokenize(prompt)
        else:
            if hasattr(prompt, "__len__"):
                self._check_prompt_tokens(len(prompt))
            ids = [_token_id(t) for t in prompt]
        if not ids:
            if self.tokenizer.bos_id is None:
                raise BitnetError("the prompt is empty and the model has no BOS token to start from")
            ids = [self.tokenizer.bos_id]
        self._check_vocab(ids)
        self._check_prompt_tokens(len(ids))
        return ids

    def _check_vocab(self, ids: list[int]) -> None:
        bad = next((t for t in ids if not 0 <= t < self.n_vocab), None)
        if bad is not None:
            raise BitnetError(f"token id {bad} is out of range [0, {self.n_vocab})")

    def _check_prompt_tokens(self, n_tokens: int) -> None:
        if n_tokens >= self.n_ctx:
            raise ContextOverflow(f"the prompt is {n_tokens} tokens but the context holds {self.n_ctx} "
                                  "(prompt and at least one generated token); shorten the prompt or raise n_ctx (-c)",
                                  n_tokens, self.n_ctx)

    def _chat_ids(self, messages) -> list[int]:
        text = self.apply_chat_template(messages, add_generation_prompt=True)
        if self.special_in_messages:
            ids = self.tokenize(text, add_bos=False, special=True)
        else:
            self._check_prompt_bytes(_utf8_len(text), "the prompt")
            text = _SURROGATES.sub("\ufffd", text)
            spans = _message_spans(text, messages, self.tokenizer.holds_special_text)
            ids = self.tokenizer.encode_with_plain_spans(text, spans)
        bos = self.tokenizer.bos_id
        if self.tokenizer.add_bos_token and bos is not None and (not ids or ids[0] != bos):
            ids.insert(0, bos)
        return self._prompt_ids(ids)

    def _context(self, ids: list[int]) -> tuple[NativeContext, int]:
        """The persistent context, with as much of ids' prefix kept in its cache as possible;
        returns it and how many of ids are already cached."""
        if self._ctx is None:
            self._ctx = self._new_context(self.n_ctx)
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

    def _new_context(self, n_ctx: int):
        """A KV cache of n_ctx tokens: the engine's, or the GPU backend's (same interface)."""
        if self._gpu is not None:
            return self._gpu.new_context(n_ctx)
        return NativeContext(self.native, n_ctx, self.n_threads)

    def _update_gen_time(self, t1: float):
        tm = self.last_timings
        tm["gen_ms"] = (time.perf_counter() - t1) * 1e3
        tm["prompt_tps"] = tm["n_prompt"] / max(tm["prompt_ms"], 1e-9) * 1e3
        tm["gen_tps"] = tm["n_gen"] / max(tm["gen_ms"], 1e-9) * 1e3

    def _request(self, ids: list[int], opts: SamplingOptions) -> GenerationRequest:
        seed = _seed(opts.seed) if opts.seed is not None else self.seed
        if seed is None or seed < 0:
            seed = secrets.randbits(63)
        return GenerationRequest(ids, opts, seed)

    def _respond(self, request: GenerationRequest, chat: bool, stream: bool, stream_options: dict | None):
        include_usage = stream and bool((stream_options or {}).get("include_usage"))
        builder = completions.ResultBuilder(chat, Path(self.model_path).name, len(request.prompt_ids),
                                            logprobs=request.options.logprobs is not None, null_usage=include_usage)
        emissions = self.run_generation(request)
        if stream:
            return self._chunks(builder, emissions, include_usage)
        for emission in emissions:
            builder.push(emission)
        return builder.result(self._n_cached(request))

    def _n_cached(self, request: GenerationRequest) -> int:
        """Prompt tokens the last generation found in the context's cache."""
        return len(request.prompt_ids) - self.last_timings["n_prompt"]

    def _chunks(self, builder: completions.ResultBuilder, emissions, include_usage: bool) -> Iterator[dict]:
        yield from builder.opening_chunks()
        for emission in emissions:
            yield from builder.push(emission)
        if include_usage:
            yield builder.usage_chunk(n_cached=builder.n_prompt - self.last_timings["n_prompt"])


def _utf8_len(text: str) -> int:
    """Bytes of text in UTF-8 (a lone surrogate counts 3, as the U+FFFD it becomes), measured
    a slice at a time so that a huge text is not copied whole."""
    if text.isascii():
        return len(text)
    step = 1 << 20
    return sum(len(text[i : i + step].encode("utf-8", errors="surrogatepass")) for i in range(0, len(text), step))


def _message_spans(text: str, messages, holds_special_text) -> list[tuple[int, int]]:
    """Where each message's text (as is, or stripped, as templates often do) lies in the rendered
    prompt, found in order; BitnetError for a message holding special-token text that the
    template changed beyond finding, since it could not be kept plain."""
    spans, cursor = [], 0
    for i, message in enumerate(messages):
        content = _SURROGATES.sub("\ufffd", message["content"])
        for candidate in (content, content.strip()):
            at = text.find(candidate, cursor) if candidate else -1
            if at >= 0:
                spans.append((at, at + len(candidate)))
                cursor = at + len(candidate)
                break
        else:
            if holds_special_text(content):
                raise BitnetError(f"messages[{i}]: the chat template changes this message's text, so special-token "
                                  "text in it cannot be kept plain; remove it")
    return spans


def _messages_utf8_len(messages) -> int:
    """UTF-8 bytes of the roles and contents of chat messages (malformed ones are chat.py's to refuse)."""
    if not isinstance(messages, (list, tuple)):
        return 0
    return sum(_utf8_len(v) for m in messages if isinstance(m, dict)
               for v in (m.get("role"), m.get("content")) if isinstance(v, str))


def _logprobs_count(value, name: str) -> int | None:
    """How many rival tokens to report per token (None: no log-probabilities)."""
    if value is None:
        return None
    try:
        count = operator.index(value) if not isinstance(value, bool) else None
    except TypeError:
        count = None
    if count is None or not 0 <= count <= MAX_TOP_LOGPROBS:
        raise BitnetError(f"{name} must be an integer in [0, {MAX_TOP_LOGPROBS}], got {value!r:.40}")
    return count


UINT64_MAX = 2**64 - 1  # the sampler's seed


def _seed(value) -> int | None:
    """A seed as the sampler takes it: None or -1 for a random one, else 0..2^64-1 (as the server)."""
    if value is None:
        return None
    try:
        seed = operator.index(value) if not isinstance(value, bool) else None
    except TypeError:
        seed = None
    if seed is None or not -1 <= seed <= UINT64_MAX:
        raise BitnetError(f"seed must be an integer in [0, {UINT64_MAX}] (or -1 for a random one), got {value!r:.40}")
    return seed


def _token_id(value) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise BitnetError(f"token ids must be integers, got {type(value).__name__} {value!r:.40}") from None
