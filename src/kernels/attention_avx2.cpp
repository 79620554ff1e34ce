// Attention with AVX2 + FMA, in the reference's order (float_order.h), so the same bits as the
// scalar and AVX-512 sets: all query heads of one KV head, for several consecutive rows of one
// sequence, against that head's cached keys and values (dense.h: attend_rows).
//
// A score is one FMA chain over d per key, so keys go across lanes: a block of kKeyBlock keys is
// transposed once (kt[d][c] = key kb + c, dimension d) and every query of the call runs
//   acc[j][u] += q_j[d] (broadcast) * kt[d][8u .. 8u + 8)        for d < hd, u < 2
// The softmax denominator is 16 lanes (two registers), folded in halves; the weighted values one
// FMA chain per dimension in key order (8 dimensions per register, the last few in scalar fma).
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/attention_tiled.h"
#include "kernels/dense.h"
#include "kernels/float_order.h"
#include "kernels/float_order_x86.h"

namespace bitnet {

namespace {

constexpr int kQueries = 4;    // queries per register tile
constexpr int kKeyBlock = 16;  // keys per transposed block: two ymm of lanes

// Keys [kb, kb + n) (n <= kKeyBlock) into kt[d * kKeyBlock + c]; lanes c >= n are zero.
void transpose_keys(const float *k, int64_t stride, int64_t kb, int64_t n, int64_t hd, float *kt) {
    for (int64_t c = 0; c < kKeyBlock; ++c) {
        const float *key = k + (kb + c) * stride;
        for (int64_t d = 0; d < hd; ++d) kt[d * kKeyBlock + c] = c < n ? key[d] : 0.0f;
    }
}

template <int NQ>
void score_tile(const float *const q[], const float *kt, int64_t hd, float scale, float *const scores[]) {
    __m256 acc[NQ][2];
    for (int j = 0; j < NQ; ++j) acc[j][0] = acc[j][1] = _mm256_setzero_ps();
    for (int64_t d = 0; d < hd; ++d) {
        const __m256 k0 = _mm256_loadu_ps(kt + d * kKeyBlock), k1 = _mm256_loadu_ps(kt + d * kKeyBlock + 8);
        for (int j = 0; j < NQ; ++j) {
            const __m256 qd = _mm256_set1_ps(q[j][d]);
            acc[j][0] = _mm256_fmadd_ps(qd, k0, acc[j][0]);
            acc[j][1] = _mm256_fmadd_ps(qd, k1, acc[j][1]);
        }
    }
    const __m256 vs = _mm256_set1_ps(scale);
    for (int j = 0; j < NQ; ++j) {
        _mm256_storeu_ps(scores[j], _mm256_mul_ps(acc[j][0], vs));
        _mm256_storeu_ps(scores[j] + 8, _mm256_mul_ps(acc[j][1], vs));
    }
}

inline __m256 pow2_exact(__m256 e) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(e), _mm256_set1_epi32(127)), 23));
}

// float_order.h's exp_ref, 8 lanes.
inline __m256 exp_nonpositive(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(kExpMin));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
    __m256 p = _mm256_set1_ps(kExpPoly[0]);
    for (int i = 1; i < 6; ++i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpPoly[i]));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256 a = _mm256_max_ps(n, _mm256_set1_ps(-125.0f));
    return _mm256_mul_ps(_mm256_mul_ps(p, pow2_exact(a)), pow2_exact(_mm256_sub_ps(n, a)));
}

// Scores of n keys (in place, padded to a multiple of 16 with room) -> softmax weights; the
// weights of keys n .. n_pad are 0.
void softmax_weights(float *s, int64_t n, int64_t n_pad) {
    std::fill(s + n, s + n_pad, -INFINITY);
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    for (int64_t p = 0; p < n; p += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(s + p));
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, vmax);
    float m = lanes[0];
    for (float l : lanes) m = std::fmax(m, l);
    const __m256 max_s = _mm256_set1_ps(m);
    __m256 sum_lo = _mm256_setzero_ps(), sum_hi = _mm256_setzero_ps();
    for (int64_t p = 0; p < n; p += kKeyBlock) {
        const __m256 e0 = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(s + p), max_s));
        const __m256 e1 = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(s + p + 8), max_s));
        // Keys past n: exp(-inf - max) would be e^-104 after the clamp; they are zeroed instead.
        const __m256 idx0 = _mm256_add_ps(_mm256_set1_ps(static_cast<float>(p)), _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7));
        const __m256 limit = _mm256_set1_ps(static_cast<float>(n));
        const __m256 z0 = _mm256_and_ps(e0, _mm256_cmp_ps(idx0, limit, _CMP_LT_OQ));
        const __m256 z1 = _mm256_and_ps(e1, _mm256_cmp_ps(_mm256_add_ps(idx0, _mm256_set1_ps(8.0f)), limit, _CMP_LT_OQ));
        _mm256_storeu_ps(s + p, z0);
        _mm256_storeu_ps(s + p + 8, z1);
        sum_lo = _mm256_add_ps(sum_lo, z0);
        sum_hi = _mm256_add_ps(sum_hi, z1);
    }
    const __m256 sum = _mm256_set1_ps(sum_lanes16(sum_lo, sum_hi));
    for (int64_t p = 0; p < n; p += 8) _mm256_storeu_ps(s + p, _mm256_div_ps(_mm256_loadu_ps(s + p), sum));
    std::fill(s + n, s + n_pad, 0.0f);
}

