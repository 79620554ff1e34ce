// The int8-activation output head: an option (off by default) that multiplies a Q8_0 or Q6_K
// lm_head by activations quantized to int8 per block, with integer dot products, as ggml's
// Q8_0 x Q8_0 and Q6_K x Q8_K do. Faster than widening every weight to f32, but not exact for
// the stored weights: the default head (dense.h) is. The definition, which every kernel set
// reproduces bit for bit:
//
//   activations (one row of k floats, after output_norm), per block of B elements (B = 32 for a
//   Q8_0 head, 256 for Q6_K):  a = max(max|x_j|, 1e-5f);  s = 127.0f / a;  d_x = a / 127.0f;
//   q_j = clamp(rint(x_j * s), -127, 127)  (f32, round half to even); for Q6_K also
//   bsum[t] = sum of q over each 16 elements (t = j / 16).
//   Q8_0 row:  block b (32 elements) gives 8 exact int32 sums g = 0..7 of elements 4g .. 4g+3,
//     d_b = d_w(b) * d_x(b) (f32), and lane L = 8 (b % 2) + g of 16 f32 lanes takes
//     lane[L] = fma((float)isum(b, g), d_b, lane[L]); y = float_order.h's halving tree of the 16
//     lanes (a zmm holds two blocks; AVX2 keeps the even and odd blocks in two ymm).
//   Q6_K row:  super-block b gives the exact int32 T_b = sum_j sc[j / 16] * q6_j * q_j (q6_j the
//     6-bit value minus 32, dequant.h), d_b = d_w(b) * d_x(b), y = fma((float)T_b, d_b, y) with
//     y = 0 first and b ascending.
//
// The activations are quantized once per token by quantize_head_acts (one scalar routine for
// every set: k floats, negligible beside the vocab x k head). Layout: row i of the m rows at
// q + i k, d + i k / B, bsum + i k / 16.
#pragma once
#include <cstdint>

namespace bitnet {

struct head_acts {
    const int8_t *q;
    const float *d;
    const int16_t *bsum;  // Q6_K only
};

struct head_int8_kernel_set {
    const char *name;
    // y[i * ldy + r] for weight rows r0 <= r < r1 and activation rows i < m (k: whole blocks).
    void (*matmul_q8_0)(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const head_acts &a, int64_t m,
                        float *y, int64_t ldy);
    void (*matmul_q6_k)(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const head_acts &a, int64_t m,
                        float *y, int64_t ldy);
};

// Activation block of a head type (32 for Q8_0, 256 for Q6_K), 0 for types without this option.
int64_t head_act_block(uint32_t ggml_type);
// m rows of k floats -> q[m * k], d[m * k / block], and (bsum != nullptr) bsum[m * k / 16].
void quantize_head_acts(const float *x, int64_t m, int64_t k, int64_t block, int8_t *q, float *d, int16_t *bsum);

const head_int8_kernel_set *head_int8_kernels_scalar();
const head_int8_kernel_set *head_int8_kernels_avx2();        // maddubs; nullptr where not compiled
const head_int8_kernel_set *head_int8_kernels_avxvnni();     // vpdpbusd (VEX); nullptr where not compiled
const head_int8_kernel_set *head_int8_kernels_avx512bw();    // nullptr where not compiled
const head_int8_kernel_set *head_int8_kernels_avx512vnni();  // nullptr where not compiled
const head_int8_kernel_set *head_int8_kernels_neon();        // sdot; nullptr where not compiled
// The set matching the active ternary kernel set.
const head_int8_kernel_set *head_int8_kernels_active();

}  // namespace bitnet
