// AArch64 NEON dense kernels (see dense.h for the layout): the lm_head, which decode streams
// whole once per token, in F32 / F16 / BF16 or read in place as Q8_0 / Q6_K. Handed out with the
// ternary "neon" set (dense_kernels_active); compiled with the *_neon.cpp flags.
//
//   16-element chunk c of a row:  [ w0..w3 | w4..w7 | w8..w11 | w12..w15 ]   four q registers
//   acc(r, i)[c & 1][q] = fma(chunk q-register, x_i q-register, acc)          (vfmaq_f32)
//
// Each output is summed in float_order.h's order, as every set sums it: element j into lane
// j % 16 of chain (j / 16) % 2, one fused multiply-add per element, the chains added lane by lane,
// then the 16 lanes halved down (q0 + q2, q1 + q3; their sum; its halves; the last pair). So 8
// accumulators per (weight row, activation row): a decode tile runs one or two weight rows (8 or
// 16 accumulators), a batch tile one row against kGemmActs activation rows (24 of 32 registers).
// A quantized weight is widened exactly as dequant.cpp widens it (int -> float, then the same
// float multiplies in the same order) before its fma, so the logits are those of the widened F32
// matrix bit for bit. A token's logits do not depend on the batch it came in: one order per output.
// GCC's scheduling before register allocation hoists the Q6_K widening of a whole super-block
// ahead of its fmas and spills (hundreds of stack accesses per 256 weights); without it the tiles
// keep everything in the 32 registers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-schedule-insns")
#endif
#include <arm_neon.h>

#include <cmath>
#include <cstring>
#include <type_traits>
#include <utility>

#include "kernels/dense.h"
#include "kernels/float_order.h"
#include "kernels/tuning.h"

namespace bitnet {

namespace {

// Activation rows per batch tile (8 accumulators each).
constexpr int kGemmActs = 3;

// Every index of an accumulator is a compile-time constant (unroll<N> calls f(0) .. f(N-1) as
// std::integral_constant, and the helpers are always inlined): GCC keeps an array of vectors in
// registers only when it can split it into scalars, which variable indices prevent (it kept the
// accumulators on the stack, a store per fma, with plain loops).
#define BITNET_NEON_INLINE inline __attribute__((always_inline))
#define BITNET_NEON_INLINE_LAMBDA __attribute__((always_inline))
template <int C>
using index_c = std::integral_constant<int, C>;
template <class F, int... I>
BITNET_NEON_INLINE void unrolled(F &f, std::integer_sequence<int, I...>) {
    (f(index_c<I>{}), ...);
}
template <int N, class F>
BITNET_NEON_INLINE void unroll(F &&f) {
    unrolled(f, std::make_integer_sequence<int, N>{});
}

// One 16-element chunk of weights as four q registers (lanes 0-3, 4-7, 8-11, 12-15).
struct chunk16 {
    float32x4_t q[4];
};

// The f16 stored at p (any alignment), as f32 in every lane: fcvtl widens exactly, as f16_at does.
BITNET_NEON_INLINE float32x4_t f16_splat(const uint8_t *p) {
    uint16_t h;
    std::memcpy(&h, p, sizeof h);
    return vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h)));
}

// 16 int8 as four f32 vectors, each lane (float)q * scale, rounded once.
BITNET_NEON_INLINE chunk16 scaled_int8(int8x16_t q, float32x4_t scale) {
    const int16x8_t lo = vmovl_s8(vget_low_s8(q)), hi = vmovl_high_s8(q);
    return {{vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), scale),
             vmulq_f32(vcvtq_f32_s32(vmovl_high_s16(lo)), scale),
             vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))), scale),
             vmulq_f32(vcvtq_f32_s32(vmovl_high_s16(hi)), scale)}};
}

// A weight type: kStep elements per step (a multiple of 32, so every step starts on chain 0),
// each(row, j, f) calling f(index_c<c>, w) for the step's 16-element chunks c (any order that
// keeps each chain's chunks ascending; j a multiple of kStep). Element-wise types (kElementwise)
// also give chunk(row, j) for a row's last whole chunk and one(row, j) for its last elements;
// quantized rows are whole blocks.
template <class Load>
struct by_chunks {
    static constexpr int64_t kStep = 32;
    static constexpr bool kElementwise = true;
    template <class F>
    BITNET_NEON_INLINE static void each(const uint8_t *row, int64_t j, F &&f) {
        f(index_c<0>{}, Load::chunk(row, j));
        f(index_c<1>{}, Load::chunk(row, j + 16));
    }
};

