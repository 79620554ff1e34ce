"""numpy twin of ggml's Q8_0 quantizer (quantize_row_q8_0_ref), for embeddings and output heads.

Blocks of 32 weights, 34 bytes: f16 d | int8 q[32], with d = max|x| / 127 and
q = round(x / d) rounding half away from zero (C's roundf), 0 for an all-zero block; the engine
widens it back as d * q in f32 (src/dequant.h). Rows must be a multiple of 32 long.
"""

from __future__ import annotations

import numpy as np

GGML_TYPE_Q8_0 = 8
BLOCK = 32
BLOCK_BYTES = 34


def q8_0_n_bytes(n_rows: int, k: int) -> int:
    if k % BLOCK:
        raise ValueError(f"Q8_0 needs rows that are a multiple of {BLOCK} long, got {k}")
    return n_rows * k // BLOCK * BLOCK_BYTES


def pack_q8_0(x: np.ndarray) -> np.ndarray:
    """f32 [n_rows, k] -> Q8_0 bytes (uint8, flat)."""
    blocks = np.asarray(x, dtype=np.float32).reshape(-1, BLOCK)
    d = np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    scaled = blocks * inv
    q = np.sign(scaled) * np.floor(np.abs(scaled) + np.float32(0.5))  # roundf: half away from zero
    out = np.empty((len(blocks), BLOCK_BYTES), dtype=np.uint8)
    out[:, :2] = d.astype(np.float16).view(np.uint8)
    out[:, 2:] = q.astype(np.int8).view(np.uint8)
    return out.reshape(-1)
