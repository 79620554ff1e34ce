// AVX-512 kernels (compiled with -mavx512f/bw/vl/dq/vnni; dispatch.cpp only hands them out when
// the CPU has F+BW+VL+DQ, and the VNNI variant only when it also has AVX512-VNNI).
//
// Two weight decodings. The VNNI variant, below kDecodeOnceMinBatch activation rows, reads each
// 32-byte block broadcast to both halves of a zmm (i2s_tile_natural, below), so that its codes line
// up with plain 64-byte loads of the activations; larger batches go to the decode-once GEMM
// (ternary_gemm_avx512.cpp). The BW variant (no VNNI) holds two consecutive 128-element blocks b
// and b+1 (64 bytes) in one zmm, decodes it with shift+mask into four zmm of codes, and assembles
// each activation zmm from two 32-byte loads so that its halves line up with the two blocks:
//
//   w       = [ block b: byte0..31           | block b+1: byte0..31             ]
//   codes j = [ (w>>(6-2j))&3 of block b     | same for block b+1               ]   j = 0..3
//   act j   = [ a[128b + 32j .. +32)         | a[128(b+1) + 32j .. +32)         ]
//
// An odd last block is loaded with a 32-byte mask: its upper half of codes is 0, so the upper
// half of the activations (zero-extended) adds nothing.
//
//   VNNI:  acc(int32) = vpdpbusd(acc, codes, act)    4 u8*s8 products per lane, exact
//   BW:    acc16 += vpmaddubsw(codes, act) for kI16GroupBlocks steps, then widen the int16 pairs
//          with shifts. (No vpmaddwd here on purpose: with -mavx512vnni a compiler may fuse
//          vpmaddwd+vpaddd into vpdpwssd, which a CPU without VNNI cannot run.)
// Then sum w*a = sum c*a - a_sums[i] (codes are w + 1).
//
// Activations: m rows of k int8, row i at a + i*k. Output y[i*ldy + r] (int32).
// BW tiles: m == 1 (GEMV) runs 4 weight rows against the row; m > 1 runs 2 weight rows against 4
// activation rows, over row chunks of kRowChunk (the chunk's weights stay in L1).
#include "kernels/simd_x86.h"


#include "kernels/ternary.h"
#include "kernels/ternary_gemm.h"
#include "kernels/ternary_impl.h"
#include "kernels/tuning.h"

#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VNNI__)
#error "ternary_avx512.cpp needs -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni"
#endif

