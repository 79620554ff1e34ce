// AVX-512 VNNI GEMM for I2_S weights against a batch of int8 activation rows (prompt processing).
//
// Output rows sit in the int32 lanes of a zmm ("panels" of 16 weight rows), and each vpdpbusd
// takes its activations as one broadcast dword: 4 consecutive int8 of one activation row, the
// same in every lane. So a tile ends with no horizontal sums, and it reads one 64-byte vector per
// panel: the broadcasts are narrow loads that the load ports serve beside the 64-byte ones. On
// Zen 5 (one core, 2B-4T shapes, m = 48..512) this GEMM runs vpdpbusd at 7.1-8.0 G/s against a
// peak of 7.8-8.2 measured in the same run (the clock varies); the previous kernel, tiles of 4
// rows of decoded codes x 4 activation rows with 8 full loads per 16 vpdpbusd and 16 horizontal
// sums, at 3.5-5.5.
//
// I2_S keeps this cheap because a dword of a block holds four consecutive codes in each 2-bit
// field, so the weights need no re-ordering along k, only a transpose across rows:
//
//   I2_S block b of a row (32 bytes):  byte[m] = c[m]<<6 | c[32+m]<<4 | c[64+m]<<2 | c[96+m]
//   dword d (bytes 4d..4d+3), field f:  (dword >> (6 - 2f)) & 0x03030303
//                                     = u8 codes of k = 128b + 32f + 4d + 0..3   (values 0..2)
//
//   panel zmm (b, d), 16 weight rows:  lane t = dword d of block b of row t      (still packed)
//   acc[p][i] lane t += vpdpbusd(codes of field f of panel p, broadcast a[i][128b + 32f + 4d ..+4])
//   y[i][16p + t] = acc[p][i] lane t - a_sums[i]    (codes are w + 1: sum w*a = sum c*a - sum a)
//
// A slice of kTilePanels * 16 rows is transposed once per block of kActBlock activation rows into
// a per-thread buffer as big as its packed weights (16 ymm loads and 32 shuffles per 8 panels:
// 3-4% of the tiles' time at 48 activation rows, 1% at 128); the tiles expand the codes with a
// shift and an and, which run beside vpdpbusd on other ports. Integer sums are exact in any
// order: the result equals the scalar reference bit for bit.

#include "kernels/simd_x86.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>
#include <vector>

#include "kernels/ternary.h"
#include "kernels/ternary_gemm.h"
#include "kernels/ternary_impl.h"

namespace bitnet {

namespace {

constexpr int kPanelRows = 16;        // weight rows per zmm: one per int32 lane
constexpr int kBlockDwords = 8;       // dwords per 32-byte I2_S block
constexpr int kTilePanels = 2;        // register tile: 2 panels x 12 activation rows, 24 accumulators
constexpr int kTileActs = 12;
constexpr int kOnePanelTileActs = 24;  // a slice of at most 16 rows (a thread's last rows): 1 x 24
constexpr int64_t kSliceRows = kTilePanels * kPanelRows;
// Activation rows per pass over the weights: they stay in L2 (or L3 for 6912-wide rows) while the
// slices pass over them. End to end at 1 thread, 192 and 512 ran alike, 64 3-5% slower.
constexpr int64_t kActBlock = 192;

// Dwords d = 0..7 of one 32-byte block of 16 weight rows (rows[t] points at row t's block),
// transposed: out[d] lane t = dword d of row t. Rows t and t + 4 share a zmm, so that after the
// 4x4 transposes inside each 128-bit lane, lanes 0 and 2 of one result hold rows 0-3 and 4-7 and
// those of its partner rows 8-11 and 12-15.
inline void transpose_block(const uint8_t *const rows[kPanelRows], __m512i out[kBlockDwords]) {
    __m512i z[8];
    for (int h = 0; h < 2; ++h)
        for (int j = 0; j < 4; ++j) {
            const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(rows[8 * h + j]));
            const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(rows[8 * h + j + 4]));
            z[4 * h + j] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
        }
    // t[4h + e], 128-bit lanes: dword e of rows 8h+0..3, dword 4+e of them, the same of rows 8h+4..7.
    __m512i t[8];
    for (int h = 0; h < 2; ++h) {
        const __m512i *q = z + 4 * h;
        const __m512i lo01 = _mm512_unpacklo_epi32(q[0], q[1]), hi01 = _mm512_unpackhi_epi32(q[0], q[1]);
        const __m512i lo23 = _mm512_unpacklo_epi32(q[2], q[3]), hi23 = _mm512_unpackhi_epi32(q[2], q[3]);
        t[4 * h + 0] = _mm512_unpacklo_epi64(lo01, lo23);
        t[4 * h + 1] = _mm512_unpackhi_epi64(lo01, lo23);
        t[4 * h + 2] = _mm512_unpacklo_epi64(hi01, hi23);
        t[4 * h + 3] = _mm512_unpackhi_epi64(hi01, hi23);
    }
    for (int e = 0; e < 4; ++e) {
        out[e] = _mm512_shuffle_i32x4(t[e], t[4 + e], _MM_SHUFFLE(2, 0, 2, 0));
        out[4 + e] = _mm512_shuffle_i32x4(t[e], t[4 + e], _MM_SHUFFLE(3, 1, 3, 1));
    }
}

