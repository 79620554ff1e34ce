// AVX-512 VNNI GEMM for I2_S weights against a batch of int8 activation rows (prompt processing).
//
// Prefill is compute-bound, and decoding the 2-bit codes (shift + mask) costs as much as the
// products when done for every activation tile. So the weights are decoded once per slice of
// kSliceRows rows into a per-thread buffer of u8 codes in natural order, then multiplied with
// plain loads on both sides:
//
//   I2_S block (32 bytes):  byte[m] = c[m]<<6 | c[32+m]<<4 | c[64+m]<<2 | c[96+m]
//   decoded slice row r:    u8 c[0], c[1], ..., c[k-1]        (values 0..2 = w + 1)
//   activation row i:       s8 a[0], a[1], ..., a[k-1]
//   acc(r, i) += vpdpbusd(codes[r][j..j+64), a[i][j..j+64))   4 u8*s8 products per int32 lane
//
// Register tile: kTileRows weight rows x kTileActs activation rows (16 zmm accumulators), so
// every loaded vector feeds 4 products. Activation rows are taken kActBlock at a time so that
// they stay in L2 while a slice's tiles pass over them. Integer sums are exact in any order:
// the result equals the scalar reference bit for bit. sum w*a = sum c*a - sum a (codes = w + 1).
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "kernels/ternary.h"
#include "kernels/ternary_gemm.h"
#include "kernels/ternary_impl.h"

namespace bitnet {

namespace {

constexpr int kTileRows = 4;
constexpr int kTileActs = 4;
constexpr int64_t kSliceRows = 16;  // a multiple of kTileRows
constexpr int64_t kActBlock = 64;

// Rows [r, r + n) of the I2_S matrix into buf (kSliceRows rows of k codes; missing rows zero).
void decode_slice(const uint8_t *w, int64_t k, int64_t r, int64_t n, uint8_t *buf) {
    const __m256i mask = _mm256_set1_epi8(3);
    const int64_t row_bytes = k / 4;
    for (int64_t t = 0; t < kSliceRows; ++t) {
        uint8_t *out = buf + t * k;
        if (t >= n) {
            std::fill(out, out + k, uint8_t{0});
            continue;
        }
        const uint8_t *src = w + (r + t) * row_bytes;
        for (int64_t b = 0; b < k / kI2SBlock; ++b) {
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(src + b * kI2SBlockBytes));
            for (int j = 0; j < 4; ++j) {
                const __m256i c = _mm256_and_si256(_mm256_srli_epi16(v, 6 - 2 * j), mask);
                _mm256_storeu_si256(reinterpret_cast<__m256i *>(out + b * kI2SBlock + 32 * j), c);
            }
        }
    }
}

inline int32_t hsum(__m512i v) { return _mm512_reduce_add_epi32(v); }

// kTileRows decoded rows (codes, k apart) times M activation rows (a, k apart); writes the
// first n_rows outputs of each activation row: y[i * ldy + t].
template <int M>
void tile(const uint8_t *codes, const int8_t *a, const int32_t *a_sums, int64_t k, int64_t n_rows, int32_t *y,
          int64_t ldy) {
    __m512i acc[kTileRows][M];
    for (int t = 0; t < kTileRows; ++t)
        for (int i = 0; i < M; ++i) acc[t][i] = _mm512_setzero_si512();
    for (int64_t j = 0; j < k; j += 64) {
        __m512i av[M];
        for (int i = 0; i < M; ++i) av[i] = _mm512_loadu_si512(a + i * k + j);
        for (int t = 0; t < kTileRows; ++t) {
            const __m512i cv = _mm512_loadu_si512(codes + t * k + j);
            for (int i = 0; i < M; ++i) acc[t][i] = _mm512_dpbusd_epi32(acc[t][i], cv, av[i]);
        }
    }
    for (int t = 0; t < n_rows; ++t)
        for (int i = 0; i < M; ++i) y[i * ldy + t] = sub_wrapping(hsum(acc[t][i]), a_sums[i]);
}

// One decoded slice (n_rows valid rows) against activation rows [i0, i1).
void slice_times_acts(const uint8_t *codes, int64_t n_rows, const int8_t *a, const int32_t *a_sums, int64_t k,
                      int64_t i0, int64_t i1, int32_t *y, int64_t ldy) {
    for (int64_t t = 0; t < n_rows; t += kTileRows) {
        const int64_t rows = std::min<int64_t>(kTileRows, n_rows - t);
        const uint8_t *c = codes + t * k;
        int64_t i = i0;
        for (; i + kTileActs <= i1; i += kTileActs)
            tile<kTileActs>(c, a + i * k, a_sums + i, k, rows, y + i * ldy + t, ldy);
        switch (i1 - i) {
            case 3: tile<3>(c, a + i * k, a_sums + i, k, rows, y + i * ldy + t, ldy); break;
            case 2: tile<2>(c, a + i * k, a_sums + i, k, rows, y + i * ldy + t, ldy); break;
            case 1: tile<1>(c, a + i * k, a_sums + i, k, rows, y + i * ldy + t, ldy); break;
            default: break;
        }
    }
}

}  // namespace

void i2s_gemm_avx512vnni(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a,
                         const int32_t *a_sums, int64_t m, int32_t *y, int64_t ldy) {
    // One buffer per thread, kept across calls (the pool's threads live as long as the context).
    thread_local std::vector<uint8_t> buf;
    const size_t need = static_cast<size_t>(kSliceRows * k);
    if (buf.size() < need) buf.resize(need);
    for (int64_t i0 = 0; i0 < m; i0 += kActBlock) {
        const int64_t i1 = std::min(m, i0 + kActBlock);
        for (int64_t r = r0; r < r1; r += kSliceRows) {
            const int64_t n = std::min(kSliceRows, r1 - r);
            decode_slice(w, k, r, n, buf.data());
            slice_times_acts(buf.data(), n, a, a_sums, k, i0, i1, y + r, ldy);
        }
    }
}

}  // namespace bitnet
