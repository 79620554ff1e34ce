// I2_S tiles on 256-bit registers, shared by the AVX2 (vpmaddubsw) and AVX-VNNI (vpdpbusd)
// kernel files; each includes this with its own -m flags (internal linkage: see ternary_impl.h).
//
// Weights, I2_S: one 128-element block = 32 bytes = one ymm. Four shift+mask steps give the
// codes of 32 consecutive columns each, in the activations' natural order:
//
//   w  = [ byte0 .. byte31 ]        byte m = c[m]<<6 | c[32+m]<<4 | c[64+m]<<2 | c[96+m]
//   c_j = (w >> (6 - 2j)) & 3  -> codes of columns 32j .. 32j+31   x  a[32j .. 32j+32)
//   (16-bit shifts are fine: the mask drops the bits that cross from the neighbouring byte.)
//
// Dot::step adds u8 codes x s8 activations into a chain (maddubs + int16 add, or one dpbusd);
// Dot::widen_add moves a chain's group of blocks into the int32 sums. The codes are w + 1, so
// sum w*a = sum c*a - a_sums[i]. Integer sums: every tile shape gives the same result.
//
// A tile is R weight rows x M activation rows, each product summed in C chains: product
// (block u of a step of U blocks, column group j) goes to chain (4u + j) % C. The
// decode GEMV runs one row at a time by default (one memory stream, which the prefetcher and the
// memory system keep ahead of best), with enough chains to hide the dot instruction's latency;
// tuning().ternary_gemv_rows = 2 runs two rows side by side (half the chains each), which shares
// each activation load between them: fewer instructions per weight byte (0.72 against 0.83 with
// vpmaddubsw, counted), for a core that would otherwise fall short of its memory's pace.
#pragma once
#include "kernels/simd_x86.h"

#include "kernels/ternary.h"
#include "kernels/ternary_impl.h"
#include "kernels/tuning.h"

