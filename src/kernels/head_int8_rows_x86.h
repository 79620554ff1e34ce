// What the x86 int8-activation head kernels (head_int8_avx2.h, head_int8_avx512.cpp) share: the
// f16 block scale, and the Q6_K head's loop over rows and super-blocks around an ISA's exact
// int32 super-block sum (head_int8.h's definition: y = fma(T_b, d_w * d_x, y) over b in order).
// Internal linkage: each including file is compiled with its own flags.
#pragma once
#include "kernels/simd_x86.h"

#include <cmath>
#include <cstring>

#include "kernels/head_int8.h"
#include "kernels/tuning.h"

namespace bitnet {
namespace {

inline float f16_scale_x86(const uint8_t *p) {
    uint16_t h;
    std::memcpy(&h, p, sizeof h);
    return _cvtsh_ss(h);
}

// block_sum(super-block, its 256 int8 activations, their 16 sub-block sums) -> T_b.
template <class BlockSum>
void head_q6_k_rows(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const head_acts &a, int64_t m, float *y,
                    int64_t ldy, BlockSum &&block_sum) {
    const int64_t nb = k / 256, row_bytes = nb * 210, ahead = tuning().head_prefetch_bytes;
    for (int64_t r = r0; r < r1; ++r) {
        const uint8_t *row = w + r * row_bytes;
        for (int64_t i = 0; i < m; ++i) {
            float acc = 0.0f;
            for (int64_t b = 0; b < nb; ++b) {
                const uint8_t *sb = row + b * 210;
                if (i == 0)
                    for (int c = 0; c < 210; c += 64) _mm_prefetch(reinterpret_cast<const char *>(sb + c + ahead), _MM_HINT_T1);
                const int32_t total = block_sum(sb, a.q + i * k + 256 * b, a.bsum + i * (k / 16) + 16 * b);
                acc = std::fma(static_cast<float>(total), f16_scale_x86(sb + 208) * a.d[i * nb + b], acc);
            }
            y[i * ldy + r] = acc;
        }
    }
}

}  // namespace
}  // namespace bitnet
