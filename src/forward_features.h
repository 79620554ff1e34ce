// Small pieces of the forward pass that only some architectures use (model.h's row flags):
// GELU-tanh, the sliding attention window's first key, RoPE tables for a given base.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

namespace bitnet {

// GELU, tanh approximation (PyTorch's gelu(approximate="tanh"), Gemma's gelu_pytorch_tanh):
// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), in f32.
inline float gelu_tanh(float x) {
    constexpr float kBeta = 0.7978845608028654f;  // sqrt(2 / pi)
    constexpr float kKappa = 0.044715f;
    const float inner = kBeta * (x + kKappa * x * x * x);
    return 0.5f * x * (1.0f + std::tanh(inner));
}

// The first key position a query at `pos` sees: the last `window` positions up to and including
// its own (a key at p is visible iff pos - p < window, as transformers' and llama.cpp's masks);
// window 0 means all of them.
inline int64_t window_start(int64_t pos, int64_t window) {
    return window > 0 ? std::max<int64_t>(0, pos + 1 - window) : 0;
}

// inv_freq_j = 1 / theta^(2j/d), angle = pos * inv_freq_j, all in f32 like the reference;
// tables of [n_ctx][head_dim / 2].
inline void fill_rope_tables(float theta, int64_t head_dim, int64_t n_ctx, float *cos_out, float *sin_out) {
    const int64_t half = head_dim / 2;
    for (int64_t j = 0; j < half; ++j) {
        const float exponent = static_cast<float>(2 * j) / static_cast<float>(head_dim);
        const float inv_freq = 1.0f / std::pow(theta, exponent);
        for (int64_t p = 0; p < n_ctx; ++p) {
            const float angle = static_cast<float>(p) * inv_freq;
            cos_out[p * half + j] = std::cos(angle);
            sin_out[p * half + j] = std::sin(angle);
        }
    }
}

}  // namespace bitnet