namespace bitnet {
namespace {

inline __m256i load256(const void *p) {
    return _mm256_loadu_si256(static_cast<const __m256i *>(p));
}

inline int32_t hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

// Block b of R rows (w + t * row_bytes) against M activation rows, into chains by column group.
template <class Dot, int R, int M, int C>
inline void i2s_block(const uint8_t *w, int64_t row_bytes, int64_t k, const int8_t *a, int64_t b, int u,
                      bool prefetch, int64_t ahead, __m256i inner[R][M][C]) {
    const __m256i mask = _mm256_set1_epi8(3);
    __m256i packed[R];
    for (int t = 0; t < R; ++t) {
        const uint8_t *p = w + t * row_bytes + b * kI2SBlockBytes;
        if (prefetch) _mm_prefetch(reinterpret_cast<const char *>(p + ahead), _MM_HINT_T1);
        packed[t] = load256(p);
    }
    for (int j = 0; j < 4; ++j) {
        const int c = (4 * u + j) % C;
        __m256i codes[R];
        for (int t = 0; t < R; ++t) codes[t] = _mm256_and_si256(_mm256_srli_epi16(packed[t], 6 - 2 * j), mask);
        for (int i = 0; i < M; ++i) {
            const __m256i act = load256(a + i * k + b * kI2SBlock + 32 * j);
            for (int t = 0; t < R; ++t) inner[t][i][c] = Dot::step(inner[t][i][c], codes[t], act);
        }
    }
}

// R weight rows (w, w + row_bytes, ...) times M activation rows (a, a + k, ...): y[i*ldy + t].
// Each row's weights are prefetched `ahead` bytes past where the tile reads them.
template <class Dot, int R, int M, int C>
void i2s_tile(const uint8_t *w, int64_t k, const int8_t *a, const int32_t *a_sums, int32_t *y, int64_t ldy,
              int64_t ahead) {
    // Blocks per step: the GEMV takes at least 2, so that a step starts on a 64-byte line (one
    // prefetch per step, no test per block); batch tiles 1, which keeps their registers for the
    // sums (2 blocks per step made them 10-15% slower), with a prefetch per block.
    constexpr int U = C >= 8 ? C / 4 : (M == 1 ? 2 : 1);
    const int64_t row_bytes = k / 4, n_blocks = k / kI2SBlock;
    // Blocks whose sums a chain may hold before widening (a chain takes max(1, 4/C) products per
    // block, or one per C/4 blocks); a multiple of U.
    const int64_t group = Dot::kGroupBlocks * (C >= 4 ? C / 4 : 1);
    __m256i acc[R][M][C];
    for (int t = 0; t < R; ++t)
        for (int i = 0; i < M; ++i)
            for (int c = 0; c < C; ++c) acc[t][i][c] = _mm256_setzero_si256();
    for (int64_t g = 0; g < n_blocks; g += group) {
        const int64_t g_end = std::min(n_blocks, g + group);
        __m256i inner[R][M][C];
        for (int t = 0; t < R; ++t)
            for (int i = 0; i < M; ++i)
                for (int c = 0; c < C; ++c) inner[t][i][c] = _mm256_setzero_si256();
        int64_t b = g;
        for (; b + U <= g_end; b += U)
            for (int u = 0; u < U; ++u)
                i2s_block<Dot, R, M, C>(w, row_bytes, k, a, b + u, u, U == 1 || u % 2 == 0, ahead, inner);
        for (; b < g_end; ++b) i2s_block<Dot, R, M, C>(w, row_bytes, k, a, b, 0, true, ahead, inner);
        for (int t = 0; t < R; ++t)
            for (int i = 0; i < M; ++i)
                for (int c = 0; c < C; ++c) acc[t][i][c] = Dot::widen_add(acc[t][i][c], inner[t][i][c]);
    }
    for (int t = 0; t < R; ++t)
        for (int i = 0; i < M; ++i) {
            __m256i sum = acc[t][i][0];
            for (int c = 1; c < C; ++c) sum = _mm256_add_epi32(sum, acc[t][i][c]);
            y[i * ldy + t] = sub_wrapping(hsum_i32(sum), a_sums[i]);
        }
}

// Rows [r0, r1) against M activation rows: tiles of R rows, then single rows.
template <class Dot, int R, int M, int C>
void i2s_rows(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a, const int32_t *a_sums,
              int32_t *y, int64_t ldy) {
    const int64_t row_bytes = k / 4, ahead = tuning().prefetch_bytes;
    int64_t r = r0;
    for (; r + R <= r1; r += R) i2s_tile<Dot, R, M, C>(w + r * row_bytes, k, a, a_sums, y + r, ldy, ahead);
    for (; r < r1; ++r) i2s_tile<Dot, 1, M, C>(w + r * row_bytes, k, a, a_sums, y + r, ldy, ahead);
}

// m activation rows in groups of up to 4 (Dot::Gemv for one row, Dot::Batch<M> for 2..4). One
// group streams the rows once; with more, the rows go kRowChunk at a time, so that every group
// after the first finds them in L1.
template <class Dot>
void i2s_matmul_tiles(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a, const int32_t *a_sums,
                      int64_t m, int32_t *y, int64_t ldy) {
    constexpr int64_t kRowChunk = 16;
    using rows_fn = void (*)(const uint8_t *, int64_t, int64_t, int64_t, const int8_t *, const int32_t *, int32_t *,
                             int64_t);
    static constexpr rows_fn kByActs[5] = {
        nullptr,
        i2s_rows<Dot, 1, 1, Dot::kGemvChains>,
        i2s_rows<Dot, 2, 2, 2>,
        i2s_rows<Dot, 2, 3, 1>,
        i2s_rows<Dot, 2, 4, 1>,
    };
    if (m == 1 && tuning().ternary_gemv_rows == 2) {
        constexpr int C = Dot::kGemvChains >= 2 ? Dot::kGemvChains / 2 : 1;
        return i2s_rows<Dot, 2, 1, C>(w, k, r0, r1, a, a_sums, y, ldy);
    }
    const int64_t chunk = m <= 4 ? r1 - r0 : kRowChunk;
    for (int64_t c0 = r0; c0 < r1; c0 += chunk) {
        const int64_t c1 = std::min(r1, c0 + chunk);
        for (int64_t i = 0; i < m; i += 4) {
            const int64_t n = std::min<int64_t>(4, m - i);
            kByActs[n](w, k, c0, c1, a + i * k, a_sums + i, y + i * ldy, ldy);
        }
    }
}

}  // namespace
}  // namespace bitnet