namespace bitnet {
namespace {

constexpr int64_t kRowChunk = 16;
constexpr __mmask64 kLowHalf = 0xFFFFFFFFull;

// Blocks b and b+1 (only b when !two) of one weight row into four zmm of codes.
inline void decode_pair(const uint8_t *p, bool two, __m512i codes[4]) {
    const __m512i mask = _mm512_set1_epi8(3);
    const __m512i v = two ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi8(kLowHalf, p);
    codes[0] = _mm512_and_si512(_mm512_srli_epi16(v, 6), mask);
    codes[1] = _mm512_and_si512(_mm512_srli_epi16(v, 4), mask);
    codes[2] = _mm512_and_si512(_mm512_srli_epi16(v, 2), mask);
    codes[3] = _mm512_and_si512(v, mask);
}

// The activations of blocks b and b+1 (a points at block b) in the layout drawn above.
inline void load_act_pair(const int8_t *a, bool two, __m512i act[4]) {
    for (int j = 0; j < 4; ++j) {
        const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(a + 32 * j));
        const __m256i hi = two ? _mm256_loadu_si256(reinterpret_cast<const __m256i *>(a + kI2SBlock + 32 * j))
                               : _mm256_setzero_si256();
        act[j] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    }
}

struct dot_bw {
    static inline __m512i step(__m512i acc16, const __m512i codes[4], const __m512i act[4]) {
        for (int j = 0; j < 4; ++j) acc16 = _mm512_add_epi16(acc16, _mm512_maddubs_epi16(codes[j], act[j]));
        return acc16;
    }
    // Sign-extend the high and the low int16 of every int32 lane and add both.
    static inline __m512i widen_add(__m512i acc32, __m512i acc16) {
        const __m512i hi = _mm512_srai_epi32(acc16, 16);
        const __m512i lo = _mm512_srai_epi32(_mm512_slli_epi32(acc16, 16), 16);
        return _mm512_add_epi32(acc32, _mm512_add_epi32(hi, lo));
    }
};

inline int32_t hsum_i32(__m512i v) {
    const __m256i h = _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

// R weight rows (w, w + row_bytes, ...) times M activation rows (a, a + k, ...):
// y[i*ldy + r] for r < R, i < M, where y points at the tile's first output.
// prefetch: tuning().prefetch_bytes past the tile's first row, advanced R*32 bytes per block, as fast as
// the tile consumes its own rows.
template <class Dot, int R, int M>
void i2s_tile(const uint8_t *w, int64_t k, const int8_t *a, const int32_t *a_sums, int32_t *y, int64_t ldy,
              const uint8_t *prefetch) {
    const int64_t row_bytes = k / 4;
    const int64_t n_blocks = k / kI2SBlock;
    // A step covers two blocks, but each int16 lane still sees 4 maddubs outputs per step.
    const int64_t group = 2 * kI16GroupBlocks;
    __m512i acc[R][M];
    for (int r = 0; r < R; ++r)
        for (int i = 0; i < M; ++i) acc[r][i] = _mm512_setzero_si512();

    for (int64_t g = 0; g < n_blocks; g += group) {
        const int64_t g_end = std::min(n_blocks, g + group);
        __m512i inner[R][M];
        for (int r = 0; r < R; ++r)
            for (int i = 0; i < M; ++i) inner[r][i] = _mm512_setzero_si512();
        for (int64_t b = g; b < g_end; b += 2) {
            for (int64_t l = 0; l < 2 * R * kI2SBlockBytes; l += 64)
                _mm_prefetch(reinterpret_cast<const char *>(prefetch + b * R * kI2SBlockBytes + l),
                             _MM_HINT_T1);
            const bool two = b + 1 < n_blocks;
            __m512i codes[R][4];
            for (int r = 0; r < R; ++r) decode_pair(w + r * row_bytes + b * kI2SBlockBytes, two, codes[r]);
            for (int i = 0; i < M; ++i) {
                __m512i act[4];
                load_act_pair(a + i * k + b * kI2SBlock, two, act);
                for (int r = 0; r < R; ++r) inner[r][i] = Dot::step(inner[r][i], codes[r], act);
            }
        }
        for (int r = 0; r < R; ++r)
            for (int i = 0; i < M; ++i) acc[r][i] = Dot::widen_add(acc[r][i], inner[r][i]);
    }
    for (int r = 0; r < R; ++r)
        for (int i = 0; i < M; ++i) y[i * ldy + r] = sub_wrapping(hsum_i32(acc[r][i]), a_sums[i]);
}

// M activation rows against weight rows [r0, r1).
template <class Dot, int M>
void i2s_rows(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a, const int32_t *a_sums,
              int32_t *y, int64_t ldy) {
    constexpr int R = M == 1 ? 4 : 2;
    const int64_t row_bytes = k / 4;
    int64_t r = r0;
    const int64_t ahead = tuning().prefetch_bytes;
    // The prefetch runs past r1, even past the matrix (prefetches never fault).
    for (; r + R <= r1; r += R)
        i2s_tile<Dot, R, M>(w + r * row_bytes, k, a, a_sums, y + r, ldy, w + r * row_bytes + ahead);
    for (; r < r1; ++r)
        i2s_tile<Dot, 1, M>(w + r * row_bytes, k, a, a_sums, y + r, ldy, w + r * row_bytes + ahead);
}

// GEMV and small batches (lookup drafts, server slots) with VNNI, in the weights' natural
// order: no re-layout of the activations. One 32-byte block of a weight row, broadcast to both
// halves of a zmm and shifted by a different amount in each half, gives the codes of 64
// consecutive activations:
//
//   block b, bytes v:   c0 = [ (v >> 6) & 3 | (v >> 4) & 3 ]  codes of a[128b      .. 128b + 64)
//                       c1 = [ (v >> 2) & 3 |  v       & 3 ]  codes of a[128b + 64 .. 128b + 128)
//
// (a 32-bit shift is as good as an 8-bit one: the mask drops what crosses from the next byte).
// A tile is R weight rows x M activation rows, each product summed in C chains. What limits it
// (Zen 5, measured with the weights in cache): one 64-byte load per cycle, and a dpbusd's sum
// ready 4 cycles after it starts. Each activation load serves R rows and each code vector M
// activation rows, so loads per dpbusd fall as 1/R + 1/(2M); C = 2 chains where R*M alone would
// leave the dpbusd units waiting on latency. GEMV: 2 rows (54 GB/s in cache against 44 for one
// row); M = 2..4: 4 rows (2x the speed of one); 5..8: 3 rows (registers: R*M*C accumulators).
template <int R, int M, int C>
void i2s_tile_natural(const uint8_t *w, int64_t k, const int8_t *a, const int32_t *a_sums, int32_t *y, int64_t ldy,
                      int64_t ahead) {
    const int64_t n_blocks = k / kI2SBlock, row_bytes = k / 4;
    const __m512i mask = _mm512_set1_epi8(3);
    const __m512i shift0 = _mm512_inserti64x4(_mm512_set1_epi32(6), _mm256_set1_epi32(4), 1);
    const __m512i shift1 = _mm512_inserti64x4(_mm512_set1_epi32(2), _mm256_set1_epi32(0), 1);
    __m512i acc[R][M][C];
    for (int t = 0; t < R; ++t)
        for (int i = 0; i < M; ++i)
            for (int c = 0; c < C; ++c) acc[t][i][c] = _mm512_setzero_si512();
    // Block b's two halves into chains `chain` and `chain + 1` (both 0 when C = 1): with C = 4, two
    // blocks per step take chains 0, 1 and 2, 3.
    const auto block = [&](int64_t b, int chain) {
        __m512i c0[R], c1[R];
        for (int t = 0; t < R; ++t) {
            const uint8_t *p = w + t * row_bytes + b * kI2SBlockBytes;
            if ((b & 1) == 0) _mm_prefetch(reinterpret_cast<const char *>(p + ahead), _MM_HINT_T1);  // a line per 2 blocks
            const __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)));
            c0[t] = _mm512_and_si512(_mm512_srlv_epi32(v, shift0), mask);
            c1[t] = _mm512_and_si512(_mm512_srlv_epi32(v, shift1), mask);
        }
        for (int i = 0; i < M; ++i) {
            const int8_t *ap = a + i * k + b * kI2SBlock;
            const __m512i a0 = _mm512_loadu_si512(ap), a1 = _mm512_loadu_si512(ap + 64);
            for (int t = 0; t < R; ++t) {
                acc[t][i][chain] = _mm512_dpbusd_epi32(acc[t][i][chain], c0[t], a0);
                acc[t][i][C == 1 ? 0 : chain + 1] = _mm512_dpbusd_epi32(acc[t][i][C == 1 ? 0 : chain + 1], c1[t], a1);
            }
        }
    };
    int64_t b = 0;
    if constexpr (C == 4)
        for (; b + 2 <= n_blocks; b += 2) {
            block(b, 0);
            block(b + 1, 2);
        }
    for (; b < n_blocks; ++b) block(b, 0);
    for (int t = 0; t < R; ++t)
        for (int i = 0; i < M; ++i) {
            __m512i sum = acc[t][i][0];
            for (int c = 1; c < C; ++c) sum = _mm512_add_epi32(sum, acc[t][i][c]);
            y[i * ldy + t] = sub_wrapping(hsum_i32(sum), a_sums[i]);
        }
}

