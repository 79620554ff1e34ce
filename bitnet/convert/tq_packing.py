"""numpy twins of llama.cpp's ternary block types TQ2_0 and TQ1_0 (DESIGN §2), pack and unpack.

Both store codes c = w + 1 in {0, 1, 2} for blocks of 256 consecutive weights of a row (the
row length must be a multiple of 256), followed by the block's f16 scale d; a weight is
(c - 1) * d. llama.cpp's quantizer takes d = max|w| of the block (0 for an all-zero block).

TQ2_0, 66 bytes per block: qs[64] then d (2.0625 bits per weight)
    two 128-weight halves h, each in 32 bytes, LSB first:
        qs[32h + m] = c[128h + m] | c[128h + 32 + m] << 2 | c[128h + 64 + m] << 4 | c[128h + 96 + m] << 6

TQ1_0, 54 bytes per block: qs[48], qh[4], then d (1.6875 bits per weight)
    five trits per byte as a base-3 fraction: v = t0*81 + t1*27 + t2*9 + t3*3 + t4 (t0 the most
    significant) is stored as byte = ceil(v * 256 / 243), so that trit n is read back with
    ((byte * 3^n mod 256) * 3) >> 8, no division.
        qs[m]      m < 32: trits c[m + 32n]             (n = 0..4: weights 0..159)
        qs[32 + m] m < 16: trits c[160 + m + 16n]       (weights 160..239)
        qh[j]      j < 4:  trits c[240 + j + 4n], n < 4, then a 0 trit (weights 240..255)
"""

from __future__ import annotations

import numpy as np

QK = 256  # weights per block
GGML_TYPE_TQ1_0 = 34
GGML_TYPE_TQ2_0 = 35
TQ2_0_BLOCK_BYTES = 66
TQ1_0_BLOCK_BYTES = 54

_POW3_DESC5 = np.array([81, 27, 9, 3, 1], dtype=np.uint16)
_POW3_ASC5 = np.array([1, 3, 9, 27, 81], dtype=np.uint8)


def _check_k(k: int) -> None:
    if k <= 0 or k % QK:
        raise ValueError(f"TQ1_0/TQ2_0 need the row length (ne0) to be a positive multiple of {QK}, got {k}")


def tq2_0_n_bytes(n_rows: int, k: int) -> int:
    _check_k(k)
    return n_rows * k // QK * TQ2_0_BLOCK_BYTES


def tq1_0_n_bytes(n_rows: int, k: int) -> int:
    _check_k(k)
    return n_rows * k // QK * TQ1_0_BLOCK_BYTES


def _block_codes(ternary: np.ndarray) -> np.ndarray:
    """int8 [n_rows, k] in {-1, 0, 1} -> uint8 codes [n_blocks, 256]."""
    t = np.asarray(ternary)
    if t.ndim != 2:
        raise ValueError(f"expected a 2-D array of ternary weights, got shape {t.shape}")
    _check_k(t.shape[1])
    codes = (t.astype(np.int8, copy=False) + np.int8(1)).view(np.uint8)
    if codes.size and codes.max() > 2:
        raise ValueError("ternary weights must be -1, 0 or 1")
    return codes.reshape(-1, QK)


def _block_scales(d, n_blocks: int) -> np.ndarray:
    """One f16 scale per block (a scalar is used for every block) as uint8 [n_blocks, 2]."""
    d16 = np.broadcast_to(np.asarray(d, dtype=np.float16).reshape(-1), (n_blocks,))
    return np.ascontiguousarray(d16).view(np.uint8).reshape(n_blocks, 2)


def llama_cpp_block_scales(ternary: np.ndarray, scale) -> np.ndarray:
    """The per-block d llama.cpp's quantizer writes for a ternary tensor times `scale`: max|w| of
    the block, i.e. the scale (as f16) for a block with any non-zero weight and 0 for the others."""
    nonzero = (_block_codes(ternary) != 1).any(axis=1)
    return np.where(nonzero, np.float16(scale), np.float16(0))


def pack_tq2_0(ternary: np.ndarray, d) -> np.ndarray:
    """int8 [n_rows, k] in {-1, 0, 1}, scale d (scalar or one per block) -> TQ2_0 bytes (uint8)."""
    codes = _block_codes(ternary).reshape(-1, 2, 4, 32)  # [block, half, n, m]
    out = np.empty((codes.shape[0], TQ2_0_BLOCK_BYTES), dtype=np.uint8)
    qs = codes[:, :, 0] | (codes[:, :, 1] << 2) | (codes[:, :, 2] << 4) | (codes[:, :, 3] << 6)
    out[:, :64] = qs.reshape(-1, 64)
    out[:, 64:] = _block_scales(d, len(out))
    return out.reshape(-1)


