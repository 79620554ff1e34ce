// AVX2 + FMA + F16C dense kernels (see dense.h for the layout). Each weight row is converted
// 8 elements at a time and reused for up to 4 activation rows, so a batched lm_head reads the
// (large) embedding matrix once per 4 tokens.
#include "kernels/simd_x86.h"

#include "kernels/dense.h"
#include "kernels/tuning.h"
#include "quant_types.h"

namespace bitnet {

namespace {

inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

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
// y[i * ldy + r + t]. Every row has its own accumulators, summed in the same order whatever R
// and MR are; R > 1 (decode) runs R FMA chains side by side, which hides the FMA latency (one
// chain caps a core at 8 floats per 4 cycles). Prefetched tuning().head_prefetch_bytes past the
// tile's last row, once per 64-byte line.
template <int R, int MR, typename Load>
void tile(const Load &row0, int64_t k, int64_t r, const float *x, float *y, int64_t ldy) {
    const int64_t row_bytes = k * Load::kBytes, ahead = tuning().head_prefetch_bytes + (R - 1) * row_bytes;
    Load rows[R];
    __m256 acc[R][MR];
    for (int t = 0; t < R; ++t) {
        rows[t] = Load{row0.w + (r + t) * k};
        for (int i = 0; i < MR; ++i) acc[t][i] = _mm256_setzero_ps();
    }
    int64_t j = 0;
    for (; j + 8 <= k; j += 8) {
        const bool new_line = (j * Load::kBytes) % 64 == 0;
        for (int t = 0; t < R; ++t) {
            if (new_line) _mm_prefetch(reinterpret_cast<const char *>(rows[t].w + j) + ahead, _MM_HINT_T1);
            const __m256 wv = rows[t].vec(j);
            for (int i = 0; i < MR; ++i) acc[t][i] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + i * k + j), acc[t][i]);
        }
    }
    for (int t = 0; t < R; ++t)
        for (int i = 0; i < MR; ++i) {
            float s = hsum(acc[t][i]);
            for (int64_t u = j; u < k; ++u) s += rows[t].one(u) * x[i * k + u];
            y[i * ldy + r + t] = s;
        }
}

// Rows [r0, r1) of W times MR activation rows: R weight rows per tile, the rest one by one.
template <int R, int MR, typename Load>
void rows_times(const Load &w, int64_t k, int64_t r0, int64_t r1, const float *x, float *y, int64_t ldy) {
    int64_t r = r0;
    for (; r + R <= r1; r += R) tile<R, MR>(w, k, r, x, y, ldy);
    for (; r < r1; ++r) tile<1, MR>(w, k, r, x, y, ldy);
}

// One activation row (decode): 4 weight rows per tile. Batches: each weight row once per 4
// activation rows.
template <typename Load>
void matmul_tiled(const Load &w, int64_t k, int64_t r0, int64_t r1, const float *x, int64_t m,
                  float *y, int64_t ldy) {
    if (m == 1) return rows_times<4, 1>(w, k, r0, r1, x, y, ldy);
    int64_t i = 0;
    for (; i + 4 <= m; i += 4) rows_times<1, 4>(w, k, r0, r1, x + i * k, y + i * ldy, ldy);
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
    float s = hsum(acc);
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

void attend(const float *q, const float *k, const float *v, int64_t stride, int64_t n_keys, int64_t hd, float scale,
            float *scores, float *out) {
    attend_with(dot_f32, axpy_f32, q, k, v, stride, n_keys, hd, scale, scores, out);
}

void attend_rows(const float *q, const float *k, const float *v, int64_t stride, int64_t hd, float scale,
                 int64_t n_rows, int64_t row_stride, int64_t group, const int64_t *n_keys, float *out) {
    attend_rows_with(attend, q, k, v, stride, hd, scale, n_rows, row_stride, group, n_keys, out);
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
                                matmul_q6_k, dot_f32,    axpy_f32,   attend,      attend_rows,
                                scale_sums};

}  // namespace

const dense_kernel_set *dense_kernels_avx2() { return &kAvx2; }

}  // namespace bitnet
