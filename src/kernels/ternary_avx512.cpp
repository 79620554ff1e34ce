// AVX-512 kernels (compiled with -mavx512f/bw/vl/dq/vnni; dispatch.cpp only hands them out when
// the CPU has F+BW+VL+DQ, and the VNNI variant only when it also has AVX512-VNNI).
//
// Weights, I2_S: one zmm holds two consecutive 128-element blocks b and b+1 (64 bytes). The
// same shift+mask decode as the AVX2 file gives four zmm of codes; each activation zmm is
// assembled from two 32-byte loads so that its halves line up with the two blocks:
//
//   w       = [ block b: byte0..31           | block b+1: byte0..31             ]
//   codes j = [ (w>>(6-2j))&3 of block b     | same for block b+1               ]   j = 0..3
//   act j   = [ a[128b + 32j .. +32)         | a[128(b+1) + 32j .. +32)         ]
//
// An odd last block is loaded with a 32-byte mask: its upper half of codes is 0, so the upper
// half of the activations (zero-extended) adds nothing.
//
//   VNNI variant:  acc(int32) = vpdpbusd(acc, codes, act)    4 u8*s8 products per lane, exact
//   BW variant:    acc16 += vpmaddubsw(codes, act) for kI16GroupBlocks steps, then widen the
//                  int16 pairs with shifts. (No vpmaddwd here on purpose: with -mavx512vnni a
//                  compiler may fuse vpmaddwd+vpaddd into vpdpwssd, which a CPU without VNNI
//                  cannot run.)
// Then sum w*a = sum c*a - a_sums[i] (codes are w + 1).
//
// Activations: m rows of k int8, row i at a + i*k. Output y[i*ldy + r] (int32).
// Tiles: m == 1 (GEMV) runs 4 weight rows against the row (VNNI: one row at a time, see
// i2s_gemv_vnni); m > 1 (GEMM) runs 2 weight rows against 4 activation rows, over row chunks of
// kRowChunk (the chunk's weights stay in L1).
// GCC 12's AVX-512 headers trip its own -W(maybe-)uninitialized on their `__Y = __Y`
// placeholders (GCC bug 105593, fixed in GCC 13); the warnings are about the headers, not us.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include <cstring>
#include <type_traits>
#include <vector>

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

struct dot_vnni {
    static inline __m512i step(__m512i acc, const __m512i codes[4], const __m512i act[4]) {
        for (int j = 0; j < 4; ++j) acc = _mm512_dpbusd_epi32(acc, codes[j], act[j]);
        return acc;
    }
    static inline __m512i widen_add(__m512i acc32, __m512i inner) { return _mm512_add_epi32(acc32, inner); }
};

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

// GEMV with VNNI, the decode-time hot loop. The activation row is first laid out in the order
// of the weight zmm (per block pair: block b's 32 bytes of plane j, then block b+1's; zeros for
// a missing b+1), so each plane is one plain load; rows are then streamed one at a time, each
// with a prefetch tuning().prefetch_bytes ahead. One stream at a time lets the memory system run
// ahead: base3-layout-probe measured 32.5 GB/s against 25.1 for 4-row tiles (2 threads, 512 MiB
// of I2_S), +8-10% tg on the 2B-4T shape. Each thread lays out its own copy of the row: k bytes,
// against the k/4 bytes of every weight row it then reads.
void pair_order_activations(const int8_t *a, int64_t k, int8_t *out) {
    const int64_t n_blocks = k / kI2SBlock;
    for (int64_t b = 0; b < n_blocks; b += 2)
        for (int j = 0; j < 4; ++j) {
            int8_t *dst = out + b * kI2SBlock + 64 * j;
            std::memcpy(dst, a + b * kI2SBlock + 32 * j, 32);
            if (b + 1 < n_blocks) std::memcpy(dst + 32, a + (b + 1) * kI2SBlock + 32 * j, 32);
            else std::memset(dst + 32, 0, 32);
        }
}

int32_t i2s_gemv_vnni_row(const uint8_t *w, int64_t k, const int8_t *a_pairs, int32_t a_sum, int64_t ahead) {
    const int64_t n_blocks = k / kI2SBlock;
    const __m512i mask = _mm512_set1_epi8(3);
    __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();  // two chains: dpbusd latency
    for (int64_t b = 0; b < n_blocks; b += 2) {
        const uint8_t *p = w + b * kI2SBlockBytes;
        const int8_t *ap = a_pairs + b * kI2SBlock;
        _mm_prefetch(reinterpret_cast<const char *>(p + ahead), _MM_HINT_T1);
        const __m512i v = b + 1 < n_blocks ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi8(kLowHalf, p);
        acc0 = _mm512_dpbusd_epi32(acc0, _mm512_and_si512(_mm512_srli_epi16(v, 6), mask), _mm512_loadu_si512(ap));
        acc1 = _mm512_dpbusd_epi32(acc1, _mm512_and_si512(_mm512_srli_epi16(v, 4), mask), _mm512_loadu_si512(ap + 64));
        acc0 = _mm512_dpbusd_epi32(acc0, _mm512_and_si512(_mm512_srli_epi16(v, 2), mask), _mm512_loadu_si512(ap + 128));
        acc1 = _mm512_dpbusd_epi32(acc1, _mm512_and_si512(v, mask), _mm512_loadu_si512(ap + 192));
    }
    return sub_wrapping(hsum_i32(_mm512_add_epi32(acc0, acc1)), a_sum);
}

void i2s_gemv_vnni(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a, int32_t a_sum,
                   int32_t *y) {
    thread_local std::vector<int8_t> a_pairs;
    a_pairs.resize(static_cast<size_t>((k / kI2SBlock + 1) / 2 * 2 * kI2SBlock));
    pair_order_activations(a, k, a_pairs.data());
    const int64_t row_bytes = k / 4, ahead = tuning().prefetch_bytes;
    for (int64_t r = r0; r < r1; ++r) y[r] = i2s_gemv_vnni_row(w + r * row_bytes, k, a_pairs.data(), a_sum, ahead);
}

template <class Dot>
void i2s_matmul_avx512(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a,
                       const int32_t *a_sums, int64_t m, int32_t *y, int64_t ldy) {
    if (m == 1) {
        if constexpr (std::is_same_v<Dot, dot_vnni>) return i2s_gemv_vnni(w, k, r0, r1, a, a_sums[0], y);
        i2s_rows<Dot, 1>(w, k, r0, r1, a, a_sums, y, ldy);
        return;
    }
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

// VNNI: small batches (lookup-draft verification, a few server slots) run the register tiles
// above, which decode each weight block once per tile and read the weights from memory once;
// prompts of kDecodeOnceMinBatch rows or more go to the decode-once GEMM
// (ternary_gemm_avx512.cpp). Measured on the 2B-4T layers, 2 threads: tiles 66/96/110/119 t/s
// at batches 2/4/8/32 against 35/59/79/115 for the GEMM; the GEMM 5-10% ahead at 128-512.
constexpr int64_t kDecodeOnceMinBatch = 48;
void i2s_matmul_avx512vnni(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a,
                           const int32_t *a_sums, int64_t m, int32_t *y, int64_t ldy) {
    if (m < kDecodeOnceMinBatch) i2s_matmul_avx512<dot_vnni>(w, k, r0, r1, a, a_sums, m, y, ldy);
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
