// Register-tiled GEMM for I2_S weights on 256-bit registers (prompt processing), shared by the
// AVX2 (vpmaddubsw) and AVX-VNNI (vpdpbusd) files; each includes this with its own -m flags
// (internal linkage: see ternary_impl.h). The AVX2 twin of ternary_gemm_avx512.cpp.
//
// Output rows sit in the int32 lanes of a ymm ("panels" of 8 weight rows); activations arrive as
// one broadcast dword (4 consecutive int8 of one activation row, the same in every lane), so a
// tile ends with no horizontal sums. A dword of an I2_S block holds four consecutive codes in
// each 2-bit field, so the weights need only a transpose across rows, no re-ordering along k:
//
//   I2_S block b of a row (32 bytes):  byte[m] = c[m]<<6 | c[32+m]<<4 | c[64+m]<<2 | c[96+m]
//   dword d (bytes 4d..4d+3), field f:  (dword >> (6 - 2f)) & 0x03030303
//                                     = u8 codes of k = 128b + 32f + 4d + 0..3   (values 0..2)
//
// A slice of R panels (8R rows) is transposed (8x8 dwords per block and panel) and decoded once
// per block of kActBlock activation rows into a per-thread buffer of u8 codes, 32 bytes per
// (step j = 32b + 8f + d, panel p) at (j * R + p) * 32, so a tile reads its codes as R full
// vectors per step and spends no instruction on them but the load, and step j's activations are
// the 4 bytes at 4j (128b + 32f + 4d):
//
//   acc[p][i] lane t += Dot::step(codes (j, p) lane t, broadcast a[i][4j .. 4j + 4])
//   y[i][8p + t] = acc[p][i] lane t - a_sums[i]    (codes are w + 1: sum w*a = sum c*a - sum a)
//
// Dot::step is vpdpbusd (u8 codes x s8 activations, 4 products into an int32 lane), or
// vpmaddubsw + vpaddw: pairs of u8 x s8 products into int16 lanes, at most 2 * 3 * 128 = 768 in
// magnitude even for the unused code 3, so vpmaddubsw never saturates; a block is 32 steps, so an
// int16 lane holds at most 32 * 768 = 24576 < 32767 before Dot::widen_add folds it (vpmaddwd by
// 1, pairs into int32) into the int32 sums after every block. Integer sums, exact in any order:
// the result equals the scalar reference bit for bit.
#pragma once
#include "kernels/simd_x86.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>
#include <vector>

#include "kernels/ternary.h"
#include "kernels/ternary_impl.h"

