// Batched (prompt-processing) ternary matmuls with their own weight decoding, used by the ISA
// kernel tables for m > 1 (internal; not part of the kernel API). Same contract as
// ternary_kernel_set::i2s_matmul; callable only on CPUs with the ISA in the name.
#pragma once
#include <cstdint>

namespace bitnet {

void i2s_gemm_avx512vnni(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a,
                         const int32_t *a_sums, int64_t m, int32_t *y, int64_t ldy);
// Needs AMX-TILE + AMX-INT8 and the kernel's permission for tile data (dispatch.cpp asks).
void i2s_gemm_amx(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a,
                  const int32_t *a_sums, int64_t m, int32_t *y, int64_t ldy);
// The 256-bit GEMM (ternary_gemm_avx2.h): vpmaddubsw (any AVX2 CPU), vpdpbusd ymm (AVX-VNNI).
void i2s_gemm_avx2(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a, const int32_t *a_sums,
                   int64_t m, int32_t *y, int64_t ldy);
void i2s_gemm_avxvnni(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a, const int32_t *a_sums,
                      int64_t m, int32_t *y, int64_t ldy);

}  // namespace bitnet
