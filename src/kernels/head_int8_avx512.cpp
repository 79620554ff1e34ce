// AVX-512 int8-activation head (definition in head_int8.h), two flavours that differ in Dot only:
// AVX512-BW (vpmaddubsw + vpmaddwd) and AVX512-VNNI (vpdpbusd / vpdpwssd). Both give exact int32
// sums, so the same bits.
//
//   Q8_0 row, two blocks per zmm:  lanes 0-7 = block 2c's 8 sums of 4, lanes 8-15 = block 2c+1's
//     acc = fma(cvt(isum), [d_2c x8 | d_2c+1 x8], acc); an odd last block in lanes 0-7 alone;
//     float_order.h's tree over the 16 lanes (the same lanes the AVX2 set keeps in two ymm).
//   Q6_K super-block, per half h: ql[64h .. +64) and qh[32h .. +32) in both zmm halves give
//     elements 128h + 0..63 and + 64..127 unsigned (q6 + 32); maddubs with the activations, then
//     madd with the per-16 scales (vpermw from the 16 sc) -> int32; minus 32 * sum sc[t] bsum[t];
//     one reduction per super-block, then the scalar fma chain of head_int8.h.
#include "kernels/simd_x86.h"

#include <cmath>
#include <cstring>

#include "kernels/float_order_x86.h"
#include "kernels/head_int8.h"
#include "kernels/head_int8_rows_x86.h"
#include "kernels/tuning.h"

namespace bitnet {
namespace {

struct dot_bw {
    static __m512i dot4(__m512i u, __m512i s) {  // |u| <= 128, |s| <= 127: no int16 saturation
        return _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1));
    }
    static __m512i add_madd16(__m512i acc, __m512i p, __m512i sc) { return _mm512_add_epi32(acc, _mm512_madd_epi16(p, sc)); }
};
struct dot_vnni {
    static __m512i dot4(__m512i u, __m512i s) { return _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, s); }
    static __m512i add_madd16(__m512i acc, __m512i p, __m512i sc) { return _mm512_dpwssd_epi32(acc, p, sc); }
};

// |w| as u8 and q with w's sign (w = 0 gives |w| = 0, so q's value there does not matter).
template <class Dot>
inline __m512i signed_dot(__m512i wq, __m512i xq) {
    const __m512i s = _mm512_mask_sub_epi8(xq, _mm512_movepi8_mask(wq), _mm512_setzero_si512(), xq);
    return Dot::dot4(_mm512_abs_epi8(wq), s);
}

template <class Dot>
void head_q8_0(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const head_acts &a, int64_t m, float *y,
               int64_t ldy) {
    const int64_t nb = k / 32, row_bytes = nb * 34, ahead = tuning().head_prefetch_bytes;
    for (int64_t r = r0; r < r1; ++r) {
        const uint8_t *row = w + r * row_bytes;
        for (int64_t i = 0; i < m; ++i) {
            const int8_t *q = a.q + i * k;
            const float *dx = a.d + i * nb;
            __m512 acc = _mm512_setzero_ps();
            int64_t b = 0;
            for (; b + 2 <= nb; b += 2) {
                const uint8_t *b0 = row + b * 34, *b1 = b0 + 34;
                if (i == 0) _mm_prefetch(reinterpret_cast<const char *>(b0 + ahead), _MM_HINT_T1);
                const __m512i wq = _mm512_inserti64x4(
                    _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(b0 + 2))),
                    _mm256_loadu_si256(reinterpret_cast<const __m256i *>(b1 + 2)), 1);
                const __m512i isum = signed_dot<Dot>(wq, _mm512_loadu_si512(q + 32 * b));
                const __m512 db = _mm512_insertf32x8(_mm512_set1_ps(f16_scale_x86(b0) * dx[b]),
                                                     _mm256_set1_ps(f16_scale_x86(b1) * dx[b + 1]), 1);
                acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), db, acc);
            }
            if (b < nb) {  // an odd last block: lanes 0-7
                const uint8_t *b0 = row + b * 34;
                const __m512i wq = _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(b0 + 2)));
                const __m512i xq = _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(q + 32 * b)));
                const __m512 db = _mm512_set1_ps(f16_scale_x86(b0) * dx[b]);
                acc = _mm512_mask3_fmadd_ps(_mm512_cvtepi32_ps(signed_dot<Dot>(wq, xq)), db, acc, 0x00FF);
            }
            y[i * ldy + r] = sum_lanes16(acc);
        }
    }
}

// T_b of head_int8.h for super-block sb and 256 activations q with their 16 sums bsum.
template <class Dot>
inline int32_t q6_k_block_sum(const uint8_t *sb, const int8_t *q, const int16_t *bsum) {
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(sb + 192)));
    const __m512i sc = _mm512_castsi256_si512(sc16);
    const __m256i corr = _mm256_slli_epi32(_mm256_madd_epi16(sc16, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(bsum))), 5);
    __m512i sum = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_zextsi256_si512(corr));
    const __m512i m4 = _mm512_set1_epi8(15), m30 = _mm512_set1_epi8(0x30);
    // Left by 4, 2 (quarters 0, 1: zmm halves), right by 0, 2 (quarters 2, 3): bits 4-5 of each byte.
    const __m512i shl = _mm512_inserti64x4(_mm512_set1_epi32(4), _mm256_set1_epi32(2), 1);
    const __m512i shr = _mm512_inserti64x4(_mm512_set1_epi32(0), _mm256_set1_epi32(2), 1);
    for (int h = 0; h < 2; ++h) {
        const __m512i ql = _mm512_loadu_si512(sb + 64 * h);
        const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(sb + 128 + 32 * h)));
        const __m512i u0 = _mm512_or_si512(_mm512_and_si512(ql, m4), _mm512_and_si512(_mm512_sllv_epi32(qh, shl), m30));
        const __m512i u1 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                           _mm512_and_si512(_mm512_srlv_epi32(qh, shr), m30));
        for (int p = 0; p < 2; ++p) {
            // int16 lane L of the 32 products' pairs belongs to scale 8h + 4p + L / 8.
            const int t0 = 8 * h + 4 * p;
            const __m512i idx = _mm512_add_epi16(_mm512_set1_epi16(static_cast<short>(t0)),
                                                 _mm512_srli_epi16(_mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19,
                                                                                    18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5,
                                                                                    4, 3, 2, 1, 0), 3));
            const __m512i pairs = _mm512_maddubs_epi16(p == 0 ? u0 : u1, _mm512_loadu_si512(q + 128 * h + 64 * p));
            sum = Dot::add_madd16(sum, pairs, _mm512_permutexvar_epi16(idx, sc));
        }
    }
    return _mm512_reduce_add_epi32(sum);
}

template <class Dot>
void head_q6_k(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const head_acts &a, int64_t m, float *y,
               int64_t ldy) {
    head_q6_k_rows(w, k, r0, r1, a, m, y, ldy, q6_k_block_sum<Dot>);
}

const head_int8_kernel_set kAvx512Bw = {"avx512bw", head_q8_0<dot_bw>, head_q6_k<dot_bw>};
const head_int8_kernel_set kAvx512Vnni = {"avx512vnni", head_q8_0<dot_vnni>, head_q6_k<dot_vnni>};

}  // namespace

const head_int8_kernel_set *head_int8_kernels_avx512bw() { return &kAvx512Bw; }
const head_int8_kernel_set *head_int8_kernels_avx512vnni() { return &kAvx512Vnni; }

}  // namespace bitnet
