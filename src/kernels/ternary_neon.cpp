// AArch64 NEON kernels with the dot-product extension (compiled with -march=armv8.2-a+dotprod;
// dispatch.cpp hands them out only when the CPU reports ASIMDDP).
//
// Weights, I2_S: one 128-element block = 32 bytes = two q registers (bytes 0..15, 16..31).
// NEON shifts single bytes, so the decode is a shift (and a mask for all but the top pair):
//
//   w      = [ byte0 .. byte15 ][ byte16 .. byte31 ]     byte m = c[m]<<6|c[32+m]<<4|c[64+m]<<2|c[96+m]
//   c0 = w >> 6      -> columns   0..15 | 16..31      x  a[  0.. 15] | a[ 16.. 31]
//   c1 = (w >> 4)&3  -> columns  32..47 | 48..63      x  a[ 32.. 47] | a[ 48.. 63]
//   c2 = (w >> 2)&3  -> columns  64..79 | 80..95      x  a[ 64.. 79] | a[ 80.. 95]
//   c3 =  w      &3  -> columns  96..111|112..127     x  a[ 96..111] | a[112..127]
//
// sdot (vdotq_s32) adds 4 int8*int8 products into each int32 lane: codes 0..3 are valid signed
// int8, the accumulation is exact int32. Codes are w + 1, so sum w*a = sum c*a - a_sums[i].
//
// Activations: m rows of k int8, row i at a + i*k. Output y[i*ldy + r] (int32).
// Tiles: m == 1 (GEMV) runs 4 weight rows against the row; m > 1 (GEMM) runs 2 weight rows
// against 4 activation rows, over row chunks of kRowChunk.
#include <arm_neon.h>

#include "kernels/ternary.h"
#include "kernels/ternary_impl.h"

namespace bitnet {
namespace {

constexpr int64_t kRowChunk = 16;

// One block of one weight row into 8 q registers of codes, in the column order drawn above.
inline void decode_block(const uint8_t *p, int8x16_t codes[8]) {
    const uint8x16_t mask = vdupq_n_u8(3);
    for (int h = 0; h < 2; ++h) {
        const uint8x16_t v = vld1q_u8(p + 16 * h);
        codes[0 + h] = vreinterpretq_s8_u8(vshrq_n_u8(v, 6));
        codes[2 + h] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v, 4), mask));
        codes[4 + h] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v, 2), mask));
        codes[6 + h] = vreinterpretq_s8_u8(vandq_u8(v, mask));
    }
}

// R weight rows (w, w + row_bytes, ...) times M activation rows (a, a + k, ...):
// y[i*ldy + r] for r < R, i < M, where y points at the tile's first output.
// prefetch: the next tile's R rows, fetched R*32 bytes per block so that they have arrived when
// this tile ends (hardware prefetchers do badly on R short interleaved streams).
template <int R, int M>
void i2s_tile(const uint8_t *w, int64_t k, const int8_t *a, const int32_t *a_sums, int32_t *y, int64_t ldy,
              const uint8_t *prefetch) {
    const int64_t row_bytes = k / 4;
    const int64_t n_blocks = k / kI2SBlock;
    int32x4_t acc[R][M];
    for (int r = 0; r < R; ++r)
        for (int i = 0; i < M; ++i) acc[r][i] = vdupq_n_s32(0);
    for (int64_t b = 0; b < n_blocks; ++b) {
        for (int64_t l = 0; l < R * kI2SBlockBytes; l += 64)
            __builtin_prefetch(prefetch + b * R * kI2SBlockBytes + l);
        for (int r = 0; r < R; ++r) {
            int8x16_t codes[8];
            decode_block(w + r * row_bytes + b * kI2SBlockBytes, codes);
            for (int i = 0; i < M; ++i) {
                const int8_t *ab = a + i * k + b * kI2SBlock;
                for (int j = 0; j < 8; ++j) acc[r][i] = vdotq_s32(acc[r][i], codes[j], vld1q_s8(ab + 16 * j));
            }
        }
    }
    for (int r = 0; r < R; ++r)
        for (int i = 0; i < M; ++i) y[i * ldy + r] = sub_wrapping(vaddvq_s32(acc[r][i]), a_sums[i]);
}

