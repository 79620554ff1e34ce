// Scalar reference kernels: the definition every SIMD kernel is tested against, bit for bit.
//
// Weights, I2_S (DESIGN.md section 2): row r of an n x k matrix starts at byte r*k/4 and is k/128
// blocks of 32 bytes. Block b holds elements e = 128*b + j, j = 0..127, as 2-bit codes c = w + 1:
//
//            bit  7 6      5 4       3 2       1 0
//   byte[m] =   [ c[m] | c[32+m] | c[64+m] | c[96+m] ]      m = 0..31
//
//   so byte m of a block feeds columns m, 32+m, 64+m and 96+m.
// Activations: m rows of k int8 values, row i at a + i*k; a_sums[i] = sum of row i (unused
// here: the reference multiplies by w = c - 1 directly).
// Output: y[i*ldy + r] = sum_j w[r][j] * a[i][j] as int32, for r in [r0, r1), i in [0, m).
#include <algorithm>
#include <cassert>
#include <cmath>

#include "kernels/ternary.h"
#include "kernels/ternary_impl.h"

namespace bitnet {

namespace {

// The 2-bit code of element j (0..127) of a block: group j/32 sits at shift 6, 4, 2, 0.
inline int i2s_code(const uint8_t *block, int64_t j) {
    const int shift = 6 - 2 * static_cast<int>(j / 32);
    return (block[j % 32] >> shift) & 3;
}

int32_t i2s_dot_row(const uint8_t *row, const int8_t *a, int64_t k) {
    int32_t acc = 0;
    for (int64_t b = 0; b < k / kI2SBlock; ++b) {
        const uint8_t *block = row + b * kI2SBlockBytes;
        const int8_t *ab = a + b * kI2SBlock;
        for (int m = 0; m < 32; ++m) {  // byte m holds columns m, 32+m, 64+m, 96+m
            const int byte = block[m];
            acc += ((byte >> 6 & 3) - 1) * ab[m] + ((byte >> 4 & 3) - 1) * ab[32 + m] +
                   ((byte >> 2 & 3) - 1) * ab[64 + m] + ((byte & 3) - 1) * ab[96 + m];
        }
    }
    return acc;
}

void i2s_matmul_ref(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a,
                    const int32_t * /*a_sums*/, int64_t m, int32_t *y, int64_t ldy) {
    assert(k % kI2SBlock == 0);
    const int64_t row_bytes = k / 4;
    for (int64_t i = 0; i < m; ++i)
        for (int64_t r = r0; r < r1; ++r) y[i * ldy + r] = i2s_dot_row(w + r * row_bytes, a + i * k, k);
}

void quantize_row_int8_ref(const float *x, int64_t k, int8_t *q, float *scale, int32_t *sum) {
    float amax = 0.0f;
    for (int64_t i = 0; i < k; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float s = int8_scale_from_absmax(amax);  // 127 * (1 / max(amax, 1e-5))
    int32_t total = 0;
    for (int64_t i = 0; i < k; ++i) {
        // One f32 multiply, then round half to even: torch's (x*scale).round().clamp(-128,127).
        q[i] = quantize_one_int8(x[i], s);
        total += q[i];
    }
    *scale = s;
    *sum = total;
}

const ternary_kernel_set kScalar = {"scalar", i2s_matmul_ref, quantize_row_int8_ref};

}  // namespace

const ternary_kernel_set *ternary_kernels_scalar() {
    return &kScalar;
}

void i2s_pack(const int8_t *w, int64_t n, int64_t k, uint8_t *out) {
    const int64_t total = n * k;
    assert(total % kI2SBlock == 0);
    for (int64_t b = 0; b < total / kI2SBlock; ++b) {
        const int8_t *wb = w + b * kI2SBlock;
        uint8_t *ob = out + b * kI2SBlockBytes;
        for (int64_t m = 0; m < kI2SBlockBytes; ++m) {
            // A value outside -1..1 is a caller bug; mask so it cannot spill into a neighbour.
            auto code = [&](int64_t j) { return static_cast<unsigned>(wb[j] + 1) & 3u; };
            ob[m] = static_cast<uint8_t>(code(m) << 6 | code(32 + m) << 4 | code(64 + m) << 2 | code(96 + m));
        }
    }
}

void i2s_unpack(const uint8_t *packed, int64_t n, int64_t k, int8_t *w) {
    const int64_t total = n * k;
    assert(total % kI2SBlock == 0);
    for (int64_t b = 0; b < total / kI2SBlock; ++b)
        for (int64_t j = 0; j < kI2SBlock; ++j)
            w[b * kI2SBlock + j] = static_cast<int8_t>(i2s_code(packed + b * kI2SBlockBytes, j) - 1);
}

}  // namespace bitnet
