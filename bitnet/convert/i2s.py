"""numpy twin of bitnet.cpp's I2_S layout (DESIGN §2); the C++ kernels read the same bytes.

Layout:
    codes   c = w + 1 in {0, 1, 2} (3 unused), the tensor flattened row-major (n = ne0 * ne1)
    block   128 consecutive codes -> 32 bytes, most significant bits first:
                byte[m] = c[m] << 6 | c[32 + m] << 4 | c[64 + m] << 2 | c[96 + m]   (m = 0..31)
    tail    32 bytes after the n/4 code bytes: f32 scale (little-endian), then 28 zero bytes
    total   n/4 + 32 bytes
Blocks ignore row boundaries, as bitnet.cpp's quantize_i2_s packs them: with k = 8640 (67.5
blocks) every second row starts in the middle of a block. n must be a multiple of 128: bitnet.cpp
drops a partial last block (its bytes stay zero, which reads as -1 weights), so such a tensor
cannot be held and is refused.
"""

from __future__ import annotations

import struct

import numpy as np

BLOCK = 128  # elements per block
TAIL_BYTES = 32


def i2s_n_bytes(n_rows: int, k: int) -> int:
    _check_shape(n_rows, k)
    return n_rows * k // 4 + TAIL_BYTES


def i2s_can_hold(n_rows: int, k: int) -> bool:
    return n_rows > 0 and k > 0 and (n_rows * k) % BLOCK == 0


def _check_shape(n_rows: int, k: int) -> None:
    if not i2s_can_hold(n_rows, k):
        raise ValueError(
            f"I2_S cannot hold a {n_rows}x{k} tensor: it packs the flattened tensor in blocks of {BLOCK} "
            f"and {n_rows * k} elements leave a partial last block (bitnet.cpp would drop it); "
            "use --outtype f16 or f32 for this model"
        )


def pack_i2s(ternary: np.ndarray, scale: float) -> bytes:
    """int8 [n_rows, k] with values in {-1, 0, 1} and the per-tensor scale -> I2_S bytes."""
    t = np.asarray(ternary)
    if t.ndim != 2:
        raise ValueError(f"pack_i2s expects a 2-D array, got shape {t.shape}")
    _check_shape(*t.shape)
    codes = (t.astype(np.int8, copy=False) + np.int8(1)).view(np.uint8)
    if codes.size and codes.max() > 2:
        raise ValueError("pack_i2s: values must be -1, 0 or 1")
    blocks = codes.reshape(-1, 4, 32)
    packed = (blocks[:, 0] << 6) | (blocks[:, 1] << 4) | (blocks[:, 2] << 2) | blocks[:, 3]
    tail = struct.pack("<f", scale) + bytes(TAIL_BYTES - 4)
    return packed.tobytes() + tail


def unpack_i2s(buf, n_rows: int, k: int) -> tuple[np.ndarray, float]:
    """I2_S bytes -> (int8 [n_rows, k] in {-1, 0, 1}, scale). Refuses the unused code 3."""
    raw = np.frombuffer(buf, dtype=np.uint8)
    expected = i2s_n_bytes(n_rows, k)
    if raw.size != expected:
        raise ValueError(f"I2_S tensor of {n_rows}x{k} needs {expected} bytes, got {raw.size}")
    packed = raw[: n_rows * k // 4].reshape(-1, 1, 32)
    shifts = np.array([6, 4, 2, 0], dtype=np.uint8).reshape(1, 4, 1)
    codes = (packed >> shifts) & np.uint8(3)
    if codes.size and codes.max() > 2:
        raise ValueError("I2_S data holds the unused code 3: not a canonical I2_S tensor")
    scale = struct.unpack("<f", raw[n_rows * k // 4 :][:4].tobytes())[0]
    return (codes.reshape(n_rows, k).astype(np.int8) - np.int8(1)), scale
