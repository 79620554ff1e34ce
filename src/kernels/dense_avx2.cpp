// AVX2 + FMA + F16C dense kernels (see dense.h for the layout): the lm_head, which decode
// streams whole once per token (0.66 GB of F16 for the 2B-4T shape, 0.43 GB of Q6_K).
//
//   weight row r:  [ w0 .. w7 w8 .. w15 | w16 .. w31 | ... | tail (lane by lane) ]  F32, or F16 /
//                    half 0   half 1      next chunk                                BF16 / Q8_0 /
//                                                                                   Q6_K widened in
//   acc(r, i)[chain][half] += row half * x_i half                                   registers
//
// Each output is summed in float_order.h's order (the reference's, as every set): two chains, for
// the even and the odd 16-element chunks of the row, each chunk as two 8-lane halves here; the
// chains added, then the 16 lanes halved down. A row's four FMA chains hide the FMA latency
// without a second memory stream. Every output has that one order whatever the tile, so a
// token's logits do not depend on the batch it came in.
#include "kernels/simd_x86.h"

#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/dense.h"
#include "kernels/float_order.h"
#include "kernels/float_order_x86.h"
#include "kernels/tuning.h"

namespace bitnet {

namespace {

// Activation rows per batch tile: 4 accumulators per (weight row, activation row), and 16 ymm.
constexpr int kGemmActs = 3;

// A weight type: its row size in bytes, where element j's bytes start (for the prefetch), one
// element as f32 (the tail), 8 elements j .. j+7 widened (j a multiple of 8, all inside the row),
// and each256(row, j, f): f(v, vector) for the 32 vectors of elements j .. j+255 (j a multiple of
// 256), v = 0..31 in order; a type whose layout has 256-element blocks widens them whole there.
template <class Load>
struct by_eight {
    // Four calls per iteration: v & 3 is then a constant after inlining (accumulators in registers).
    template <class F>
    static void each256(const uint8_t *row, int64_t j, F &&f) {
        for (int v = 0; v < 32; v += 4) {
            f(v, Load::vec(row, j + 8 * v));
            f(v + 1, Load::vec(row, j + 8 * v + 8));
            f(v + 2, Load::vec(row, j + 8 * v + 16));
            f(v + 3, Load::vec(row, j + 8 * v + 24));
        }
    }
};

struct load_f32 : by_eight<load_f32> {
    static int64_t row_bytes(int64_t k) { return 4 * k; }
    static int64_t offset(int64_t j) { return 4 * j; }
    static __m256 vec(const uint8_t *row, int64_t j) { return _mm256_loadu_ps(reinterpret_cast<const float *>(row) + j); }
    static float one(const uint8_t *row, int64_t j) { return reinterpret_cast<const float *>(row)[j]; }
};
struct load_f16 : by_eight<load_f16> {
    static int64_t row_bytes(int64_t k) { return 2 * k; }
    static int64_t offset(int64_t j) { return 2 * j; }
    static __m256 vec(const uint8_t *row, int64_t j) {
        return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(row + 2 * j)));
    }
    static float one(const uint8_t *row, int64_t j) { return f16_to_f32(reinterpret_cast<const uint16_t *>(row)[j]); }
};
struct load_bf16 : by_eight<load_bf16> {
    static int64_t row_bytes(int64_t k) { return 2 * k; }
    static int64_t offset(int64_t j) { return 2 * j; }
    static __m256 vec(const uint8_t *row, int64_t j) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i *>(row + 2 * j));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    static float one(const uint8_t *row, int64_t j) { return bf16_to_f32(reinterpret_cast<const uint16_t *>(row)[j]); }
};

inline float f16_scale(const uint8_t *p) {  // f16_at, with F16C
    uint16_t h;
    std::memcpy(&h, p, sizeof h);
    return _cvtsh_ss(h);
}

// 8 int8 (sign-extended from the low 8 bytes of q), times a scale: (float)q * scale, rounded
// once, as the scalar widening does.
inline __m256 scaled_int8(__m128i q, __m256 scale) {
    return _mm256_mul_ps(scale, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)));
}

