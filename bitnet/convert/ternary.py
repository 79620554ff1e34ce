"""Ternary weights from Hugging Face BitNet checkpoints: codes t in {-1, 0, 1} and one f32 scale.

Two sources, both ending in (t int8 [out, in], scale f32) with effective weight W = t * scale:

* float masters (bf16/f16/f32): absmean, as transformers' online `WeightQuant`, in f32:
      m = mean|W|,  s = 1 / max(m, 1e-5),  t = clip(round_half_even(W * s), -1, 1),  scale = 1 / s
  m is summed in float64 and rounded once to f32. torch's f32 `abs().mean()` can land one ulp
  away from that, and which way depends on its thread count and SIMD width (for tensors above
  its 32768-element grain it splits the sum per thread), so no single f32 answer "is torch's";
  ours is the correctly rounded one, the same on every machine.

* packed uint8 (out/4, in) + `weight_scale` (what `BitNetQuantConfig` checkpoints store):
      output row i * (out/4) + r  <-  bits 2i..2i+1 of packed row r (LSB first), code = w + 1
  and the stored scale's meaning depends on the linear class that wrote it:
      "autobitlinear" (offline): y = (x W^T) * weight_scale      -> scale = weight_scale
      "bitlinear" (the default):   y = (x W^T) / weight_scale      -> scale = 1 / weight_scale
"""

from __future__ import annotations

import numpy as np

ABSMEAN_EPS = np.float32(1e-5)
LINEAR_CLASSES = ("bitlinear", "autobitlinear")


def absmean_ternarize(weight: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """float weights [out, in] -> (int8 codes, f32 scale) as transformers' WeightQuant."""
    w = np.asarray(weight, dtype=np.float32)
    mean_abs = np.float32(np.abs(w).sum(dtype=np.float64) / w.size) if w.size else np.float32(0)
    s = np.float32(1) / max(mean_abs, ABSMEAN_EPS)
    codes = np.clip(np.rint(w * s), -1, 1).astype(np.int8)  # np.rint: round half to even
    return codes, np.float32(np.float32(1) / s)


def unpack_hf_packed(packed: np.ndarray) -> np.ndarray:
    """uint8 [out/4, in] -> int8 [out, in] in {-1, 0, 1}; refuses the unused code 3."""
    p = np.asarray(packed)
    if p.dtype != np.uint8 or p.ndim != 2:
        raise ValueError(f"packed ternary weights must be 2-D uint8, got {p.dtype} {p.shape}")
    codes = np.stack([(p >> np.uint8(2 * i)) & np.uint8(3) for i in range(4)])  # [4, out/4, in]
    if codes.size and codes.max() > 2:
        raise ValueError("packed ternary weights hold the unused code 3 (not a BitNet packed tensor?)")
    return codes.reshape(4 * p.shape[0], p.shape[1]).astype(np.int8) - np.int8(1)


def pack_hf(ternary: np.ndarray) -> np.ndarray:
    """int8 [out, in] (out % 4 == 0) -> uint8 [out/4, in]: the inverse of unpack_hf_packed."""
    t = np.asarray(ternary)
    if t.ndim != 2 or t.shape[0] % 4:
        raise ValueError(f"pack_hf needs a 2-D array with rows a multiple of 4, got {t.shape}")
    codes = (t.astype(np.int8) + np.int8(1)).astype(np.uint8).reshape(4, t.shape[0] // 4, t.shape[1])
    return codes[0] | (codes[1] << 2) | (codes[2] << 4) | (codes[3] << 6)


def effective_scale(weight_scale: float, linear_class: str) -> np.float32:
    """The f32 scale that multiplies the codes, from a packed checkpoint's stored weight_scale."""
    if linear_class not in LINEAR_CLASSES:
        raise ValueError(f"unknown BitNet linear_class {linear_class!r} (known: {', '.join(LINEAR_CLASSES)})")
    ws = np.float32(weight_scale)
    if not np.isfinite(ws) or ws <= 0:
        raise ValueError(f"weight_scale {float(ws)} is not a positive finite number")
    return ws if linear_class == "autobitlinear" else np.float32(np.float32(1) / ws)
