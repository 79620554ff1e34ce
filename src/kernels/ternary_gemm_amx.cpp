// AMX-INT8 GEMM for I2_S weights against a batch of int8 activation rows (prompt processing).
//
// One TDPBUSD multiplies a 16 x 64 u8 tile by a 64 x 16 s8 tile into 16 x 16 int32 sums
// (16384 exact products; VNNI's vpdpbusd does 64). Operands:
//
//   A (u8, weights):  16 weight rows x 64 codes, natural order, row stride k
//                     decoded once per slice of kSliceRows rows: c = w + 1 in {0, 1, 2}
//   B (s8, tokens):   "VNNI" layout, 16 rows x 64 bytes: row q holds, for each of 16 tokens n,
//                     the 4 activations a[n][4q .. 4q+4) of the 64-column chunk
//   C (int32):        C[weight row][token] += sum over the chunk of c * a
//
// Activation rows are repacked into B blocks (a 16 x 16 transpose of 4-byte groups per chunk)
// kTokenBlock tokens at a time, padded with zero tokens to a multiple of 16. The tile loop runs
// 2 A x 2 B tiles (4 accumulators) per chunk. Finally y = C - sum a (codes are w + 1): exact
// integers, equal to the scalar reference bit for bit.
#include "kernels/simd_x86.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/ternary.h"
#include "kernels/ternary_gemm.h"
#include "kernels/ternary_impl.h"

namespace bitnet {

namespace {

constexpr int64_t kTile = 16;                // tile rows, and tokens per B tile
constexpr int64_t kChunk = 64;               // columns (k) per tile step
constexpr int64_t kSliceRows = 2 * kTile;    // weight rows decoded at a time (two A tiles)
constexpr int64_t kTokenBlock = 256;        // tokens repacked at a time (stay in L2; 128 and 512 measured within 5%)

// The tile configuration (palette 1): every tile 16 rows x 64 bytes.
struct alignas(64) tile_config {
    uint8_t palette_id = 1;
    uint8_t start_row = 0;
    uint8_t reserved[14] = {};
    uint16_t colsb[16] = {};
    uint8_t rows[16] = {};
};

tile_config full_tiles() {
    tile_config c;
    for (int t = 0; t < 8; ++t) {
        c.colsb[t] = 64;
        c.rows[t] = 16;
    }
    return c;
}

// Rows [r, r + n) of the I2_S matrix into buf: kSliceRows rows of k u8 codes (missing rows 0).
void decode_slice(const uint8_t *w, int64_t k, int64_t r, int64_t n, uint8_t *buf) {
    const __m512i mask = _mm512_set1_epi8(3);
    const int64_t row_bytes = k / 4, n_pairs = k / (2 * kI2SBlock);
    for (int64_t t = 0; t < kSliceRows; ++t) {
        uint8_t *out = buf + t * k;
        if (t >= n) {
            std::memset(out, 0, static_cast<size_t>(k));
            continue;
        }
        const uint8_t *src = w + (r + t) * row_bytes;
        int64_t b = 0;
        for (; b < n_pairs * 2; b += 2) {  // two 32-byte blocks per zmm; halves go 128 codes apart
            const __m512i v = _mm512_loadu_si512(src + b * kI2SBlockBytes);
            for (int j = 0; j < 4; ++j) {
                const __m512i c = _mm512_and_si512(_mm512_srli_epi16(v, 6 - 2 * j), mask);
                _mm256_storeu_si256(reinterpret_cast<__m256i *>(out + b * kI2SBlock + 32 * j),
                                    _mm512_castsi512_si256(c));
                _mm256_storeu_si256(reinterpret_cast<__m256i *>(out + (b + 1) * kI2SBlock + 32 * j),
                                    _mm512_extracti64x4_epi64(c, 1));
            }
        }
        for (; b < k / kI2SBlock; ++b) {  // an odd last block
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(src + b * kI2SBlockBytes));
            for (int j = 0; j < 4; ++j) {
                const __m256i c = _mm256_and_si256(_mm256_srli_epi16(v, 6 - 2 * j), _mm512_castsi512_si256(mask));
                _mm256_storeu_si256(reinterpret_cast<__m256i *>(out + b * kI2SBlock + 32 * j), c);
            }
        }
    }
}

// Transpose a 16 x 16 matrix of 32-bit elements held in rows[0..16) (in place).
inline void transpose16x16_epi32(__m512i r[16]) {
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    // Now each 128-bit lane L of r[4g + s] holds row (4L + ...) pieces; two 128-bit shuffles finish.
    for (int i = 0; i < 4; ++i) {
        t[i] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0xDD);
        t[i + 8] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0xDD);
    }
    for (int i = 0; i < 4; ++i) {
        r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xDD);
        r[i + 4] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0x88);
        r[i + 12] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0xDD);
    }
}

