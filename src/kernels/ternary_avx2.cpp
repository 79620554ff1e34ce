// AVX2 kernels (compiled with -mavx2 -mfma -mf16c; picked at run time, never called otherwise):
// the I2_S tiles of ternary_avx2_tiles.h with vpmaddubsw, and the int8 activation quantizer.
//
// maddubs(c, a) multiplies unsigned codes by signed int8 activations and adds pairs into int16
// lanes (at most 2*3*128 = 768: it never saturates). kI16GroupBlocks blocks' worth of them per
// chain are summed in int16, then madd(.., 1) widens to int32. CPUs with AVX-VNNI run the same
// tiles with vpdpbusd instead (ternary_avxvnni.cpp).
#include "kernels/ternary_avx2_tiles.h"
#include "kernels/ternary_gemm.h"

namespace bitnet {
namespace {

struct dot_maddubs {
    static constexpr int64_t kGroupBlocks = kI16GroupBlocks;
    // Decode: two chains per row (the int16 adds are the only dependency; more gave nothing on
    // the 2B-4T shape).
    static constexpr int kGemvChains = 2;
    static __m256i step(__m256i acc16, __m256i codes, __m256i act) {
        return _mm256_add_epi16(acc16, _mm256_maddubs_epi16(codes, act));
    }
    static __m256i widen_add(__m256i acc32, __m256i acc16) {
        return _mm256_add_epi32(acc32, _mm256_madd_epi16(acc16, _mm256_set1_epi16(1)));
    }
};

// 8 floats -> 8 int32 codes (DESIGN.md section 3, same operations as quantize_one_int8).
inline __m256i quantize8(const float *x, __m256 s) {
    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x), s);
    __m256 r = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm256_min_ps(_mm256_max_ps(r, _mm256_set1_ps(-128.0f)), _mm256_set1_ps(127.0f));
    return _mm256_cvtps_epi32(r);
}

float absmax_avx2(const float *x, int64_t k) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m0 = _mm256_setzero_ps(), m1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= k; i += 16) {
        m0 = _mm256_max_ps(m0, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
        m1 = _mm256_max_ps(m1, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i + 8)));
    }
    m0 = _mm256_max_ps(m0, m1);
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m0), _mm256_extractf128_ps(m0, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    float amax = _mm_cvtss_f32(h);
    for (; i < k; ++i) amax = std::max(amax, std::fabs(x[i]));
    return amax;
}

void quantize_row_int8_avx2(const float *x, int64_t k, int8_t *q, float *scale, int32_t *sum) {
    const float s = int8_scale_from_absmax(absmax_avx2(x, k));
    const __m256 vs = _mm256_set1_ps(s);
    // packs_epi32 / packs_epi16 interleave the two 128-bit lanes; this puts the dwords back.
    const __m256i unshuffle = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    __m256i vsum = _mm256_setzero_si256();
    int64_t i = 0;
    for (; i + 32 <= k; i += 32) {
        const __m256i q0 = quantize8(x + i, vs), q1 = quantize8(x + i + 8, vs);
        const __m256i q2 = quantize8(x + i + 16, vs), q3 = quantize8(x + i + 24, vs);
        vsum = _mm256_add_epi32(vsum, _mm256_add_epi32(_mm256_add_epi32(q0, q1), _mm256_add_epi32(q2, q3)));
        const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(q + i), _mm256_permutevar8x32_epi32(p, unshuffle));
    }
    int32_t total = hsum_i32(vsum);
    for (; i < k; ++i) {
        q[i] = quantize_one_int8(x[i], s);
        total += q[i];
    }
    *scale = s;
    *sum = total;
}

// Batches of tuning().avx2_gemm_min_batch rows or more go to the register-tiled GEMM
// (ternary_gemm_avx2.cpp), which decodes each slice of weights once per block of rows; smaller
// ones to the tiles above, which read the weights once.
void i2s_matmul_avx2(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a,
                     const int32_t *a_sums, int64_t m, int32_t *y, int64_t ldy) {
    if (m >= tuning().avx2_gemm_min_batch) i2s_gemm_avx2(w, k, r0, r1, a, a_sums, m, y, ldy);
    else i2s_matmul_tiles<dot_maddubs>(w, k, r0, r1, a, a_sums, m, y, ldy);
}

const ternary_kernel_set kAvx2 = {"avx2", i2s_matmul_avx2, quantize_row_int8_avx2};

}  // namespace

const ternary_kernel_set *ternary_kernels_avx2_maddubs() {
    return &kAvx2;
}

const ternary_kernel_set *ternary_kernels_avx2() {
    const ternary_kernel_set *vnni = ternary_kernels_avxvnni();
    return vnni != nullptr ? vnni : &kAvx2;
}

}  // namespace bitnet
