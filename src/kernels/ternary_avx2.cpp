// AVX2 kernels (compiled with -mavx2 -mfma -mf16c; picked at run time, never called otherwise).
//
// Weights, I2_S: one 128-element block = 32 bytes = one ymm register. Four shift+mask steps
// turn it into four ymm of 32 unsigned codes each, lined up with four 32-byte activation loads:
//
//   w  = [ byte0 .. byte31 ]        byte m = c[m]<<6 | c[32+m]<<4 | c[64+m]<<2 | c[96+m]
//   c0 = (w >> 6) & 3  -> codes of columns   0..31    x  a[  0.. 31]
//   c1 = (w >> 4) & 3  -> codes of columns  32..63    x  a[ 32.. 63]
//   c2 = (w >> 2) & 3  -> codes of columns  64..95    x  a[ 64.. 95]
//   c3 =  w       & 3  -> codes of columns  96..127   x  a[ 96..127]
//   (16-bit shifts are fine: the mask drops the bits that cross from the neighbouring byte.)
//
// maddubs(c, a) multiplies unsigned codes by signed int8 activations and adds pairs into int16
// lanes (at most 2*3*128 = 768: it never saturates). kI16GroupBlocks blocks are summed in int16,
// then madd(.., 1) widens to int32. The codes are w + 1, so  sum w*a = sum c*a - sum a,  and the
// caller hands us sum a per activation row (a_sums).
//
// Activations: m rows of k int8, row i at a + i*k. Output y[i*ldy + r] (int32).
// Tiles: m == 1 (GEMV) runs 4 weight rows against the row (each activation load used 4 times,
// four weight streams); m > 1 (GEMM) runs 2 weight rows against 4 activation rows (each decoded
// code vector used 4 times, each activation load twice), over row chunks of kRowChunk so the
// chunk's weights stay in L1 while the activation rows stream past.
#include "kernels/simd_x86.h"

#include "kernels/ternary.h"
#include "kernels/ternary_impl.h"
#include "kernels/tuning.h"

namespace bitnet {
namespace {

constexpr int64_t kRowChunk = 16;
constexpr int kGemvRows = 2;  // weight rows per tile when m == 1 (2 beat 1 and 4 on the 2B-4T decode)
constexpr int kGemmRows = 2;  // weight rows per tile when m > 1 (times 4 activation rows)

inline __m256i load256(const void *p) {
    return _mm256_loadu_si256(static_cast<const __m256i *>(p));
}

inline int32_t hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

// R weight rows (w, w + row_bytes, ...) times M activation rows (a, a + k, ...):
// y[i*ldy + r] for r < R, i < M, where y points at the tile's first output.
// prefetch: tuning().prefetch_bytes past the tile's first row, advanced R*32 bytes per block, as fast as
// the tile consumes its own rows (without it a DRAM-resident GEMV ran at ~35% of the plain read
// bandwidth, 5 vs 14 GB/s).
template <int R, int M>
void i2s_tile(const uint8_t *w, int64_t k, const int8_t *a, const int32_t *a_sums, int32_t *y, int64_t ldy,
              const uint8_t *prefetch) {
    const int64_t row_bytes = k / 4;
    const int64_t n_blocks = k / kI2SBlock;
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i mask = _mm256_set1_epi8(3);
    __m256i acc[R][M];
    for (int r = 0; r < R; ++r)
        for (int i = 0; i < M; ++i) acc[r][i] = _mm256_setzero_si256();

    for (int64_t g = 0; g < n_blocks; g += kI16GroupBlocks) {
        const int64_t g_end = std::min(n_blocks, g + kI16GroupBlocks);
        __m256i acc16[R][M];
        for (int r = 0; r < R; ++r)
            for (int i = 0; i < M; ++i) acc16[r][i] = _mm256_setzero_si256();
        for (int64_t b = g; b < g_end; ++b) {
            for (int64_t l = 0; l < R * kI2SBlockBytes; l += 64)
                _mm_prefetch(reinterpret_cast<const char *>(prefetch + b * R * kI2SBlockBytes + l),
                             _MM_HINT_T1);
            __m256i packed[R];
            for (int r = 0; r < R; ++r) packed[r] = load256(w + r * row_bytes + b * kI2SBlockBytes);
            // Column group j of the block: codes (byte >> (6 - 2j)) & 3 against a[32j .. 32j+32).
            for (int j = 0; j < 4; ++j) {
                __m256i codes[R];
                for (int r = 0; r < R; ++r)
                    codes[r] = _mm256_and_si256(_mm256_srli_epi16(packed[r], 6 - 2 * j), mask);
                for (int i = 0; i < M; ++i) {
                    const __m256i act = load256(a + i * k + b * kI2SBlock + 32 * j);
                    for (int r = 0; r < R; ++r)
                        acc16[r][i] = _mm256_add_epi16(acc16[r][i], _mm256_maddubs_epi16(codes[r], act));
                }
            }
        }
        for (int r = 0; r < R; ++r)
            for (int i = 0; i < M; ++i)
                acc[r][i] = _mm256_add_epi32(acc[r][i], _mm256_madd_epi16(acc16[r][i], ones));
    }
    for (int r = 0; r < R; ++r)
        for (int i = 0; i < M; ++i) y[i * ldy + r] = sub_wrapping(hsum_i32(acc[r][i]), a_sums[i]);
}

// M activation rows against weight rows [r0, r1).
template <int M>
void i2s_rows(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a, const int32_t *a_sums,
              int32_t *y, int64_t ldy) {
    constexpr int R = M == 1 ? kGemvRows : kGemmRows;
    const int64_t row_bytes = k / 4;
    int64_t r = r0;
    const int64_t ahead = tuning().prefetch_bytes;
    // The prefetch runs past r1, even past the matrix (prefetches never fault).
    for (; r + R <= r1; r += R)
        i2s_tile<R, M>(w + r * row_bytes, k, a, a_sums, y + r, ldy, w + r * row_bytes + ahead);
    for (; r < r1; ++r)
        i2s_tile<1, M>(w + r * row_bytes, k, a, a_sums, y + r, ldy, w + r * row_bytes + ahead);
}

void i2s_matmul_avx2(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a,
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

const ternary_kernel_set kAvx2 = {"avx2", i2s_matmul_avx2, quantize_row_int8_avx2};

}  // namespace

const ternary_kernel_set *ternary_kernels_avx2() {
    return &kAvx2;
}

}  // namespace bitnet
