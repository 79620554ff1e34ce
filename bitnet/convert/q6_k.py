"""numpy twin of ggml's reference Q6_K quantizer (quantize_row_q6_K_ref), for embeddings and output heads.

A super-block of 256 weights takes 210 bytes (6.5625 bits per weight):

    ql[128] | qh[64] | int8 scales[16] | f16 d          weight = d * scales[j] * (q - 32)

q in 0..63 is a 6-bit code, j = position // 16 the 16-weight sub-block. The two 128-weight
halves h each put their codes in ql[64h : 64h + 64] and qh[32h : 32h + 32], for m < 32:

    ql[64h + m]      = q[128h + m]      & 15 | (q[128h + 64 + m] & 15) << 4
    ql[64h + 32 + m] = q[128h + 32 + m] & 15 | (q[128h + 96 + m] & 15) << 4
    qh[32h + m]      = q[128h + m] >> 4 | q[128h + 32 + m] >> 4 << 2 | q[128h + 64 + m] >> 4 << 4
                       | q[128h + 96 + m] >> 4 << 6

How ggml chooses the numbers (every step in f32, in ggml's order, rounding as it does):
  1. each sub-block gets a scale from make_qx_quants(n=16, nmax=32, rmse_type=1): with m the
     element of largest |x| (the first one on a tie), try iscale = -(32 + 0.1*is) / m for
     is = 0, then -9..-1, 1..9, codes l = clamp(nearest_int(iscale*x), -32, 31), and keep a try
     only if it strictly improves on the best so far in sum(w*x*l)^2 / sum(w*l*l), w = x*x
     (weighted least squares); the scale is sum(w*x*l) / sum(w*l*l) of the kept try. An all-zero (max|x| < 1e-15)
     sub-block has scale 0 and codes 0.
  2. the super-block scale is d = f16(max_scale / -128), max_scale the sub-block scale of
     largest magnitude; scales[j] = min(127, nearest_int(-128 / max_scale * scale_j)). A
     super-block whose scales are all below 1e-15 is stored as 210 zero bytes.
  3. the codes are redone against the rounded scales: q = clamp(nearest_int(x / (d*scales[j])),
     -32, 31) + 32, except in a sub-block whose d*scales[j] is 0, which keeps its codes from
     step 1 (they multiply 0, but they are in the bytes).
nearest_int is ggml's add-1.5*2^23 trick (round half to even in range), done with the same bits
here, so that even NaN, infinite and overflowing inputs give ggml's bytes.
Rows must be a multiple of 256 long.

Verified byte for byte against ggml: quantize_row_q6_K_ref from libggml-base built from the
llama.cpp that the llama-cpp-python 0.3.36 sdist (PyPI) vendors (ggml 0.25.3; GCC 12, -O3 and
the flags ggml gives its base library: no -march, so no FMA contraction), called with ctypes: equal
on tens of thousands of super-blocks of normal, heavy-tailed, uniform, positive, sparse, tied-value, sub-block
magnitudes from 1 to 1e-8, all-zero, f32-subnormal, huge (x^3 overflowing f32, d overflowing f16)
and NaN/inf-laced data, on 4096 x 2560 normal weights, on exactly-on-the-grid blocks and on the
demo model's F16 embedding. tests/test_q6_k.py keeps the SHA-256 of ggml's bytes for
deterministic inputs, so the equality stays checked without llama.cpp.
"""

from __future__ import annotations

import numpy as np

GGML_TYPE_Q6_K = 14
QK_K = 256  # weights per super-block
SUB = 16  # weights per sub-block (one int8 scale each)
BLOCK_BYTES = 210  # ql[128] + qh[64] + scales[16] + f16 d
GROUP_MAX_EPS = np.float32(1e-15)
NMAX = np.float32(32)
MAGIC = np.float32(12582912.0)  # 1.5 * 2^23: adding it leaves the rounded integer in the low mantissa bits


def q6_k_n_bytes(n_rows: int, k: int) -> int:
    if k <= 0 or k % QK_K:
        raise ValueError(f"Q6_K needs rows that are a positive multiple of {QK_K} long, got {k}")
    return n_rows * k // QK_K * BLOCK_BYTES


def _nearest_int(f: np.ndarray) -> np.ndarray:
    """ggml's nearest_int on f32: the low mantissa bits of f + 1.5*2^23, as int32. That is
    round-half-to-even for |f| < 2^22; outside (NaN -> 0, +-inf -> -2^22, huge f) it is whatever
    ggml's release build gets, reproduced here too."""
    bits = (f + MAGIC).view(np.int32)
    return (bits & 0x7FFFFF) - 0x400000


