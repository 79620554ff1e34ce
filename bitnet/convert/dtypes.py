"""Float formats between safetensors, numpy and GGUF: one table, plus bf16 by hand.

numpy has no bfloat16: bf16 arrays travel as uint16 bit patterns. bf16 -> f32 is exact (the
bits shifted up); f32 -> bf16 rounds to nearest even like torch's `.to(torch.bfloat16)`.
"""

from __future__ import annotations

import numpy as np

from bitnet.gguf_writer import GGML_TYPE_BF16, GGML_TYPE_F16, GGML_TYPE_F32

# name -> (ggml type id, numpy storage dtype, bytes per element)
FLOAT_TYPES = {
    "f32": (GGML_TYPE_F32, np.dtype("<f4"), 4),
    "f16": (GGML_TYPE_F16, np.dtype("<f2"), 2),
    "bf16": (GGML_TYPE_BF16, np.dtype("<u2"), 2),
}
# safetensors dtype name -> our float name
SAFETENSORS_FLOATS = {"F32": "f32", "F16": "f16", "BF16": "bf16"}


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """Round to nearest even; NaN stays NaN (quiet), infinities stay infinite."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        rounded[nan] = ((bits[nan] >> 16) | np.uint32(0x40)).astype(np.uint16)
    return rounded


def to_float_type(x_f32: np.ndarray, name: str) -> np.ndarray:
    """f32 values -> the storage array of float type `name` (f32 / f16 / bf16-as-uint16)."""
    if name == "f32":
        return np.ascontiguousarray(x_f32, dtype=np.float32)
    if name == "f16":
        return x_f32.astype(np.float16)
    if name == "bf16":
        return f32_to_bf16(x_f32)
    raise ValueError(f"unknown float type {name!r}")


def from_float_type(stored: np.ndarray, name: str) -> np.ndarray:
    """The storage array of float type `name` -> f32 values (exact)."""
    if name == "bf16":
        return bf16_to_f32(stored)
    return stored.astype(np.float32)
