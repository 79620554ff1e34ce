"""Decode steps replayed as one CUDA graph (a 2B-4T step is ~300 kernel launches; launched one
by one from Python they cost more than the GPU's work at batch 1). The graph holds
GpuContext.forward_step_static, whose shapes do not depend on the position."""

from __future__ import annotations

import torch

from bitnet.errors import BitnetError


class GraphedDecoder:
    """ctx's one-token-per-sequence decode step, captured once, replayed per step."""

    def __init__(self, ctx):
        if ctx.model.device.type != "cuda":
            raise BitnetError("CUDA graphs need a CUDA device")
        self.ctx = ctx
        dev = ctx.model.device
        self.ids = torch.zeros(ctx.n_seq, dtype=torch.int64, device=dev)
        # the warm-up and capture runs write K/V where the next real step will write them anyway
        self.pos = torch.full((), ctx.n_past, dtype=torch.int64, device=dev)
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(2):  # compiles the Triton kernels and settles the allocator
                ctx.forward_step_static(self.ids, self.pos)
        torch.cuda.current_stream(dev).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.no_grad():
            self.logits = ctx.forward_step_static(self.ids, self.pos)

    def step(self, tokens) -> torch.Tensor:
        """One token per sequence; logits [n_seq, vocab] (a buffer the next step overwrites)."""
        ctx = self.ctx
        if ctx.n_past >= ctx.n_ctx:
            raise BitnetError(f"context is full: {ctx.n_past} tokens")
        self.ids.copy_(torch.as_tensor(tokens, dtype=torch.int64).view(-1), non_blocking=True)
        self.pos.fill_(ctx.n_past)
        self.graph.replay()
        ctx._n_past += 1
        return self.logits