struct load_f32 : by_chunks<load_f32> {
    static int64_t row_bytes(int64_t k) { return 4 * k; }
    BITNET_NEON_INLINE static chunk16 chunk(const uint8_t *row, int64_t j) {
        const float *p = reinterpret_cast<const float *>(row) + j;
        return {{vld1q_f32(p), vld1q_f32(p + 4), vld1q_f32(p + 8), vld1q_f32(p + 12)}};
    }
    static float one(const uint8_t *row, int64_t j) { return reinterpret_cast<const float *>(row)[j]; }
};
struct load_f16 : by_chunks<load_f16> {
    static int64_t row_bytes(int64_t k) { return 2 * k; }
    BITNET_NEON_INLINE static chunk16 chunk(const uint8_t *row, int64_t j) {
        const uint16x8_t h0 = vld1q_u16(reinterpret_cast<const uint16_t *>(row) + j);
        const uint16x8_t h1 = vld1q_u16(reinterpret_cast<const uint16_t *>(row) + j + 8);
        return {{vcvt_f32_f16(vreinterpret_f16_u16(vget_low_u16(h0))),
                 vcvt_high_f32_f16(vreinterpretq_f16_u16(h0)),
                 vcvt_f32_f16(vreinterpret_f16_u16(vget_low_u16(h1))),
                 vcvt_high_f32_f16(vreinterpretq_f16_u16(h1))}};
    }
    static float one(const uint8_t *row, int64_t j) {
        return f16_to_f32(reinterpret_cast<const uint16_t *>(row)[j]);
    }
};
struct load_bf16 : by_chunks<load_bf16> {
    static int64_t row_bytes(int64_t k) { return 2 * k; }
    BITNET_NEON_INLINE static chunk16 chunk(const uint8_t *row, int64_t j) {
        const uint16x8_t h0 = vld1q_u16(reinterpret_cast<const uint16_t *>(row) + j);
        const uint16x8_t h1 = vld1q_u16(reinterpret_cast<const uint16_t *>(row) + j + 8);
        return {{vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h0), 16)),
                 vreinterpretq_f32_u32(vshll_high_n_u16(h0, 16)),
                 vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h1), 16)),
                 vreinterpretq_f32_u32(vshll_high_n_u16(h1, 16))}};
    }
    static float one(const uint8_t *row, int64_t j) {
        return bf16_to_f32(reinterpret_cast<const uint16_t *>(row)[j]);
    }
};

// Q8_0: blocks of 32 = f16 d + 32 int8; w = d * q (dequant.cpp's one multiply). A block is one
// step: its chunks 0 and 1 are the two chains.
struct load_q8_0 {
    static constexpr int64_t kStep = 32;
    static constexpr bool kElementwise = false;
    static int64_t row_bytes(int64_t k) { return k / 32 * 34; }
    template <class F>
    BITNET_NEON_INLINE static void each(const uint8_t *row, int64_t j, F &&f) {
        const uint8_t *block = row + j / 32 * 34;
        const float32x4_t d = f16_splat(block);
        f(index_c<0>{}, scaled_int8(vld1q_s8(reinterpret_cast<const int8_t *>(block + 2)), d));
        f(index_c<1>{}, scaled_int8(vld1q_s8(reinterpret_cast<const int8_t *>(block + 18)), d));
    }
};

// Q6_K: super-blocks of 256 = ql[128] | qh[64] | int8 sc[16] | f16 d (dequant.h). Element e: half
// h = e / 128, quarter g = e % 128 / 32, l = e % 32; its 6-bit value is ql[64h + 32(g & 1) + l]
// (low nibble for g < 2, high for g >= 2) | (qh[32h + l] >> 2g & 3) << 4, minus 32, and
// w = (d * sc[8h + l / 16 + 2g]) * q, in dequant.cpp's order. Chunk c = e / 16 is (h, g, l / 16)
// = (c / 8, c % 8 / 2, c % 2), so its scale is sc[c]: the 16 products d * sc[c] once per
// super-block, then 16 lanes l of one half at a time from 16-byte registers of ql and qh, using NEON's
// shift-and-insert (sli / sri put one register's bits over another's nibble):
//
//   g = 0: sli(ql0, qh, 4) & 0x3f          low nibble of ql0, qh bits 0-1 above it
//   g = 1: sli(ql1, qh >> 2, 4) & 0x3f     low nibble of ql1, qh bits 2-3
//   g = 2: sri(qh, ql0, 4) & 0x3f          high nibble of ql0 below qh bits 4-5
//   g = 3: sri(qh >> 2, ql1, 4)            high nibble of ql1 below qh bits 6-7 (nothing above)
struct load_q6_k {
    static constexpr int64_t kStep = 256;
    static constexpr bool kElementwise = false;
    static int64_t row_bytes(int64_t k) { return k / 256 * 210; }