// Rows [r, r + n) (n <= R * 16) into panels: (b, d) of panel p at buf + ((b * 8 + d) * R + p) * 64.
// Lanes past row n repeat row n - 1; their sums are computed and never stored. Meanwhile the
// panels of the next slice (n_next rows; whole panels only) are prefetched into L2: 16 or 32
// rows read in step are more streams than the hardware prefetchers follow, and the tiles leave
// the memory idle. (Weights from DRAM, m = 48: 6.2-6.6 G vpdpbusd/s without, 6.6-7.0 with.)
template <int R>
void transpose_slice(const uint8_t *w, int64_t k, int64_t r, int64_t n, int64_t n_next, uint8_t *buf) {
    const int64_t row_bytes = k / 4;
    for (int p = 0; p < R; ++p) {
        const uint8_t *rows[kPanelRows];
        for (int t = 0; t < kPanelRows; ++t)
            rows[t] = w + (r + std::min<int64_t>(p * kPanelRows + t, n - 1)) * row_bytes;
        const bool prefetch_next = n_next >= (p + 1) * kPanelRows;
        const uint8_t *next = w + (r + kSliceRows + p * kPanelRows) * row_bytes;
        for (int64_t b = 0; b < k / kI2SBlock; ++b) {
            if (b % 2 == 0 && prefetch_next) {  // one per 64-byte line: the one holding block b + 1
                const uint8_t *line = next + (b + 1) * kI2SBlockBytes;
                for (int t = 0; t < kPanelRows; ++t)
                    _mm_prefetch(reinterpret_cast<const char *>(line + t * row_bytes), _MM_HINT_T1);
            }
            __m512i panel[kBlockDwords];
            transpose_block(rows, panel);
            for (int t = 0; t < kPanelRows; ++t) rows[t] += kI2SBlockBytes;
            for (int d = 0; d < kBlockDwords; ++d)
                _mm512_store_si512(buf + ((b * kBlockDwords + d) * R + p) * 64, panel[d]);
        }
    }
}

inline int32_t load_dword(const int8_t *a) {
    int32_t v;
    std::memcpy(&v, a, sizeof v);
    return v;
}

// acc + vpdpbusd(codes, act). GCC 12 gives the intrinsic's result a new register and copies every
// accumulator of a tile back at each loop iteration: this GEMM built by GCC ran at 5.0-5.6 G
// vpdpbusd/s so, and at 7.5-8.0 with the accumulator tied to its register as here. Clang keeps
// the intrinsic, whose broadcast operand it can fold.
inline __m512i dpbusd(__m512i acc, __m512i codes, __m512i act) {
#if defined(__GNUC__) && !defined(__clang__)
    asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(codes), "v"(act));
    return acc;
#else
    return _mm512_dpbusd_epi32(acc, codes, act);
#endif
}

