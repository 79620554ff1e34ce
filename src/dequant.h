// Widening of ggml's block-quantized embedding / output-head types to f32: one row at a time
// for embedding lookups and the kernel sets without native quantized kernels (kernels/dense.h).
// The values are exactly what ggml's dequantize_row_* computes (same f32 operation order).
//
//   Q8_0, 34 bytes per 32 weights: f16 d | int8 q[32];            w = d * q
//   Q6_K, 210 bytes per 256 weights: ql[128] | qh[64] | int8 sc[16] | f16 d. For each half
//     (128 weights, ql += 64, qh += 32, sc += 8 per half) and l = 0..31, with is = l / 16:
//       w[l]    = d * sc[is]   * ((ql[l]    & 15 | (qh[l]      & 3) << 4) - 32)
//       w[l+32] = d * sc[is+2] * ((ql[l+32] & 15 | (qh[l] >> 2 & 3) << 4) - 32)
//       w[l+64] = d * sc[is+4] * ((ql[l]    >> 4 | (qh[l] >> 4 & 3) << 4) - 32)
//       w[l+96] = d * sc[is+6] * ((ql[l+32] >> 4 | (qh[l] >> 6 & 3) << 4) - 32)
#pragma once
#include <cstdint>

namespace bitnet {

// True for the types dequantize_to_f32 widens.
bool is_widened_type(uint32_t ggml_type);

// n weights (a whole number of blocks) of `type` at data -> out[n]. False for another type.
bool dequantize_to_f32(uint32_t ggml_type, const uint8_t *data, int64_t n, float *out);

// True when every block scale of the n weights at data is finite (then so is every weight).
bool quantized_scales_finite(uint32_t ggml_type, const uint8_t *data, int64_t n);

}  // namespace bitnet
