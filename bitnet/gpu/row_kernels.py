"""Row-wise kernels for batched decoding (batch.py): RMSNorm and one-query attention, each row
computed by its own program in an order fixed at compile time, so a row's bits never depend on
which other rows share the batch (torch's reductions pick their split by the tensor's shape, and
cuBLAS its kernel by the batch count: either could change a sequence's logits when another
sequence joins or leaves the batch).

Numerics as forward.py's torch ops: RMSNorm's sum of squares in f64, `w * (x * (1 / sqrt(mean +
eps)))` in f32 with IEEE division and square root; attention scores `(q . k) * scale`, softmax
against the row's maximum, `(sum_j e_j v_j) / (sum_j e_j)` (the one difference from forward.py's
`sum_j (e_j / sum) v_j`: f32 rounding, within DESIGN's contract).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

NORM_BLOCK = 1024  # columns per step of the norm: fixed, whatever the rows
KEY_BLOCK = 32  # cache positions per step of the attention


@triton.jit
def _rms_norm_kernel(x_ptr, w_ptr, y_ptr, K, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64) * K
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros((BLOCK,), dtype=tl.float64)
    for k0 in range(0, K, BLOCK):
        v = tl.load(x_ptr + row + k0 + offs, mask=k0 + offs < K, other=0.0).to(tl.float64)
        acc += v * v
    mean = (tl.sum(acc, axis=0) / K.to(tl.float64)).to(tl.float32)  # f64 `/` is IEEE on the GPU too
    inv = tl.math.div_rn(1.0, tl.math.sqrt_rn(mean + eps))
    for k0 in range(0, K, BLOCK):
        mask = k0 + offs < K
        v = tl.load(x_ptr + row + k0 + offs, mask=mask, other=0.0)
        w = tl.load(w_ptr + k0 + offs, mask=mask, other=0.0)
        tl.store(y_ptr + row + k0 + offs, w * (v * inv), mask=mask)


def rms_norm_rows(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """forward.rms_norm, one program per row of x [m, k] (f32)."""
    x = x.contiguous()
    m, k = x.shape
    y = torch.empty_like(x)
    if m:
        _rms_norm_kernel[(m,)](x, w, y, k, eps, BLOCK=min(NORM_BLOCK, triton.next_power_of_2(k)))
    return y


@triton.jit
def _decode_attention_kernel(q_ptr, k_ptr, v_ptr, slot_ptr, len_ptr, o_ptr, slot_stride, n_head, group, HD,
                             KV_DIM, scale, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """Row r's query head h against the first len[r] cache positions of slot[r] (its kv head)."""
    h = tl.program_id(0)  # a row's heads are neighbours in launch order: their kv head's keys stay in L2
    r = tl.program_id(1).to(tl.int64)
    base = tl.load(slot_ptr + r).to(tl.int64) * slot_stride + (h // group) * HD
    n_keys = tl.load(len_ptr + r).to(tl.int32)
    d = tl.arange(0, BLOCK_D)
    dmask = d < HD
    q = tl.load(q_ptr + (r * n_head + h) * HD + d, mask=dmask, other=0.0)
    j = tl.arange(0, BLOCK_N)
    best = tl.max(tl.full((BLOCK_N,), float("-inf"), tl.float32), axis=0)
    for n0 in range(0, n_keys, BLOCK_N):  # pass 1: the row's largest score
        valid = n0 + j < n_keys
        mask = valid[:, None] & dmask[None, :]
        offs = base + (n0 + j)[:, None].to(tl.int64) * KV_DIM + d[None, :]
        k = tl.load(k_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        s = tl.where(valid, tl.sum(k * q[None, :], axis=1) * scale, float("-inf"))
        best = tl.maximum(best, tl.max(s, axis=0))
    total = tl.sum(tl.zeros((BLOCK_N,), dtype=tl.float32), axis=0)
    acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for n0 in range(0, n_keys, BLOCK_N):  # pass 2: the weights and the weighted values
        valid = n0 + j < n_keys
        mask = valid[:, None] & dmask[None, :]
        offs = base + (n0 + j)[:, None].to(tl.int64) * KV_DIM + d[None, :]
        k = tl.load(k_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        s = tl.sum(k * q[None, :], axis=1) * scale
        e = tl.where(valid, tl.exp(s - best), 0.0)
        total += tl.sum(e, axis=0)
        v = tl.load(v_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        acc += tl.sum(e[:, None] * v, axis=0)
    tl.store(o_ptr + (r * n_head + h) * HD + d, tl.math.div_rn(acc, total), mask=dmask)


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slots: torch.Tensor,
                     lengths: torch.Tensor, scale: float) -> torch.Tensor:
    """One query per row: q [rows, n_head, hd] (f32) against one layer's cache [n_slots, n_ctx,
    kv_dim] (f32 or f16; kv heads of hd columns), row r reading positions 0 .. lengths[r] - 1 of
    slot slots[r]; [rows, n_head * hd] f32. Lengths live on the device (a CUDA graph replays
    any of them); every row needs at least one position."""
    rows, n_head, hd = q.shape
    _, n_ctx, kv_dim = k_cache.shape
    out = torch.empty((rows, n_head * hd), dtype=torch.float32, device=q.device)
    if rows:
        group = n_head // (kv_dim // hd)
        _decode_attention_kernel[(n_head, rows)](q.contiguous(), k_cache, v_cache, slots, lengths, out,
                                                 n_ctx * kv_dim, n_head, group, hd, kv_dim, scale,
                                                 BLOCK_N=KEY_BLOCK, BLOCK_D=triton.next_power_of_2(hd))
    return out
