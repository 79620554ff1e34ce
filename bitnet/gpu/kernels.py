"""Triton kernels of the GPU backend: int8 activation quantization, ternary x int8 products, and
the float head. Each also runs in Triton's interpreter (TRITON_INTERPRET=1) on CPU tensors.

Ternary weights stay in I2_S's bytes (DESIGN section 2), one row of k/4 bytes per output:
    byte b of a row, in 128-element block b // 32, holds the codes (c = w + 1) of elements
    128 (b // 32) + 32 j + b % 32 in bits 6 - 2j (j = 0..3).
A tile of rows therefore unpacks with shifts alone, in whatever tile shape a kernel wants.

Numerics follow DESIGN section 3 exactly, as the CPU engine's scalar reference computes them:
    s = 127 * (1 / max(max|x|, 1e-5))   (torch's 127 / t is reciprocal-then-multiply)
    q = clamp(rint(x * s), -128, 127)   round half to even
    y = float(acc) / s * w_scale        acc: exact int32 sum of t * q; w_scale per output row, so
                                        that layers reading one input (q/k/v, gate/up) run as one
and for TQ tensors with one scale per 256-block: y = (sum_b d_b * float(acc_b)) / s, b in order.
Divisions use div_rn (IEEE round to nearest; Triton's `/` may be approximate on a GPU).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from bitnet.gpu.device import interpreting

I2S_BLOCK = 128  # elements per I2_S block (32 bytes)
TQ_BLOCK = 256  # elements per TQ block (one scale each)
GEMV_MAX_ROWS = 4  # activation rows up to which the GEMV kernel beats a tl.dot tile of 16


def _wide_tiles() -> bool:
    """Under the interpreter every program is a Python call: fewer, wider programs run much faster
    there (the results are the same: integer sums are exact whatever the tiling)."""
    return interpreting()


@triton.jit
def _round_half_even(t):
    # Exact for |t| < 2**23 (t - floor(t) is then exact); libdevice's rint has no interpreter twin.
    f = tl.floor(t)
    d = t - f
    odd = (f - 2.0 * tl.floor(f * 0.5)) != 0.0
    return f + tl.where((d > 0.5) | ((d == 0.5) & odd), 1.0, 0.0)


@triton.jit
def _quantize_rows_kernel(x_ptr, q_ptr, s_ptr, M, K, BM: tl.constexpr, BLOCK: tl.constexpr):
    """BM rows per program (1 on a GPU; more under the interpreter), BLOCK columns per step."""
    rm = tl.program_id(0) * BM + tl.arange(0, BM)
    mmask = rm < M
    rows = rm[:, None].to(tl.int64) * K
    offs = tl.arange(0, BLOCK)
    amax = tl.zeros((BM, BLOCK), dtype=tl.float32)
    for k0 in range(0, K, BLOCK):
        mask = mmask[:, None] & (k0 + offs[None, :] < K)
        v = tl.load(x_ptr + rows + k0 + offs[None, :], mask=mask, other=0.0)
        amax = tl.maximum(amax, tl.abs(v))
    inv = tl.math.div_rn(1.0, tl.maximum(tl.max(amax, axis=1), 1e-5))
    s = 127.0 * inv
    for k0 in range(0, K, BLOCK):
        mask = mmask[:, None] & (k0 + offs[None, :] < K)
        v = tl.load(x_ptr + rows + k0 + offs[None, :], mask=mask, other=0.0)
        r = tl.minimum(tl.maximum(_round_half_even(v * s[:, None]), -128.0), 127.0)
        tl.store(q_ptr + rows + k0 + offs[None, :], r.to(tl.int8), mask=mask)
    tl.store(s_ptr + rm, s, mask=mmask)


def quantize_rows(x: torch.Tensor, wide: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 codes [m, k] and f32 scales [m] of f32 rows x [m, k] (DESIGN section 3)."""
    wide = _wide_tiles() if wide is None else wide
    x = x.contiguous()
    m, k = x.shape
    q = torch.empty((m, k), dtype=torch.int8, device=x.device)
    s = torch.empty((m,), dtype=torch.float32, device=x.device)
    if m:
        bm = 16 if wide else 1
        block = min(4096 // bm, triton.next_power_of_2(k))
        _quantize_rows_kernel[(triton.cdiv(m, bm),)](x, q, s, m, k, BM=bm, BLOCK=block)
    return q, s


@triton.jit
def _ternary_step(a_rows, mmask, w_ptr, rn, nmask, K, k0, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """int32 [BM, BN]: activations k0 .. k0 + BK (BK a multiple of 128) times those weights. The
    step's BK / 4 bytes of each row are loaded once; code j of every byte (bits 6 - 2j) makes one
    [BK / 4, BN] tile, multiplied on tl.dot with the 32-element slices of the activations it holds."""
    row_bytes = K // 4
    b = tl.arange(0, BK // 4)
    byte = k0 // 4 + b
    # Rows past n, and bytes past the row, read code 1 (weight 0): 0x55 is four of them.
    wb = tl.load(w_ptr + rn[None, :].to(tl.int64) * row_bytes + byte[:, None],
                 mask=nmask[None, :] & (byte[:, None] < row_bytes), other=0x55)
    elem = k0 + (b // 32) * 128 + b % 32  # element of code 0 of each byte
    acc = tl.zeros((BM, BN), dtype=tl.int32)
    for j in tl.static_range(4):
        a = tl.load(a_rows + elem[None, :] + 32 * j, mask=mmask[:, None] & (elem[None, :] + 32 * j < K), other=0)
        t = ((wb >> (6 - 2 * j)) & 3).to(tl.int8) - 1
        acc += tl.dot(a, t, out_dtype=tl.int32)
    return acc


@triton.jit
def _ternary_gemm_kernel(a_ptr, s_ptr, w_ptr, d_ptr, y_ptr, M, N, K, ws_ptr, MB,
                         BLOCKED: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """y [M, N] = scaled (a [M, K] int8) x (t [N, K])^T, int32 products on tl.dot (tensor cores).
    MB (M rounded up to a power of two) only keys the autotuner's choice."""
    rm = tl.program_id(0) * BM + tl.arange(0, BM)
    rn = tl.program_id(1) * BN + tl.arange(0, BN)
    mmask, nmask = rm < M, rn < N
    a_rows = a_ptr + rm[:, None].to(tl.int64) * K
    if BLOCKED:  # BK == 256: one TQ block per step, its int32 sum scaled by its own d
        accf = tl.zeros((BM, BN), dtype=tl.float32)
        for k0 in range(0, K, BK):
            dot = _ternary_step(a_rows, mmask, w_ptr, rn, nmask, K, k0, BM, BN, BK)
            d = tl.load(d_ptr + rn.to(tl.int64) * (K // BK) + k0 // BK, mask=nmask, other=0.0)
            accf += d[None, :] * dot.to(tl.float32)
        y = tl.math.div_rn(accf, tl.load(s_ptr + rm, mask=mmask, other=1.0)[:, None])
    else:
        acc = tl.zeros((BM, BN), dtype=tl.int32)
        for k0 in range(0, K, BK):
            acc += _ternary_step(a_rows, mmask, w_ptr, rn, nmask, K, k0, BM, BN, BK)
        s = tl.load(s_ptr + rm, mask=mmask, other=1.0)
        w_scale = tl.load(ws_ptr + rn, mask=nmask, other=0.0)
        y = tl.math.div_rn(acc.to(tl.float32), s[:, None]) * w_scale[None, :]
    tl.store(y_ptr + rm[:, None].to(tl.int64) * N + rn[None, :], y, mask=mmask[:, None] & nmask[None, :])


@triton.jit
def _ternary_gemv_kernel(a_ptr, s_ptr, w_ptr, d_ptr, y_ptr, N, K, ws_ptr,
                         BLOCKED: tl.constexpr, BN: tl.constexpr, BB: tl.constexpr):
    """One activation row (program axis 1) times BN weight rows: BB bytes (4 BB elements) per step,
    each byte's four codes against four 32-element slices of the row."""
    m = tl.program_id(1).to(tl.int64)
    rn = tl.program_id(0) * BN + tl.arange(0, BN)
    nmask = rn < N
    b = tl.arange(0, BB)
    row_bytes = K // 4
    w_rows = w_ptr + rn[:, None].to(tl.int64) * row_bytes
    a_row = a_ptr + m * K
    elem = (b // 32) * 128 + b % 32  # element of code j = 0 of byte b, from the step's first element
    if BLOCKED:  # BB == 64: one TQ block per step
        accf = tl.zeros((BN,), dtype=tl.float32)
        for b0 in range(0, row_bytes, BB):
            wb = tl.load(w_rows + b0 + b[None, :], mask=nmask[:, None], other=0x55)
            dot = tl.zeros((BN,), dtype=tl.int32)
            for j in tl.static_range(4):
                a = tl.load(a_row + 4 * b0 + elem + 32 * j).to(tl.int32)
                t = ((wb >> (6 - 2 * j)) & 3).to(tl.int32) - 1
                dot += tl.sum(t * a[None, :], axis=1)
            d = tl.load(d_ptr + rn.to(tl.int64) * (row_bytes // BB) + b0 // BB, mask=nmask, other=0.0)
            accf += d * dot.to(tl.float32)
        y = tl.math.div_rn(accf, tl.load(s_ptr + m))
    else:
        acc = tl.zeros((BN,), dtype=tl.int32)
        for b0 in range(0, row_bytes, BB):
            bmask = b0 + b < row_bytes
            wb = tl.load(w_rows + b0 + b[None, :], mask=nmask[:, None] & bmask[None, :], other=0x55)
            for j in tl.static_range(4):
                a = tl.load(a_row + 4 * b0 + elem + 32 * j, mask=bmask, other=0).to(tl.int32)
                t = ((wb >> (6 - 2 * j)) & 3).to(tl.int32) - 1
                acc += tl.sum(t * a[None, :], axis=1)
        w_scale = tl.load(ws_ptr + rn, mask=nmask, other=0.0)
        y = tl.math.div_rn(acc.to(tl.float32), tl.load(s_ptr + m)) * w_scale
    tl.store(y_ptr + m * N + rn, y, mask=nmask)


def ternary_int_matmul(q: torch.Tensor, s: torch.Tensor, codes: torch.Tensor, n: int, k: int,
                       w_scale: float | torch.Tensor,
                       block_scales: torch.Tensor | None = None, gemv: bool | None = None,
                       wide: bool | None = None) -> torch.Tensor:
    """f32 [m, n] = q [m, k] (int8, row scales s) times the ternary matrix `codes` (I2_S bytes
    [n, k/4]; w_scale: one f32 scale, or one per output row [n]; or per-256-block scales
    [n, k/256], w_scale then unused). gemv / wide force the kernel
    and the tiling (tests); by default GEMV for up to GEMV_MAX_ROWS rows."""
    wide = _wide_tiles() if wide is None else wide
    m = q.shape[0]
    y = torch.empty((m, n), dtype=torch.float32, device=q.device)
    if m == 0:
        return y
    blocked = block_scales is not None
    d = block_scales if blocked else s  # an unused pointer still needs a tensor
    if blocked:
        ws = s
    elif isinstance(w_scale, torch.Tensor):
        ws = w_scale
    else:
        ws = torch.full((n,), float(w_scale), dtype=torch.float32, device=q.device)
    if gemv is None:
        gemv = m <= GEMV_MAX_ROWS
        if gemv and _tuned() and not blocked and not wide:
            gemv = _gemv_wins(q, s, codes, n, k, ws)
    if gemv:
        bn = min(1024, triton.next_power_of_2(n)) if wide else 32
        bb = 64 if blocked else min(512 if wide else 64, triton.next_power_of_2(k // 4))
        if _tuned() and not blocked and not wide:
            grid = lambda meta: (triton.cdiv(n, meta["BN"]), m)
            _gemv_tuned[grid](q, s, codes, d, y, n, k, ws, BLOCKED=False)
        else:
            _ternary_gemv_kernel[(triton.cdiv(n, bn), m)](q, s, codes, d, y, n, k, ws, BLOCKED=blocked, BN=bn, BB=bb)
    elif _tuned() and not blocked and not wide:
        grid = lambda meta: (triton.cdiv(m, meta["BM"]), triton.cdiv(n, meta["BN"]))
        _gemm_tuned[grid](q, s, codes, d, y, m, n, k, ws, min(512, triton.next_power_of_2(m)), BLOCKED=False)
    else:
        bm = 16 if m <= 16 else 64
        bn = 256 if wide else 64
        bk = TQ_BLOCK if blocked else (min(512, triton.next_power_of_2(k)) if wide else I2S_BLOCK)
        _ternary_gemm_kernel[(triton.cdiv(m, bm), triton.cdiv(n, bn))](q, s, codes, d, y, m, n, k, ws, m,
                                                                        BLOCKED=blocked, BM=bm, BN=bn, BK=bk)
    return y


@triton.jit
def _dense_matmul_kernel(x_ptr, w_ptr, y_ptr, N, K, BN: tl.constexpr, BK: tl.constexpr):
    """y[m, n] = sum_k float(w[n, k]) * x[m, k] in f32: weights read in their stored type (F16,
    BF16 or F32), never rounded further, activations kept in f32."""
    m = tl.program_id(1).to(tl.int64)
    rn = tl.program_id(0) * BN + tl.arange(0, BN)
    nmask = rn < N
    kk = tl.arange(0, BK)
    acc = tl.zeros((BN,), dtype=tl.float32)
    for k0 in range(0, K, BK):
        kmask = k0 + kk < K
        w = tl.load(w_ptr + rn[:, None].to(tl.int64) * K + k0 + kk[None, :], mask=nmask[:, None] & kmask[None, :],
                    other=0.0).to(tl.float32)
        x = tl.load(x_ptr + m * K + k0 + kk, mask=kmask, other=0.0)
        acc += tl.sum(w * x[None, :], axis=1)
    tl.store(y_ptr + m * N + rn, acc, mask=nmask)


def dense_matmul(x: torch.Tensor, w: torch.Tensor, wide: bool | None = None) -> torch.Tensor:
    """f32 [m, n] = x [m, k] (f32) times w [n, k] (f16 / bf16 / f32) transposed."""
    wide = _wide_tiles() if wide is None else wide
    x = x.contiguous()
    m, k = x.shape
    n = w.shape[0]
    y = torch.empty((m, n), dtype=torch.float32, device=x.device)
    if m:
        if _tuned() and not wide:
            _dense_tuned[lambda meta: (triton.cdiv(n, meta["BN"]), m)](x, w, y, n, k)
            return y
        bn, bk = (min(4096, triton.next_power_of_2(n)), 256) if wide else (32, 128)
        bk = min(bk, triton.next_power_of_2(k))
        _dense_matmul_kernel[(triton.cdiv(n, bn), m)](x, w, y, n, k, BN=bn, BK=bk)
    return y


_GEMV_WINS: dict[tuple[int, int, int], bool] = {}


def _gemv_wins(q, s, codes, n: int, k: int, ws) -> bool:
    """For a few rows, the GEMV kernel (CUDA-core int32 multiply-adds) or the tl.dot GEMM (16-row
    tensor-core tile, mostly padding): timed once per shape on the device, the faster kept."""
    key = (q.shape[0], n, k)
    if key not in _GEMV_WINS:
        from triton.testing import do_bench

        times = [do_bench(lambda g=g: ternary_int_matmul(q, s, codes, n, k, ws, gemv=g)) for g in (True, False)]
        _GEMV_WINS[key] = times[0] <= times[1]
    return _GEMV_WINS[key]


# ---- tile sizes on a GPU: chosen by Triton's autotuner per shape (first call of each shape) -----
# Untuned on real hardware so far (gpu/README.md): the candidates are the usual ranges for
# bandwidth-bound GEMVs (many rows, long K steps) and int8 tensor-core GEMMs.
def _tuned() -> bool:
    return not interpreting() and os.environ.get("BITNET_GPU_AUTOTUNE", "1") != "0"


_gemv_tuned = triton.autotune(
    configs=[triton.Config({"BN": bn, "BB": bb}, num_warps=w)
             for bn, bb, w in [(8, 256, 4), (16, 128, 4), (16, 256, 4), (32, 64, 4), (32, 128, 4), (32, 256, 8),
                               (64, 64, 4), (64, 128, 8), (8, 512, 4), (16, 512, 8)]],
    key=["N", "K"])(_ternary_gemv_kernel)
_gemm_tuned = triton.autotune(
    configs=[triton.Config({"BM": bm, "BN": bn, "BK": bk}, num_warps=w, num_stages=st)
             for bm, bn, bk, w, st in [(16, 64, 128, 4, 3), (16, 128, 256, 4, 3), (32, 64, 256, 4, 3),
                                       (64, 64, 128, 4, 3), (64, 128, 128, 4, 4), (64, 128, 256, 8, 3),
                                       (128, 128, 128, 8, 3), (128, 64, 256, 8, 3), (128, 256, 128, 8, 3)]],
    key=["MB", "N", "K"])(_ternary_gemm_kernel)
_dense_tuned = triton.autotune(
    configs=[triton.Config({"BN": bn, "BK": bk}, num_warps=w)
             for bn, bk, w in [(8, 256, 4), (16, 128, 4), (16, 256, 4), (32, 128, 4), (32, 256, 8), (64, 128, 8),
                               (8, 512, 4), (16, 512, 8)]],
    key=["N", "K"])(_dense_matmul_kernel)
