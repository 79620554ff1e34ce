// Lookup-table (LUT) ternary matmuls, in the spirit of T-MAC and bitnet.cpp's TL1/TL2 but
// shape-generic (any n, any k % 128 == 0; no per-model code generation) and exact (int8
// activations, integer tables, int32 results equal to the scalar I2_S reference bit for bit).
//
// An experiment measured by tools/lut_layout_probe.cpp; the engine's kernel tables do not use
// these (internal: not part of the kernel API). Each variant repacks I2_S codes once into its
// own weight layout, builds per activation row a table of partial sums for every weight pattern
// of a group of columns, then looks the partial sums up instead of multiplying:
//
//   lut2 (AVX2, ternary_lut_avx2.cpp): groups of 2 columns, 9 patterns, 4-bit indices
//        (2 bits per weight, like I2_S); vpshufb on 16-byte tables, int16 sums split in bytes.
//   lut3 (AVX-512BW, ternary_lut_avx512.cpp): groups of 3 columns, 27 patterns, 5-bit indices
//        (16 bits per 9 weights: 1.78 bits per weight); vpermw on 32-entry int16 tables.
//
// Both lay rows out in tiles of kLutTileRows rows (the last one padded with zero weights), each
// tile one contiguous stream; a matmul may start and end on any row, but threads that split rows
// at tile boundaries never read the same weight bytes.
#pragma once
#include <cstdint>

namespace bitnet {

constexpr int64_t kLutTileRows = 64;

struct lut_kernel {
    const char *name;
    // Bytes of the repacked n x k matrix (n rounded up to whole tiles).
    int64_t (*packed_bytes)(int64_t n, int64_t k);
    // I2_S codes of an n x k matrix (ternary.h) -> this layout; scalar, runs once at load time.
    // False if a code 3 (never written by a packer; the scalar kernel reads it as +2) appears:
    // the layouts hold ternary values only.
    bool (*repack_i2s)(const uint8_t *i2s, int64_t n, int64_t k, uint8_t *out);
    // Bytes of one activation row's tables.
    int64_t (*table_bytes)(int64_t k);
    // Tables of m activation rows (row i at a + i*k) into tables + i*table_bytes(k).
    void (*build_tables)(const int8_t *a, int64_t k, int64_t m, uint8_t *tables);
    // y[i*ldy + r] = sum_k W[r][k] * a[i][k] for i in [0, m), r in [r0, r1), from the tables.
    void (*matmul)(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const uint8_t *tables, int64_t m,
                   int32_t *y, int64_t ldy);
};

// The variants; the caller checks that the CPU runs them: lut2 where ternary_kernels_by_name("avx2")
// is not nullptr, lut3 where ternary_kernels_by_name("avx512vnni") is not (lut3 needs only
// AVX-512BW, but its file is compiled with the VNNI flags of every *_avx512.cpp, which let the
// compiler use VNNI anywhere in it). x86-64 builds only.
const lut_kernel *lut_kernel_avx2();
const lut_kernel *lut_kernel_avx512();

}  // namespace bitnet