def _first_abs_max(v: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(index, |value|) of the first element of largest magnitude along axis, as ggml's
    `if (fabsf(v) > amax)` loop from amax = 0 finds it: a NaN never wins."""
    a = np.abs(v)
    a[np.isnan(a)] = -1
    i = np.expand_dims(np.argmax(a, axis=axis), axis)
    return i, np.take_along_axis(a, i, axis=axis)


def _codes(iscale: np.ndarray, xt: np.ndarray, finite: bool) -> np.ndarray:
    """clamp(nearest_int(iscale * x), -32, 31) as f32; xt is [16, n] (one sub-block per column).
    With finite x, |iscale * x| <= 33 and nearest_int is np.rint (the fast path)."""
    f = iscale * xt
    codes = np.rint(f, out=f) if finite else _nearest_int(f).astype(np.float32)
    return np.clip(codes, -NMAX, NMAX - 1, out=codes)


def _weighted_sums(codes: np.ndarray, wx: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sum(w*x*l), sum(w*l*l) for codes l, over each column, added in element order as ggml's loop does."""
    tlx, tl2 = wx * codes, (w * codes) * codes
    sumlx, suml2 = np.zeros_like(tlx[0]), np.zeros_like(tl2[0])
    for i in range(SUB):
        sumlx += tlx[i]
        suml2 += tl2[i]
    return sumlx, suml2


def _make_qx_quants(xt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml's make_qx_quants(16, 32, x, L, rmse_type=1, NULL) for each column of xt [16, n]:
    (scale f32 [n], codes L in 0..63 as uint8 [16, n])."""
    first_max, amax = _first_abs_max(xt, axis=0)
    zero = amax[0] < GROUP_MAX_EPS
    signed_max = np.where(zero, np.float32(1), np.take_along_axis(xt, first_max, axis=0)[0])
    w = xt * xt
    wx = w * xt
    finite = bool(np.isfinite(xt).all())

    best_iscale = -NMAX / signed_max
    sumlx, suml2 = _weighted_sums(_codes(best_iscale, xt, finite), wx, w)
    scale = np.where(suml2 != 0, sumlx / suml2, np.float32(0))
    best = scale * sumlx
    for step in (*range(-9, 0), *range(1, 10)):
        iscale = -(NMAX + np.float32(0.1) * np.float32(step)) / signed_max
        sumlx, suml2 = _weighted_sums(_codes(iscale, xt, finite), wx, w)
        better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        scale = np.where(better, sumlx / suml2, scale)
        best = np.where(better, scale * sumlx, best)
        best_iscale = np.where(better, iscale, best_iscale)
    codes = (_codes(best_iscale, xt, finite) + NMAX).astype(np.uint8)
    codes[:, zero] = 0
    return np.where(zero, np.float32(0), scale), codes


def _pack_codes(q: np.ndarray) -> np.ndarray:
    """codes uint8 [n_blocks, 256] in 0..63 -> ql[128] | qh[64] per block."""
    quarters = q.reshape(len(q), 2, 4, 32)  # (block, half h, quarter, m)
    lo, hi = quarters & 15, quarters >> 4
    ql = np.concatenate([lo[:, :, 0] | lo[:, :, 2] << 4, lo[:, :, 1] | lo[:, :, 3] << 4], axis=2)
    qh = hi[:, :, 0] | hi[:, :, 1] << 2 | hi[:, :, 2] << 4 | hi[:, :, 3] << 6
    return np.concatenate([ql.reshape(len(q), 128), qh.reshape(len(q), 64)], axis=1)


def pack_q6_k(x: np.ndarray) -> np.ndarray:
    """f32 [n_rows, k] -> Q6_K bytes (uint8, flat), as ggml's quantize_row_q6_K_ref writes them."""
    x = np.asarray(x, dtype=np.float32)
    q6_k_n_bytes(x.shape[0] if x.ndim == 2 else 1, x.shape[-1])  # checks k
    # f32 overflow (sum(x^3 * l) of huge weights) and x / 0 in skipped sub-blocks happen in ggml too
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return _pack(x)


def _pack(x: np.ndarray) -> np.ndarray:
    blocks = x.reshape(-1, QK_K)
    n_blocks = len(blocks)
    xt = np.ascontiguousarray(blocks.reshape(-1, SUB).T)  # [16, sub-blocks]: element i is a contiguous row
    sub_scales, qx_codes = _make_qx_quants(xt)
    sub_scales = sub_scales.reshape(n_blocks, QK_K // SUB)

    first_max, max_abs_scale = _first_abs_max(sub_scales, axis=1)
    empty = max_abs_scale[:, 0] < GROUP_MAX_EPS
    max_scale = np.where(empty, np.float32(-1), np.take_along_axis(sub_scales, first_max, axis=1)[:, 0])
    iscale = np.float32(-128) / max_scale
    d16 = (np.float32(1) / iscale).astype(np.float16)
    # int -> int8 keeps the low byte, as C's conversion does on every compiler ggml supports
    scales = np.minimum(127, _nearest_int(iscale[:, None] * sub_scales)).astype(np.int8)

    d = (d16.astype(np.float32)[:, None] * scales.astype(np.float32)).reshape(1, -1)  # per sub-block
    redone = np.clip(_nearest_int(xt / d), -32, 31) + 32
    codes = np.where(d != 0, redone, qx_codes).astype(np.uint8)  # [16, sub-blocks]
    codes = codes.T.reshape(n_blocks, QK_K)

    out = np.empty((n_blocks, BLOCK_BYTES), dtype=np.uint8)
    out[:, :192] = _pack_codes(codes)
    out[:, 192:208] = scales.view(np.uint8)
    out[:, 208:] = d16.view(np.uint8).reshape(-1, 2)
    out[empty] = 0
    return out.reshape(-1)