def _trit_bytes(digits: np.ndarray) -> np.ndarray:
    """[..., 5, m] base-3 digits (most significant first) -> [..., m] ceil(v * 256 / 243)."""
    v = (digits.astype(np.uint16) * _POW3_DESC5.reshape(5, 1)).sum(axis=-2, dtype=np.uint16)
    return ((v * 256 + 242) // 243).astype(np.uint8)


def pack_tq1_0(ternary: np.ndarray, d) -> np.ndarray:
    """int8 [n_rows, k] in {-1, 0, 1}, scale d (scalar or one per block) -> TQ1_0 bytes (uint8)."""
    codes = _block_codes(ternary)
    n_blocks = len(codes)
    out = np.empty((n_blocks, TQ1_0_BLOCK_BYTES), dtype=np.uint8)
    out[:, 0:32] = _trit_bytes(codes[:, :160].reshape(n_blocks, 5, 32))
    out[:, 32:48] = _trit_bytes(codes[:, 160:240].reshape(n_blocks, 5, 16))
    tail = np.zeros((n_blocks, 5, 4), dtype=np.uint8)  # the fifth trit of each qh byte is 0
    tail[:, :4] = codes[:, 240:].reshape(n_blocks, 4, 4)
    out[:, 48:52] = _trit_bytes(tail)
    out[:, 52:] = _block_scales(d, n_blocks)
    return out.reshape(-1)


def _blocks(buf, n_rows: int, k: int, block_bytes: int) -> np.ndarray:
    _check_k(k)
    raw = np.frombuffer(buf, dtype=np.uint8) if not isinstance(buf, np.ndarray) else buf.reshape(-1)
    expected = n_rows * k // QK * block_bytes
    if raw.size != expected:
        raise ValueError(f"a {n_rows}x{k} tensor needs {expected} bytes, got {raw.size}")
    return raw.reshape(-1, block_bytes)


def _read_trits(packed: np.ndarray, n_trits: int) -> np.ndarray:
    """[..., m] bytes -> [..., n_trits, m] digits, most significant first."""
    shifted = packed[..., None, :] * _POW3_ASC5[:n_trits].reshape(n_trits, 1)  # wraps mod 256
    return ((shifted.astype(np.uint16) * 3) >> 8).astype(np.uint8)


def unpack_tq2_0(buf, n_rows: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """TQ2_0 bytes -> (int8 [n_rows, k] in {-1, 0, 1}, f32 d [n_rows, k/256]). Refuses code 3."""
    blocks = _blocks(buf, n_rows, k, TQ2_0_BLOCK_BYTES)
    qs = blocks[:, :64].reshape(-1, 2, 1, 32)
    codes = (qs >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)) & np.uint8(3)
    if codes.size and codes.max() > 2:
        raise ValueError("TQ2_0 data holds the unused code 3")
    d = np.ascontiguousarray(blocks[:, 64:]).view(np.float16).astype(np.float32)
    return codes.reshape(n_rows, k).astype(np.int8) - np.int8(1), d.reshape(n_rows, -1)


def unpack_tq1_0(buf, n_rows: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """TQ1_0 bytes -> (int8 [n_rows, k] in {-1, 0, 1}, f32 d [n_rows, k/256]); every byte decodes
    to valid trits ((byte * 3) >> 8 <= 2), so no code can be refused here."""
    blocks = _blocks(buf, n_rows, k, TQ1_0_BLOCK_BYTES)
    n_blocks = len(blocks)
    codes = np.concatenate(
        [
            _read_trits(blocks[:, 0:32], 5).reshape(n_blocks, 160),
            _read_trits(blocks[:, 32:48], 5).reshape(n_blocks, 80),
            _read_trits(blocks[:, 48:52], 4).reshape(n_blocks, 16),
        ],
        axis=1,
    )
    d = np.ascontiguousarray(blocks[:, 52:]).view(np.float16).astype(np.float32)
    return codes.reshape(n_rows, k).astype(np.int8) - np.int8(1), d.reshape(n_rows, -1)


def _dequantize(unpacked: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    ternary, d = unpacked
    n_rows, k = ternary.shape
    w = ternary.reshape(n_rows, -1, QK).astype(np.float32) * d[:, :, None]
    return w.reshape(n_rows, k)


def dequantize_tq2_0(buf, n_rows: int, k: int) -> np.ndarray:
    """TQ2_0 bytes -> float32 [n_rows, k] = (c - 1) * d."""
    return _dequantize(unpack_tq2_0(buf, n_rows, k))


def dequantize_tq1_0(buf, n_rows: int, k: int) -> np.ndarray:
    """TQ1_0 bytes -> float32 [n_rows, k] = (t - 1) * d."""
    return _dequantize(unpack_tq1_0(buf, n_rows, k))