    template <int G>
    BITNET_NEON_INLINE static int8x16_t six_bits(uint8x16_t ql0, uint8x16_t ql1, uint8x16_t qh) {
        const uint8x16_t m6 = vdupq_n_u8(0x3f);
        uint8x16_t v;
        if constexpr (G == 0) v = vandq_u8(vsliq_n_u8(ql0, qh, 4), m6);
        if constexpr (G == 1) v = vandq_u8(vsliq_n_u8(ql1, vshrq_n_u8(qh, 2), 4), m6);
        if constexpr (G == 2) v = vandq_u8(vsriq_n_u8(qh, ql0, 4), m6);
        if constexpr (G == 3) v = vsriq_n_u8(vshrq_n_u8(qh, 2), ql1, 4);
        return vsubq_s8(vreinterpretq_s8_u8(v), vdupq_n_s8(32));
    }
    // Lanes l = 16S .. 16S + 15 of half H, quarters 0..3: chunks 8H + 2g + S, all on chain S, in
    // ascending order (the two chains are independent, so S = 0's four chunks may go first).
    template <int H, int S, class F>
    BITNET_NEON_INLINE static void half_lanes(const uint8_t *sb, const float *scale, F &f) {
        const uint8x16_t ql0 = vld1q_u8(sb + 64 * H + 16 * S), ql1 = vld1q_u8(sb + 64 * H + 32 + 16 * S);
        const uint8x16_t qh = vld1q_u8(sb + 128 + 32 * H + 16 * S);
        unroll<4>([&](auto g) BITNET_NEON_INLINE_LAMBDA {
            constexpr int c = 8 * H + 2 * decltype(g)::value + S;
            f(index_c<c>{}, scaled_int8(six_bits<decltype(g)::value>(ql0, ql1, qh), vdupq_n_f32(scale[c])));
        });
    }
    template <class F>
    BITNET_NEON_INLINE static void each(const uint8_t *row, int64_t j, F &&f) {
        const uint8_t *sb = row + j / 256 * 210;
        alignas(16) float scale[16];  // d * (float)sc[c]
        const chunk16 sc =
            scaled_int8(vld1q_s8(reinterpret_cast<const int8_t *>(sb + 192)), f16_splat(sb + 208));
        for (int q = 0; q < 4; ++q) vst1q_f32(scale + 4 * q, sc.q[q]);
        half_lanes<0, 0>(sb, scale, f);
        half_lanes<0, 1>(sb, scale, f);
        half_lanes<1, 0>(sb, scale, f);
        half_lanes<1, 1>(sb, scale, f);
    }
};

// float_order.h's sum of one output's 8 accumulators: chains added, then the 16-lane halving tree.
BITNET_NEON_INLINE float sum_chains(const float32x4_t a[2][4]) {
    const float32x4_t l0 = vaddq_f32(a[0][0], a[1][0]), l1 = vaddq_f32(a[0][1], a[1][1]);
    const float32x4_t l2 = vaddq_f32(a[0][2], a[1][2]), l3 = vaddq_f32(a[0][3], a[1][3]);
    const float32x4_t t4 = vaddq_f32(vaddq_f32(l0, l2), vaddq_f32(l1, l3));
    const float32x2_t t2 = vadd_f32(vget_low_f32(t4), vget_high_f32(t4));  // l0 + l2, l1 + l3
    return vget_lane_f32(t2, 0) + vget_lane_f32(t2, 1);
}

