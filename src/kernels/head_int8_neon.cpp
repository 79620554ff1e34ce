// NEON + dotprod int8-activation head (definition in head_int8.h; compiled with
// -march=armv8.2-a+dotprod, picked only with the neon ternary set, whose CPUs have sdot).
//
//   Q8_0 block b: two sdot of 16 int8 pairs -> the 8 int32 sums of 4 (lanes g = 0-3, 4-7);
//     lanes[b % 2][0 | 1] = fma(cvt(sums), d_w * d_x, ...): the 16 f32 lanes of head_int8.h,
//     folded by float_order.h's tree at the end.
//   Q6_K super-block: the 6-bit values minus 32 (signed, so no correction term), one sdot per
//     16 elements, times that sub-block's scale into int32 lanes; one horizontal sum per
//     super-block, then the scalar fma chain.
#include <arm_neon.h>

#include <cmath>
#include <cstring>

#include "kernels/dense.h"
#include "kernels/float_order.h"
#include "kernels/head_int8.h"

namespace bitnet {
namespace {

void head_q8_0_neon(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const head_acts &a, int64_t m, float *y,
                    int64_t ldy) {
    const int64_t nb = k / 32;
    for (int64_t r = r0; r < r1; ++r) {
        const uint8_t *row = w + r * nb * 34;
        for (int64_t i = 0; i < m; ++i) {
            const int8_t *q = a.q + i * k;
            const float *dx = a.d + i * nb;
            float32x4_t acc[2][2] = {{vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)}, {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)}};
            for (int64_t b = 0; b < nb; ++b) {
                const uint8_t *block = row + b * 34;
                const int8_t *wq = reinterpret_cast<const int8_t *>(block + 2);
                const int32x4_t lo = vdotq_s32(vdupq_n_s32(0), vld1q_s8(wq), vld1q_s8(q + 32 * b));
                const int32x4_t hi = vdotq_s32(vdupq_n_s32(0), vld1q_s8(wq + 16), vld1q_s8(q + 32 * b + 16));
                const float32x4_t db = vdupq_n_f32(f16_at(block) * dx[b]);
                float32x4_t *lanes = acc[b & 1];
                lanes[0] = vfmaq_f32(lanes[0], vcvtq_f32_s32(lo), db);
                lanes[1] = vfmaq_f32(lanes[1], vcvtq_f32_s32(hi), db);
            }
            float l[kSumLanes];
            for (int c = 0; c < 4; ++c) vst1q_f32(l + 4 * c, acc[c / 2][c % 2]);
            y[i * ldy + r] = sum_lanes16(l);
        }
    }
}

// T_b of head_int8.h for one super-block (layout in dequant.h).
int32_t q6_k_block_sum(const uint8_t *sb, const int8_t *q) {
    const uint8x16_t m4 = vdupq_n_u8(15), m30 = vdupq_n_u8(0x30);
    const int8x16_t bias = vdupq_n_s8(32);
    const auto *sc = reinterpret_cast<const int8_t *>(sb + 192);
    int32x4_t sum = vdupq_n_s32(0);
    for (int h = 0; h < 2; ++h)
        for (int half16 = 0; half16 < 2; ++half16) {  // elements l = 16 half16 .. +16 of each quarter
            const int o = 16 * half16;
            const uint8x16_t ql0 = vld1q_u8(sb + 64 * h + o), ql1 = vld1q_u8(sb + 64 * h + 32 + o);
            const uint8x16_t qh = vld1q_u8(sb + 128 + 32 * h + o);
            const uint8x16_t u[4] = {
                vorrq_u8(vandq_u8(ql0, m4), vandq_u8(vshlq_n_u8(qh, 4), m30)),
                vorrq_u8(vandq_u8(ql1, m4), vandq_u8(vshlq_n_u8(qh, 2), m30)),
                vorrq_u8(vshrq_n_u8(ql0, 4), vandq_u8(qh, m30)),
                vorrq_u8(vshrq_n_u8(ql1, 4), vandq_u8(vshrq_n_u8(qh, 2), m30)),
            };
            for (int g = 0; g < 4; ++g) {
                const int8x16_t v = vsubq_s8(vreinterpretq_s8_u8(u[g]), bias);
                const int32x4_t d = vdotq_s32(vdupq_n_s32(0), v, vld1q_s8(q + 128 * h + 32 * g + o));
                sum = vmlaq_n_s32(sum, d, sc[8 * h + 2 * g + half16]);
            }
        }
    return vaddvq_s32(sum);
}

void head_q6_k_neon(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const head_acts &a, int64_t m, float *y,
                    int64_t ldy) {
    const int64_t nb = k / 256;
    for (int64_t r = r0; r < r1; ++r) {
        const uint8_t *row = w + r * nb * 210;
        for (int64_t i = 0; i < m; ++i) {
            float acc = 0.0f;
            for (int64_t b = 0; b < nb; ++b) {
                const uint8_t *sb = row + b * 210;
                const int32_t total = q6_k_block_sum(sb, a.q + i * k + 256 * b);
                acc = std::fma(static_cast<float>(total), f16_at(sb + 208) * a.d[i * nb + b], acc);
            }
            y[i * ldy + r] = acc;
        }
    }
}

const head_int8_kernel_set kNeon = {"neon", head_q8_0_neon, head_q6_k_neon};

}  // namespace

const head_int8_kernel_set *head_int8_kernels_neon() { return &kNeon; }

}  // namespace bitnet
