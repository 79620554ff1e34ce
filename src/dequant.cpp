// Q8_0 and Q6_K -> f32 (layouts in dequant.h).
#include "dequant.h"

#include <cmath>
#include <cstring>

#include "kernels/dense.h"
#include "quant_types.h"

namespace bitnet {

namespace {

void q8_0_block(const uint8_t *block, float *out) {
    const float d = f16_at(block);
    const auto *q = reinterpret_cast<const int8_t *>(block + 2);
    for (int j = 0; j < 32; ++j) out[j] = d * static_cast<float>(q[j]);
}

void q6_k_block(const uint8_t *block, float *out) {
    const uint8_t *ql = block, *qh = block + 128;
    const auto *sc = reinterpret_cast<const int8_t *>(block + 192);
    const float d = f16_at(block + 208);
    for (int half = 0; half < 2; ++half, ql += 64, qh += 32, sc += 8, out += 128) {
        for (int l = 0; l < 32; ++l) {
            const int is = l / 16;
            const int q1 = ((ql[l] & 15) | ((qh[l] & 3) << 4)) - 32;
            const int q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            out[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
            out[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
            out[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
            out[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
        }
    }
}

struct widened_type {
    uint32_t id;
    int64_t block, bytes;
    void (*block_to_f32)(const uint8_t *, float *);
    int64_t scale_offset;  // where the block's f16 scale d lies
};

const widened_type kWidened[] = {
    {GGML_Q8_0, 32, 34, q8_0_block, 0},
    {GGML_Q6_K, 256, 210, q6_k_block, 208},
};

const widened_type *find_widened(uint32_t id) {
    for (const widened_type &w : kWidened)
        if (w.id == id) return &w;
    return nullptr;
}

}  // namespace

bool is_widened_type(uint32_t ggml_type) { return find_widened(ggml_type) != nullptr; }

bool dequantize_to_f32(uint32_t ggml_type, const uint8_t *data, int64_t n, float *out) {
    const widened_type *w = find_widened(ggml_type);
    if (w == nullptr || n % w->block != 0) return false;
    for (int64_t b = 0; b < n / w->block; ++b) w->block_to_f32(data + b * w->bytes, out + b * w->block);
    return true;
}

bool quantized_scales_finite(uint32_t ggml_type, const uint8_t *data, int64_t n) {
    const widened_type *w = find_widened(ggml_type);
    if (w == nullptr || n % w->block != 0) return false;
    for (int64_t b = 0; b < n / w->block; ++b)
        if (!std::isfinite(f16_at(data + b * w->bytes + w->scale_offset))) return false;
    return true;
}

}  // namespace bitnet
