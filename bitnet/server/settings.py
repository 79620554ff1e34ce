"""What a server is asked to be: the model, its contexts, its slots and its limits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MIB = 1 << 20


@dataclass(frozen=True)
class ServerSettings:
    """Everything the app needs (host and port are uvicorn's business, in cli.py).

    n_ctx is the context of EACH slot (prompt + reply of one request), so memory grows with
    n_parallel; n_predict caps every request's max_tokens (-1: only the context does).
    """

    model_path: str
    model_sha256: str | None = None
    head_act: str = "exact"  # the output head's activations (bitnet.Model's head_act)
    alias: str | None = None  # the model id clients see; default: the file name
    n_threads: int = 1
    n_ctx: int = 2048
    n_predict: int = -1
    n_parallel: int = 1
    n_max: int = 8  # choices (n) per request
    queue_size: int = 64  # requests that may wait for a slot; more get 503 + Retry-After
    batch_size: int = 64  # prompt tokens per engine call: a cancel is seen between two of them
    api_keys: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    metrics: bool = False
    max_request_bytes: int | None = None  # None: 2 x the prompt byte cap + 1 MiB (JSON escapes)
    retry_after_s: int = 1
    webui: bool = True  # the chat page at / (bitnet/server/webui/)
    # Hardening (hardening.py): the address served (for the Host check of a keyless server),
    # extra Host names allowed, and how long a request's body may take to arrive.
    host: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    body_timeout_s: float = 60.0
    # Where the slots run: "cpu" (the engine) or "cuda[:N]" (bitnet/gpu/batch.py's slot pool),
    # and the GPU's KV cache types (llama.cpp's -ctk / -ctv): f32, or f16 for half the memory.
    device: str = "cpu"
    cache_type_k: str = "f32"
    cache_type_v: str = "f32"

    @property
    def model_id(self) -> str:
        return self.alias or Path(self.model_path).name

    @property
    def request_byte_cap(self) -> int:
        from bitnet.model import default_max_prompt_bytes

        return self.max_request_bytes or 2 * default_max_prompt_bytes(self.n_ctx) + MIB
