// LUT kernel "lut3" for AVX-512BW (compiled with the AVX-512 flags of every *_avx512.cpp; it uses
// F + BW only: vpermw is AVX-512BW. ternary_lut.h says who calls it).
//
// A group is three columns; its weights (w0, w1, w2) in {-1,0,1}^3 form the pattern
//   p = 9*(w0 + 1) + 3*(w1 + 1) + (w2 + 1)     (0..26: a 5-bit index)
//
// Weights: tiles of 64 rows, two halves of 32; a tile is ceil(k/9) steps of 128 bytes, step h
// covering columns 9h..9h+8 (groups 3h, 3h+1, 3h+2), half 0's 64 bytes then half 1's, one int16
// lane per row:
//
//   bit     15 | 14 .. 10     | 9 .. 5       | 4 .. 0
//   lane r = 0 | p(r, 3h + 2) | p(r, 3h + 1) | p(r, 3h)        row 32*half + r, r = 0..31
//
// 16 bits per 9 weights (1.78 bits per weight); columns past k are zero weights. (A tile is one
// contiguous stream; the matmul runs tiles in pairs, four independent sum chains.)
//
// Tables, per activation row, per group j (columns 3j..3j+2, activations past k read as 0):
// 32 int16 (one zmm), entry p = w0(p)*a[3j] + w1(p)*a[3j+1] + w2(p)*a[3j+2] (|entry| <= 384),
// entries 27..31 zero.
//
// Lookup: vpermw reads only the low 5 bits of each index lane, so the three patterns of a lane
// need shifts and no masks:
//
//   sum16 += vpermw(v, T[3h]) + vpermw(v >> 5, T[3h+1]) + vpermw(v >> 10, T[3h+2])
//
// 16 steps (at most 16 * 3 * 384 = 18432 per lane) stay inside int16, then widen into int32.
// Per 288 weights (32 rows x 9 columns) and one activation row: 3 vpermw + 3 vpaddw + 2/M shifts
// (M activation rows; the step's 3 table loads serve 128 rows), against 4.5 vpdpbusd + 9/M
// decode ops for the VNNI I2_S kernel (ternary_avx512.cpp, i2s_tile_natural).
#include <algorithm>
#include <vector>

#include "kernels/simd_x86.h"
#include "kernels/ternary.h"
#include "ternary_lut.h"
#include "kernels/tuning.h"

