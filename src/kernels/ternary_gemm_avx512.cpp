// AVX-512 VNNI GEMM for I2_S weights against a batch of int8 activation rows (prompt processing).
//
// DRAFT (exploration knobs below).
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>
#include <vector>

#include "kernels/ternary.h"
#include "kernels/ternary_gemm.h"
#include "kernels/ternary_impl.h"

#ifndef GEMM_R
#define GEMM_R 2
#endif
#ifndef GEMM_M
#define GEMM_M 12
#endif
#ifndef GEMM_M1
#define GEMM_M1 24
#endif
#ifndef GEMM_ACTBLOCK
#define GEMM_ACTBLOCK 64
#endif
#ifndef GEMM_NAME
#define GEMM_NAME i2s_gemm_avx512vnni
#endif

namespace bitnet {

namespace {

constexpr int kPanelRows = 16;  // output rows per zmm: one per int32 lane
constexpr int kSlicePanels = GEMM_R;
constexpr int kTileActs = GEMM_M;
constexpr int kTileActsOnePanel = GEMM_M1;
constexpr int64_t kSliceRows = kPanelRows * kSlicePanels;
constexpr int64_t kActBlock = GEMM_ACTBLOCK;

// Dwords d = 0..7 of one 32-byte block of 16 weight rows (rows[t] points at row t's block),
// transposed: out[d] lane t = dword d of row t. Rows t and t+4 share a zmm so that after the 4x4
// transposes inside each 128-bit lane, two lanes of each of two vectors hold rows 0-7 and 8-15.
inline void transpose_block(const uint8_t *const rows[16], __m512i out[8]) {
    __m512i z[8];
    for (int h = 0; h < 2; ++h)
        for (int j = 0; j < 4; ++j) {
            const uint8_t *lo = rows[8 * h + j], *hi = rows[8 * h + j + 4];
            z[4 * h + j] = _mm512_inserti64x4(
                _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(lo))),
                _mm256_loadu_si256(reinterpret_cast<const __m256i *>(hi)), 1);
        }
    __m512i t[8];  // t[4h + e]: 128-bit lanes = d_e rows 8h+0..3, d_{4+e} same, d_e rows 8h+4..7, d_{4+e}
    for (int h = 0; h < 2; ++h) {
        const __m512i *q = z + 4 * h;
        const __m512i a = _mm512_unpacklo_epi32(q[0], q[1]), b = _mm512_unpackhi_epi32(q[0], q[1]);
        const __m512i c = _mm512_unpacklo_epi32(q[2], q[3]), d = _mm512_unpackhi_epi32(q[2], q[3]);
        t[4 * h + 0] = _mm512_unpacklo_epi64(a, c);
        t[4 * h + 1] = _mm512_unpackhi_epi64(a, c);
        t[4 * h + 2] = _mm512_unpacklo_epi64(b, d);
        t[4 * h + 3] = _mm512_unpackhi_epi64(b, d);
    }
    for (int e = 0; e < 4; ++e) {
        out[e] = _mm512_shuffle_i32x4(t[e], t[4 + e], _MM_SHUFFLE(2, 0, 2, 0));
        out[4 + e] = _mm512_shuffle_i32x4(t[e], t[4 + e], _MM_SHUFFLE(3, 1, 3, 1));
    }
}

// Rows [r, r + n) (n <= kSliceRows) into buf: dword d of block b of panel p at
// buf + ((b * 8 + d) * kSlicePanels + p) * 64; lanes of rows past n repeat row n-1 (never stored).
void transpose_slice(const uint8_t *w, int64_t k, int64_t r, int64_t n, uint8_t *buf) {
    const int64_t row_bytes = k / 4;
    for (int p = 0; p < kSlicePanels; ++p) {
        const uint8_t *rows[16];
        for (int t = 0; t < kPanelRows; ++t)
            rows[t] = w + (r + std::min<int64_t>(p * kPanelRows + t, n - 1)) * row_bytes;
        for (int64_t b = 0; b < k / kI2SBlock; ++b) {
            __m512i v[8];
            transpose_block(rows, v);
            for (int t = 0; t < kPanelRows; ++t) rows[t] += kI2SBlockBytes;
            for (int d = 0; d < 8; ++d) _mm512_store_si512(buf + ((b * 8 + d) * kSlicePanels + p) * 64, v[d]);
        }
    }
}

