// Ternary kernels: one table of function pointers per ISA, picked once at run time.
//
// Weight layout (I2_S, DESIGN.md section 2), one matrix of n rows x k columns (k % 128 == 0):
//   codes c = w + 1 in {0,1,2}; row r starts at byte r*k/4; each 128-element block is 32 bytes,
//   byte[m] = c[m]<<6 | c[32+m]<<4 | c[64+m]<<2 | c[96+m]   (m = 0..31)
// Activations: m rows of k int8 values (row-major), plus each row's sum, so kernels may use
// unsigned codes:  sum_k w*a = sum_k c*a - sum_k a  (exact in int32).
#pragma once
#include <cstdint>

namespace bitnet {

constexpr int64_t kI2SBlock = 128;       // elements per I2_S block
constexpr int64_t kI2SBlockBytes = 32;   // bytes per I2_S block
constexpr int64_t kI2SMaxK = 1 << 24;    // largest row length the loader accepts (int32-safe)

struct ternary_kernel_set {
    const char *name;
    // y[i*ldy + r] = sum_k W[r][k] * a[i*k + k]  for i in [0, m), r in [r0, r1).
    // w points at the start of the matrix (row 0); a_sums[i] = sum of activation row i.
    void (*i2s_matmul)(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a,
                       const int32_t *a_sums, int64_t m, int32_t *y, int64_t ldy);
    // DESIGN.md section 3, as PyTorch rounds it: s = 127 * (1/max(max|x|,1e-5));
    // q = clamp(rint(x*s),-128,127);
    // writes q[0..k), *scale = s, *sum = sum of q.
    void (*quantize_row_int8)(const float *x, int64_t k, int8_t *q, float *scale, int32_t *sum);
};

// Per-ISA tables; a table is nullptr when this build has no code for that ISA.
const ternary_kernel_set *ternary_kernels_scalar();
// The best AVX2 variant for this CPU: AVX-VNNI (vpdpbusd on ymm) if present, else vpmaddubsw.
const ternary_kernel_set *ternary_kernels_avx2();
// The vpmaddubsw variant whatever the CPU has, and the AVX-VNNI one (nullptr without AVX-VNNI).
const ternary_kernel_set *ternary_kernels_avx2_maddubs();
const ternary_kernel_set *ternary_kernels_avxvnni();
// The best AVX-512 variant for this CPU: VNNI (vpdpbusd) if present, else plain AVX-512BW.
const ternary_kernel_set *ternary_kernels_avx512();
// The AVX-512BW variant without VNNI, whatever the CPU has (tests run it on VNNI CPUs too).
const ternary_kernel_set *ternary_kernels_avx512bw();
// AVX-512 VNNI with AMX-INT8 tiles for batches; only where the CPU and the OS allow AMX.
const ternary_kernel_set *ternary_kernels_amx();
const ternary_kernel_set *ternary_kernels_neon();

// Scalar I2_S packing of a flat row-major array of n*k ternary values (w in -1..1), n*k % 128
// == 0: writes the n*k/4 code bytes (no 32-byte scale tail; the caller appends it).
void i2s_pack(const int8_t *w, int64_t n, int64_t k, uint8_t *out);
// Inverse of i2s_pack: w = code - 1 for the n*k codes (code 3, never written, reads as +2).
void i2s_unpack(const uint8_t *packed, int64_t n, int64_t k, int8_t *w);

// The set in use: the best one the CPU supports, or the one named by BITNET_ISA.
// Returns nullptr and fills *error if BITNET_ISA names an unknown or unsupported set.
const ternary_kernel_set *ternary_kernels_active(const char **error);
// Look up a set by name ("scalar", "avx2", "avx512", "neon"; also the AVX-512 variant names
// "avx512bw" and "avx512vnni") if this CPU can run it. A table's own `name` may be the more
// specific variant name ("avx512vnni" for what "avx512" picked); by_name accepts both.
const ternary_kernel_set *ternary_kernels_by_name(const char *name);
// Replace the active set (tests); returns false if unknown/unsupported.
bool ternary_kernels_force(const char *name);
// Comma-separated names this CPU can run, best last.
const char *ternary_kernels_available();

}  // namespace bitnet