namespace bitnet {
namespace {

constexpr int64_t kHalfRows = 32;
constexpr int64_t kStepCols = 9;             // columns per step (3 groups of 3)
constexpr int64_t kHalfBytes = 64;            // one step of 32 rows: 32 int16 lanes
constexpr int64_t kStepBytes = 128;           // one step of a 64-row tile
constexpr int64_t kTableBytesPerGroup = 64;   // 32 int16
constexpr int64_t kStepsPerInt16Sum = 16;    // steps whose int16 sums cannot overflow
constexpr int64_t kBlockSteps = 32;          // k-block: 6 KiB of tables per activation row
constexpr int kActsPerPass = 4;               // activation rows per pass: 24 KiB of tables in L1

inline int64_t steps(int64_t k) {
    return (k + kStepCols - 1) / kStepCols;
}

static_assert(kLutTileRows == 2 * kHalfRows, "a tile is two halves of 32 rows");

inline int64_t tile_bytes(int64_t k) {
    return steps(k) * kStepBytes;
}

// Weight t (0, 1, 2) of pattern p.
constexpr int weight_of(int p, int t) {
    return (t == 0 ? p / 9 : t == 1 ? p / 3 % 3 : p % 3) - 1;
}

// Lanes p < 27 whose weight t equals w.
constexpr __mmask32 pattern_mask(int t, int w) {
    __mmask32 m = 0;
    for (int p = 0; p < 27; ++p)
        if (weight_of(p, t) == w) m |= __mmask32{1} << p;
    return m;
}

int64_t lut3_packed_bytes(int64_t n, int64_t k) {
    return (n + kLutTileRows - 1) / kLutTileRows * tile_bytes(k);
}

int64_t lut3_table_bytes(int64_t k) {
    return 3 * steps(k) * kTableBytesPerGroup;
}

bool lut3_repack_i2s(const uint8_t *i2s, int64_t n, int64_t k, uint8_t *out) {
    const int64_t k_padded = steps(k) * kStepCols;
    std::vector<int8_t> w(kLutTileRows * k_padded);
    std::vector<int8_t> row(k);
    for (int64_t t = 0; t * kLutTileRows < n; ++t) {
        std::fill(w.begin(), w.end(), 0);  // padding rows and columns: zero weights
        for (int64_t r = 0; r < std::min(kLutTileRows, n - t * kLutTileRows); ++r) {
            i2s_unpack(i2s + (t * kLutTileRows + r) * (k / 4), 1, k, row.data());
            for (int64_t c = 0; c < k; ++c)
                if (row[c] > 1) return false;
            std::copy(row.begin(), row.end(), w.begin() + r * k_padded);
        }
        uint16_t *lanes = reinterpret_cast<uint16_t *>(out + t * tile_bytes(k));
        for (int64_t h = 0; h < steps(k); ++h)
            for (int64_t r = 0; r < kLutTileRows; ++r) {
                const int8_t *x = w.data() + r * k_padded + h * kStepCols;
                int lane = 0;
                for (int g = 0; g < 3; ++g)
                    lane |= (9 * (x[3 * g] + 1) + 3 * (x[3 * g + 1] + 1) + (x[3 * g + 2] + 1)) << (5 * g);
                lanes[h * kLutTileRows + r] = static_cast<uint16_t>(lane);  // half r / 32, lane r % 32
            }
    }
    return true;
}

// One group's table: masked adds and subtracts of the three broadcast activations.
inline __m512i group_table(int8_t a0, int8_t a1, int8_t a2) {
    const __m512i x[3] = {_mm512_set1_epi16(a0), _mm512_set1_epi16(a1), _mm512_set1_epi16(a2)};
    __m512i table = _mm512_setzero_si512();
    for (int t = 0; t < 3; ++t) {
        table = _mm512_mask_add_epi16(table, pattern_mask(t, 1), table, x[t]);
        table = _mm512_mask_sub_epi16(table, pattern_mask(t, -1), table, x[t]);
    }
    return table;
}

void lut3_build_tables(const int8_t *a, int64_t k, int64_t m, uint8_t *tables) {
    for (int64_t i = 0; i < m; ++i) {
        const int8_t *row = a + i * k;
        uint8_t *out = tables + i * lut3_table_bytes(k);
        const int64_t whole = k / 3;  // groups with all three columns inside k
        for (int64_t j = 0; j < whole; ++j)
            _mm512_storeu_si512(out + j * kTableBytesPerGroup, group_table(row[3 * j], row[3 * j + 1], row[3 * j + 2]));
        for (int64_t j = whole; j < 3 * steps(k); ++j) {
            int8_t x[3];
            for (int t = 0; t < 3; ++t) x[t] = 3 * j + t < k ? row[3 * j + t] : 0;
            _mm512_storeu_si512(out + j * kTableBytesPerGroup, group_table(x[0], x[1], x[2]));
        }
    }
}

// T consecutive tiles (both halves of each) times M activation rows over the steps [h0, h1):
// adds the int32 sums into sums[i][row of the T tiles].
template <int M, int T>
void lut3_tiles(const uint8_t *w, int64_t k, int64_t h0, int64_t h1, const uint8_t *tables,
                int32_t sums[M][64 * T]) {
    constexpr int H = 2 * T;  // halves of 32 rows
    const int64_t table_stride = lut3_table_bytes(k), ahead = tuning().prefetch_bytes, stride = tile_bytes(k);
    for (int64_t s0 = h0; s0 < h1; s0 += kStepsPerInt16Sum) {
        __m512i sum16[H][M];  // [half][activation row]
        for (int half = 0; half < H; ++half)
            for (int i = 0; i < M; ++i) sum16[half][i] = _mm512_setzero_si512();
        for (int64_t h = s0; h < std::min(h1, s0 + kStepsPerInt16Sum); ++h) {
            __m512i idx[H][3];
            for (int t = 0; t < T; ++t) {
                const uint8_t *step = w + t * stride + h * kStepBytes;
                _mm_prefetch(reinterpret_cast<const char *>(step + ahead), _MM_HINT_T1);
                _mm_prefetch(reinterpret_cast<const char *>(step + ahead + 64), _MM_HINT_T1);
                for (int half = 2 * t; half < 2 * t + 2; ++half) {
                    idx[half][0] = _mm512_loadu_si512(step + (half - 2 * t) * kHalfBytes);
                    idx[half][1] = _mm512_srli_epi16(idx[half][0], 5);
                    idx[half][2] = _mm512_srli_epi16(idx[half][0], 10);
                }
            }
            for (int i = 0; i < M; ++i) {
                const uint8_t *tab = tables + i * table_stride + 3 * h * kTableBytesPerGroup;
                const __m512i t0 = _mm512_loadu_si512(tab), t1 = _mm512_loadu_si512(tab + kTableBytesPerGroup),
                              t2 = _mm512_loadu_si512(tab + 2 * kTableBytesPerGroup);
                for (int half = 0; half < H; ++half) {  // a tree: one add per step on the sum's chain
                    const __m512i p01 = _mm512_add_epi16(_mm512_permutexvar_epi16(idx[half][0], t0),
                                                         _mm512_permutexvar_epi16(idx[half][1], t1));
                    const __m512i p012 = _mm512_add_epi16(p01, _mm512_permutexvar_epi16(idx[half][2], t2));
                    sum16[half][i] = _mm512_add_epi16(sum16[half][i], p012);
                }
            }
        }
        // The int32 sums live in memory: touched once per 16 steps, they would only crowd registers.
        for (int half = 0; half < H; ++half)
            for (int i = 0; i < M; ++i) {
                int32_t *out = sums[i] + kHalfRows * half;
                const __m512i lo = _mm512_cvtepi16_epi32(_mm512_castsi512_si256(sum16[half][i]));
                const __m512i hi = _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(sum16[half][i], 1));
                _mm512_storeu_si512(out, _mm512_add_epi32(_mm512_loadu_si512(out), lo));
                _mm512_storeu_si512(out + 16, _mm512_add_epi32(_mm512_loadu_si512(out + 16), hi));
            }
    }
}

// Tiles [t, t + T) times activation rows [i0, i0 + M) over steps [h0, h1): the rows in [r0, r1)
// of y get the partial sums (stored for the first k-block, added after).
template <int M, int T = 1>
void lut3_run(const uint8_t *w, int64_t k, int64_t h0, int64_t h1, int64_t t, int64_t r0, int64_t r1,
              const uint8_t *tables, int64_t i0, int32_t *y, int64_t ldy) {
    int32_t sums[M][64 * T] = {};
    lut3_tiles<M, T>(w + t * tile_bytes(k), k, h0, h1, tables + i0 * lut3_table_bytes(k), sums);
    const int64_t first = t * kLutTileRows;
    for (int i = 0; i < M; ++i) {
        int32_t *out = y + (i0 + i) * ldy;
        for (int64_t r = std::max(first, r0); r < std::min(first + T * kLutTileRows, r1); ++r) {
            const int32_t part = sums[i][r - first];
            out[r] = h0 == 0 ? part : static_cast<int32_t>(static_cast<uint32_t>(out[r]) + static_cast<uint32_t>(part));
        }
    }
}

// Tiles [t_begin, t_end) in pairs (each table load serves 128 rows; four independent sum chains
// per activation row) times activation rows [i, i + M).
template <int M>
void lut3_pass(const uint8_t *w, int64_t k, int64_t h0, int64_t h1, int64_t t_begin, int64_t t_end, int64_t r0,
               int64_t r1, const uint8_t *tables, int64_t i, int32_t *y, int64_t ldy) {
    int64_t t = t_begin;
    for (; t + 2 <= t_end; t += 2) lut3_run<M, 2>(w, k, h0, h1, t, r0, r1, tables, i, y, ldy);
    if (t < t_end) lut3_run<M, 1>(w, k, h0, h1, t, r0, r1, tables, i, y, ldy);
}

// m == 1 streams the tiles over all of k. m > 1 walks k-blocks, and per block keeps up to
// kActsPerPass activation rows' tables in L1 while the tiles of the row range pass (the weights
// are the smaller stream: 128 bytes per step against 192 bytes of tables per activation row).
// Measured on Zen 5, 2B-4T shapes: tile pairs beat single tiles by 15-30% at m = 1 (in cache and
// from DRAM: half the table loads per weight); 4 activation rows per pass beat 2 and 1.
void lut3_matmul(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const uint8_t *tables, int64_t m, int32_t *y,
                 int64_t ldy) {
    const int64_t t_begin = r0 / kLutTileRows, t_end = (r1 + kLutTileRows - 1) / kLutTileRows;
    const int64_t n_steps = steps(k), block = m == 1 ? n_steps : kBlockSteps;
    for (int64_t h0 = 0; h0 < n_steps; h0 += block) {
        const int64_t h1 = std::min(n_steps, h0 + block);
        for (int64_t i = 0; i < m; i += kActsPerPass) {
            const int64_t acts = std::min<int64_t>(kActsPerPass, m - i);
            if (acts == 4) lut3_pass<4>(w, k, h0, h1, t_begin, t_end, r0, r1, tables, i, y, ldy);
            else if (acts == 3) lut3_pass<3>(w, k, h0, h1, t_begin, t_end, r0, r1, tables, i, y, ldy);
            else if (acts == 2) lut3_pass<2>(w, k, h0, h1, t_begin, t_end, r0, r1, tables, i, y, ldy);
            else lut3_pass<1>(w, k, h0, h1, t_begin, t_end, r0, r1, tables, i, y, ldy);
        }
    }
}

const lut_kernel kLut3 = {"lut3", lut3_packed_bytes, lut3_repack_i2s, lut3_table_bytes, lut3_build_tables,
                          lut3_matmul};

}  // namespace

const lut_kernel *lut_kernel_avx512() {
    return &kLut3;
}

}  // namespace bitnet