// Rows [r0, r1) against M activation rows: tiles of R rows, then single rows.
template <int R, int M, int C>
void i2s_rows_natural(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a, const int32_t *a_sums,
                      int32_t *y, int64_t ldy) {
    const int64_t row_bytes = k / 4, ahead = tuning().prefetch_bytes;
    int64_t r = r0;
    for (; r + R <= r1; r += R) i2s_tile_natural<R, M, C>(w + r * row_bytes, k, a, a_sums, y + r, ldy, ahead);
    for (; r < r1; ++r) i2s_tile_natural<1, M, 2>(w + r * row_bytes, k, a, a_sums, y + r, ldy, ahead);
}

// m activation rows in groups of up to kNaturalActs. One group streams the rows once; with more,
// the rows go kRowChunk at a time, so that every group after the first finds them in L1.
constexpr int kNaturalActs = 8;
void i2s_matmul_natural(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a,
                        const int32_t *a_sums, int64_t m, int32_t *y, int64_t ldy) {
    using rows_fn = void (*)(const uint8_t *, int64_t, int64_t, int64_t, const int8_t *, const int32_t *, int32_t *,
                             int64_t);
    static constexpr rows_fn kByActs[kNaturalActs + 1] = {
        nullptr,
        i2s_rows_natural<1, 1, 4>,
        i2s_rows_natural<4, 2, 2>,
        i2s_rows_natural<4, 3, 1>,
        i2s_rows_natural<4, 4, 1>,
        i2s_rows_natural<3, 5, 1>,
        i2s_rows_natural<3, 6, 1>,
        i2s_rows_natural<3, 7, 1>,
        i2s_rows_natural<3, 8, 1>,
    };
    const int64_t chunk = m <= kNaturalActs ? r1 - r0 : kRowChunk;
    for (int64_t c0 = r0; c0 < r1; c0 += chunk) {
        const int64_t c1 = std::min(r1, c0 + chunk);
        for (int64_t i = 0; i < m; i += kNaturalActs) {
            const int64_t n = std::min<int64_t>(kNaturalActs, m - i);
            kByActs[n](w, k, c0, c1, a + i * k, a_sums + i, y + i * ldy, ldy);
        }
    }
}

