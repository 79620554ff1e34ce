// AVX-512 dense kernels (see dense.h for the layout): the lm_head, which decode streams whole
// once per token (0.66 GB of F16 for the 2B-4T shape, more than all ternary weights).
//
//   weight row r:  [ w0 .. w15 | w16 .. w31 | ... | tail (masked) ]   F32, or F16/BF16 widened
//   acc(r, i)   += row chunk * x_i chunk  (one 16-lane FMA chain per output, then a reduction)
//
// Every output y[i][r] is summed in that one order, whatever the tile, so a token's logits do not
// depend on how many other rows share the batch (bitnet_decode_multi relies on it). A GEMV tile
// runs kGemvRows weight rows side by side (independent chains hide the FMA latency); a batch tile
// runs one weight row against kGemmActs activation rows (the row is loaded once for all).
#include <immintrin.h>

#include <algorithm>

#include "kernels/dense.h"
#include "kernels/ternary_impl.h"

namespace bitnet {

namespace {

constexpr int kGemvRows = 4;
constexpr int kGemmActs = 4;

struct load_f32 {
    static __m512 vec(const void *w, int64_t j, __mmask16 m) {
        return _mm512_maskz_loadu_ps(m, static_cast<const float *>(w) + j);
    }
    static constexpr int64_t kBytes = 4;
};
struct load_f16 {
    static __m512 vec(const void *w, int64_t j, __mmask16 m) {
        return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t *>(w) + j));
    }
    static constexpr int64_t kBytes = 2;
};
struct load_bf16 {
    static __m512 vec(const void *w, int64_t j, __mmask16 m) {
        const __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t *>(w) + j);
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    static constexpr int64_t kBytes = 2;
};

inline __mmask16 lanes(int64_t left) {
    return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
}

// R weight rows (starting at row r of w) times M activation rows: y[i * ldy + r + t].
template <class Load, int R, int M>
void tile(const void *w, int64_t k, int64_t r, const float *x, float *y, int64_t ldy) {
    const auto *base = static_cast<const uint8_t *>(w);
    const int64_t row_bytes = k * Load::kBytes;
    __m512 acc[R][M];
    for (int t = 0; t < R; ++t)
        for (int i = 0; i < M; ++i) acc[t][i] = _mm512_setzero_ps();
    for (int64_t j = 0; j < k; j += 16) {
        const __mmask16 m = lanes(k - j);
        for (int t = 0; t < R; ++t) {
            const uint8_t *row = base + (r + t) * row_bytes;
            if ((j * Load::kBytes) % 64 == 0)  // once per cache line
                _mm_prefetch(reinterpret_cast<const char *>(row + j * Load::kBytes + kPrefetchBytes), _MM_HINT_T1);
            const __m512 wv = Load::vec(row, j, m);
            for (int i = 0; i < M; ++i)
                acc[t][i] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, x + i * k + j), acc[t][i]);
        }
    }
    for (int t = 0; t < R; ++t)
        for (int i = 0; i < M; ++i) y[i * ldy + r + t] = _mm512_reduce_add_ps(acc[t][i]);
}

template <class Load>
void matmul(const void *w, int64_t k, int64_t r0, int64_t r1, const float *x, int64_t m, float *y,
            int64_t ldy) {
    if (m == 1) {
        int64_t r = r0;
        for (; r + kGemvRows <= r1; r += kGemvRows) tile<Load, kGemvRows, 1>(w, k, r, x, y, ldy);
        for (; r < r1; ++r) tile<Load, 1, 1>(w, k, r, x, y, ldy);
        return;
    }
    int64_t i = 0;
    for (; i + kGemmActs <= m; i += kGemmActs)
        for (int64_t r = r0; r < r1; ++r) tile<Load, 1, kGemmActs>(w, k, r, x + i * k, y + i * ldy, ldy);
    for (; i < m; ++i)
        for (int64_t r = r0; r < r1; ++r) tile<Load, 1, 1>(w, k, r, x + i * k, y + i * ldy, ldy);
}

void matmul_f32(const float *w, int64_t k, int64_t r0, int64_t r1, const float *x, int64_t m, float *y,
                int64_t ldy) {
    matmul<load_f32>(w, k, r0, r1, x, m, y, ldy);
}
void matmul_f16(const uint16_t *w, int64_t k, int64_t r0, int64_t r1, const float *x, int64_t m, float *y,
                int64_t ldy) {
    matmul<load_f16>(w, k, r0, r1, x, m, y, ldy);
}
void matmul_bf16(const uint16_t *w, int64_t k, int64_t r0, int64_t r1, const float *x, int64_t m, float *y,
                 int64_t ldy) {
    matmul<load_bf16>(w, k, r0, r1, x, m, y, ldy);
}

// 16 lanes (the tail masked), then the lanes' sums added.
float dot_f32(const float *a, const float *b, int64_t n) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 m = lanes(n - j);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + j), _mm512_maskz_loadu_ps(m, b + j), acc);
    }
    return _mm512_reduce_add_ps(acc);
}
void axpy_f32(float alpha, const float *x, float *y, int64_t n) {
    const __m512 va = _mm512_set1_ps(alpha);
    for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 m = lanes(n - j);
        _mm512_mask_storeu_ps(y + j, m, _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + j), _mm512_maskz_loadu_ps(m, y + j)));
    }
}

const dense_kernel_set kAvx512 = {"avx512", matmul_f32, matmul_f16, matmul_bf16, dot_f32, axpy_f32};

}  // namespace

const dense_kernel_set *dense_kernels_avx512() { return &kAvx512; }

}  // namespace bitnet
