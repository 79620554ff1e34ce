// LUT kernel "lut2" for AVX2 (compiled with -mavx2 -mfma -mf16c; ternary_lut.h says who calls it).
//
// A group is two columns; its weights (w0, w1) in {-1,0,1}^2 form the pattern
//   p = 3*(w0 + 1) + (w1 + 1)   (0..8, a 4-bit index; 4 bits per 2 weights, as many as I2_S).
//
// Weights: tiles of 64 rows, two halves of 32; a tile is k/4 steps of 64 bytes, step q covering
// columns 4q..4q+3 (groups 2q and 2q+1), half 0's 32 bytes then half 1's:
//
//   byte b of half h = p(row 32h + R(b), group 2q)  |  p(row 32h + R(b), group 2q+1) << 4
//   R(b) = b (b < 8, b >= 24),  b + 8 (8 <= b < 16),  b - 8 (16 <= b < 24)
//
// (R is the order in which unpacklo/unpackhi_epi8 below hand back rows 0..15 and 16..31; the two
// halves give two independent sum chains while the tile stays one contiguous stream.)
//
// Tables, per activation row, per group j (columns 2j, 2j+1): 32 bytes, lo[16] then hi[16]:
//
//   u(p) = w0(p)*a[2j] + w1(p)*a[2j+1] + 256          in [0, 512]: biased, so both parts are
//   lo[p] = u(p) & 31,   hi[p] = u(p) >> 5  (0..16)    unsigned; p = 9..15 are never indexed
//
// Lookup: one vpshufb per part for 32 rows (the 16-byte table broadcast to both 128-bit lanes,
// the nibble of each row's pattern as the index), summed in bytes for 8 groups
// (8*31 = 248 and 8*16 = 128 stay below 256):
//
//   lo_acc = sum_8 vpshufb(lo_j, idx_j)       hi_acc = sum_8 vpshufb(hi_j, idx_j)      (vpaddb)
//   sum16 += vpmaddubsw(unpack{lo,hi}_epi8(lo_acc, hi_acc), [1, 32, 1, 32, ..])  = lo + 32*hi
//
// sum16 lanes gain at most 248 + 32*128 = 4344 per 8 groups: 64 groups (128 columns) stay below
// 65536 as uint16, then widen into int32. Each group added 256: y = sum - 256 * (columns / 2).
// Per 128 weights (32 rows x 4 columns) and one activation row: 4 vpshufb + 4 vpaddb + 1.5 ops
// of widening + 2 table broadcasts + 3 index ops, against 4 vpmaddubsw + 4 vpaddw + 8/M decode
// ops (M activation rows) for the I2_S kernel (ternary_avx2.cpp): the same count at m = 1, and
// only the I2_S kernel shares work between activation rows.
#include <algorithm>
#include <vector>

#include "kernels/simd_x86.h"
#include "kernels/ternary.h"
#include "kernels/ternary_impl.h"
#include "ternary_lut.h"
#include "kernels/tuning.h"