// Q8_0: blocks of 32 = f16 d + 32 int8; w = d * q (dequant.cpp's one multiply). The tail is
// whole blocks (k % 32 == 0), so `one` is never needed.
struct load_q8_0 : by_eight<load_q8_0> {
    static int64_t row_bytes(int64_t k) { return k / 32 * 34; }
    static int64_t offset(int64_t j) { return j / 32 * 34; }
    static __m256 vec(const uint8_t *row, int64_t j) {
        const uint8_t *block = row + j / 32 * 34;
        const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i *>(block + 2 + (j & 31)));
        return scaled_int8(q, _mm256_set1_ps(f16_scale(block)));
    }
    static float one(const uint8_t *row, int64_t j) {
        const uint8_t *block = row + j / 32 * 34;
        return f16_scale(block) * static_cast<float>(static_cast<int8_t>(block[2 + (j & 31)]));
    }
};

// Q6_K: super-blocks of 256 = ql[128] | qh[64] | int8 sc[16] | f16 d (dequant.h). Element e of a
// super-block: half h = e / 128, quarter g = e % 128 / 32, l = e % 32; its 6-bit value is
// ql[64h + 32(g & 1) + l] (low nibble for g < 2, high for g >= 2) | (qh[32h + l] >> 2g & 3) << 4,
// minus 32, and w = (d * sc[8h + l / 16 + 2g]) * q, in dequant.cpp's order. A super-block at a
// time: its 16 scales d * sc[s] once (rounded as the scalar code rounds them), then 64 elements
// (quarters 2p, 2p + 1 of half h) at a time:
//
//   ql[64h .. 64h + 32), ql[64h + 32 .. 64h + 64)  -> low nibbles (p = 0) or high (p = 1): two ymm
//   qh[32h .. 32h + 32) >> 4p (quarter 2p), >> 4p + 2 (quarter 2p + 1), & 3, << 4: the top bits
//   the 64 int8 through the stack, so that each 8 widen with one vpmovsxbd from memory
// K is a whole number of super-blocks, so there is no tail. This is the batch path; decode (one
// activation row) takes dense_q6_k_gemv_avx2.h's, which needs no trip through the stack.
struct load_q6_k {
    static int64_t row_bytes(int64_t k) { return k / 256 * 210; }
    static int64_t offset(int64_t j) { return j / 256 * 210; }
    // Element j's super-block widened whole (the tile never needs these: no tail).
    static void widen(const uint8_t *row, int64_t j, float out[256]) {
        each256(row, j & ~int64_t{255}, [&](int v, __m256 w) { _mm256_storeu_ps(out + 8 * v, w); });
    }
    static __m256 vec(const uint8_t *row, int64_t j) {
        float all[256];
        widen(row, j, all);
        return _mm256_loadu_ps(all + (j & 255));
    }
    static float one(const uint8_t *row, int64_t j) {
        float all[256];
        widen(row, j, all);
        return all[j & 255];
    }

