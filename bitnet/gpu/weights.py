"""GGUF tensors -> what the GPU kernels read, decoded on the host with numpy, as the CPU engine's
loader does (src/ternary_load.cpp, src/dequant.cpp):

- ternary I2_S / TQ2_0 / TQ1_0 / F32 / F16 / BF16 -> I2_S bytes [n_out, n_in / 4] (2 bits a
  weight) + one f32 scale, or, for a TQ tensor whose non-zero blocks disagree on their scale,
  one f32 scale per 256-block (the product then scales each block's integer sum by its own d);
- heads and embeddings: F16 / BF16 / F32 kept as stored; Q8_0 / Q6_K dequantized to f32
  exactly as ggml does (d * q, and (d * sc) * q).

The file has already been validated by the engine's hardened loader (GpuModel opens it there
first), so this module decodes and does not re-check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitnet.convert import tq_packing
from bitnet.convert.dtypes import bf16_to_f32
from bitnet.convert.i2s import pack_i2s

GGML_F32, GGML_F16, GGML_Q8_0, GGML_Q6_K, GGML_BF16 = 0, 1, 8, 14, 30
GGML_TQ1_0, GGML_TQ2_0, GGML_I2_S = 34, 35, 36
FLOAT_TYPES = (GGML_F32, GGML_F16, GGML_BF16)


@dataclass
class TernaryHost:
    codes: np.ndarray  # uint8 [n_out, n_in / 4], I2_S bytes of each row
    scale: float  # per-tensor scale (0 where block_scales is used)
    block_scales: np.ndarray | None  # f32 [n_out, n_in / 256], or None
    n_in: int
    n_out: int


def float_values(ggml_type: int, data: np.ndarray, n: int) -> np.ndarray:
    """F32 / F16 / BF16 bytes -> f32 [n] (exact)."""
    if ggml_type == GGML_F32:
        return data.view(np.float32)[:n].copy()
    if ggml_type == GGML_F16:
        return data.view(np.float16)[:n].astype(np.float32)
    return bf16_to_f32(data.view(np.uint16)[:n])


def dequantize_q8_0(data: np.ndarray, n: int) -> np.ndarray:
    blocks = data[: n // 32 * 34].reshape(-1, 34)
    d = np.ascontiguousarray(blocks[:, :2]).view(np.float16).astype(np.float32)
    q = np.ascontiguousarray(blocks[:, 2:]).view(np.int8).astype(np.float32)
    return (d * q).reshape(n)


def dequantize_q6_k(data: np.ndarray, n: int) -> np.ndarray:
    blocks = data[: n // 256 * 210].reshape(-1, 210)
    nb = len(blocks)
    d = np.ascontiguousarray(blocks[:, 208:210]).view(np.float16).astype(np.float32)[:, 0]
    sc = np.ascontiguousarray(blocks[:, 192:208]).view(np.int8).astype(np.float32)
    out = np.empty((nb, 2, 4, 32), dtype=np.float32)
    for half in range(2):
        ql = blocks[:, 64 * half : 64 * half + 64].astype(np.int32)
        qh = blocks[:, 128 + 32 * half : 128 + 32 * half + 32].astype(np.int32)
        lo, hi = ql[:, :32], ql[:, 32:]
        quads = ((lo & 15) | ((qh & 3) << 4), (hi & 15) | (((qh >> 2) & 3) << 4),
                 (lo >> 4) | (((qh >> 4) & 3) << 4), (hi >> 4) | (((qh >> 6) & 3) << 4))
        for j, q in enumerate(quads):
            # scale index: is = l / 16 (+ 2j), per 16 elements of the 32
            s = sc[:, 8 * half + 2 * j : 8 * half + 2 * j + 2]  # [nb, 2]
            dsc = (d[:, None] * s).repeat(16, axis=1)  # (d * sc) first, as ggml
            out[:, half, j] = dsc * (q - 32).astype(np.float32)
    return out.reshape(n)


def dense_values(ggml_type: int, data: np.ndarray, n_in: int, n_out: int) -> np.ndarray:
    """An embedding / head as an array [n_out, n_in]: float types as stored (f32, f16, or bf16
    bits as uint16), quantized types dequantized to f32."""
    n = n_in * n_out
    if ggml_type == GGML_F32:
        out = data.view(np.float32)[:n]
    elif ggml_type in (GGML_F16, GGML_BF16):
        out = data.view(np.float16 if ggml_type == GGML_F16 else np.uint16)[:n]
    elif ggml_type == GGML_Q8_0:
        out = dequantize_q8_0(data, n)
    elif ggml_type == GGML_Q6_K:
        out = dequantize_q6_k(data, n)
    else:
        raise ValueError(f"ggml type {ggml_type} is not an embedding / head type the GPU backend reads")
    return out.reshape(n_out, n_in)


def _i2s_rows(data: np.ndarray, n_in: int, n_out: int, arm64: bool) -> np.ndarray:
    codes = np.asarray(data[: n_in * n_out // 4]).reshape(n_out, n_in // 4)
    if not arm64:
        return codes
    # bitnet.cpp's ARM build: 64-element / 16-byte blocks, byte j of block holds elements 16s + j % 16.
    blocks = codes.reshape(n_out, -1, 16)
    shifts = np.array([6, 4, 2, 0], dtype=np.uint8).reshape(1, 1, 4, 1)
    c = (blocks[:, :, None, :] >> shifts) & 3  # [rows, k/64, s, 16]
    t = c.reshape(n_out, n_in).astype(np.int8) - 1
    return _pack_rows(t)


def _pack_rows(t: np.ndarray) -> np.ndarray:
    n_out, n_in = t.shape
    return np.frombuffer(pack_i2s(t, 0.0), np.uint8)[: n_out * n_in // 4].reshape(n_out, n_in // 4)


def _tq(ggml_type: int, data: np.ndarray, n_in: int, n_out: int) -> tuple[np.ndarray, float, np.ndarray | None]:
    unpack = tq_packing.unpack_tq2_0 if ggml_type == GGML_TQ2_0 else tq_packing.unpack_tq1_0
    block_bytes = tq_packing.TQ2_0_BLOCK_BYTES if ggml_type == GGML_TQ2_0 else tq_packing.TQ1_0_BLOCK_BYTES
    t, d = unpack(np.asarray(data[: n_out * n_in // tq_packing.QK * block_bytes]), n_out, n_in)
    blocks = t.reshape(n_out, -1, tq_packing.QK)
    # A block with scale 0 or no non-zero code contributes nothing: zero both, as the engine does.
    dead = (d == 0) | ~blocks.any(axis=2)
    blocks[dead] = 0
    d = np.where(dead, np.float32(0), d).astype(np.float32)
    live = d[~dead]
    shared = float(live[0]) if live.size else 0.0
    uniform = bool(np.all(live == live[0])) if live.size else True
    return _pack_rows(blocks.reshape(n_out, n_in)), shared, None if uniform else d


def _from_float(ggml_type: int, data: np.ndarray, n_in: int, n_out: int) -> tuple[np.ndarray, float]:
    w = float_values(ggml_type, data, n_in * n_out).reshape(n_out, n_in)
    scale = np.float32(np.abs(w).max()) if w.size else np.float32(0)
    t = np.where(w == 0, 0, np.where(w == scale, 1, -1)).astype(np.int8)
    return _pack_rows(t), float(scale)


def ternary_host(ggml_type: int, data: np.ndarray, n_in: int, n_out: int, arm64: bool = False,
                 extra_scale: float | None = None) -> TernaryHost:
    """Any ternary tensor the engine reads -> I2_S rows and scale(s). extra_scale: the value of a
    `<name>.scale` tensor (upstream llama.cpp's `bitnet` files), folded in as the engine does."""
    block_scales = None
    if ggml_type == GGML_I2_S:
        n_bytes = n_in * n_out // 4
        codes = _i2s_rows(data, n_in, n_out, arm64)
        scale = float(np.asarray(data[n_bytes : n_bytes + 4]).view(np.float32)[0])
    elif ggml_type in (GGML_TQ2_0, GGML_TQ1_0):
        codes, scale, block_scales = _tq(ggml_type, data, n_in, n_out)
    elif ggml_type in FLOAT_TYPES:
        codes, scale = _from_float(ggml_type, data, n_in, n_out)
    else:
        raise ValueError(f"ggml type {ggml_type} is not a ternary type the GPU backend reads")
    if extra_scale is not None:
        scale = float(np.float32(scale) * np.float32(extra_scale))
        if block_scales is not None:
            block_scales = (block_scales * np.float32(extra_scale)).astype(np.float32)
    return TernaryHost(np.ascontiguousarray(codes), scale, block_scales, n_in, n_out)
