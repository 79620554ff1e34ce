// Dense (F32 / F16 / BF16) matrix-vector products for the embedding-tied lm_head and any
// other high-precision weight, attention's vector loops, and element conversion. f32
// accumulation throughout.
//
// Weight layout: n rows of k elements, row-major (GGUF ne0 = k is the fastest dimension).
// Activations: m rows of k f32 values. Output: y[i*ldy + r] = dot(W[r], x[i]).
#pragma once
#include <cstdint>

namespace bitnet {

struct dense_kernel_set {
    const char *name;
    void (*matmul_f32)(const float *w, int64_t k, int64_t r0, int64_t r1, const float *x, int64_t m,
                       float *y, int64_t ldy);
    void (*matmul_f16)(const uint16_t *w, int64_t k, int64_t r0, int64_t r1, const float *x,
                       int64_t m, float *y, int64_t ldy);
    void (*matmul_bf16)(const uint16_t *w, int64_t k, int64_t r0, int64_t r1, const float *x,
                        int64_t m, float *y, int64_t ldy);
    // Quantized heads read in place (layouts in dequant.h; k a whole number of blocks). Each
    // weight is widened exactly as dequantize_to_f32 widens it, then summed as matmul_f32 sums,
    // so the logits equal those of the widened F32 matrix bit for bit.
    void (*matmul_q8_0)(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const float *x, int64_t m,
                        float *y, int64_t ldy);
    void (*matmul_q6_k)(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const float *x, int64_t m,
                        float *y, int64_t ldy);
    // Vector loops: sum a[j] * b[j], and y[j] += alpha * x[j], for j < n.
    float (*dot_f32)(const float *a, const float *b, int64_t n);
    void (*axpy_f32)(float alpha, const float *x, float *y, int64_t n);
    // One query against n_keys cached keys and values (key p at k + p * stride, value at
    // v + p * stride, hd floats each): out = sum_p softmax_p(scale * q . k_p) * v_p, with the
    // softmax as max-subtracted exp over sum, every operation in float_order.h's order (the
    // same bits in every set). scores: n_keys floats of scratch.
    void (*attend)(const float *q, const float *k, const float *v, int64_t stride, int64_t n_keys, int64_t hd,
                   float scale, float *scores, float *out);
    // Prompt attention: the `group` query heads of one KV head, for n_rows consecutive rows of one
    // sequence. Query (row i, head t) at q + i * row_stride + t * hd, its output at the same offset
    // of out; row i sees the first n_keys[i] keys and values (as in attend). Each output is
    // attend's, bit for bit.
    void (*attend_rows)(const float *q, const float *k, const float *v, int64_t stride, int64_t hd, float scale,
                        int64_t n_rows, int64_t row_stride, int64_t group, const int64_t *n_keys, float *out);
    // A ternary layer's int32 sums to its outputs: y[r] = (float)acc[r] / s * w_scale (DESIGN.md
    // section 3, in that order: a division, then a multiply), for r < n.
    void (*scale_sums)(const int32_t *acc, int64_t n, float s, float w_scale, float *y);
};

// attend_rows from a set's attend, one query at a time (the scalar and AVX2 sets use it).
void attend_rows_with(decltype(dense_kernel_set::attend) attend, const float *q, const float *k, const float *v,
                      int64_t stride, int64_t hd, float scale, int64_t n_rows, int64_t row_stride, int64_t group,
                      const int64_t *n_keys, float *out);
// The AVX2 set's attend_rows (attention_avx2.cpp).
void attend_rows_avx2(const float *q, const float *k, const float *v, int64_t stride, int64_t hd, float scale,
                      int64_t n_rows, int64_t row_stride, int64_t group, const int64_t *n_keys, float *out);
// The AVX-512 set's attend_rows (attention_avx512.cpp).
void attend_rows_avx512(const float *q, const float *k, const float *v, int64_t stride, int64_t hd, float scale,
                        int64_t n_rows, int64_t row_stride, int64_t group, const int64_t *n_keys, float *out);

const dense_kernel_set *dense_kernels_scalar();
const dense_kernel_set *dense_kernels_avx2();    // nullptr where not compiled
const dense_kernel_set *dense_kernels_avx512();  // nullptr where not compiled
const dense_kernel_set *dense_kernels_neon();    // nullptr where not compiled (dense_neon.cpp)
// The set matching the active ternary kernel ISA (scalar stays scalar, so forced-ISA tests
// exercise the reference path end to end).
const dense_kernel_set *dense_kernels_active();

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);  // round to nearest even
// The f16 stored (little-endian, any alignment) at p, as f32: block scales of quantized types.
float f16_at(const uint8_t *p);
inline float bf16_to_f32(uint16_t h) {
    union {
        uint32_t u;
        float f;
    } v{static_cast<uint32_t>(h) << 16};
    return v.f;
}

// Convert one row of a stored tensor (F32 / F16 / BF16 / Q8_0 / Q6_K by ggml id) to f32.
void row_to_f32(uint32_t ggml_type, const void *row, int64_t k, float *out);
// Bytes of one row of k elements of such a type.
int64_t dense_row_bytes(uint32_t ggml_type, int64_t k);

// For kernel sets without a native quantized kernel: each row widened into a per-thread
// buffer, then multiplied by the set's own matmul_f32 (same numbers as a widened matrix).
void matmul_quant_by_rows(uint32_t ggml_type, decltype(dense_kernel_set::matmul_f32) matmul_f32, const uint8_t *w,
                          int64_t k, int64_t r0, int64_t r1, const float *x, int64_t m, float *y, int64_t ldy);

}  // namespace bitnet