template <class Dot>
void i2s_matmul_avx512(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a,
                       const int32_t *a_sums, int64_t m, int32_t *y, int64_t ldy) {
    if (m == 1) return i2s_rows<Dot, 1>(w, k, r0, r1, a, a_sums, y, ldy);
    for (int64_t c0 = r0; c0 < r1; c0 += kRowChunk) {
        const int64_t c1 = std::min(r1, c0 + kRowChunk);
        int64_t i = 0;
        for (; i + 4 <= m; i += 4) i2s_rows<Dot, 4>(w, k, c0, c1, a + i * k, a_sums + i, y + i * ldy, ldy);
        switch (m - i) {
            case 3:
                i2s_rows<Dot, 3>(w, k, c0, c1, a + i * k, a_sums + i, y + i * ldy, ldy);
                break;
            case 2:
                i2s_rows<Dot, 2>(w, k, c0, c1, a + i * k, a_sums + i, y + i * ldy, ldy);
                break;
            case 1:
                i2s_rows<Dot, 1>(w, k, c0, c1, a + i * k, a_sums + i, y + i * ldy, ldy);
                break;
            default:
                break;
        }
    }
}

inline __mmask16 tail_mask(int64_t n) {
    return static_cast<__mmask16>((1u << n) - 1u);
}

float absmax_avx512(const float *x, int64_t k) {
    __m512 m0 = _mm512_setzero_ps(), m1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= k; i += 32) {
        m0 = _mm512_max_ps(m0, _mm512_abs_ps(_mm512_loadu_ps(x + i)));
        m1 = _mm512_max_ps(m1, _mm512_abs_ps(_mm512_loadu_ps(x + i + 16)));
    }
    for (; i < k; i += 16) {
        const __mmask16 mask = k - i >= 16 ? static_cast<__mmask16>(0xFFFF) : tail_mask(k - i);
        m0 = _mm512_max_ps(m0, _mm512_abs_ps(_mm512_maskz_loadu_ps(mask, x + i)));
    }
    return _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
}

