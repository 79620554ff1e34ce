// llama.cpp's ternary block types TQ1_0 and TQ2_0, and ternary matrices with one scale per
// 256-weight block (what a TQ tensor is when its blocks' scales disagree).
//
// Both types store, per block of 256 consecutive weights of a row, codes c = w + 1 in {0,1,2}
// and an f16 scale d: weight = (c - 1) * d (DESIGN.md section 2; numpy twin:
// bitnet/convert/tq_packing.py).
//
//   TQ2_0, 66 bytes: qs[64] | d.  Two 128-weight halves h, 32 bytes each, LSB first:
//       qs[32h + m] = c[128h+m] | c[128h+32+m] << 2 | c[128h+64+m] << 4 | c[128h+96+m] << 6
//   TQ1_0, 54 bytes: qs[48] | qh[4] | d.  Five trits per byte as a base-3 fraction: the byte is
//       ceil(v * 256 / 243) for v = t0*81 + t1*27 + t2*9 + t3*3 + t4, and trit n reads back as
//       ((byte * 3^n) mod 256) * 3 >> 8.
//       qs[m], m < 32:      weights m + 32n         (n = 0..4: weights 0..159)
//       qs[32+m], m < 16:   weights 160 + m + 16n   (weights 160..239)
//       qh[j], j < 4:       weights 240 + j + 4n, n < 4 (the fifth trit is 0)
//
// Blocked matrix: codes in the I2_S layout (kernels/ternary.h), plus block_scales[r * k/256 + b]
// for block b of row r. y = sum_b d_b * (integer dot of block b) / s_act.
#pragma once
#include <cstdint>

namespace bitnet {

constexpr int64_t kTQBlock = 256;         // weights per TQ block
constexpr int64_t kTQ2BlockBytes = 66;    // qs[64] + f16 d
constexpr int64_t kTQ1BlockBytes = 54;    // qs[48] + qh[4] + f16 d

// One block -> 256 ternary values in {-1, 0, 1} and its scale d (f16 widened to f32).
// tq2_0_decode_block returns false if a code is 3 (unused: not a valid TQ2_0 block).
bool tq2_0_decode_block(const uint8_t *block, int8_t *w, float *d);
void tq1_0_decode_block(const uint8_t *block, int8_t *w, float *d);

// y[i*ldy + r] = (sum_b block_scales[r*nb + b] * dot_b(W[r], a_i)) / a_scale[i] for r in [r0, r1),
// i in [0, m); nb = k / 256, dot_b the exact int32 dot of block b. Scalar reference.
void ternary_blocked_matmul_ref(const uint8_t *codes, const float *block_scales, int64_t k, int64_t r0,
                                int64_t r1, const int8_t *a, const float *a_scale, int64_t m, float *y,
                                int64_t ldy);

}  // namespace bitnet
