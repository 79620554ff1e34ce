// The AVX2 prompt GEMM (ternary_gemm_avx2.h) with vpmaddubsw: what CPUs without AVX-VNNI run
// (AMD Zen 2/3, Intel before Alder Lake). Each step adds one vpmaddubsw (pairs of u8 code x s8
// activation products, at most 768 in magnitude) into an int16 accumulator; after each block of
// 32 steps (at most 24576) vpmaddwd by 1 folds the pairs into the int32 sums. The int32 sums of a
// tile do not fit in the 16 registers beside its int16 accumulators: they live in L1, touched
// once per block.
#include "kernels/ternary_gemm_avx2.h"

#include "kernels/ternary_gemm.h"

namespace bitnet {
namespace {

struct gemm_maddubs {
    static constexpr int64_t kGroupBlocks = 1;
    // 2 panels x 6 activation rows: 12 int16 accumulators, 2 code vectors and a broadcast.
    static constexpr int kSlicePanels = 2, kTileActs = 6, kOnePanelActs = 12;
    static __m256i step(__m256i acc16, __m256i codes, __m256i act) {
        return _mm256_add_epi16(acc16, _mm256_maddubs_epi16(codes, act));
    }
    static __m256i widen_add(__m256i acc32, __m256i acc16) {
        return _mm256_add_epi32(acc32, _mm256_madd_epi16(acc16, _mm256_set1_epi16(1)));
    }
};

}  // namespace

void i2s_gemm_avx2(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a,
                   const int32_t *a_sums, int64_t m, int32_t *y, int64_t ldy) {
    gemm256::gemm<gemm_maddubs>(w, k, r0, r1, a, a_sums, m, y, ldy);
}

}  // namespace bitnet
