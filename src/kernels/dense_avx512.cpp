// AVX-512 dense kernels (see dense.h for the layout): the lm_head, which decode streams whole
// once per token (0.66 GB of F16 for the 2B-4T shape, more than all ternary weights).
//
//   weight row r:  [ w0 .. w15 | w16 .. w31 | ... | tail (masked) ]   F32, or F16 / BF16 / Q8_0 /
//                                                                     Q6_K widened in registers
//   acc(r, i)   += row chunk * x_i chunk  (one 16-lane FMA chain per output, then a reduction)
//
// Every output y[i][r] is summed in that one order, whatever the tile, so a token's logits do not
// depend on how many other rows share the batch (bitnet_decode_multi relies on it). A GEMV tile
// runs one or two weight rows (a tuning parameter); a batch tile
// runs 2-4 weight rows against up to kGemmActs activation rows (each loaded vector serves several
// FMAs), so a batch of up to 8 rows (lookup drafts, server slots) reads the head once.
#include "kernels/simd_x86.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/dense.h"
#include "kernels/float_order_x86.h"
#include "kernels/tuning.h"

namespace bitnet {

namespace {

// Rows per GEMV tile (tuning().head_gemv_rows): two rows give two FMA chains, which a core whose
// FMA latency would otherwise set the pace needs (measured on an Intel Xeon: +8% tg on the 2B-4T
// F16 head against four rows); one row is one memory stream, which the memory system runs ahead
// of better (Zen 5 at 3.7 GHz, where one chain keeps up with a core's bandwidth: 90% of the
// probe's bandwidth at one thread against 82% with two rows).
constexpr int kGemmActs = 8;

// A weight type: its row size in bytes, where element j's bytes start (for the prefetch), 16
// elements j .. j+15 of a row widened to f32 (masked lanes read as 0), and 64 elements j .. j+63
// (j a multiple of 64, all inside the row) as four such vectors. A quantized type widens 64 at a
// time where its layout makes that cheaper than four times 16 (its bit fields come 64 to a zmm).
template <class Load>
struct by_sixteen {
    static void vec64(const uint8_t *row, int64_t j, __m512 out[4]) {
        for (int c = 0; c < 4; ++c) out[c] = Load::vec(row, j + 16 * c, static_cast<__mmask16>(0xFFFF));
    }
};

struct load_f32 : by_sixteen<load_f32> {
    static int64_t row_bytes(int64_t k) { return 4 * k; }
    static int64_t offset(int64_t j) { return 4 * j; }
    static __m512 vec(const uint8_t *row, int64_t j, __mmask16 m) {
        return _mm512_maskz_loadu_ps(m, reinterpret_cast<const float *>(row) + j);
    }
};
struct load_f16 : by_sixteen<load_f16> {
    static int64_t row_bytes(int64_t k) { return 2 * k; }
    static int64_t offset(int64_t j) { return 2 * j; }
    static __m512 vec(const uint8_t *row, int64_t j, __mmask16 m) {
        return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, reinterpret_cast<const uint16_t *>(row) + j));
    }
};
struct load_bf16 : by_sixteen<load_bf16> {
    static int64_t row_bytes(int64_t k) { return 2 * k; }
    static int64_t offset(int64_t j) { return 2 * j; }
    static __m512 vec(const uint8_t *row, int64_t j, __mmask16 m) {
        const __m256i h = _mm256_maskz_loadu_epi16(m, reinterpret_cast<const uint16_t *>(row) + j);
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
};

inline int32_t load_u32(const uint8_t *p) {
    int32_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

inline float f16_scale(const uint8_t *p) {  // f16_at, with F16C
    uint16_t h;
    std::memcpy(&h, p, sizeof h);
    return _cvtsh_ss(h);
}

// 16 int8 at p, times a scale: (float)q * scale, rounded once, as the scalar widening does.
inline __m512 scaled_int8(const int8_t *p, float scale) {
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
    return _mm512_mul_ps(_mm512_set1_ps(scale), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)));
}

// Q8_0: blocks of 32 = f16 d + 32 int8; w = d * q (dequant.cpp's one multiply).
struct load_q8_0 : by_sixteen<load_q8_0> {
    static int64_t row_bytes(int64_t k) { return k / 32 * 34; }
    static int64_t offset(int64_t j) { return j / 32 * 34; }
    static __m512 vec(const uint8_t *row, int64_t j, __mmask16) {
        const uint8_t *block = row + j / 32 * 34;
        return scaled_int8(reinterpret_cast<const int8_t *>(block + 2 + (j & 31)), f16_scale(block));
    }
};