    // The 64 int8 values of quarters 2p, 2p + 1 of half h (P = 2h + p) into q[0..64).
    template <int P>
    static void quarters(const uint8_t *sb, int8_t *q) {
        constexpr int h = P / 2, p = P % 2;
        const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(sb + 64 * h));
        const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(sb + 64 * h + 32));
        const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(sb + 128 + 32 * h));
        const __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(0x30), bias = _mm256_set1_epi8(32);
        // Bits 4-5 of each byte after a 16-bit shift: what crosses bytes is masked off.
        const __m256i top0 = p == 0 ? _mm256_slli_epi16(qh, 4) : qh;
        const __m256i top1 = p == 0 ? _mm256_slli_epi16(qh, 2) : _mm256_srli_epi16(qh, 2);
        const __m256i low0 = p == 0 ? ql0 : _mm256_srli_epi16(ql0, 4);
        const __m256i low1 = p == 0 ? ql1 : _mm256_srli_epi16(ql1, 4);
        const __m256i q0 = _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(low0, m4), _mm256_and_si256(top0, m2)), bias);
        const __m256i q1 = _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(low1, m4), _mm256_and_si256(top1, m2)), bias);
        _mm256_store_si256(reinterpret_cast<__m256i *>(q), q0);
        _mm256_store_si256(reinterpret_cast<__m256i *>(q + 32), q1);
    }
    template <int P, class F>
    static void each64(const float *scale, const uint8_t *sb, F &f) {
        alignas(32) int8_t q[64];
        quarters<P>(sb, q);
        for (int v = 0; v < 8; v += 4)  // four calls per iteration, as in by_eight
            for (int u = 0; u < 4; ++u) {
                const __m128i q8 = _mm_loadl_epi64(reinterpret_cast<const __m128i *>(q + 8 * (v + u)));
                f(8 * P + v + u, scaled_int8(q8, _mm256_broadcast_ss(scale + 4 * P + (v + u) / 2)));
            }
    }
    template <class F>
    static void each256(const uint8_t *row, int64_t j, F &&f) {
        const uint8_t *sb = row + j / 256 * 210;
        alignas(32) float scale[16];
        const __m256 d = _mm256_set1_ps(f16_scale(sb + 208));
        const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i *>(sb + 192));
        _mm256_store_ps(scale, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc))));
        _mm256_store_ps(scale + 8, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(sc, sc)))));
        each64<0>(scale, sb, f);
        each64<1>(scale, sb, f);
        each64<2>(scale, sb, f);
        each64<3>(scale, sb, f);
    }
};

// R weight rows (starting at row r of w) times M activation rows: y[i * ldy + r + t]. Elements
// are taken 256 at a time, then in 16-element chunks. acc[t][i][2 * chain + half]: vector v of a
// 256-element step is half v & 1 of chunk v / 2, whose chain is (v / 2) & 1.
template <class Load, int R, int M>
void tile(const uint8_t *w, int64_t k, int64_t r, const float *x, float *y, int64_t ldy) {
    // The tile's R rows are read side by side: the data not yet asked for starts R-1 rows past the
    // first row's position, so the prefetch distance counts from there.
    const int64_t row_bytes = Load::row_bytes(k), ahead = tuning().head_prefetch_bytes + (R - 1) * row_bytes;
    __m256 acc[R][M][4];
    for (int t = 0; t < R; ++t)
        for (int i = 0; i < M; ++i)
            for (int a = 0; a < 4; ++a) acc[t][i][a] = _mm256_setzero_ps();
    int64_t prefetched = 0;  // bytes of each row prefetched so far (from `ahead` on)
    int64_t j = 0;
    for (; j + 256 <= k; j += 256) {
        const int64_t upto = Load::offset(j + 256);
        for (; prefetched < upto; prefetched += 64)
            for (int t = 0; t < R; ++t)
                _mm_prefetch(reinterpret_cast<const char *>(w + (r + t) * row_bytes + prefetched + ahead), _MM_HINT_T1);
        for (int t = 0; t < R; ++t)
            Load::each256(w + (r + t) * row_bytes, j, [&](int v, __m256 wv) {
                for (int i = 0; i < M; ++i)
                    acc[t][i][v & 3] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + i * k + j + 8 * v), acc[t][i][v & 3]);
            });
    }
    // Whole 16-element chunks, then the rest lane by lane in scalar fma (float_order.h).
    for (; j + 16 <= k; j += 16) {
        const int chain = static_cast<int>(j / 16) & 1;
        for (int t = 0; t < R; ++t)
            for (int half = 0; half < 2; ++half) {
                const __m256 wv = Load::vec(w + (r + t) * row_bytes, j + 8 * half);
                for (int i = 0; i < M; ++i)
                    acc[t][i][2 * chain + half] =
                        _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + i * k + j + 8 * half), acc[t][i][2 * chain + half]);
            }
    }
    for (int t = 0; t < R; ++t)
        for (int i = 0; i < M; ++i) {
            if (j == k) {
                y[i * ldy + r + t] =
                    sum_lanes16(_mm256_add_ps(acc[t][i][0], acc[t][i][2]), _mm256_add_ps(acc[t][i][1], acc[t][i][3]));
                continue;
            }
            float chain[2][kSumLanes];
            for (int c = 0; c < 4; ++c) _mm256_storeu_ps(&chain[c / 2][8 * (c % 2)], acc[t][i][c]);
            for (int64_t u = j; u < k; ++u) {
                float &l = chain[(u / kSumLanes) & 1][u % kSumLanes];
                l = std::fma(Load::one(w + (r + t) * row_bytes, u), x[i * k + u], l);
            }
            y[i * ldy + r + t] = sum_two_chains(chain);
        }
}

