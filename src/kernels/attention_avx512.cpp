// Prompt attention with AVX-512: all query heads of one KV head, for several consecutive rows of
// one sequence, against that head's cached keys and values (dense.h: attend_rows).
//
// One query at a time (dense_avx512.cpp: attend) costs a load per FMA and a horizontal sum per
// key. Here queries share every loaded key and value vector through register tiles of kQueries
// queries x 64 lanes, half a load per FMA and no horizontal sums:
//
//   keys, kKeyBlock at a time, transposed:  kt[d][c] = key (kb + c), dimension d   (c < 64)
//   scores: acc[j][u] += q_j[d] (broadcast) * kt[d][16u .. 16u + 16)   for d < hd, u < 4
//   values: acc[j][u] += w_j[p] (broadcast) * v_p[64h + 16u .. +16)    for keys p in order
//
// Every operation is the reference's (float_order.h): a query's score is one FMA chain over d per
// key, its softmax the polynomial exp with the denominator in 16 lanes folded in halves, and the
// weighted values one FMA chain per dimension in key order, so the bits are the scalar set's.
// Every query's result depends on that query alone, never on the others of its call (the forward
// pass relies on it: see attention() there). Any head size: keys are transposed in registers
// when hd is a multiple of 16, element by element otherwise; a last partial tile of dimensions is
// masked.
#include "kernels/simd_x86.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/attention_tiled.h"
#include "kernels/dense.h"
#include "kernels/float_order.h"
#include "kernels/float_order_x86.h"

namespace bitnet {

namespace {

constexpr int kQueries = 4;     // queries per register tile
constexpr int kKeyBlock = 64;   // keys per transposed block: four zmm of lanes
constexpr int kDimBlock = 64;   // value dimensions per register tile

// 16 rows of 16 floats (r[i]) transposed in registers.
void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4)
        for (int h = 0; h < 2; ++h) {
            const __m512d a = _mm512_castps_pd(t[i + h]), b = _mm512_castps_pd(t[i + 2 + h]);
            r[i + h] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
            r[i + 2 + h] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        }
    for (int i = 0; i < 16; i += 8)
        for (int h = 0; h < 4; ++h) {
            t[i + h] = _mm512_shuffle_f32x4(r[i + h], r[i + 4 + h], 0x88);
            t[i + 4 + h] = _mm512_shuffle_f32x4(r[i + h], r[i + 4 + h], 0xDD);
        }
    for (int h = 0; h < 8; ++h) {
        r[h] = _mm512_shuffle_f32x4(t[h], t[h + 8], 0x88);
        r[h + 8] = _mm512_shuffle_f32x4(t[h], t[h + 8], 0xDD);
    }
    // The passes above leave row i of the result in r[perm(i)]; put them back in order.
    constexpr int kOrder[16] = {0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, 15};
    for (int i = 0; i < 16; ++i) t[i] = r[kOrder[i]];
    for (int i = 0; i < 16; ++i) r[i] = t[i];
}

// Keys [kb, kb + n) (n <= kKeyBlock) into kt[d * kKeyBlock + c]; lanes c >= n are zero.
void transpose_keys(const float *k, int64_t stride, int64_t kb, int64_t n, int64_t hd, float *kt) {
    if (hd % 16 != 0) {
        for (int64_t d = 0; d < hd; ++d)
            for (int64_t c = 0; c < kKeyBlock; ++c) kt[d * kKeyBlock + c] = c < n ? k[(kb + c) * stride + d] : 0.0f;
        return;
    }
    for (int64_t c0 = 0; c0 < kKeyBlock; c0 += 16)
        for (int64_t d0 = 0; d0 < hd; d0 += 16) {
            __m512 r[16];
            for (int64_t c = 0; c < 16; ++c)
                r[c] = c0 + c < n ? _mm512_loadu_ps(k + (kb + c0 + c) * stride + d0) : _mm512_setzero_ps();
            transpose16(r);
            for (int64_t d = 0; d < 16; ++d) _mm512_storeu_ps(kt + (d0 + d) * kKeyBlock + c0, r[d]);
        }
}

// Scores of NQ queries (q[j]) against one transposed key block: scores_j[c] = scale * q_j . key c.
template <int NQ>
void score_tile(const float *const q[], const float *kt, int64_t hd, float scale, float *const scores[]) {
    __m512 acc[NQ][4];
    for (int j = 0; j < NQ; ++j)
        for (int u = 0; u < 4; ++u) acc[j][u] = _mm512_setzero_ps();
    for (int64_t d = 0; d < hd; ++d) {
        __m512 kv[4];
        for (int u = 0; u < 4; ++u) kv[u] = _mm512_loadu_ps(kt + d * kKeyBlock + 16 * u);
        for (int j = 0; j < NQ; ++j) {
            const __m512 qd = _mm512_set1_ps(q[j][d]);
            for (int u = 0; u < 4; ++u) acc[j][u] = _mm512_fmadd_ps(qd, kv[u], acc[j][u]);
        }
    }
    const __m512 vs = _mm512_set1_ps(scale);
    for (int j = 0; j < NQ; ++j)
        for (int u = 0; u < 4; ++u) _mm512_storeu_ps(scores[j] + 16 * u, _mm512_mul_ps(acc[j][u], vs));
}