// M activation rows against weight rows [r0, r1).
template <int M>
void i2s_rows(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a, const int32_t *a_sums,
              int32_t *y, int64_t ldy) {
    constexpr int R = M == 1 ? 4 : 2;
    const int64_t row_bytes = k / 4;
    int64_t r = r0;
    // The prefetch may run up to one tile past r1 (prefetches never fault).
    for (; r + R <= r1; r += R)
        i2s_tile<R, M>(w + r * row_bytes, k, a, a_sums, y + r, ldy, w + (r + R) * row_bytes);
    for (; r < r1; ++r) i2s_tile<1, M>(w + r * row_bytes, k, a, a_sums, y + r, ldy, w + (r + 1) * row_bytes);
}

void i2s_matmul_neon(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a,
                     const int32_t *a_sums, int64_t m, int32_t *y, int64_t ldy) {
    if (m == 1) {
        i2s_rows<1>(w, k, r0, r1, a, a_sums, y, ldy);
        return;
    }
    for (int64_t c0 = r0; c0 < r1; c0 += kRowChunk) {
        const int64_t c1 = std::min(r1, c0 + kRowChunk);
        int64_t i = 0;
        for (; i + 4 <= m; i += 4) i2s_rows<4>(w, k, c0, c1, a + i * k, a_sums + i, y + i * ldy, ldy);
        switch (m - i) {
            case 3:
                i2s_rows<3>(w, k, c0, c1, a + i * k, a_sums + i, y + i * ldy, ldy);
                break;
            case 2:
                i2s_rows<2>(w, k, c0, c1, a + i * k, a_sums + i, y + i * ldy, ldy);
                break;
            case 1:
                i2s_rows<1>(w, k, c0, c1, a + i * k, a_sums + i, y + i * ldy, ldy);
                break;
            default:
                break;
        }
    }
}

// 4 floats -> 4 int32 codes with the operations of quantize_one_int8 (vrndnq: ties to even).
inline int32x4_t quantize4(const float *x, float32x4_t s) {
    float32x4_t r = vrndnq_f32(vmulq_f32(vld1q_f32(x), s));
    r = vminq_f32(vmaxq_f32(r, vdupq_n_f32(-128.0f)), vdupq_n_f32(127.0f));
    return vcvtq_s32_f32(r);
}

void quantize_row_int8_neon(const float *x, int64_t k, int8_t *q, float *scale, int32_t *sum) {
    float32x4_t m0 = vdupq_n_f32(0.0f), m1 = vdupq_n_f32(0.0f);
    int64_t i = 0;
    for (; i + 8 <= k; i += 8) {
        m0 = vmaxq_f32(m0, vabsq_f32(vld1q_f32(x + i)));
        m1 = vmaxq_f32(m1, vabsq_f32(vld1q_f32(x + i + 4)));
    }
    float amax = vmaxvq_f32(vmaxq_f32(m0, m1));
    for (; i < k; ++i) amax = std::max(amax, std::fabs(x[i]));

    const float s = int8_scale_from_absmax(amax);
    const float32x4_t vs = vdupq_n_f32(s);
    int32x4_t vsum = vdupq_n_s32(0);
    for (i = 0; i + 8 <= k; i += 8) {
        const int32x4_t q0 = quantize4(x + i, vs), q1 = quantize4(x + i + 4, vs);
        vsum = vaddq_s32(vsum, vaddq_s32(q0, q1));
        const int16x8_t p = vcombine_s16(vmovn_s32(q0), vmovn_s32(q1));
        vst1_s8(q + i, vmovn_s16(p));
    }
    int32_t total = vaddvq_s32(vsum);
    for (; i < k; ++i) {
        q[i] = quantize_one_int8(x[i], s);
        total += q[i];
    }
    *scale = s;
    *sum = total;
}

const ternary_kernel_set kNeon = {"neon", i2s_matmul_neon, quantize_row_int8_neon};

}  // namespace

const ternary_kernel_set *ternary_kernels_neon() {
    return &kNeon;
}

}  // namespace bitnet
