// Scalar reference of the int8-activation head (definition in head_int8.h), the activation
// quantizer every set shares, and the choice of set.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/dense.h"
#include "kernels/float_order.h"
#include "kernels/head_int8.h"
#include "kernels/ternary.h"
#include "quant_types.h"

namespace bitnet {

int64_t head_act_block(uint32_t ggml_type) {
    if (ggml_type == GGML_Q8_0) return 32;
    if (ggml_type == GGML_Q6_K) return 256;
    return 0;
}

void quantize_head_acts(const float *x, int64_t m, int64_t k, int64_t block, int8_t *q, float *d, int16_t *bsum) {
    for (int64_t b = 0; b < m * k / block; ++b) {
        const float *xb = x + b * block;
        float amax = 0.0f;
        for (int64_t j = 0; j < block; ++j) amax = std::max(amax, std::fabs(xb[j]));
        const float a = std::max(amax, 1e-5f), s = 127.0f / a;
        d[b] = a / 127.0f;
        for (int64_t j = 0; j < block; ++j) {
            const float v = std::nearbyint(xb[j] * s);
            q[b * block + j] = static_cast<int8_t>(std::min(std::max(v, -127.0f), 127.0f));
        }
    }
    if (bsum == nullptr) return;
    for (int64_t t = 0; t < m * k / 16; ++t) {
        int32_t sum = 0;
        for (int j = 0; j < 16; ++j) sum += q[16 * t + j];
        bsum[t] = static_cast<int16_t>(sum);
    }
}

namespace {

void matmul_q8_0_ref(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const head_acts &a, int64_t m, float *y,
                     int64_t ldy) {
    const int64_t nb = k / 32;
    for (int64_t r = r0; r < r1; ++r) {
        const uint8_t *row = w + r * nb * 34;
        for (int64_t i = 0; i < m; ++i) {
            const int8_t *q = a.q + i * k;
            float lane[kSumLanes] = {};
            for (int64_t b = 0; b < nb; ++b) {
                const uint8_t *block = row + b * 34;
                const auto *wq = reinterpret_cast<const int8_t *>(block + 2);
                const float db = f16_at(block) * a.d[i * nb + b];
                for (int g = 0; g < 8; ++g) {
                    int32_t isum = 0;
                    for (int e = 4 * g; e < 4 * g + 4; ++e) isum += wq[e] * q[32 * b + e];
                    float &l = lane[8 * (b % 2) + g];
                    l = std::fma(static_cast<float>(isum), db, l);
                }
            }
            y[i * ldy + r] = sum_lanes16(lane);
        }
    }
}

// Element e of a Q6_K super-block, minus 32 (dequant.h's layout).
int q6_value(const uint8_t *sb, int e) {
    const int h = e / 128, g = e % 128 / 32, l = e % 32;
    const uint8_t ql = sb[64 * h + 32 * (g & 1) + l];
    const int low = g < 2 ? ql & 15 : ql >> 4;
    return (low | ((sb[128 + 32 * h + l] >> (2 * g)) & 3) << 4) - 32;
}

void matmul_q6_k_ref(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const head_acts &a, int64_t m, float *y,
                     int64_t ldy) {
    const int64_t nb = k / 256;
    for (int64_t r = r0; r < r1; ++r) {
        const uint8_t *row = w + r * nb * 210;
        for (int64_t i = 0; i < m; ++i) {
            float acc = 0.0f;
            for (int64_t b = 0; b < nb; ++b) {
                const uint8_t *sb = row + b * 210;
                const int8_t *q = a.q + i * k + 256 * b;
                int32_t total = 0;
                for (int e = 0; e < 256; ++e) {
                    const int h = e / 128, g = e % 128 / 32, l = e % 32;
                    const int sc = static_cast<int8_t>(sb[192 + 8 * h + 2 * g + l / 16]);
                    total += sc * q6_value(sb, e) * q[e];
                }
                acc = std::fma(static_cast<float>(total), f16_at(sb + 208) * a.d[i * nb + b], acc);
            }
            y[i * ldy + r] = acc;
        }
    }
}

const head_int8_kernel_set kScalar = {"scalar", matmul_q8_0_ref, matmul_q6_k_ref};

}  // namespace

const head_int8_kernel_set *head_int8_kernels_scalar() { return &kScalar; }

const head_int8_kernel_set *head_int8_kernels_active() {
    const ternary_kernel_set *t = ternary_kernels_active(nullptr);
    const char *name = t != nullptr ? t->name : "scalar";
    const head_int8_kernel_set *set = nullptr;
    if (std::strcmp(name, "avx512vnni") == 0 || std::strcmp(name, "amx") == 0) set = head_int8_kernels_avx512vnni();
    else if (std::strcmp(name, "avx512bw") == 0) set = head_int8_kernels_avx512bw();
    else if (std::strcmp(name, "avx2vnni") == 0) set = head_int8_kernels_avxvnni();
    else if (std::strcmp(name, "avx2") == 0) set = head_int8_kernels_avx2();
    else if (std::strcmp(name, "neon") == 0) set = head_int8_kernels_neon();
    return set != nullptr ? set : &kScalar;
}

#if !(defined(__x86_64__) || defined(_M_X64))
const head_int8_kernel_set *head_int8_kernels_avx2() { return nullptr; }
const head_int8_kernel_set *head_int8_kernels_avxvnni() { return nullptr; }
const head_int8_kernel_set *head_int8_kernels_avx512bw() { return nullptr; }
const head_int8_kernel_set *head_int8_kernels_avx512vnni() { return nullptr; }
#endif
#if !defined(__aarch64__)
const head_int8_kernel_set *head_int8_kernels_neon() { return nullptr; }
#endif

}  // namespace bitnet
