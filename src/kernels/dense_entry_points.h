// The weight-type entry points of a dense kernel set (the lm_head's F32 / F16 / BF16 / Q8_0 /
// Q6_K matmuls): each one calls the including file's matmul<Load> with that file's load_* type.
// Included by dense_avx2.cpp, dense_avx512.cpp and dense_neon.cpp inside their anonymous
// namespace, after those names, so every copy is compiled with its own file's flags.
#pragma once

void matmul_f32(const float *w, int64_t k, int64_t r0, int64_t r1, const float *x, int64_t m, float *y,
                int64_t ldy) {
    matmul<load_f32>(reinterpret_cast<const uint8_t *>(w), k, r0, r1, x, m, y, ldy);
}
void matmul_f16(const uint16_t *w, int64_t k, int64_t r0, int64_t r1, const float *x, int64_t m, float *y,
                int64_t ldy) {
    matmul<load_f16>(reinterpret_cast<const uint8_t *>(w), k, r0, r1, x, m, y, ldy);
}
void matmul_bf16(const uint16_t *w, int64_t k, int64_t r0, int64_t r1, const float *x, int64_t m, float *y,
                 int64_t ldy) {
    matmul<load_bf16>(reinterpret_cast<const uint8_t *>(w), k, r0, r1, x, m, y, ldy);
}
void matmul_q8_0(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const float *x, int64_t m, float *y,
                 int64_t ldy) {
    matmul<load_q8_0>(w, k, r0, r1, x, m, y, ldy);
}
void matmul_q6_k(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const float *x, int64_t m, float *y,
                 int64_t ldy) {
    matmul<load_q6_k>(w, k, r0, r1, x, m, y, ldy);
}