namespace bitnet {
namespace {

constexpr int64_t kHalfRows = 32;
constexpr int64_t kStepBytes = 64;           // 4 columns of a 64-row tile
constexpr int64_t kTableBytesPerGroup = 32;  // lo[16], hi[16]
constexpr int64_t kGroupsPerByteSum = 8;     // groups whose byte sums cannot overflow
constexpr int64_t kBlockCols = 128;          // columns whose uint16 sums cannot overflow
constexpr int64_t kBatchBlockCols = 512;     // k-block for m > 1: 8 KiB of tables per activation row
constexpr int kBias = 256;

static_assert(kLutTileRows == 2 * kHalfRows, "a tile is two halves of 32 rows");

inline int64_t tile_bytes(int64_t k) {
    return k / 4 * kStepBytes;
}

// The row of a half whose pattern sits in byte b (R(b) above).
inline int row_of_byte(int b) {
    return b < 8 || b >= 24 ? b : (b < 16 ? b + 8 : b - 8);
}

inline int pattern2(int w0, int w1) {
    return 3 * (w0 + 1) + (w1 + 1);
}

int64_t lut2_packed_bytes(int64_t n, int64_t k) {
    return (n + kLutTileRows - 1) / kLutTileRows * tile_bytes(k);
}

int64_t lut2_table_bytes(int64_t k) {
    return k / 2 * kTableBytesPerGroup;
}

bool lut2_repack_i2s(const uint8_t *i2s, int64_t n, int64_t k, uint8_t *out) {
    std::vector<int8_t> w(kLutTileRows * k);
    for (int64_t t = 0; t * kLutTileRows < n; ++t) {
        const int64_t rows = std::min(kLutTileRows, n - t * kLutTileRows);
        std::fill(w.begin(), w.end(), 0);  // padding rows: zero weights
        i2s_unpack(i2s + t * kLutTileRows * (k / 4), rows, k, w.data());
        for (int64_t r = 0; r < rows * k; ++r)
            if (w[r] > 1) return false;
        uint8_t *tile = out + t * tile_bytes(k);
        for (int64_t q = 0; q < k / 4; ++q)
            for (int b = 0; b < kLutTileRows; ++b) {  // b = 32h + byte
                const int8_t *row = w.data() + (b / kHalfRows * kHalfRows + row_of_byte(b % kHalfRows)) * k + 4 * q;
                tile[q * kStepBytes + b] = static_cast<uint8_t>(pattern2(row[0], row[1]) | pattern2(row[2], row[3]) << 4);
            }
    }
    return true;
}

void lut2_build_tables(const int8_t *a, int64_t k, int64_t m, uint8_t *tables) {
    // w0(p), w1(p) for p = 0..8 (0 for the unused p = 9..15); sign_epi16 multiplies by them.
    const __m256i w0 = _mm256_setr_epi16(-1, -1, -1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0);
    const __m256i w1 = _mm256_setr_epi16(-1, 0, 1, -1, 0, 1, -1, 0, 1, 0, 0, 0, 0, 0, 0, 0);
    const __m256i bias = _mm256_set1_epi16(kBias), low5 = _mm256_set1_epi16(31);
    for (int64_t i = 0; i < m; ++i) {
        const int8_t *row = a + i * k;
        uint8_t *out = tables + i * lut2_table_bytes(k);
        for (int64_t j = 0; j < k / 2; ++j) {
            const __m256i a0 = _mm256_set1_epi16(row[2 * j]), a1 = _mm256_set1_epi16(row[2 * j + 1]);
            const __m256i u = _mm256_add_epi16(_mm256_add_epi16(_mm256_sign_epi16(a0, w0), _mm256_sign_epi16(a1, w1)),
                                               bias);
            // packus: [lo 0..7, hi 0..7 | lo 8..15, hi 8..15]; the permute makes it lo[16], hi[16].
            const __m256i bytes = _mm256_packus_epi16(_mm256_and_si256(u, low5), _mm256_srli_epi16(u, 5));
            _mm256_storeu_si256(reinterpret_cast<__m256i *>(out + j * kTableBytesPerGroup),
                                _mm256_permute4x64_epi64(bytes, _MM_SHUFFLE(3, 1, 2, 0)));
        }
    }
}

inline void add_to(int32_t *p, __m256i v) {
    __m256i *q = reinterpret_cast<__m256i *>(p);
    _mm256_storeu_si256(q, _mm256_add_epi32(_mm256_loadu_si256(q), v));
}

inline __m256i broadcast_table(const uint8_t *p) {
    return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
}

// One tile (both halves) times M activation rows over the columns [c0, c1) (multiples of 128):
// sums[i][row] = the sum of the biased lookups.
template <int M>
void lut2_tile(const uint8_t *tile, int64_t k, int64_t c0, int64_t c1, const uint8_t *tables, int32_t sums[M][64]) {
    const __m256i nibble = _mm256_set1_epi8(0x0F), lo_hi_weights = _mm256_set1_epi16(32 << 8 | 1);
    const int64_t table_stride = lut2_table_bytes(k), ahead = tuning().prefetch_bytes;
    // The int32 sums live in memory: touched once per 128 columns, they would only crowd registers.
    for (int i = 0; i < M; ++i) std::fill(sums[i], sums[i] + kLutTileRows, 0);
    for (int64_t c = c0; c < c1; c += kBlockCols) {
        __m256i sum16[2][M][2];  // [half][activation row]: uint16, rows 0..15 and 16..31 of the half
        for (int h = 0; h < 2; ++h)
            for (int i = 0; i < M; ++i) sum16[h][i][0] = sum16[h][i][1] = _mm256_setzero_si256();
        for (int64_t g = c / 2; g < (c + kBlockCols) / 2; g += kGroupsPerByteSum) {
            __m256i lo[2][M], hi[2][M];
            for (int h = 0; h < 2; ++h)
                for (int i = 0; i < M; ++i) lo[h][i] = hi[h][i] = _mm256_setzero_si256();
            // One step at a time (not unrolled): with M = 1, 16 ymm registers hold its tables, indices
            // and sums (unrolled, the compiler spilled them and ran 20% slower).
#pragma GCC unroll 1
            for (int64_t j = g; j < g + kGroupsPerByteSum; j += 2) {  // step j/2 holds groups j, j+1
                const uint8_t *step = tile + j / 2 * kStepBytes;
                _mm_prefetch(reinterpret_cast<const char *>(step + ahead), _MM_HINT_T1);
                for (int i = 0; i < M; ++i) {
                    const uint8_t *tab = tables + i * table_stride + j * kTableBytesPerGroup;
                    const __m256i lo0 = broadcast_table(tab), hi0 = broadcast_table(tab + 16);
                    const __m256i lo1 = broadcast_table(tab + 32), hi1 = broadcast_table(tab + 48);
                    for (int h = 0; h < 2; ++h) {  // groups j and j+1 added first: one add per step on the chain
                        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(step + 32 * h));
                        const __m256i idx0 = _mm256_and_si256(v, nibble);
                        const __m256i idx1 = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
                        lo[h][i] = _mm256_add_epi8(lo[h][i], _mm256_add_epi8(_mm256_shuffle_epi8(lo0, idx0),
                                                                             _mm256_shuffle_epi8(lo1, idx1)));
                        hi[h][i] = _mm256_add_epi8(hi[h][i], _mm256_add_epi8(_mm256_shuffle_epi8(hi0, idx0),
                                                                             _mm256_shuffle_epi8(hi1, idx1)));
                    }
                }
            }
            for (int h = 0; h < 2; ++h)
                for (int i = 0; i < M; ++i) {
                    const __m256i rows_lo = _mm256_unpacklo_epi8(lo[h][i], hi[h][i]);  // rows 0..15
                    const __m256i rows_hi = _mm256_unpackhi_epi8(lo[h][i], hi[h][i]);  // rows 16..31
                    sum16[h][i][0] = _mm256_add_epi16(sum16[h][i][0], _mm256_maddubs_epi16(rows_lo, lo_hi_weights));
                    sum16[h][i][1] = _mm256_add_epi16(sum16[h][i][1], _mm256_maddubs_epi16(rows_hi, lo_hi_weights));
                }
        }
        for (int h = 0; h < 2; ++h)
            for (int i = 0; i < M; ++i)
                for (int v = 0; v < 2; ++v) {  // uint16 lanes of rows 32h + 16v .. +15 -> int32
                    const __m256i s = sum16[h][i][v];
                    int32_t *out = sums[i] + kHalfRows * h + 16 * v;
                    add_to(out, _mm256_cvtepu16_epi32(_mm256_castsi256_si128(s)));
                    add_to(out + 8, _mm256_cvtepu16_epi32(_mm256_extracti128_si256(s, 1)));
                }
    }
}

// Tile t times activation rows [i0, i0 + M) over columns [c0, c1): the exact partial sums of the
// rows in [r0, r1) go to y (stored for the first k-block, added after).
template <int M>
void lut2_run(const uint8_t *w, int64_t k, int64_t c0, int64_t c1, int64_t t, int64_t r0, int64_t r1,
              const uint8_t *tables, int64_t i0, int32_t *y, int64_t ldy) {
    int32_t sums[M][64];
    lut2_tile<M>(w + t * tile_bytes(k), k, c0, c1, tables + i0 * lut2_table_bytes(k), sums);
    const int32_t bias = static_cast<int32_t>(static_cast<uint32_t>(kBias) * static_cast<uint32_t>((c1 - c0) / 2));
    const int64_t first = t * kLutTileRows;
    for (int i = 0; i < M; ++i) {
        int32_t *out = y + (i0 + i) * ldy;
        for (int64_t r = std::max(first, r0); r < std::min(first + kLutTileRows, r1); ++r) {
            const int32_t part = sub_wrapping(sums[i][r - first], bias);
            out[r] = c0 == 0 ? part : static_cast<int32_t>(static_cast<uint32_t>(out[r]) + static_cast<uint32_t>(part));
        }
    }
}

// m == 1 streams the tiles over all of k. m > 1 walks k-blocks, and per block runs pairs of
// activation rows over the tiles of the row range, so the pair's block of tables (16 KiB) stays
// in L1 and each step's weight bytes serve both rows; the weights (32 bytes per 128 weights
// against 64 bytes of tables per activation row) are the stream read again, from L2. Measured on
// Zen 5, 2B-4T shapes: pairs beat single rows by 5-8% despite spilling some of their sums.
void lut2_matmul(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const uint8_t *tables, int64_t m, int32_t *y,
                 int64_t ldy) {
    const int64_t t_begin = r0 / kLutTileRows, t_end = (r1 + kLutTileRows - 1) / kLutTileRows;
    const int64_t block = m == 1 ? k : kBatchBlockCols;
    for (int64_t c0 = 0; c0 < k; c0 += block) {
        const int64_t c1 = std::min(k, c0 + block);
        for (int64_t i = 0; i < m; i += 2)
            for (int64_t t = t_begin; t < t_end; ++t) {
                if (i + 2 <= m) lut2_run<2>(w, k, c0, c1, t, r0, r1, tables, i, y, ldy);
                else lut2_run<1>(w, k, c0, c1, t, r0, r1, tables, i, y, ldy);
            }
    }
}

const lut_kernel kLut2 = {"lut2", lut2_packed_bytes, lut2_repack_i2s, lut2_table_bytes, lut2_build_tables,
                          lut2_matmul};

}  // namespace

const lut_kernel *lut_kernel_avx2() {
    return &kLut2;
}

}  // namespace bitnet
