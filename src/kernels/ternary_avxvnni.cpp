// AVX-VNNI kernels (compiled with -mavx2 -mfma -mf16c -mavxvnni; handed out only where CPUID
// says AVX-VNNI: Intel Alder Lake and later, AMD Zen 5): the I2_S tiles of
// ternary_avx2_tiles.h with the VEX-encoded vpdpbusd, which multiplies u8 codes by s8
// activations and adds groups of four straight into int32 lanes (exact, no int16 stage). Its
// sum is ready a few cycles after it starts, so the decode GEMV spreads one row over 8 chains.
#include "kernels/ternary_avx2_tiles.h"
#include "kernels/ternary_gemm.h"

#include <cpuid.h>

namespace bitnet {
namespace {

struct dot_vnni {
    static constexpr int64_t kGroupBlocks = kI2SMaxK;  // int32 lanes: no widening step
    static constexpr int kGemvChains = 8;
    static __m256i step(__m256i acc, __m256i codes, __m256i act) { return _mm256_dpbusd_avx_epi32(acc, codes, act); }
    static __m256i widen_add(__m256i acc32, __m256i inner) { return _mm256_add_epi32(acc32, inner); }
};

// As the vpmaddubsw set (ternary_avx2.cpp): large batches to the register-tiled GEMM.
void i2s_matmul_avxvnni(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a,
                        const int32_t *a_sums, int64_t m, int32_t *y, int64_t ldy) {
    if (m >= tuning().avx2_gemm_min_batch) i2s_gemm_avxvnni(w, k, r0, r1, a, a_sums, m, y, ldy);
    else i2s_matmul_tiles<dot_vnni>(w, k, r0, r1, a, a_sums, m, y, ldy);
}

bool cpu_has_avxvnni() {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) return false;
    return (eax >> 4) & 1u;  // CPUID.(EAX=7,ECX=1):EAX[4] = AVX-VNNI
}

}  // namespace

const ternary_kernel_set *ternary_kernels_avxvnni() {
    static const ternary_kernel_set set = {"avx2vnni", i2s_matmul_avxvnni,
                                           ternary_kernels_avx2_maddubs()->quantize_row_int8};
    static const bool has = cpu_has_avxvnni();
    return has ? &set : nullptr;
}

}  // namespace bitnet
