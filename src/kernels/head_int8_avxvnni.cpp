// The AVX2 int8-activation head with AVX-VNNI's vpdpbusd for Q8_0 (head_int8_avx2.h); Q6_K's
// sums need per-16 scales, which vpmaddwd applies on the way, so it keeps the AVX2 code.
// Picked only when the ternary set is avx2vnni, i.e. where CPUID says AVX-VNNI.
#include "kernels/head_int8_avx2.h"

namespace bitnet {
namespace {

struct dot_vnni {
    static __m256i dot(__m256i u, __m256i s) { return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s); }
};

const head_int8_kernel_set kAvxVnni = {"avx2vnni", head_q8_0_avx2<dot_vnni>, head_q6_k_avx2};

}  // namespace

const head_int8_kernel_set *head_int8_kernels_avxvnni() { return &kAvxVnni; }

}  // namespace bitnet