// DESIGN.md section 3, 16 lanes at a time with the operations of quantize_one_int8; the last
// partial vector is loaded and stored under a mask (masked-off lanes quantize 0.0 to 0).
void quantize_row_int8_avx512(const float *x, int64_t k, int8_t *q, float *scale, int32_t *sum) {
    const float s = int8_scale_from_absmax(absmax_avx512(x, k));
    const __m512 vs = _mm512_set1_ps(s);
    const __m512 lo = _mm512_set1_ps(-128.0f), hi = _mm512_set1_ps(127.0f);
    __m512i vsum = _mm512_setzero_si512();
    for (int64_t i = 0; i < k; i += 16) {
        const __mmask16 mask = k - i >= 16 ? static_cast<__mmask16>(0xFFFF) : tail_mask(k - i);
        const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, x + i), vs);
        __m512 r = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        r = _mm512_min_ps(_mm512_max_ps(r, lo), hi);
        const __m512i qi = _mm512_cvtps_epi32(r);
        vsum = _mm512_add_epi32(vsum, qi);
        _mm512_mask_cvtepi32_storeu_epi8(q + i, mask, qi);
    }
    *scale = s;
    *sum = hsum_i32(vsum);
}

// VNNI: small batches (lookup-draft verification, a few server slots) run the natural-order
// tiles above, which read the weights from memory once and keep up with it up to ~5 rows;
// batches of kDecodeOnceMinBatch rows or more go to the GEMM (ternary_gemm_avx512.cpp), which
// runs vpdpbusd near its peak but transposes each slice of weights first. Measured on the 2B-4T
// shapes, one thread, weights from memory, G vpdpbusd/s tiles vs GEMM: 5.1-5.8 vs 4.9-5.3 at 12
// rows, a tie at 16, 5.3-5.5 vs 5.8-6.1 at 20, 5.1-5.3 vs 6.2-6.4 at 24.
constexpr int64_t kDecodeOnceMinBatch = 20;
void i2s_matmul_avx512vnni(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a,
                           const int32_t *a_sums, int64_t m, int32_t *y, int64_t ldy) {
    if (m < kDecodeOnceMinBatch) i2s_matmul_natural(w, k, r0, r1, a, a_sums, m, y, ldy);
    else i2s_gemm_avx512vnni(w, k, r0, r1, a, a_sums, m, y, ldy);
}

// AMX: batches of at least tuning().amx_min_batch rows go to the tile GEMM
// (ternary_gemm_amx.cpp); a 16-token tile that holds fewer tokens still costs a whole tile, so
// small batches stay on VNNI.
void i2s_matmul_amx(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a, const int32_t *a_sums,
                    int64_t m, int32_t *y, int64_t ldy) {
    if (m >= tuning().amx_min_batch) i2s_gemm_amx(w, k, r0, r1, a, a_sums, m, y, ldy);
    else i2s_matmul_avx512vnni(w, k, r0, r1, a, a_sums, m, y, ldy);
}

const ternary_kernel_set kAvx512Vnni = {"avx512vnni", i2s_matmul_avx512vnni, quantize_row_int8_avx512};
const ternary_kernel_set kAmx = {"amx", i2s_matmul_amx, quantize_row_int8_avx512};
const ternary_kernel_set kAvx512Bw = {"avx512bw", i2s_matmul_avx512<dot_bw>, quantize_row_int8_avx512};

}  // namespace

const ternary_kernel_set *ternary_kernels_avx512() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vnni") ? &kAvx512Vnni : &kAvx512Bw;
}

const ternary_kernel_set *ternary_kernels_avx512bw() {
    return &kAvx512Bw;
}

const ternary_kernel_set *ternary_kernels_amx() {
    return &kAmx;
}

}  // namespace bitnet
