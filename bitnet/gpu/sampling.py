"""Sampling on the device, for batches of logit rows that should not leave the GPU: the engine's
sampler's rules (src/sampler.cpp), vectorized. Greedy: argmax, lowest id on ties. Otherwise the
candidates ranked by (logit desc, id asc) go through top-k -> top-p (on the untempered
probabilities: the shortest prefix whose mass reaches top_p) -> min-p (logit >= max + log min_p)
-> softmax(logit / temperature) -> one draw from `generator`. NaN and -Inf are never picked; if a
row has +Inf logits only those stay, as equals.

The kept set is the engine's (up to float summation order at the top-p boundary); the draws come
from torch's generator, not the engine's mt19937_64, so a seed does not give the engine's tokens:
bitnet.Model samples on the host with the engine's sampler for that reason.
"""

from __future__ import annotations

import math

import torch


def _clean(logits: torch.Tensor) -> torch.Tensor:
    x = torch.nan_to_num(logits.float(), nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))
    pos = torch.isposinf(x)
    has_pos = pos.any(-1, keepdim=True)
    return torch.where(has_pos, torch.where(pos, 0.0, float("-inf")), x)


def keep_mask(logits: torch.Tensor, top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05) -> torch.Tensor:
    """bool [n, vocab]: the candidates the engine's sampler keeps before its draw."""
    x = _clean(logits)
    vals, ids = torch.sort(x, dim=-1, descending=True, stable=True)  # ties: lower id first
    keep = vals > float("-inf")
    rank = torch.arange(x.shape[-1], device=x.device)
    if top_k > 0:
        keep &= rank < top_k
    first = rank == 0
    if top_p < 1.0:
        w = torch.where(keep, torch.exp(vals - vals[..., :1]), 0.0).double()
        before = torch.cumsum(w, -1) - w  # mass of the better-ranked candidates
        keep &= (before < top_p * w.sum(-1, keepdim=True)) | first
    if min_p > 0.0:
        keep &= (vals >= vals[..., :1] + math.log(min_p)) | first
    keep &= vals > float("-inf")
    return torch.zeros_like(keep).scatter(-1, ids, keep)


def sample(logits: torch.Tensor, temperature: float = 0.8, top_k: int = 40, top_p: float = 0.95,
           min_p: float = 0.05, generator: torch.Generator | None = None) -> torch.Tensor:
    """Token ids [n] for logit rows [n, vocab] (or a scalar tensor for one row [vocab]); -1 for a
    row with nothing to pick."""
    one = logits.dim() == 1
    x = _clean(logits[None] if one else logits)
    if not temperature > 0:
        out = torch.argmax(x, dim=-1)  # the first maximum: lowest id on ties
    else:
        keep = keep_mask(x, top_k, top_p, min_p)
        best = torch.where(keep, x, float("-inf")).amax(-1, keepdim=True)
        w = torch.where(keep, torch.exp((x - best) / temperature), 0.0)
        w = torch.where(keep.any(-1, keepdim=True), w, 1.0)  # rows with nothing kept: dropped below
        out = torch.multinomial(w, 1, generator=generator)[:, 0]
    out = torch.where(torch.isfinite(x).any(-1), out, -1)  # +Inf rows were mapped to 0 / -Inf above
    return out[0] if one else out