// Q6_K: super-blocks of 256 = ql[128] | qh[64] | int8 sc[16] | f16 d (dequant.h). Element e of a
// super-block: half h = e / 128, quarter g = e % 128 / 32, l = e % 32; its 6-bit value is
// ql[64h + 32(g & 1) + l] (low nibble for g < 2, high for g >= 2) | (qh[32h + l] >> 2g & 3) << 4,
// minus 32, and w = (d * sc[8h + l / 16 + 2g]) * q, in dequant.cpp's order. 64 elements at a time
// (quarters 2p, 2p + 1 of half h):
//
//   ql[64h .. 64h + 64)          -> low nibbles (p = 0) or high nibbles (p = 1): one zmm
//   qh[32h .. 32h + 32) in both zmm halves, >> (4p | 4p + 2) & 3, << 4: the top two bits
//   sixteen elements c = 0..3 scaled by d * sc[8h + 4p + c]
struct load_q6_k {
    static int64_t row_bytes(int64_t k) { return k / 256 * 210; }
    static int64_t offset(int64_t j) { return j / 256 * 210; }
    static __m512 vec(const uint8_t *row, int64_t j, __mmask16) {
        __m512 four[4];
        vec64(row, j & ~int64_t{63}, four);
        return four[(j & 63) / 16];
    }
    static void vec64(const uint8_t *row, int64_t j, __m512 out[4]) {
        const uint8_t *sb = row + j / 256 * 210;
        const int64_t h = (j & 255) / 128, p = (j & 127) / 64;
        const __m512i ql = _mm512_loadu_si512(sb + 64 * h);
        const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(sb + 128 + 32 * h)));
        // The top two bits moved to bits 4-5 in one shift per half: left by 4, 2 for quarters 0, 1;
        // right by 0, 2 for quarters 2, 3 (a 32-bit shift: what crosses bytes is masked off below).
        const __m512i top = p == 0 ? _mm512_sllv_epi32(qh, _mm512_inserti64x4(_mm512_set1_epi32(4), _mm256_set1_epi32(2), 1))
                                   : _mm512_srlv_epi32(qh, _mm512_inserti64x4(_mm512_set1_epi32(0), _mm256_set1_epi32(2), 1));
        // (nibble & 0x0F) | (top & 0x30), then - 32.
        const __m512i low = p == 0 ? ql : _mm512_srli_epi16(ql, 4);
        const __m512i u = _mm512_and_si512(_mm512_ternarylogic_epi32(low, top, _mm512_set1_epi8(15), 0xE4),
                                           _mm512_set1_epi8(63));
        const __m512i q = _mm512_sub_epi8(u, _mm512_set1_epi8(32));
        // The four scales d * sc[8h + 4p + c], rounded as the scalar code rounds them, through
        // memory: a broadcast from memory is a load, from a register a shuffle.
        alignas(16) float scale[4];
        const __m128i sc = _mm_cvtsi32_si128(load_u32(sb + 192 + 8 * h + 4 * p));
        _mm_store_ps(scale, _mm_mul_ps(_mm_set1_ps(f16_scale(sb + 208)), _mm_cvtepi32_ps(_mm_cvtepi8_epi32(sc))));
        const __m128i q16[4] = {_mm512_castsi512_si128(q), _mm512_extracti32x4_epi32(q, 1),
                                _mm512_extracti32x4_epi32(q, 2), _mm512_extracti32x4_epi32(q, 3)};
        for (int c = 0; c < 4; ++c)
            out[c] = _mm512_mul_ps(_mm512_set1_ps(scale[c]), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q16[c])));
    }
};

inline __mmask16 lanes(int64_t left) {
    return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
}

// R weight rows (starting at row r of w) times M activation rows: y[i * ldy + r + t]. Elements
// are taken 64 at a time (a 16-element masked tail at the end). Each output is summed in one
// order whatever the tile: two FMA chains, for the even and the odd 16-element chunks of the row,
// added at the end, then the lanes (one chain alone capped a one-row GEMV at 16 floats per FMA
// latency: 30 GB/s of F16 per core on Zen 5, below what two cores can stream).
template <class Load, int R, int M>
void tile(const uint8_t *w, int64_t k, int64_t r, const float *x, float *y, int64_t ldy) {
    // The tile's R rows are read side by side: the data not yet asked for starts R-1 rows past the
    // first row's position, so the prefetch distance counts from there.
    const int64_t row_bytes = Load::row_bytes(k), ahead = tuning().head_prefetch_bytes + (R - 1) * row_bytes;
    __m512 acc[R][M][2];
    for (int t = 0; t < R; ++t)
        for (int i = 0; i < M; ++i) acc[t][i][0] = acc[t][i][1] = _mm512_setzero_ps();
    int64_t prefetched = 0;  // bytes of each row prefetched so far (from `ahead` on)
    int64_t j = 0;
    for (; j + 64 <= k; j += 64) {
        const int64_t upto = Load::offset(j + 64);
        for (; prefetched < upto; prefetched += 64)
            for (int t = 0; t < R; ++t)
                _mm_prefetch(reinterpret_cast<const char *>(w + (r + t) * row_bytes + prefetched + ahead), _MM_HINT_T1);
        __m512 wv[R][4];
        for (int t = 0; t < R; ++t) Load::vec64(w + (r + t) * row_bytes, j, wv[t]);
        for (int c = 0; c < 4; ++c)
            for (int i = 0; i < M; ++i) {
                const __m512 xv = _mm512_loadu_ps(x + i * k + j + 16 * c);
                for (int t = 0; t < R; ++t) acc[t][i][c & 1] = _mm512_fmadd_ps(wv[t][c], xv, acc[t][i][c & 1]);
            }
    }
    for (; j < k; j += 16) {
        const __mmask16 m = lanes(k - j);
        const int chain = static_cast<int>(j / 16) & 1;
        for (int t = 0; t < R; ++t) {
            const __m512 wv = Load::vec(w + (r + t) * row_bytes, j, m);
            for (int i = 0; i < M; ++i)
                acc[t][i][chain] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, x + i * k + j), acc[t][i][chain]);
        }
    }
    for (int t = 0; t < R; ++t)
        for (int i = 0; i < M; ++i)
            y[i * ldy + r + t] = sum_lanes16(_mm512_add_ps(acc[t][i][0], acc[t][i][1]));  // float_order.h
}