inline __mmask16 first_lanes(int64_t left) {
    return left >= 16 ? static_cast<__mmask16>(0xFFFF) : left <= 0 ? 0 : static_cast<__mmask16>((1u << left) - 1u);
}

// Dimensions [d0, d0 + 64) of NQ outputs (those below hd): out_j = sum over keys p < n of
// w_j[p] * v_p, in key order.
template <int NQ>
void value_tile(const float *const w[], const float *v, int64_t stride, int64_t n, int64_t d0, int64_t hd,
                float *const out[]) {
    __m512 acc[NQ][4];
    __mmask16 m[4];
    for (int u = 0; u < 4; ++u) m[u] = first_lanes(hd - d0 - 16 * u);
    for (int j = 0; j < NQ; ++j)
        for (int u = 0; u < 4; ++u) acc[j][u] = _mm512_setzero_ps();
    for (int64_t p = 0; p < n; ++p) {
        __m512 vv[4];
        for (int u = 0; u < 4; ++u) vv[u] = _mm512_maskz_loadu_ps(m[u], v + p * stride + d0 + 16 * u);
        for (int j = 0; j < NQ; ++j) {
            const __m512 wp = _mm512_set1_ps(w[j][p]);
            for (int u = 0; u < 4; ++u) acc[j][u] = _mm512_fmadd_ps(wp, vv[u], acc[j][u]);
        }
    }
    for (int j = 0; j < NQ; ++j)
        for (int u = 0; u < 4; ++u) _mm512_mask_storeu_ps(out[j] + d0 + 16 * u, m[u], acc[j][u]);
}

// 2^e for integer-valued e in [-126, 127], exactly (float_order.h: pow2_exact).
inline __m512 pow2_exact(__m512 e) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(e), _mm512_set1_epi32(127)), 23));
}

// float_order.h's exp_ref, 16 lanes.
inline __m512 exp_nonpositive(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(kExpMin));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2e)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), r);
    __m512 p = _mm512_set1_ps(kExpPoly[0]);
    for (int i = 1; i < 6; ++i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpPoly[i]));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    const __m512 a = _mm512_max_ps(n, _mm512_set1_ps(-125.0f));
    return _mm512_mul_ps(_mm512_mul_ps(p, pow2_exact(a)), pow2_exact(_mm512_sub_ps(n, a)));
}

// Scores of n keys (in place) -> softmax weights, as the reference computes them (max-subtracted
// exp over the sum), 16 keys at a time; the weights of keys n .. n_pad are 0, so a tile of queries
// with fewer keys than its longest one adds exact zeros.
void softmax_weights(float *s, int64_t n, int64_t n_pad) {
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int64_t p = 0; p < n; p += 16)
        vmax = _mm512_max_ps(vmax, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), first_lanes(n - p), s + p));
    const __m512 max_s = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
    __m512 vsum = _mm512_setzero_ps();
    for (int64_t p = 0; p < n; p += 16) {
        const __mmask16 m = first_lanes(n - p);
        const __m512 e = _mm512_maskz_mov_ps(m, exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + p), max_s)));
        _mm512_mask_storeu_ps(s + p, m, e);
        vsum = _mm512_add_ps(vsum, e);
    }
    const __m512 sum = _mm512_set1_ps(sum_lanes16(vsum));
    for (int64_t p = 0; p < n; p += 16) {
        const __mmask16 m = first_lanes(n - p);
        _mm512_mask_storeu_ps(s + p, m, _mm512_div_ps(_mm512_maskz_loadu_ps(m, s + p), sum));
    }
    std::fill(s + n, s + n_pad, 0.0f);
}

// What attend_rows_tiled runs (attention_tiled.h); values kQueries queries x 64 dimensions per tile.
struct avx512_tiles {
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
        for (int64_t d0 = 0; d0 < hd; d0 += kDimBlock) value_tile<NQ>(w, v, stride, n, d0, hd, out);
    }
};

}  // namespace

void attend_rows_avx512(const float *q, const float *k, const float *v, int64_t stride, int64_t hd, float scale,
                        int64_t n_rows, int64_t row_stride, int64_t group, const int64_t *n_keys, float *out) {
    attend_rows_tiled<avx512_tiles>(q, k, v, stride, hd, scale, n_rows, row_stride, group, n_keys, out);
}

}  // namespace bitnet