// R weight rows (from row r of w) times M activation rows: y[i * ldy + r + t].
template <class Load, int R, int M>
void tile(const uint8_t *w, int64_t k, int64_t r, const float *x, float *y, int64_t ldy) {
    const int64_t row_bytes = Load::row_bytes(k);
    float32x4_t acc[R][M][2][4];
    unroll<R>([&](auto t) BITNET_NEON_INLINE_LAMBDA {
        unroll<M>([&](auto i) BITNET_NEON_INLINE_LAMBDA {
            unroll<8>([&](auto a) BITNET_NEON_INLINE_LAMBDA { acc[t][i][a / 4][a % 4] = vdupq_n_f32(0.0f); });
        });
    });
    // acc[t][i][chain] += chunk * x_i's same 16 elements, from element j on.
    auto add = [&](auto t, int64_t j, auto chain, const chunk16 &wv) BITNET_NEON_INLINE_LAMBDA {
        unroll<M>([&](auto i) BITNET_NEON_INLINE_LAMBDA {
            unroll<4>([&](auto q) BITNET_NEON_INLINE_LAMBDA {
                acc[t][i][chain][q] =
                    vfmaq_f32(acc[t][i][chain][q], wv.q[q], vld1q_f32(x + i * k + j + 4 * q));
            });
        });
    };
    int64_t j = 0;
    for (; j + Load::kStep <= k; j += Load::kStep)
        unroll<R>([&](auto t) BITNET_NEON_INLINE_LAMBDA {
            Load::each(w + (r + t) * row_bytes, j, [&](auto c, const chunk16 &wv) BITNET_NEON_INLINE_LAMBDA {
                add(t, j + 16 * c, index_c<c % 2>{}, wv);
            });
        });
    if constexpr (Load::kElementwise) {
        if (j + 16 <= k) {  // a last whole chunk: chain 0, as j is a multiple of 32
            unroll<R>([&](auto t) BITNET_NEON_INLINE_LAMBDA {
                add(t, j, index_c<0>{}, Load::chunk(w + (r + t) * row_bytes, j));
            });
            j += 16;
        }
    }
    unroll<R>([&](auto t) BITNET_NEON_INLINE_LAMBDA {
        unroll<M>([&](auto i) BITNET_NEON_INLINE_LAMBDA {
            float &out = y[i * ldy + r + t];
            if (j == k) {
                out = sum_chains(acc[t][i]);
                return;
            }
            // The rest lane by lane in scalar fma (float_order.h), then the reference's sum.
            if constexpr (Load::kElementwise) {
                float chain[2][kSumLanes];
                unroll<8>([&](auto a) BITNET_NEON_INLINE_LAMBDA {
                    vst1q_f32(&chain[a / 4][4 * (a % 4)], acc[t][i][a / 4][a % 4]);
                });
                for (int64_t u = j; u < k; ++u) {
                    float &l = chain[(u / kSumLanes) & 1][u % kSumLanes];
                    l = std::fma(Load::one(w + (r + t) * row_bytes, u), x[i * k + u], l);
                }
                out = sum_two_chains(chain);
            }
        });
    });
}

template <class Load, int M>
void rows_times(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const float *x, float *y, int64_t ldy) {
    for (int64_t r = r0; r < r1; ++r) tile<Load, 1, M>(w, k, r, x, y, ldy);
}

#include "kernels/dense_gemv_rows.h"

// Decode: one or two weight rows per tile (tuning().head_gemv_rows). Batches: each weight row
// once per kGemmActs activation rows, the rest in one more pass.
template <class Load>
void matmul(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const float *x, int64_t m, float *y,
            int64_t ldy) {
    if (m == 1) return gemv_rows<Load>(w, k, r0, r1, x, y, ldy);
    int64_t i = 0;
    for (; i + kGemmActs <= m; i += kGemmActs)
        rows_times<Load, kGemmActs>(w, k, r0, r1, x + i * k, y + i * ldy, ldy);
    if (m - i == 2) rows_times<Load, 2>(w, k, r0, r1, x + i * k, y + i * ldy, ldy);
    if (m - i == 1) rows_times<Load, 1>(w, k, r0, r1, x + i * k, y + i * ldy, ldy);
}

#include "kernels/dense_entry_points.h"

// 4 lanes at a time with the scalar operations (division, then multiply): the same bits.
void scale_sums(const int32_t *acc, int64_t n, float s, float w_scale, float *y) {
    const float32x4_t vs = vdupq_n_f32(s), vw = vdupq_n_f32(w_scale);
    int64_t r = 0;
    for (; r + 4 <= n; r += 4)
        vst1q_f32(y + r, vmulq_f32(vdivq_f32(vcvtq_f32_s32(vld1q_s32(acc + r)), vs), vw));
    for (; r < n; ++r) y[r] = static_cast<float>(acc[r]) / s * w_scale;
}

// The vector loops and attention stay the scalar set's (their reference order is serial or
// already the scalar code's); the heads and the ternary layers' scaling are NEON.
dense_kernel_set make_neon_set() {
    dense_kernel_set s = *dense_kernels_scalar();
    s.name = "neon";
    s.matmul_f32 = matmul_f32;
    s.matmul_f16 = matmul_f16;
    s.matmul_bf16 = matmul_bf16;
    s.matmul_q8_0 = matmul_q8_0;
    s.matmul_q6_k = matmul_q6_k;
    s.scale_sums = scale_sums;
    return s;
}

}  // namespace

const dense_kernel_set *dense_kernels_neon() {
    static const dense_kernel_set set = make_neon_set();
    return &set;
}

}  // namespace bitnet