// Weight rows side by side in a batch tile, by its number of activation rows M. Each weight vector
// serves M FMAs and each activation vector R: R + M loads per R * M FMAs, where one 64-byte load per
// cycle (Zen 5, measured) is the limit; 2 * R * M accumulators (two chains each) must fit in the 32
// registers with room for the loads. (One row against 5 activation rows made a 5-row lookup batch
// cost 2x a token.)
constexpr int batch_tile_rows(int M) { return M <= 3 ? 4 : (M <= 4 ? 3 : (M <= 6 ? 2 : 1)); }

template <class Load, int M>
void rows_times(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const float *x, float *y, int64_t ldy) {
    constexpr int R = batch_tile_rows(M);
    int64_t r = r0;
    for (; r + R <= r1; r += R) tile<Load, R, M>(w, k, r, x, y, ldy);
    for (; r < r1; ++r) tile<Load, 1, M>(w, k, r, x, y, ldy);
}

// The last 1 .. kGemmActs-1 activation rows of a batch, in a single pass.
template <class Load>
void batch_rest(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const float *x, int64_t n, float *y,
                int64_t ldy) {
    switch (n) {
        case 1: return rows_times<Load, 1>(w, k, r0, r1, x, y, ldy);
        case 2: return rows_times<Load, 2>(w, k, r0, r1, x, y, ldy);
        case 3: return rows_times<Load, 3>(w, k, r0, r1, x, y, ldy);
        case 4: return rows_times<Load, 4>(w, k, r0, r1, x, y, ldy);
        case 5: return rows_times<Load, 5>(w, k, r0, r1, x, y, ldy);
        case 6: return rows_times<Load, 6>(w, k, r0, r1, x, y, ldy);
        default: return rows_times<Load, 7>(w, k, r0, r1, x, y, ldy);
    }
}

#include "kernels/dense_gemv_rows.h"

template <class Load>
void matmul(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const float *x, int64_t m, float *y,
            int64_t ldy) {
    if (m == 1) return gemv_rows<Load>(w, k, r0, r1, x, y, ldy);
    // Every kGemmActs activation rows in one pass over the weights; the rest in one more.
    int64_t i = 0;
    for (; i + kGemmActs <= m; i += kGemmActs) rows_times<Load, kGemmActs>(w, k, r0, r1, x + i * k, y + i * ldy, ldy);
    if (i < m) batch_rest<Load>(w, k, r0, r1, x + i * k, m - i, y + i * ldy, ldy);
}

#include "kernels/dense_entry_points.h"

// 16 lanes (the tail masked), then the lanes' sums added.
float dot_f32(const float *a, const float *b, int64_t n) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 m = lanes(n - j);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + j), _mm512_maskz_loadu_ps(m, b + j), acc);
    }
    return _mm512_reduce_add_ps(acc);
}
void axpy_f32(float alpha, const float *x, float *y, int64_t n) {
    const __m512 va = _mm512_set1_ps(alpha);
    for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 m = lanes(n - j);
        _mm512_mask_storeu_ps(y + j, m, _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + j), _mm512_maskz_loadu_ps(m, y + j)));
    }
}

// One query: the prompt path with one row of one head (the same operations, so the same bits).
void attend(const float *q, const float *k, const float *v, int64_t stride, int64_t n_keys, int64_t hd, float scale,
            float *, float *out) {
    attend_rows_avx512(q, k, v, stride, hd, scale, 1, hd, 1, &n_keys, out);
}

// 16 lanes at a time (the tail masked) with the scalar operations (division, then multiply).
void scale_sums(const int32_t *acc, int64_t n, float s, float w_scale, float *y) {
    const __m512 vs = _mm512_set1_ps(s), vw = _mm512_set1_ps(w_scale);
    for (int64_t r = 0; r < n; r += 16) {
        const __mmask16 m = lanes(n - r);
        const __m512 a = _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(m, acc + r));
        _mm512_mask_storeu_ps(y + r, m, _mm512_mul_ps(_mm512_div_ps(a, vs), vw));
    }
}

const dense_kernel_set kAvx512 = {"avx512",    matmul_f32, matmul_f16, matmul_bf16, matmul_q8_0,
                                  matmul_q6_k, dot_f32,    axpy_f32,   attend,      attend_rows_avx512,
                                  scale_sums};

}  // namespace

const dense_kernel_set *dense_kernels_avx512() { return &kAvx512; }

}  // namespace bitnet
