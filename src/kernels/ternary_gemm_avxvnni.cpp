// The AVX2 prompt GEMM (ternary_gemm_avx2.h) with the VEX-encoded vpdpbusd of AVX-VNNI (Intel
// Alder Lake and later, AMD Zen 5): u8 codes x s8 activations, four products straight into each
// int32 lane (exact, no int16 stage), so the tile's accumulators are its int32 sums.
#include "kernels/ternary_gemm_avx2.h"

#include "kernels/ternary_gemm.h"

namespace bitnet {
namespace {

struct gemm_vnni {
    static constexpr int64_t kGroupBlocks = kI2SMaxK;  // int32 lanes: no widening step
    // 2 panels x 6 activation rows: 12 accumulators, 2 code vectors and a broadcast.
    static constexpr int kSlicePanels = 2, kTileActs = 6, kOnePanelActs = 12;
    // GCC gives the intrinsic's result a new register and copies the accumulators back at every
    // iteration (see ternary_gemm_avx512.cpp); tied to its register here. Clang keeps the intrinsic.
    static __m256i step(__m256i acc, __m256i codes, __m256i act) {
#if defined(__GNUC__) && !defined(__clang__)
        asm("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(codes), "x"(act));
        return acc;
#else
        return _mm256_dpbusd_avx_epi32(acc, codes, act);
#endif
    }
    static __m256i widen_add(__m256i acc32, __m256i inner) { return _mm256_add_epi32(acc32, inner); }
};

}  // namespace

void i2s_gemm_avxvnni(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a,
                      const int32_t *a_sums, int64_t m, int32_t *y, int64_t ldy) {
    gemm256::gemm<gemm_vnni>(w, k, r0, r1, a, a_sums, m, y, ldy);
}

}  // namespace bitnet
