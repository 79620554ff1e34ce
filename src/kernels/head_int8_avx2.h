// AVX2 int8-activation head (definition in head_int8.h), shared by the maddubs set
// (head_int8_avx2.cpp) and the AVX-VNNI one (head_int8_avxvnni.cpp), which differ in Dot: how
// 32 u8 x s8 products become 8 exact int32 sums of 4 consecutive products (lane g = bytes
// 4g .. 4g+3 either way, so both sets give the same integers, hence the same bits).
//
//   Q8_0 row:  | d w[0..31] | d w[32..63] | ...     acts: q[0..31] q[32..63] ..., d_x per block
//     block b: isum = Dot(|w|, sign(q, w)) (8 x int32), acc[b % 2] = fma(cvt(isum), d_w d_x, acc)
//     then float_order.h's tree over the 16 lanes acc[0] (lanes 0-7) | acc[1] (lanes 8-15).
//   Q6_K super-block, per half h: ql[64h .. +32), ql[64h+32 .. +32), qh[32h .. +32) give the
//     four quarters' unsigned 6-bit values u (q6 + 32) in element order; maddubs(u, q) pairs,
//     madd with the two 16-element scales -> int32; minus 32 * sum_t sc[t] bsum[t] (the + 32);
//     one horizontal sum per super-block, then the scalar fma chain of head_int8.h.
// Include from a file compiled with AVX2 + FMA + F16C (and AVX-VNNI for its Dot).
#pragma once
#include <cmath>
#include <cstring>

#include "kernels/float_order_x86.h"
#include "kernels/head_int8.h"
#include "kernels/head_int8_rows_x86.h"
#include "kernels/simd_x86.h"
#include "kernels/tuning.h"

namespace bitnet {
namespace {

inline int32_t hsum_epi32_avx2(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

inline __m256i load256(const void *p) { return _mm256_loadu_si256(static_cast<const __m256i *>(p)); }

// acc + the 8 sums of 4 of one block times d_w * d_x (head_int8.h).
template <class Dot>
inline __m256 q8_0_block(const uint8_t *block, const int8_t *q, float dx, __m256 acc) {
    const __m256i wq = load256(block + 2), xq = load256(q);
    const __m256i isum = Dot::dot(_mm256_sign_epi8(wq, wq), _mm256_sign_epi8(xq, wq));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(f16_scale_x86(block) * dx), acc);
}

template <class Dot>
void head_q8_0_avx2(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const head_acts &a, int64_t m, float *y,
                    int64_t ldy) {
    const int64_t nb = k / 32, row_bytes = nb * 34, ahead = tuning().head_prefetch_bytes;
    for (int64_t r = r0; r < r1; ++r) {
        const uint8_t *row = w + r * row_bytes;
        for (int64_t i = 0; i < m; ++i) {
            const int8_t *q = a.q + i * k;
            const float *dx = a.d + i * nb;
            // Two blocks per step, each into its own register (an indexed pair would live in memory).
            __m256 even = _mm256_setzero_ps(), odd = _mm256_setzero_ps();
            int64_t b = 0;
            for (; b + 2 <= nb; b += 2) {
                const uint8_t *block = row + b * 34;
                _mm_prefetch(reinterpret_cast<const char *>(block + ahead), _MM_HINT_T1);
                even = q8_0_block<Dot>(block, q + 32 * b, dx[b], even);
                odd = q8_0_block<Dot>(block + 34, q + 32 * b + 32, dx[b + 1], odd);
            }
            if (b < nb) even = q8_0_block<Dot>(row + b * 34, q + 32 * b, dx[b], even);
            y[i * ldy + r] = sum_lanes16(even, odd);
        }
    }
}

// The 32 unsigned 6-bit values of quarter G of a half (ql0, ql1, qh: that half's bytes).
template <int G>
inline __m256i q6_quarter(__m256i ql0, __m256i ql1, __m256i qh) {
    const __m256i m4 = _mm256_set1_epi8(15), m30 = _mm256_set1_epi8(0x30);
    const __m256i ql = G % 2 == 0 ? ql0 : ql1;
    const __m256i low = G < 2 ? ql : _mm256_srli_epi16(ql, 4);
    const __m256i top = G == 0 ? _mm256_slli_epi16(qh, 4) : G == 1 ? _mm256_slli_epi16(qh, 2)
                                                          : G == 2 ? qh : _mm256_srli_epi16(qh, 2);
    return _mm256_or_si256(_mm256_and_si256(low, m4), _mm256_and_si256(top, m30));
}

// int16 lanes 0-7 = sc[8h + 2G], 8-15 = sc[8h + 2G + 1], from half_sc (int16 lanes t and 8 + t
// both = sc[8h + t]): one in-lane byte shuffle.
template <int G>
inline __m256i scale_pair(__m256i half_sc) {
    constexpr char a = 4 * G, b = 4 * G + 2;
    const __m256i pick = _mm256_setr_epi8(a, a + 1, a, a + 1, a, a + 1, a, a + 1, a, a + 1, a, a + 1, a, a + 1, a, a + 1,
                                          b, b + 1, b, b + 1, b, b + 1, b, b + 1, b, b + 1, b, b + 1, b, b + 1, b, b + 1);
    return _mm256_shuffle_epi8(half_sc, pick);
}

template <int G>
inline __m256i q6_quarter_sum(__m256i ql0, __m256i ql1, __m256i qh, const int8_t *q, __m256i half_sc) {
    const __m256i pairs = _mm256_maddubs_epi16(q6_quarter<G>(ql0, ql1, qh), load256(q + 32 * G));
    return _mm256_madd_epi16(pairs, scale_pair<G>(half_sc));
}

// T_b of head_int8.h for super-block sb and 256 activations q with their 16 sums bsum.
inline int32_t q6_k_block_sum(const uint8_t *sb, const int8_t *q, const int16_t *bsum) {
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(sb + 192)));
    __m256i sum = _mm256_slli_epi32(_mm256_madd_epi16(sc16, load256(bsum)), 5);
    sum = _mm256_sub_epi32(_mm256_setzero_si256(), sum);
    for (int h = 0; h < 2; ++h) {
        const __m256i ql0 = load256(sb + 64 * h), ql1 = load256(sb + 64 * h + 32), qh = load256(sb + 128 + 32 * h);
        const __m256i half_sc = h == 0 ? _mm256_permute2x128_si256(sc16, sc16, 0x00)
                                       : _mm256_permute2x128_si256(sc16, sc16, 0x11);
        const int8_t *qq = q + 128 * h;
        sum = _mm256_add_epi32(sum, q6_quarter_sum<0>(ql0, ql1, qh, qq, half_sc));
        sum = _mm256_add_epi32(sum, q6_quarter_sum<1>(ql0, ql1, qh, qq, half_sc));
        sum = _mm256_add_epi32(sum, q6_quarter_sum<2>(ql0, ql1, qh, qq, half_sc));
        sum = _mm256_add_epi32(sum, q6_quarter_sum<3>(ql0, ql1, qh, qq, half_sc));
    }
    return hsum_epi32_avx2(sum);
}

void head_q6_k_avx2(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const head_acts &a, int64_t m, float *y,
                    int64_t ldy) {
    head_q6_k_rows(w, k, r0, r1, a, m, y, ldy, q6_k_block_sum);
}

}  // namespace
}  // namespace bitnet
