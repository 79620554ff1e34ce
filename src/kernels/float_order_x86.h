// float_order.h's lane sums for x86 registers: 16 lanes folded in halves. One zmm holds lanes
// 0-15; with AVX2, lo holds lanes 0-7 and hi lanes 8-15, so the first fold is lo + hi.
// Include only from files compiled with the ISA named in each function (AVX2 + FMA, or AVX-512).
#pragma once
#include "kernels/simd_x86.h"

namespace bitnet {
namespace {

#if defined(__AVX2__)
inline float sum_lanes8_folded(__m256 v) {  // l[i] += l[i + 4], l[i] += l[i + 2], l[0] + l[1]
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
inline float sum_lanes16(__m256 lo, __m256 hi) { return sum_lanes8_folded(_mm256_add_ps(lo, hi)); }
#endif

#if defined(__AVX512F__) && defined(__AVX512DQ__)
inline float sum_lanes16(__m512 v) {
    return sum_lanes8_folded(_mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1)));
}
#endif

}  // namespace
}  // namespace bitnet