template <class Load, int M>
void rows_times(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const float *x, float *y, int64_t ldy) {
    for (int64_t r = r0; r < r1; ++r) tile<Load, 1, M>(w, k, r, x, y, ldy);
}

#include "kernels/dense_gemv_rows.h"
#include "kernels/dense_q6_k_gemv_avx2.h"

// Decode: one or two weight rows per tile (tuning().head_gemv_rows: memory streams), Q6_K its own
// one-row path. Batches: each weight row once per kGemmActs activation rows, the rest in one more
// pass.
template <class Load>
void matmul(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const float *x, int64_t m, float *y, int64_t ldy) {
    if constexpr (std::is_same_v<Load, load_q6_k>)
        if (m == 1) return gemv_q6_k_fields(w, k, r0, r1, x, y);
    if (m == 1) return gemv_rows<Load>(w, k, r0, r1, x, y, ldy);
    int64_t i = 0;
    for (; i + kGemmActs <= m; i += kGemmActs) rows_times<Load, kGemmActs>(w, k, r0, r1, x + i * k, y + i * ldy, ldy);
    if (m - i == 2) rows_times<Load, 2>(w, k, r0, r1, x + i * k, y + i * ldy, ldy);
    if (m - i == 1) rows_times<Load, 1>(w, k, r0, r1, x + i * k, y + i * ldy, ldy);
}

#include "kernels/dense_entry_points.h"

// 8 lanes, then the lanes' sums added; the scalar tail after.
float dot_f32(const float *a, const float *b, int64_t n) {
    __m256 acc = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), acc);
    float s = sum_lanes8_folded(acc);
    for (; j < n; ++j) s += a[j] * b[j];
    return s;
}
void axpy_f32(float alpha, const float *x, float *y, int64_t n) {
    const __m256 va = _mm256_set1_ps(alpha);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        _mm256_storeu_ps(y + j, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + j), _mm256_loadu_ps(y + j)));
    for (; j < n; ++j) y[j] += alpha * x[j];
}

// One query: the prompt path (attention_avx2.cpp) with one row of one head, so the same bits.
void attend(const float *q, const float *k, const float *v, int64_t stride, int64_t n_keys, int64_t hd, float scale,
            float *, float *out) {
    attend_rows_avx2(q, k, v, stride, hd, scale, 1, hd, 1, &n_keys, out);
}

// 8 lanes at a time with the scalar operations (division, then multiply): the same bits.
void scale_sums(const int32_t *acc, int64_t n, float s, float w_scale, float *y) {
    const __m256 vs = _mm256_set1_ps(s), vw = _mm256_set1_ps(w_scale);
    int64_t r = 0;
    for (; r + 8 <= n; r += 8) {
        const __m256 a = _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(acc + r)));
        _mm256_storeu_ps(y + r, _mm256_mul_ps(_mm256_div_ps(a, vs), vw));
    }
    for (; r < n; ++r) y[r] = static_cast<float>(acc[r]) / s * w_scale;
}

const dense_kernel_set kAvx2 = {"avx2",      matmul_f32, matmul_f16, matmul_bf16, matmul_q8_0,
                                matmul_q6_k, dot_f32,    axpy_f32,   attend,      attend_rows_avx2,
                                scale_sums};

}  // namespace

const dense_kernel_set *dense_kernels_avx2() { return &kAvx2; }

}  // namespace bitnet
