// Scalar decoding of TQ1_0 / TQ2_0 blocks and the reference matmul of per-block-scaled ternary
// matrices (layouts drawn in kernels/tq.h). The loader uses the decoders once per tensor to
// repack TQ data into I2_S codes; the matmul runs only for tensors whose blocks' scales
// differ, which llama.cpp's converter never writes (all its non-zero blocks share one scale).
#include <cassert>
#include <cstring>

#include "kernels/dense.h"
#include "kernels/ternary.h"
#include "kernels/tq.h"

namespace bitnet {

namespace {

// Trit n (0 = most significant) of a base-3 fixed-point byte: ((byte * 3^n) mod 256) * 3 >> 8.
inline int8_t trit(uint8_t byte, int n) {
    static const uint8_t kPow3[5] = {1, 3, 9, 27, 81};
    const uint8_t shifted = static_cast<uint8_t>(byte * kPow3[n]);
    return static_cast<int8_t>((static_cast<uint16_t>(shifted) * 3) >> 8);
}

// Exact int32 dot of one 128-weight I2_S block (32 bytes) with 128 int8 activations.
int32_t i2s_block_dot(const uint8_t *block, const int8_t *a) {
    int32_t acc = 0;
    for (int m = 0; m < 32; ++m) {
        const int byte = block[m];
        acc += ((byte >> 6 & 3) - 1) * a[m] + ((byte >> 4 & 3) - 1) * a[32 + m] +
               ((byte >> 2 & 3) - 1) * a[64 + m] + ((byte & 3) - 1) * a[96 + m];
    }
    return acc;
}

}  // namespace

bool tq2_0_decode_block(const uint8_t *block, int8_t *w, float *d) {
    bool valid = true;
    for (int h = 0; h < 2; ++h) {
        for (int n = 0; n < 4; ++n) {
            for (int m = 0; m < 32; ++m) {
                const int code = (block[32 * h + m] >> (2 * n)) & 3;
                valid = valid && code != 3;
                w[128 * h + 32 * n + m] = static_cast<int8_t>(code - 1);
            }
        }
    }
    *d = f16_at(block + 64);
    return valid;
}

void tq1_0_decode_block(const uint8_t *block, int8_t *w, float *d) {
    for (int n = 0; n < 5; ++n) {
        for (int m = 0; m < 32; ++m) w[32 * n + m] = trit(block[m], n) - 1;
        for (int m = 0; m < 16; ++m) w[160 + 16 * n + m] = trit(block[32 + m], n) - 1;
    }
    for (int n = 0; n < 4; ++n)
        for (int j = 0; j < 4; ++j) w[240 + 4 * n + j] = trit(block[48 + j], n) - 1;
    *d = f16_at(block + 52);
}

void ternary_blocked_matmul_ref(const uint8_t *codes, const float *block_scales, int64_t k, int64_t r0,
                                int64_t r1, const int8_t *a, const float *a_scale, int64_t m, float *y,
                                int64_t ldy) {
    assert(k % kTQBlock == 0);
    const int64_t nb = k / kTQBlock, row_bytes = k / 4, block_bytes = kTQBlock / 4;
    for (int64_t i = 0; i < m; ++i) {
        const int8_t *ai = a + i * k;
        for (int64_t r = r0; r < r1; ++r) {
            const uint8_t *row = codes + r * row_bytes;
            float acc = 0.0f;
            for (int64_t b = 0; b < nb; ++b) {
                const uint8_t *blk = row + b * block_bytes;
                const int8_t *ab = ai + b * kTQBlock;
                const int32_t dot =
                    i2s_block_dot(blk, ab) + i2s_block_dot(blk + kI2SBlockBytes, ab + kI2SBlock);
                acc += block_scales[r * nb + b] * static_cast<float>(dot);
            }
            y[i * ldy + r] = acc / a_scale[i];
        }
    }
}

}  // namespace bitnet
