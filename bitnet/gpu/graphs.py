"""Decode steps replayed as CUDA graphs (a 2B-4T step is ~300 kernel launches; launched one by
one from Python they cost more than the GPU's work at batch 1). A graph holds
GpuContext.forward_step_static for attention over the first `bucket` cache positions (powers of
two from MIN_BUCKET up to n_ctx), so that a short context does not pay for reading the whole
cache; all are captured up front (a few for any n_ctx), so no step pays for a capture."""

from __future__ import annotations

import torch

from bitnet.errors import BitnetError

MIN_BUCKET = 64


def bucket_for(pos: int, n_ctx: int) -> int:
    """Cache positions the graph for a step at position pos attends over."""
    b = MIN_BUCKET
    while b <= pos:
        b *= 2
    return min(b, n_ctx)


def _bucket_starts(n_ctx: int) -> list[int]:
    starts, b = [0], MIN_BUCKET
    while b < n_ctx:
        starts.append(b)
        b *= 2
    return starts


class GraphedDecoder:
    """ctx's one-token-per-sequence decode step, captured per bucket, replayed per step."""

    def __init__(self, ctx):
        if ctx.model.device.type != "cuda":
            raise BitnetError("CUDA graphs need a CUDA device")
        self.ctx = ctx
        dev = ctx.model.device
        self.ids = torch.zeros(ctx.n_seq, dtype=torch.int64, device=dev)
        self.pos = torch.zeros((), dtype=torch.int64, device=dev)
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.pool = None  # one memory pool shared by every bucket's graph
        for bucket in sorted({bucket_for(p, ctx.n_ctx) for p in _bucket_starts(ctx.n_ctx)}):
            self._capture(bucket)

    def _capture(self, bucket: int):
        ctx, dev = self.ctx, self.ctx.model.device
        # The warm-up and capture runs write K/V where the next real step will write them anyway.
        self.pos.fill_(ctx.n_past)
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(2):  # compiles the Triton kernels (and autotunes them) outside the capture
                ctx.forward_step_static(self.ids, self.pos, bucket)
        torch.cuda.current_stream(dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool), torch.no_grad():
            logits = ctx.forward_step_static(self.ids, self.pos, bucket)
        self.pool = graph.pool()
        self.graphs[bucket] = (graph, logits)

    def step(self, tokens) -> torch.Tensor:
        """One token per sequence; logits [n_seq, vocab] (a buffer the next step overwrites)."""
        ctx = self.ctx
        if ctx.n_past >= ctx.n_ctx:
            raise BitnetError(f"context is full: {ctx.n_past} tokens")
        self.ids.copy_(torch.as_tensor(tokens, dtype=torch.int64).view(-1), non_blocking=True)
        self.pos.fill_(ctx.n_past)
        graph, logits = self.graphs[bucket_for(ctx.n_past, ctx.n_ctx)]
        graph.replay()
        ctx._n_past += 1
        return logits
