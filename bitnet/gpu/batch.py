"""Continuous batching on the GPU: a SlotPool holds one KV cache for n_slots sequences, each at
its own position, and decodes one token for any subset of them in one pass over the weights.

Each slot's SlotContext has NativeContext's interface (decode, truncate, copy_prefix_from, n_ctx,
n_past, close), so the server's slots drive either. A prompt chunk runs through the slot alone
(forward.py's batched prefill, on the slot's part of the cache); one-token steps of several slots
run together (SlotPool.step): per-row RoPE position, cache write at each row's own position, and
attention over each row's own length.

A row's result does not depend on the other rows of the batch, bit for bit: ternary products are
exact integer sums scaled per element; RMSNorm and attention are row_kernels.py's one-program-
per-row kernels; the head's kernel sums each row in a fixed order (its tiles depend on the
matrix, not on the rows). So a request's greedy text does not change when others come and go.

On a CUDA device the step replays a CUDA graph per power-of-two row count (all captured when the
pool is made): rows beyond the live ones read and write a scratch slot that belongs to no
sequence, and the attention kernel reads each row's length from the device, so one graph serves
any positions.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch

from bitnet.errors import BitnetError
from bitnet.gpu import kernels
from bitnet.gpu.forward import GROUPS, GpuContext, GpuModel, rope_tables
from bitnet.gpu.row_kernels import decode_attention, rms_norm_rows

# llama.cpp's --cache-type-k / --cache-type-v names for the types this cache takes.
CACHE_TYPES = {"f32": torch.float32, "f16": torch.float16}


def cache_dtype(name: str) -> torch.dtype:
    if name not in CACHE_TYPES:
        raise BitnetError(f"KV cache type {name!r} is not one of {', '.join(CACHE_TYPES)}")
    return CACHE_TYPES[name]


class SlotContext(GpuContext):
    """One slot of a SlotPool: its part of the pool's cache, NativeContext's interface."""

    _norm = staticmethod(rms_norm_rows)  # row-wise in every pass, so no row depends on the batch

    def __init__(self, pool: SlotPool, index: int):  # no super().__init__: the pool owns the cache
        self.pool, self.index, self.model = pool, index, pool.model
        self.n_ctx, self.n_seq = pool.n_ctx, 1
        self.k_cache = pool.k_cache[:, index : index + 1]  # views: writes land in the pool's cache
        self.v_cache = pool.v_cache[:, index : index + 1]
        self.rope_cos, self.rope_sin = pool.rope_cos, pool.rope_sin
        self._n_past = 0
        self._graphs, self._graphed = False, None  # single steps go through the pool's step

    def decode(self, tokens, all_logits: bool = False, want_logits: bool = True) -> np.ndarray | None:
        if self.k_cache is None:
            raise BitnetError("this context (or its pool) is closed")
        ids = np.ascontiguousarray(tokens, dtype=np.int64)
        if ids.ndim == 1 and ids.size == 1:  # a lone step: the batched step's code, one row
            row = self.pool.step([self], ids).cpu().numpy()
            return None if not want_logits else (row if all_logits else row[0])
        return super().decode(tokens, all_logits, want_logits)

    def copy_prefix_from(self, source: SlotContext, n_past: int):
        """Hold the first n_past cached positions of source (a slot of the same pool) and nothing after them."""
        if not isinstance(source, SlotContext) or source.pool is not self.pool:
            raise BitnetError("copy_prefix_from needs a slot of the same pool")
        if not 0 <= n_past <= source.n_past:
            raise BitnetError(f"cannot copy {n_past} positions from a context holding {source.n_past}")
        if source is not self:
            self.k_cache[:, 0, :n_past] = source.k_cache[:, 0, :n_past]
            self.v_cache[:, 0, :n_past] = source.v_cache[:, 0, :n_past]
        self._n_past = int(n_past)

    def close(self):
        self._n_past, self.k_cache, self.v_cache = 0, None, None  # the pool's memory goes with its last view


class SlotPool:
    """n_slots sequences' KV cache [n_layer, n_slots + 1, n_ctx, kv_dim] (the last slot is scratch)
    in f32 (DESIGN's contract) or f16 (cache_type_k / cache_type_v)."""

    def __init__(self, model: GpuModel, n_slots: int, n_ctx: int = 0, cache_type_k: str = "f32",
                 cache_type_v: str = "f32"):
        hp = model.hp
        self.model = model
        self.n_slots = int(n_slots)
        self.n_ctx = int(n_ctx) if n_ctx and n_ctx > 0 else hp.n_ctx_train
        self.cache_types = (cache_type_k, cache_type_v)
        shape = (hp.n_layer, self.n_slots + 1, self.n_ctx, hp.n_head_kv * hp.head_dim)
        try:
            self.k_cache = torch.zeros(shape, dtype=cache_dtype(cache_type_k), device=model.device)
            self.v_cache = torch.zeros(shape, dtype=cache_dtype(cache_type_v), device=model.device)
        except torch.OutOfMemoryError:
            raise BitnetError(f"out of device memory allocating {self.n_slots} x {self.n_ctx} tokens of KV cache") \
                from None
        cos, sin = rope_tables(hp, self.n_ctx)
        self.rope_cos, self.rope_sin = model._put(cos), model._put(sin)
        self.contexts = [SlotContext(self, i) for i in range(self.n_slots)]
        self._scratch = SlotContext(self, self.n_slots)  # runs the step's layers; pads graph batches
        self._graphed: GraphedRows | None = None
        if model.device.type == "cuda" and os.environ.get("BITNET_CUDA_GRAPHS", "1") != "0":
            try:
                self._graphed = GraphedRows(self)
            except Exception as exc:  # e.g. an operation that cannot be captured: run eagerly instead
                warnings.warn(f"bitnet.gpu: CUDA graphs off for batched steps ({type(exc).__name__}: {exc})",
                              stacklevel=2)

    def close(self):
        for ctx in self.contexts + [self._scratch]:
            ctx.close()
        self.contexts, self.k_cache, self.v_cache, self._graphed = [], None, None, None

    # ---- one token for each of several slots ----------------------------------------------------
    def step(self, contexts: list[SlotContext], tokens) -> torch.Tensor:
        """One token for each context (distinct slots of this pool, any positions) in one pass;
        logits [len(contexts), vocab] on the device, row i what contexts[i] alone would give."""
        ids = np.ascontiguousarray(tokens, dtype=np.int64).reshape(-1)
        if ids.size == 0 or ids.size != len(contexts):
            raise BitnetError("a batched step needs one token id per context")
        if any(not isinstance(c, SlotContext) or c.pool is not self for c in contexts) or \
                len({c.index for c in contexts}) != len(contexts):
            raise BitnetError("a batched step needs distinct slots of one pool")
        if self.k_cache is None or any(c.k_cache is None for c in contexts):
            raise BitnetError("this context (or its pool) is closed")
        full = next((c for c in contexts if c.n_past >= self.n_ctx), None)
        if full is not None:
            raise BitnetError(f"context is full: {full.n_past} cached + 1 new token > n_ctx {self.n_ctx}")
        bad = ids[(ids < 0) | (ids >= self.model.n_vocab)]
        if bad.size:
            raise BitnetError(f"token id {int(bad[0])} is out of range [0, {self.model.n_vocab})")
        slots = np.array([c.index for c in contexts], dtype=np.int64)
        pos = np.array([c.n_past for c in contexts], dtype=np.int64)
        if self._graphed is not None:
            logits = self._graphed.step(ids, slots, pos)
        else:
            put = lambda a: torch.from_numpy(a).to(self.model.device)  # noqa: E731
            with torch.no_grad():
                logits = self.forward_rows(put(ids), put(slots), put(pos))
        for c in contexts:
            c._n_past += 1
        return logits

    def decode_multi(self, contexts: list[SlotContext], tokens, greedy: list[bool] | None = None) -> list:
        """step(), with what crosses to the host per row: the argmax token id (an int; lowest id on
        ties, NaN and -inf never, -1 if nothing is left: the engine's greedy rule) where greedy[i],
        else the logits row (numpy f32) for the host's sampler."""
        logits = self.step(contexts, tokens)
        greedy = greedy or [False] * len(contexts)
        out: list = [None] * len(contexts)
        picked = [i for i, g in enumerate(greedy) if g]
        if picked:
            from bitnet.gpu.sampling import sample

            index = torch.tensor(picked, device=logits.device)
            for i, token in zip(picked, sample(logits.index_select(0, index), temperature=0).tolist()):
                out[i] = int(token)
        rest = [i for i, g in enumerate(greedy) if not g]
        if rest:
            rows = logits.index_select(0, torch.tensor(rest, device=logits.device)).cpu().numpy()
            for i, row in zip(rest, rows):
                out[i] = row
        return out

    def forward_rows(self, ids: torch.Tensor, slots: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Row r: token ids[r] at position pos[r] of slot slots[r] (device tensors [rows]); logits
        [rows, vocab]. Fixed shapes and no host reads: a CUDA graph can hold it."""
        md, hp, run = self.model, self.model.hp, self._scratch
        rows, hd = ids.shape[0], hp.head_dim
        cos = self.rope_cos.index_select(0, pos)[:, None]  # [rows, 1, half]
        sin = self.rope_sin.index_select(0, pos)[:, None]
        lengths = pos + 1
        scale = float(np.float32(1) / np.sqrt(np.float32(hd)))
        x = md.token_embd[ids].float()
        for il, layer in enumerate(md.layers):
            q, k, v = run._linears(rms_norm_rows(x, layer["attn_norm"], md.rms_eps), layer, GROUPS[0])
            q = run._rope_at(q.view(rows, hp.n_head, hd), cos, sin)
            k = run._rope_at(k.view(rows, hp.n_head_kv, hd), cos, sin)
            self.k_cache[il].index_put_((slots, pos), k.reshape(rows, -1).to(self.k_cache.dtype))
            self.v_cache[il].index_put_((slots, pos), v.reshape(rows, -1).to(self.v_cache.dtype))
            att = decode_attention(q, self.k_cache[il], self.v_cache[il], slots, lengths, scale)
            if hp.has_sub_norms:
                att = rms_norm_rows(att, layer["attn_sub_norm"], md.rms_eps)
            x = x + run._linears(att, layer, ("attn_output",))[0]
            x = x + run._ffn(layer, rms_norm_rows(x, layer["ffn_norm"], md.rms_eps))
        return kernels.dense_matmul(rms_norm_rows(x, md.output_norm, md.rms_eps), md.output)


def row_bucket(rows: int, n_slots: int) -> int:
    """Rows of the graph that runs a step of `rows` live rows: a power of two, at most n_slots."""
    b = 1
    while b < rows:
        b *= 2
    return min(b, n_slots)


class GraphedRows:
    """SlotPool.forward_rows captured as CUDA graphs, one per row bucket, all at creation (on the
    scratch slot alone, so capturing writes no sequence's cache and no step pays for a capture)."""

    def __init__(self, pool: SlotPool):
        if pool.model.device.type != "cuda":
            raise BitnetError("CUDA graphs need a CUDA device")
        self.pool = pool
        self.graphs: dict[int, tuple] = {}
        self.mem = None  # one memory pool shared by every bucket's graph
        for bucket in sorted({row_bucket(n, pool.n_slots) for n in range(1, pool.n_slots + 1)}):
            self._capture(bucket)

    def step(self, ids: np.ndarray, slots: np.ndarray, pos: np.ndarray) -> torch.Tensor:
        """forward_rows of these rows (a buffer the next step overwrites)."""
        n = ids.size
        graph, buffers, logits = self.graphs[row_bucket(n, self.pool.n_slots)]
        pad = buffers[0].shape[0] - n  # rows of the scratch slot at position 0
        for buf, a, fill in zip(buffers, (ids, slots, pos), (0, self.pool.n_slots, 0)):
            buf.copy_(torch.from_numpy(np.concatenate([a, np.full(pad, fill, dtype=np.int64)])), non_blocking=True)
        graph.replay()
        return logits[:n]

    def _capture(self, bucket: int):
        pool, dev = self.pool, self.pool.model.device
        buffers = [torch.zeros(bucket, dtype=torch.int64, device=dev) for _ in range(3)]  # ids, slots, positions
        buffers[1].fill_(pool.n_slots)
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(2):  # compiles (and autotunes) the kernels outside the capture
                pool.forward_rows(*buffers)
        torch.cuda.current_stream(dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.mem), torch.no_grad():
            logits = pool.forward_rows(*buffers)
        self.mem = graph.pool()
        self.graphs[bucket] = (graph, buffers, logits)