// Tokens [i0, i0 + n) into B blocks: out[(g * n_chunks + jc) * 1024 ...], g = token group of 16.
void pack_tokens(const int8_t *a, int64_t k, int64_t i0, int64_t n, uint8_t *out) {
    const int64_t n_chunks = k / kChunk;
    for (int64_t g = 0; g * kTile < n; ++g) {
        const int64_t valid = std::min(kTile, n - g * kTile);
        for (int64_t jc = 0; jc < n_chunks; ++jc) {
            __m512i rows[16];
            for (int64_t t = 0; t < 16; ++t)
                rows[t] = t < valid ? _mm512_loadu_si512(a + (i0 + g * kTile + t) * k + jc * kChunk)
                                    : _mm512_setzero_si512();
            transpose16x16_epi32(rows);  // row q: token t's 4-byte group q, for t = 0..15
            uint8_t *block = out + (g * n_chunks + jc) * 1024;
            for (int q = 0; q < 16; ++q) _mm512_storeu_si512(block + 64 * q, rows[q]);
        }
    }
}

// C tile (16 weight rows x 16 tokens, int32, in c) to y for the valid rows and tokens.
void write_tile(const int32_t *c, int64_t n_rows, int64_t n_tokens, const int32_t *a_sums, int32_t *y,
                int64_t ldy) {
    for (int64_t t = 0; t < n_tokens; ++t)
        for (int64_t r = 0; r < n_rows; ++r) y[t * ldy + r] = sub_wrapping(c[r * kTile + t], a_sums[t]);
}

// One decoded slice (n_rows valid of kSliceRows) times the packed tokens [0, n_tokens) of a block.
void slice_times_block(const uint8_t *codes, int64_t n_rows, const uint8_t *packed, int64_t n_tokens, int64_t k,
                       const int32_t *a_sums, int32_t *y, int64_t ldy) {
    const int64_t n_chunks = k / kChunk, n_groups = (n_tokens + kTile - 1) / kTile;
    alignas(64) int32_t c[4][kTile * kTile];
    for (int64_t g = 0; g < n_groups; g += 2) {
        const bool two = g + 1 < n_groups;
        const uint8_t *b0 = packed + g * n_chunks * 1024;
        const uint8_t *b1 = two ? b0 + n_chunks * 1024 : b0;
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int64_t jc = 0; jc < n_chunks; ++jc) {
            _tile_loadd(4, codes + jc * kChunk, k);
            _tile_loadd(5, codes + kTile * k + jc * kChunk, k);
            _tile_loadd(6, b0 + jc * 1024, 64);
            _tile_loadd(7, b1 + jc * 1024, 64);
            _tile_dpbusd(0, 4, 6);
            _tile_dpbusd(1, 4, 7);
            _tile_dpbusd(2, 5, 6);
            _tile_dpbusd(3, 5, 7);
        }
        _tile_stored(0, c[0], 64);
        _tile_stored(1, c[1], 64);
        _tile_stored(2, c[2], 64);
        _tile_stored(3, c[3], 64);
        const int64_t t0 = g * kTile, rows_lo = std::min(kTile, n_rows), rows_hi = n_rows - rows_lo;
        const int64_t tok0 = std::min(kTile, n_tokens - t0);
        write_tile(c[0], rows_lo, tok0, a_sums + t0, y + t0 * ldy, ldy);
        if (rows_hi > 0) write_tile(c[2], rows_hi, tok0, a_sums + t0, y + t0 * ldy + kTile, ldy);
        if (!two) continue;
        const int64_t t1 = t0 + kTile, tok1 = std::min(kTile, n_tokens - t1);
        write_tile(c[1], rows_lo, tok1, a_sums + t1, y + t1 * ldy, ldy);
        if (rows_hi > 0) write_tile(c[3], rows_hi, tok1, a_sums + t1, y + t1 * ldy + kTile, ldy);
    }
}

}  // namespace

void i2s_gemm_amx(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a, const int32_t *a_sums,
                  int64_t m, int32_t *y, int64_t ldy) {
    // Per-thread buffers kept across calls (the pool's threads live as long as the context).
    thread_local std::vector<uint8_t> codes, packed;
    codes.resize(static_cast<size_t>(kSliceRows * k));
    packed.resize(static_cast<size_t>(kTokenBlock * k));
    static const tile_config config = full_tiles();
    _tile_loadconfig(&config);
    for (int64_t i0 = 0; i0 < m; i0 += kTokenBlock) {
        const int64_t n_tokens = std::min(kTokenBlock, m - i0);
        pack_tokens(a, k, i0, n_tokens, packed.data());
        for (int64_t r = r0; r < r1; r += kSliceRows) {
            const int64_t n_rows = std::min(kSliceRows, r1 - r);
            decode_slice(w, k, r, n_rows, codes.data());
            slice_times_block(codes.data(), n_rows, packed.data(), n_tokens, k, a_sums + i0, y + i0 * ldy + r, ldy);
        }
    }
    _tile_release();  // no tile state left for the kernel to save at every context switch
}

}  // namespace bitnet
