// AVX2 + FMA + F16C dense kernels (see dense.h for the layout). Each weight row is converted
// 8 elements at a time and reused for up to 2 activation rows, so a batched lm_head reads the
// (large) embedding matrix once per 2 tokens. Sums follow float_order.h: an output's 16 lanes in
// two chains of alternating 16-element chunks are four registers (chain c, half h).
#include "kernels/simd_x86.h"

#include <cmath>

#include "kernels/dense.h"
#include "kernels/float_order.h"
#include "kernels/float_order_x86.h"
#include "kernels/tuning.h"
#include "quant_types.h"

namespace bitnet {

namespace {

struct load_f32 {
    static constexpr int64_t kBytes = 4;  // per element
    const float *w;
    __m256 vec(int64_t j) const { return _mm256_loadu_ps(w + j); }
    float one(int64_t j) const { return w[j]; }
};
struct load_f16 {
    static constexpr int64_t kBytes = 2;  // per element
    const uint16_t *w;
    __m256 vec(int64_t j) const {
        return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(w + j)));
    }
    float one(int64_t j) const { return f16_to_f32(w[j]); }
};
struct load_bf16 {
    static constexpr int64_t kBytes = 2;  // per element
    const uint16_t *w;
    __m256 vec(int64_t j) const {
        __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i *>(w + j));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    float one(int64_t j) const { return bf16_to_f32(w[j]); }
};

// R weight rows starting at row r times MR activation rows starting at x (k floats each):
// y[i * ldy + r + t]. Every output has its own four accumulators, summed in the reference's order
// whatever R and MR are: 32 elements per step (chunk 0 -> chain 0, chunk 1 -> chain 1), the rest
// lane by lane in scalar fma, then the chains and the lanes folded (float_order.h). Prefetched
// tuning().head_prefetch_bytes past the tile's last row, once per 64-byte line.
template <int R, int MR, typename Load>
void tile(const Load &row0, int64_t k, int64_t r, const float *x, float *y, int64_t ldy) {
    const int64_t row_bytes = k * Load::kBytes, ahead = tuning().head_prefetch_bytes + (R - 1) * row_bytes;
    Load rows[R];
    __m256 acc[R][MR][4];  // [chain 0 lanes 0-7, chain 0 lanes 8-15, chain 1 lanes 0-7, chain 1 lanes 8-15]
    for (int t = 0; t < R; ++t) {
        rows[t] = Load{row0.w + (r + t) * k};
        for (int i = 0; i < MR; ++i)
            for (int c = 0; c < 4; ++c) acc[t][i][c] = _mm256_setzero_ps();
    }
    int64_t j = 0;
    for (; j + 32 <= k; j += 32) {
        const bool new_line = (j * Load::kBytes) % 64 == 0;
        for (int t = 0; t < R; ++t) {
            if (new_line) _mm_prefetch(reinterpret_cast<const char *>(rows[t].w + j) + ahead, _MM_HINT_T1);
            for (int c = 0; c < 4; ++c) {
                const __m256 wv = rows[t].vec(j + 8 * c);
                for (int i = 0; i < MR; ++i)
                    acc[t][i][c] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + i * k + j + 8 * c), acc[t][i][c]);
            }
        }
    }
    for (int t = 0; t < R; ++t)
        for (int i = 0; i < MR; ++i) {
            float chain[2][kSumLanes];
            for (int c = 0; c < 4; ++c) _mm256_storeu_ps(&chain[c / 2][8 * (c % 2)], acc[t][i][c]);
            for (int64_t u = j; u < k; ++u) {
                float &l = chain[(u / kSumLanes) & 1][u % kSumLanes];
                l = std::fma(rows[t].one(u), x[i * k + u], l);
            }
            y[i * ldy + r + t] = sum_two_chains(chain);
        }
}

// Rows [r0, r1) of W times MR activation rows: R weight rows per tile, the rest one by one.
template <int R, int MR, typename Load>
void rows_times(const Load &w, int64_t k, int64_t r0, int64_t r1, const float *x, float *y, int64_t ldy) {
    int64_t r = r0;
    for (; r + R <= r1; r += R) tile<R, MR>(w, k, r, x, y, ldy);
    for (; r < r1; ++r) tile<1, MR>(w, k, r, x, y, ldy);
}

// One activation row (decode): 2 weight rows per tile (8 accumulators of the 16 registers).
// Batches: each weight row once per 2 activation rows.
template <typename Load>
void matmul_tiled(const Load &w, int64_t k, int64_t r0, int64_t r1, const float *x, int64_t m,
                  float *y, int64_t ldy) {
    if (m == 1) return rows_times<2, 1>(w, k, r0, r1, x, y, ldy);
    int64_t i = 0;
    for (; i + 2 <= m; i += 2) rows_times<1, 2>(w, k, r0, r1, x + i * k, y + i * ldy, ldy);
    for (; i < m; ++i) rows_times<1, 1>(w, k, r0, r1, x + i * k, y + i * ldy, ldy);
}

void matmul_f32(const float *w, int64_t k, int64_t r0, int64_t r1, const float *x, int64_t m,
                float *y, int64_t ldy) {
    matmul_tiled(load_f32{w}, k, r0, r1, x, m, y, ldy);
}
void matmul_f16(const uint16_t *w, int64_t k, int64_t r0, int64_t r1, const float *x, int64_t m,
                float *y, int64_t ldy) {
    matmul_tiled(load_f16{w}, k, r0, r1, x, m, y, ldy);
}
void matmul_bf16(const uint16_t *w, int64_t k, int64_t r0, int64_t r1, const float *x, int64_t m,
                 float *y, int64_t ldy) {
    matmul_tiled(load_bf16{w}, k, r0, r1, x, m, y, ldy);
}

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

void matmul_q8_0(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const float *x, int64_t m, float *y,
                 int64_t ldy) {
    matmul_quant_by_rows(GGML_Q8_0, matmul_f32, w, k, r0, r1, x, m, y, ldy);
}
void matmul_q6_k(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const float *x, int64_t m, float *y,
                 int64_t ldy) {
    matmul_quant_by_rows(GGML_Q6_K, matmul_f32, w, k, r0, r1, x, m, y, ldy);
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
