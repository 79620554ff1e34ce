// The AVX2 int8-activation head with vpmaddubsw + vpmaddwd (head_int8_avx2.h).
#include "kernels/head_int8_avx2.h"

namespace bitnet {
namespace {

struct dot_maddubs {  // |w| <= 128, |q| <= 127: a pair's sum stays below 2^15, no saturation
    static __m256i dot(__m256i u, __m256i s) {
        return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
    }
};

const head_int8_kernel_set kAvx2 = {"avx2", head_q8_0_avx2<dot_maddubs>, head_q6_k_avx2};

}  // namespace

const head_int8_kernel_set *head_int8_kernels_avx2() { return &kAvx2; }

}  // namespace bitnet
