// Scalar reference for the dense kernels (see dense.h for the layout), and conversions.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "dequant.h"
#include "kernels/dense.h"
#include "kernels/float_order.h"
#include "kernels/ternary.h"
#include "quant_types.h"

namespace bitnet {

float f16_to_f32(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);  // inf / nan
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else {  // subnormal: normalize
        exp = 113;
        while ((mant & 0x400) == 0) {
            mant <<= 1;
            --exp;
        }
        bits = sign | (exp << 23) | ((mant & 0x3ff) << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

float f16_at(const uint8_t *p) {
    uint16_t h;
    std::memcpy(&h, p, sizeof h);
    return f16_to_f32(h);
}

uint16_t f32_to_f16(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
    const uint32_t abs = x & 0x7fffffffu;
    if (abs >= 0x7f800000u) return sign | 0x7c00 | (abs > 0x7f800000u ? 0x200 : 0);
    if (abs >= 0x477ff000u) return sign | 0x7c00;  // rounds to inf
    if (abs < 0x38800000u) {                          // subnormal or zero in f16
        if (abs < 0x33000000u) return sign;
        const uint32_t e = abs >> 23;
        const uint32_t m = (abs & 0x7fffff) | 0x800000;
        const uint32_t shift = 126 - e;
        uint32_t r = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) ++r;
        return sign | static_cast<uint16_t>(r);
    }
    uint32_t r = ((abs >> 13) - (112u << 10));
    const uint32_t rem = abs & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) ++r;
    return sign | static_cast<uint16_t>(r);
}

void row_to_f32(uint32_t ggml_type, const void *row, int64_t k, float *out) {
    if (ggml_type == GGML_F32) {
        std::memcpy(out, row, static_cast<size_t>(k) * 4);
    } else if (ggml_type == GGML_F16) {
        const auto *h = static_cast<const uint16_t *>(row);
        for (int64_t i = 0; i < k; ++i) out[i] = f16_to_f32(h[i]);
    } else if (ggml_type == GGML_BF16) {
        const auto *h = static_cast<const uint16_t *>(row);
        for (int64_t i = 0; i < k; ++i) out[i] = bf16_to_f32(h[i]);
    } else {  // Q8_0 / Q6_K
        dequantize_to_f32(ggml_type, static_cast<const uint8_t *>(row), k, out);
    }
}

int64_t dense_row_bytes(uint32_t ggml_type, int64_t k) {
    const quant_type_traits *t = quant_type_find(ggml_type);
    return t == nullptr ? 0 : k / t->block_size * t->type_size;
}

void attend_rows_with(decltype(dense_kernel_set::attend) attend, const float *q, const float *k, const float *v,
                      int64_t stride, int64_t hd, float scale, int64_t n_rows, int64_t row_stride, int64_t group,
                      const int64_t *n_keys, float *out) {
    thread_local std::vector<float> scores;
    for (int64_t i = 0; i < n_rows; ++i) {
        scores.resize(static_cast<size_t>(std::max<int64_t>(1, n_keys[i])));
        for (int64_t t = 0; t < group; ++t) {
            const int64_t at = i * row_stride + t * hd;
            attend(q + at, k, v, stride, n_keys[i], hd, scale, scores.data(), out + at);
        }
    }
}

void matmul_quant_by_rows(uint32_t ggml_type, decltype(dense_kernel_set::matmul_f32) matmul_f32, const uint8_t *w,
                          int64_t k, int64_t r0, int64_t r1, const float *x, int64_t m, float *y, int64_t ldy) {
    thread_local std::vector<float> row;
    row.resize(static_cast<size_t>(k));
    const int64_t row_bytes = dense_row_bytes(ggml_type, k);
    for (int64_t r = r0; r < r1; ++r) {
        dequantize_to_f32(ggml_type, w + r * row_bytes, k, row.data());
        matmul_f32(row.data(), k, 0, 1, x, m, y + r, ldy);
    }
}

namespace {

// float_order.h: element j into lane j % 16 of chain (j / 16) % 2, fused, then the tree.
template <typename Load>
void matmul_generic(Load load, int64_t k, int64_t r0, int64_t r1, const float *x, int64_t m,
                    float *y, int64_t ldy) {
    for (int64_t r = r0; r < r1; ++r) {
        for (int64_t i = 0; i < m; ++i) {
            const float *xi = x + i * k;
            float chain[2][kSumLanes] = {};
            for (int64_t j = 0; j < k; ++j) {
                float &acc = chain[(j / kSumLanes) & 1][j % kSumLanes];
                acc = std::fma(load(r * k + j), xi[j], acc);
            }
            y[i * ldy + r] = sum_two_chains(chain);
        }
    }
}

void matmul_f32_ref(const float *w, int64_t k, int64_t r0, int64_t r1, const float *x, int64_t m,
                    float *y, int64_t ldy) {
    matmul_generic([w](int64_t j) { return w[j]; }, k, r0, r1, x, m, y, ldy);
}
void matmul_f16_ref(const uint16_t *w, int64_t k, int64_t r0, int64_t r1, const float *x,
                    int64_t m, float *y, int64_t ldy) {
    matmul_generic([w](int64_t j) { return f16_to_f32(w[j]); }, k, r0, r1, x, m, y, ldy);
}
void matmul_bf16_ref(const uint16_t *w, int64_t k, int64_t r0, int64_t r1, const float *x,
                     int64_t m, float *y, int64_t ldy) {
    matmul_generic([w](int64_t j) { return bf16_to_f32(w[j]); }, k, r0, r1, x, m, y, ldy);
}

float dot_f32_ref(const float *a, const float *b, int64_t n) {
    float acc = 0.0f;
    for (int64_t j = 0; j < n; ++j) acc += a[j] * b[j];
    return acc;
}
void axpy_f32_ref(float alpha, const float *x, float *y, int64_t n) {
    for (int64_t j = 0; j < n; ++j) y[j] += alpha * x[j];
}

void matmul_q8_0_ref(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const float *x, int64_t m, float *y,
                     int64_t ldy) {
    matmul_quant_by_rows(GGML_Q8_0, matmul_f32_ref, w, k, r0, r1, x, m, y, ldy);
}
void matmul_q6_k_ref(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const float *x, int64_t m, float *y,
                     int64_t ldy) {
    matmul_quant_by_rows(GGML_Q6_K, matmul_f32_ref, w, k, r0, r1, x, m, y, ldy);
}

// The reference order of attention (float_order.h), which every set reproduces bit for bit.
void attend_ref(const float *q, const float *k, const float *v, int64_t stride, int64_t n_keys, int64_t hd,
                float scale, float *scores, float *out) {
    float max_s = -INFINITY;
    for (int64_t p = 0; p < n_keys; ++p) {
        const float *kp = k + p * stride;
        float acc = 0.0f;
        for (int64_t d = 0; d < hd; ++d) acc = std::fma(q[d], kp[d], acc);
        scores[p] = acc * scale;
        max_s = std::fmax(max_s, scores[p]);
    }
    float lanes[kSumLanes] = {};
    for (int64_t p = 0; p < n_keys; ++p) {
        scores[p] = exp_ref(scores[p] - max_s);
        lanes[p % kSumLanes] += scores[p];
    }
    const float sum = sum_lanes16(lanes);
    for (int64_t p = 0; p < n_keys; ++p) scores[p] /= sum;
    for (int64_t d = 0; d < hd; ++d) {
        float acc = 0.0f;
        for (int64_t p = 0; p < n_keys; ++p) acc = std::fma(scores[p], v[p * stride + d], acc);
        out[d] = acc;
    }
}

void attend_rows_ref(const float *q, const float *k, const float *v, int64_t stride, int64_t hd, float scale,
                     int64_t n_rows, int64_t row_stride, int64_t group, const int64_t *n_keys, float *out) {
    attend_rows_with(attend_ref, q, k, v, stride, hd, scale, n_rows, row_stride, group, n_keys, out);
}

void scale_sums_ref(const int32_t *acc, int64_t n, float s, float w_scale, float *y) {
    for (int64_t r = 0; r < n; ++r) y[r] = static_cast<float>(acc[r]) / s * w_scale;
}

const dense_kernel_set kScalar = {"scalar",        matmul_f32_ref,  matmul_f16_ref, matmul_bf16_ref, matmul_q8_0_ref,
                                  matmul_q6_k_ref, dot_f32_ref,     axpy_f32_ref,   attend_ref,
                                  attend_rows_ref, scale_sums_ref};

}  // namespace

const dense_kernel_set *dense_kernels_scalar() { return &kScalar; }

const dense_kernel_set *dense_kernels_active() {
    const ternary_kernel_set *t = ternary_kernels_active(nullptr);
    const bool avx512 = t != nullptr && (std::strncmp(t->name, "avx512", 6) == 0 || std::strcmp(t->name, "amx") == 0);
    if (avx512 && dense_kernels_avx512() != nullptr)
        return dense_kernels_avx512();
    if (t != nullptr && std::strncmp(t->name, "avx", 3) == 0 && dense_kernels_avx2() != nullptr)
        return dense_kernels_avx2();
    if (t != nullptr && std::strcmp(t->name, "neon") == 0 && dense_kernels_neon() != nullptr)
        return dense_kernels_neon();
    return dense_kernels_scalar();
}

#if !(defined(__x86_64__) || defined(_M_X64))
const dense_kernel_set *dense_kernels_avx2() { return nullptr; }
const dense_kernel_set *dense_kernels_avx512() { return nullptr; }
#endif
#if !defined(__aarch64__)
const dense_kernel_set *dense_kernels_neon() { return nullptr; }
#endif

}  // namespace bitnet