// Dimensions [d0, d0 + 16) of NQ outputs, as far as hd: out_j = sum over keys p < n of
// w_j[p] * v_p, in key order; dimensions short of a whole register in scalar fma.
template <int NQ>
void value_tile(const float *const w[], const float *v, int64_t stride, int64_t n, int64_t d0, int64_t hd,
                float *const out[]) {
    const int64_t n_vec = std::min<int64_t>(2, (hd - d0) / 8);
    __m256 acc[NQ][2];
    for (int j = 0; j < NQ; ++j) acc[j][0] = acc[j][1] = _mm256_setzero_ps();
    for (int64_t p = 0; p < n; ++p) {
        const float *vp = v + p * stride + d0;
        const __m256 v0 = _mm256_loadu_ps(vp), v1 = n_vec == 2 ? _mm256_loadu_ps(vp + 8) : _mm256_setzero_ps();
        for (int j = 0; j < NQ; ++j) {
            const __m256 wp = _mm256_set1_ps(w[j][p]);
            acc[j][0] = _mm256_fmadd_ps(wp, v0, acc[j][0]);
            acc[j][1] = _mm256_fmadd_ps(wp, v1, acc[j][1]);
        }
    }
    for (int j = 0; j < NQ; ++j) {
        _mm256_storeu_ps(out[j] + d0, acc[j][0]);
        if (n_vec == 2) _mm256_storeu_ps(out[j] + d0 + 8, acc[j][1]);
    }
}

// Dimension d of one output (the last hd % 8), in scalar fma.
void value_scalar(const float *w, const float *v, int64_t stride, int64_t n, int64_t d, float *out) {
    float acc = 0.0f;
    for (int64_t p = 0; p < n; ++p) acc = std::fma(w[p], v[p * stride + d], acc);
    out[d] = acc;
}

template <int NQ>
void values(const float *const w[], const float *v, int64_t stride, int64_t n, int64_t hd, float *const out[]) {
    int64_t d0 = 0;
    for (; d0 + 8 <= hd; d0 += 16) value_tile<NQ>(w, v, stride, n, d0, hd, out);
    for (int64_t d = hd / 8 * 8; d < hd; ++d)
        for (int j = 0; j < NQ; ++j) value_scalar(w[j], v, stride, n, d, out[j]);
}

// What attend_rows_tiled runs (attention_tiled.h).
struct avx2_tiles {
    static constexpr int key_block = kKeyBlock, queries = kQueries;
    static void transpose_keys(const float *k, int64_t stride, int64_t kb, int64_t n, int64_t hd, float *kt) {
        bitnet::transpose_keys(k, stride, kb, n, hd, kt);
    }
    template <int NQ>
    static void scores(const float *const q[], const float *kt, int64_t hd, float scale, float *const s[]) {
        score_tile<NQ>(q, kt, hd, scale, s);
    }
    static void softmax(float *s, int64_t n, int64_t n_pad) { softmax_weights(s, n, n_pad); }
    template <int NQ>
    static void values(const float *const w[], const float *v, int64_t stride, int64_t n, int64_t hd,
                       float *const out[]) {
        bitnet::values<NQ>(w, v, stride, n, hd, out);
    }
};

}  // namespace

void attend_rows_avx2(const float *q, const float *k, const float *v, int64_t stride, int64_t hd, float scale,
                      int64_t n_rows, int64_t row_stride, int64_t group, const int64_t *n_keys, float *out) {
    attend_rows_tiled<avx2_tiles>(q, k, v, stride, hd, scale, n_rows, row_stride, group, n_keys, out);
}

}  // namespace bitnet