inline int32_t load_group(const int8_t *a) {
    int32_t v;
    std::memcpy(&v, a, sizeof v);
    return v;
}

template <int R, int M>
void tile(const uint8_t *buf, const int8_t *a, const int32_t *a_sums, int64_t k, int64_t n_rows, int32_t *y,
          int64_t ldy) {
    const __m512i mask3 = _mm512_set1_epi8(3);
    __m512i acc[R][M];
    for (int p = 0; p < R; ++p)
        for (int i = 0; i < M; ++i) acc[p][i] = _mm512_setzero_si512();
    for (int64_t b = 0; b < k / kI2SBlock; ++b)
        for (int d = 0; d < 8; ++d) {
            __m512i v[R];
            for (int p = 0; p < R; ++p) v[p] = _mm512_load_si512(buf + ((b * 8 + d) * kSlicePanels + p) * 64);
            for (int f = 0; f < 4; ++f) {
                __m512i c[R];
                for (int p = 0; p < R; ++p) c[p] = _mm512_and_si512(_mm512_srli_epi32(v[p], 6 - 2 * f), mask3);
                const int8_t *ag = a + b * kI2SBlock + 32 * f + 4 * d;
                for (int i = 0; i < M; ++i) {
                    const __m512i av = _mm512_set1_epi32(load_group(ag + i * k));
                    for (int p = 0; p < R; ++p) acc[p][i] = _mm512_dpbusd_epi32(acc[p][i], c[p], av);
                }
            }
        }
    for (int i = 0; i < M; ++i) {
        const __m512i s = _mm512_set1_epi32(a_sums[i]);
        for (int p = 0; p < R; ++p) {
            const int64_t rows = std::min<int64_t>(kPanelRows, n_rows - p * kPanelRows);
            if (rows <= 0) break;
            const __mmask16 live = static_cast<__mmask16>((1u << rows) - 1u);
            _mm512_mask_storeu_epi32(y + i * ldy + p * kPanelRows, live, _mm512_sub_epi32(acc[p][i], s));
        }
    }
}

using tile_fn = void (*)(const uint8_t *, const int8_t *, const int32_t *, int64_t, int64_t, int32_t *, int64_t);

template <int R, int... Ms>
constexpr std::array<tile_fn, sizeof...(Ms)> tiles_for(std::integer_sequence<int, Ms...>) {
    return {tile<R, Ms + 1>...};
}

template <int R, int M>
void slice_times_acts(const uint8_t *buf, int64_t n_rows, const int8_t *a, const int32_t *a_sums, int64_t k,
                      int64_t i0, int64_t i1, int32_t *y, int64_t ldy) {
    static constexpr auto kTiles = tiles_for<R>(std::make_integer_sequence<int, M>());
    int64_t i = i0;
    for (; i + M <= i1; i += M) tile<R, M>(buf, a + i * k, a_sums + i, k, n_rows, y + i * ldy, ldy);
    if (i < i1) kTiles[i1 - i - 1](buf, a + i * k, a_sums + i, k, n_rows, y + i * ldy, ldy);
}

}  // namespace

void GEMM_NAME(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a,
                         const int32_t *a_sums, int64_t m, int32_t *y, int64_t ldy) {
    struct alignas(64) line { uint8_t bytes[64]; };
    thread_local std::vector<line> buf;
    const size_t need = static_cast<size_t>(kSliceRows * k / 4 / 64);
    if (buf.size() < need) buf.resize(need);
    uint8_t *codes = reinterpret_cast<uint8_t *>(buf.data());
#ifdef GEMM_ACTBYTES
    const int64_t act_block = std::max<int64_t>(kTileActs, GEMM_ACTBYTES / k / kTileActs * kTileActs);
#else
    const int64_t act_block = kActBlock;
#endif
    for (int64_t i0 = 0; i0 < m; i0 += act_block) {
        const int64_t i1 = std::min(m, i0 + act_block);
        for (int64_t r = r0; r < r1; r += kSliceRows) {
            const int64_t n = std::min(kSliceRows, r1 - r);
            transpose_slice(w, k, r, n, codes);
            if (kSlicePanels > 1 && n <= kPanelRows)
                slice_times_acts<1, kTileActsOnePanel>(codes, n, a, a_sums, k, i0, i1, y + r, ldy);
            else
                slice_times_acts<kSlicePanels, kTileActs>(codes, n, a, a_sums, k, i0, i1, y + r, ldy);
        }
    }
}

}  // namespace bitnet