// R panels (buf, n_rows valid rows) times M activation rows (a, k apart): y[i * ldy + row].
template <int R, int M>
void tile(const uint8_t *buf, const int8_t *a, const int32_t *a_sums, int64_t k, int64_t n_rows, int32_t *y,
          int64_t ldy) {
    const __m512i mask = _mm512_set1_epi8(3);
    __m512i acc[R][M];
    for (int p = 0; p < R; ++p)
        for (int i = 0; i < M; ++i) acc[p][i] = _mm512_setzero_si512();
    for (int64_t b = 0; b < k / kI2SBlock; ++b)
        for (int d = 0; d < kBlockDwords; ++d) {
            __m512i panel[R];
            for (int p = 0; p < R; ++p)
                panel[p] = _mm512_load_si512(buf + ((b * kBlockDwords + d) * R + p) * 64);
            for (int f = 0; f < 4; ++f) {
                __m512i codes[R];
                for (int p = 0; p < R; ++p)
                    codes[p] = _mm512_and_si512(_mm512_srli_epi32(panel[p], 6 - 2 * f), mask);
                const int8_t *ak = a + b * kI2SBlock + 32 * f + 4 * d;
                for (int i = 0; i < M; ++i) {
                    const __m512i av = _mm512_set1_epi32(load_dword(ak + i * k));
                    for (int p = 0; p < R; ++p) acc[p][i] = dpbusd(acc[p][i], codes[p], av);
                }
            }
        }
    for (int i = 0; i < M; ++i) {
        const __m512i sum = _mm512_set1_epi32(a_sums[i]);
        for (int p = 0; p < R && p * kPanelRows < n_rows; ++p) {
            const int64_t rows = std::min<int64_t>(kPanelRows, n_rows - p * kPanelRows);
            const __mmask16 live = static_cast<__mmask16>((1u << rows) - 1u);
            _mm512_mask_storeu_epi32(y + i * ldy + p * kPanelRows, live, _mm512_sub_epi32(acc[p][i], sum));
        }
    }
}

using tile_fn = void (*)(const uint8_t *, const int8_t *, const int32_t *, int64_t, int64_t, int32_t *,
                         int64_t);

// tile<R, 1> .. tile<R, M-1>, for the activation rows left after the full tiles.
template <int R, int... Ms>
constexpr std::array<tile_fn, sizeof...(Ms)> partial_tiles(std::integer_sequence<int, Ms...>) {
    return {tile<R, Ms + 1>...};
}

// Weight rows [r, r + n) (n <= R * 16) against activation rows [i0, i1), in tiles of M rows.
template <int R, int M>
void slice_times_acts(const uint8_t *w, int64_t k, int64_t r, int64_t n, int64_t n_next, const int8_t *a,
                      const int32_t *a_sums, int64_t i0, int64_t i1, int32_t *y, int64_t ldy, uint8_t *buf) {
    static constexpr auto kPartial = partial_tiles<R>(std::make_integer_sequence<int, M - 1>());
    transpose_slice<R>(w, k, r, n, n_next, buf);
    int64_t i = i0;
    for (; i + M <= i1; i += M) tile<R, M>(buf, a + i * k, a_sums + i, k, n, y + i * ldy + r, ldy);
    if (i < i1) kPartial[i1 - i - 1](buf, a + i * k, a_sums + i, k, n, y + i * ldy + r, ldy);
}

}  // namespace

void i2s_gemm_avx512vnni(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a,
                         const int32_t *a_sums, int64_t m, int32_t *y, int64_t ldy) {
    // One buffer per thread, kept across calls (the pool's threads live as long as the context).
    struct alignas(64) cache_line {
        uint8_t bytes[64];
    };
    thread_local std::vector<cache_line> buf;
    const size_t need = static_cast<size_t>(kSliceRows * k / 4 / 64);
    if (buf.size() < need) buf.resize(need);
    uint8_t *panels = buf.data()->bytes;
    for (int64_t i0 = 0; i0 < m; i0 += kActBlock) {
        const int64_t i1 = std::min(m, i0 + kActBlock);
        for (int64_t r = r0; r < r1; r += kSliceRows) {
            const int64_t n = std::min(kSliceRows, r1 - r), n_next = std::min(kSliceRows, r1 - r - n);
            if (n <= kPanelRows)
                slice_times_acts<1, kOnePanelTileActs>(w, k, r, n, n_next, a, a_sums, i0, i1, y, ldy,
                                                       panels);
            else
                slice_times_acts<kTilePanels, kTileActs>(w, k, r, n, n_next, a, a_sums, i0, i1, y, ldy,
                                                         panels);
        }
    }
}

}  // namespace bitnet