namespace bitnet {
namespace {

namespace gemm256 {

constexpr int kPanelRows = 8;    // weight rows per ymm: one per int32 lane
constexpr int kBlockSteps = 32;  // (dword, field) steps per 128-element block
// Activation rows per pass over the weights: they stay in L2 while the slices pass over them.
constexpr int64_t kActBlock = 192;

// The 8 rows' blocks (rows[t]) transposed: out[d] lane t = dword d of row t (8x8 dwords).
inline void transpose_block(const uint8_t *const rows[kPanelRows], __m256i out[8]) {
    __m256i r[8], t[8], u[8];
    for (int j = 0; j < 8; ++j) r[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(rows[j]));
    for (int j = 0; j < 4; ++j) {  // per 128-bit lane: dwords 0,1 / 2,3 of rows 2j, 2j+1 interleaved
        t[2 * j] = _mm256_unpacklo_epi32(r[2 * j], r[2 * j + 1]);
        t[2 * j + 1] = _mm256_unpackhi_epi32(r[2 * j], r[2 * j + 1]);
    }
    for (int h = 0; h < 2; ++h) {  // u[4h + e]: dword e (low lane) and 4 + e (high lane) of rows 4h..4h+3
        const __m256i *q = t + 4 * h;
        u[4 * h + 0] = _mm256_unpacklo_epi64(q[0], q[2]);
        u[4 * h + 1] = _mm256_unpackhi_epi64(q[0], q[2]);
        u[4 * h + 2] = _mm256_unpacklo_epi64(q[1], q[3]);
        u[4 * h + 3] = _mm256_unpackhi_epi64(q[1], q[3]);
    }
    for (int e = 0; e < 4; ++e) {
        out[e] = _mm256_permute2x128_si256(u[e], u[4 + e], 0x20);
        out[4 + e] = _mm256_permute2x128_si256(u[e], u[4 + e], 0x31);
    }
}

// Rows [r, r + n) (n <= 8R) decoded into the buffer layout above. Lanes past row n repeat row
// n - 1; their sums are computed and never stored. Meanwhile the next slice's rows (n_next, whole
// panels only) are prefetched into L2: 8 or 16 rows read in step are more streams than the
// hardware prefetchers follow.
template <int R>
void decode_slice(const uint8_t *w, int64_t k, int64_t r, int64_t n, int64_t n_next, uint8_t *buf) {
    const int64_t row_bytes = k / 4;
    const __m256i mask = _mm256_set1_epi8(3);
    for (int p = 0; p < R; ++p) {
        const uint8_t *rows[kPanelRows];
        for (int t = 0; t < kPanelRows; ++t)
            rows[t] = w + (r + std::min<int64_t>(p * kPanelRows + t, n - 1)) * row_bytes;
        const bool prefetch_next = n_next >= (p + 1) * kPanelRows;
        const uint8_t *next = w + (r + R * kPanelRows + p * kPanelRows) * row_bytes;
        for (int64_t b = 0; b < k / kI2SBlock; ++b) {
            if (b % 2 == 0 && prefetch_next) {  // one per 64-byte line: the one holding block b + 1
                const uint8_t *line = next + (b + 1) * kI2SBlockBytes;
                for (int t = 0; t < kPanelRows; ++t)
                    _mm_prefetch(reinterpret_cast<const char *>(line + t * row_bytes), _MM_HINT_T1);
            }
            __m256i panel[8];
            transpose_block(rows, panel);
            for (int t = 0; t < kPanelRows; ++t) rows[t] += kI2SBlockBytes;
            for (int f = 0; f < 4; ++f)
                for (int d = 0; d < 8; ++d) {
                    const __m256i codes = _mm256_and_si256(_mm256_srli_epi32(panel[d], 6 - 2 * f), mask);
                    uint8_t *out = buf + ((b * kBlockSteps + 8 * f + d) * R + p) * 32;
                    _mm256_store_si256(reinterpret_cast<__m256i *>(out), codes);
                }
        }
    }
}

inline int32_t load_dword(const int8_t *a) {
    int32_t v;
    std::memcpy(&v, a, sizeof v);
    return v;
}

// R panels (buf, n_rows valid rows) times M activation rows (a, k apart): y[i * ldy + row].
// Step j of the whole row reads the codes at buf + j * R * 32 and the activations at a + 4j.
// Dot::kGroupBlocks blocks are summed by Dot::step before Dot::widen_add folds them into the
// int32 sums, which stay in L1 (the barrier keeps the compiler from holding them in registers
// beside the accumulators: 16 ymm registers hold one set, not both).
template <class Dot, int R, int M>
void tile(const uint8_t *buf, const int8_t *a, const int32_t *a_sums, int64_t k, int64_t n_rows, int32_t *y,
          int64_t ldy) {
    const int64_t n_blocks = k / kI2SBlock;
    alignas(32) int32_t sums[R][M][8] = {};
    for (int64_t g = 0; g < n_blocks; g += Dot::kGroupBlocks) {
        asm volatile("" : : "r"(&sums[0][0][0]) : "memory");
        const int64_t j_end = std::min(n_blocks, g + Dot::kGroupBlocks) * kBlockSteps;
        __m256i acc[R][M];
        for (int p = 0; p < R; ++p)
            for (int i = 0; i < M; ++i) acc[p][i] = _mm256_setzero_si256();
        // Two steps per iteration: the second finds its activations 4 bytes past the addresses the
        // first computed (one pointer add per row per two steps, fewer instructions to issue).
#pragma GCC unroll 2
        for (int64_t j = g * kBlockSteps; j < j_end; ++j) {
            __m256i codes[R];
            for (int p = 0; p < R; ++p)
                codes[p] = _mm256_load_si256(reinterpret_cast<const __m256i *>(buf + (j * R + p) * 32));
            for (int i = 0; i < M; ++i) {
                const __m256i av = _mm256_set1_epi32(load_dword(a + i * k + 4 * j));
                for (int p = 0; p < R; ++p) acc[p][i] = Dot::step(acc[p][i], codes[p], av);
            }
        }
        for (int p = 0; p < R; ++p)
            for (int i = 0; i < M; ++i) {
                __m256i *s = reinterpret_cast<__m256i *>(sums[p][i]);
                _mm256_store_si256(s, Dot::widen_add(_mm256_load_si256(s), acc[p][i]));
            }
    }
    for (int i = 0; i < M; ++i) {
        const __m256i as = _mm256_set1_epi32(a_sums[i]);
        for (int p = 0; p < R && p * kPanelRows < n_rows; ++p) {
            const __m256i sum = _mm256_load_si256(reinterpret_cast<const __m256i *>(sums[p][i]));
            const __m256i v = _mm256_sub_epi32(sum, as);
            int32_t *out = y + i * ldy + p * kPanelRows;
            const int64_t rows = std::min<int64_t>(kPanelRows, n_rows - p * kPanelRows);
            if (rows == kPanelRows) {
                _mm256_storeu_si256(reinterpret_cast<__m256i *>(out), v);
            } else {
                const __m256i live = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(rows)),
                                                        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
                _mm256_maskstore_epi32(out, live, v);
            }
        }
    }
}

using tile_fn = void (*)(const uint8_t *, const int8_t *, const int32_t *, int64_t, int64_t, int32_t *,
                         int64_t);

// tile<R, 1> .. tile<R, M-1>, for the activation rows left after the full tiles.
template <class Dot, int R, int... Ms>
constexpr std::array<tile_fn, sizeof...(Ms)> partial_tiles(std::integer_sequence<int, Ms...>) {
    return {tile<Dot, R, Ms + 1>...};
}

// Weight rows [r, r + n) (n <= 8R) against activation rows [i0, i1), in tiles of M rows.
template <class Dot, int R, int M>
void slice_times_acts(const uint8_t *w, int64_t k, int64_t r, int64_t n, int64_t n_next, const int8_t *a,
                      const int32_t *a_sums, int64_t i0, int64_t i1, int32_t *y, int64_t ldy, uint8_t *buf) {
    static constexpr auto kPartial = partial_tiles<Dot, R>(std::make_integer_sequence<int, M - 1>());
    decode_slice<R>(w, k, r, n, n_next, buf);
    int64_t i = i0;
    for (; i + M <= i1; i += M) tile<Dot, R, M>(buf, a + i * k, a_sums + i, k, n, y + i * ldy + r, ldy);
    if (i < i1) kPartial[i1 - i - 1](buf, a + i * k, a_sums + i, k, n, y + i * ldy + r, ldy);
}

// The whole GEMM: slices of Dot::kSlicePanels panels (a last one of up to 8 rows: one panel with
// Dot::kOnePanelActs activation rows per tile), activation rows kActBlock at a time.
template <class Dot>
void gemm(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a, const int32_t *a_sums,
          int64_t m, int32_t *y, int64_t ldy) {
    constexpr int R = Dot::kSlicePanels;
    constexpr int64_t kSliceRows = R * kPanelRows;
    // One buffer per thread, kept across calls (the pool's threads live as long as the context).
    struct alignas(64) cache_line {
        uint8_t bytes[64];
    };
    thread_local std::vector<cache_line> buf;
    const size_t need = static_cast<size_t>(kSliceRows * k / 64);
    if (buf.size() < need) buf.resize(need);
    uint8_t *codes = buf.data()->bytes;
    for (int64_t i0 = 0; i0 < m; i0 += kActBlock) {
        const int64_t i1 = std::min(m, i0 + kActBlock);
        for (int64_t r = r0; r < r1; r += kSliceRows) {
            const int64_t n = std::min(kSliceRows, r1 - r), n_next = std::min(kSliceRows, r1 - r - n);
            if (n <= kPanelRows)
                slice_times_acts<Dot, 1, Dot::kOnePanelActs>(w, k, r, n, n_next, a, a_sums, i0, i1, y, ldy,
                                                             codes);
            else
                slice_times_acts<Dot, R, Dot::kTileActs>(w, k, r, n, n_next, a, a_sums, i0, i1, y, ldy,
                                                         codes);
        }
    }
}

}  // namespace gemm256

}  // namespace
}  // namespace bitnet
