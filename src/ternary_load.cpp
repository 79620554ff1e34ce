// Binding ternary tensors of every kind we read as I2_S codes (see ternary_load.h), and the
// detection of bitnet.cpp's ARM I2_S layout.
#include "ternary_load.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "finite_check.h"
#include "kernels/dense.h"
#include "kernels/ternary.h"
#include "kernels/tq.h"
#include "quant_types.h"

namespace bitnet {

namespace {

bool is_float_type(uint32_t type) { return type == GGML_F32 || type == GGML_F16 || type == GGML_BF16; }

// Any 2-bit code 3 (never written by an I2_S quantizer) in these bytes.
bool has_unused_code(const uint8_t *codes, int64_t n_bytes) {
    uint8_t any = 0;
    for (int64_t i = 0; i < n_bytes; ++i) any |= codes[i] & (codes[i] >> 1) & 0x55;
    return any != 0;
}

// Codes of 64-element/16-byte blocks (bitnet.cpp's ARM build) -> canonical I2_S, row by row.
void repack_arm64_i2s(const uint8_t *src, int64_t k, int64_t rows, uint8_t *dst) {
    std::vector<int8_t> w(static_cast<size_t>(k));
    for (int64_t r = 0; r < rows; ++r) {
        const uint8_t *row = src + r * k / 4;
        for (int64_t j = 0; j < k / 4; ++j)
            for (int s = 0; s < 4; ++s)  // byte j of 64-block j/16 holds elements 16s + j%16
                w[(j / 16) * 64 + 16 * s + j % 16] = static_cast<int8_t>(((row[j] >> (6 - 2 * s)) & 3) - 1);
        i2s_pack(w.data(), 1, k, dst + r * k / 4);
    }
}

// Rows whose length is not a multiple of 128: bitnet.cpp packs the flattened tensor, so row r
// starts at element r*k, possibly inside a block. Element e of the flat array sits in block
// e / B (B = 128, or 64 for the ARM layout) at position p = e % B: byte e/B * B/4 + p % (B/4),
// bits 6 - 2 * (p / (B/4)). Each row is decoded and repacked k_pad long, zero-padded.
void repack_flat_i2s(const uint8_t *src, int64_t k, int64_t k_pad, int64_t rows, i2s_layout layout,
                     uint8_t *dst) {
    const int64_t block = layout == i2s_layout::canonical ? kI2SBlock : 64, quarter = block / 4;
    std::vector<int8_t> w(static_cast<size_t>(k_pad), 0);
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t j = 0; j < k; ++j) {
            const int64_t e = r * k + j, p = e % block;
            const uint8_t byte = src[e / block * quarter + p % quarter];
            w[static_cast<size_t>(j)] = static_cast<int8_t>(((byte >> (6 - 2 * (p / quarter))) & 3) - 1);
        }
        i2s_pack(w.data(), 1, k_pad, dst + r * k_pad / 4);
    }
}

std::string bind_i2s(const gguf_tensor &t, int64_t k, int64_t rows, i2s_layout layout, ternary_matrix *out) {
    if (k * rows % kI2SBlock != 0)  // gguf.cpp refuses these already; kept for other callers
        return "has " + std::to_string(k * rows) + " elements, not a multiple of 128: I2_S cannot hold it";
    const int64_t n_bytes = k * rows / 4;
    std::memcpy(&out->scale, t.data + n_bytes, sizeof(float));
    if (!std::isfinite(out->scale) || out->scale < 0)
        return "has scale " + std::to_string(out->scale) + " (must be finite and >= 0); the file is corrupt";
    if (has_unused_code(t.data, n_bytes))
        return "holds the unused 2-bit code 3: not a valid I2_S tensor (a corrupt file?)";
    if (layout == i2s_layout::canonical && k == out->k_pad) {
        out->codes = t.data;
        return "";
    }
    out->owned.resize(static_cast<size_t>(out->k_pad * rows / 4));
    if (k == out->k_pad) repack_arm64_i2s(t.data, k, rows, out->owned.data());
    else repack_flat_i2s(t.data, k, out->k_pad, rows, layout, out->owned.data());
    out->codes = out->owned.data();
    return "";
}

// TQ2_0 / TQ1_0 -> I2_S codes. A block whose scale is 0, or whose codes are all 0, contributes
// nothing; the others decide: one shared scale (the usual case) or one per block.
std::string bind_tq(const gguf_tensor &t, int64_t k, int64_t rows, ternary_matrix *out) {
    const bool tq2 = t.type == GGML_TQ2_0;
    const int64_t nb = k / kTQBlock, block_bytes = tq2 ? kTQ2BlockBytes : kTQ1BlockBytes;
    std::vector<float> scales(static_cast<size_t>(rows * nb));
    std::vector<int8_t> w(static_cast<size_t>(k));
    out->owned.resize(static_cast<size_t>(k * rows / 4));
    float shared = 0;
    bool seen = false, uniform = true;
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t b = 0; b < nb; ++b) {
            const uint8_t *block = t.data + (r * nb + b) * block_bytes;
            int8_t *wb = w.data() + b * kTQBlock;
            float d = 0;
            if (tq2 && !tq2_0_decode_block(block, wb, &d))
                return "holds the unused 2-bit code 3: not a valid TQ2_0 tensor (a corrupt file?)";
            if (!tq2) tq1_0_decode_block(block, wb, &d);
            if (!std::isfinite(d)) return "has a block scale that is NaN or infinite; the file is corrupt";
            const bool any = std::any_of(wb, wb + kTQBlock, [](int8_t v) { return v != 0; });
            if (d == 0 || !any) {
                std::fill(wb, wb + kTQBlock, int8_t{0});
                d = 0;
            } else if (!seen) {
                shared = d;
                seen = true;
            } else if (d != shared) {
                uniform = false;
            }
            scales[static_cast<size_t>(r * nb + b)] = d;
        }
        i2s_pack(w.data(), 1, k, out->owned.data() + r * k / 4);
    }
    out->codes = out->owned.data();
    out->scale = shared;
    if (!uniform) out->block_scales = std::move(scales);
    return "";
}

// Float tensors holding t * scale (our f32/f16/bf16 outtypes): the scale is max|w|, and every
// value must be 0 or +-scale.
std::string bind_float(const gguf_tensor &t, int64_t k, int64_t rows, ternary_matrix *out) {
    std::vector<float> row(static_cast<size_t>(k));
    std::vector<int8_t> w(static_cast<size_t>(out->k_pad), 0);
    const int64_t elem = t.type == GGML_F32 ? 4 : 2;
    float scale = 0;
    for (int64_t r = 0; r < rows; ++r) {
        row_to_f32(t.type, t.data + r * k * elem, k, row.data());
        for (float v : row) scale = std::max(scale, std::fabs(v));
        if (first_non_finite(GGML_F32, row.data(), k) >= 0)
            return "contains NaN or Inf (row " + std::to_string(r) + "); the file is corrupt";
    }
    out->owned.resize(static_cast<size_t>(out->k_pad * rows / 4));
    for (int64_t r = 0; r < rows; ++r) {
        row_to_f32(t.type, t.data + r * k * elem, k, row.data());
        for (int64_t j = 0; j < k; ++j) {
            const float v = row[j];
            const int c = v == 0 ? 0 : (v == scale ? 1 : (v == -scale ? -1 : 2));
            if (c == 2)
                return "is not ternary (values other than 0 and +-" + std::to_string(scale) +
                       "); convert the checkpoint with --outtype i2_s";
            w[static_cast<size_t>(j)] = static_cast<int8_t>(c);
        }
        i2s_pack(w.data(), 1, out->k_pad, out->owned.data() + r * out->k_pad / 4);
    }
    out->codes = out->owned.data();
    out->scale = scale;
    return "";
}

std::string type_name(uint32_t type) {
    const quant_type_traits *tr = quant_type_find(type);
    return tr ? tr->name : "id " + std::to_string(type);
}

}  // namespace

std::string bind_ternary(const gguf_tensor &t, int64_t n_in, int64_t n_out, i2s_layout layout,
                         ternary_matrix *out) {
    out->n_in = n_in;
    out->n_out = n_out;
    out->k_pad = (n_in + kI2SBlock - 1) / kI2SBlock * kI2SBlock;
    if ((t.type == GGML_TQ2_0 || t.type == GGML_TQ1_0) && n_in % kTQBlock != 0)
        return "has rows of " + std::to_string(n_in) + " elements: " + type_name(t.type) +
               " packs each row in blocks of 256, so it cannot hold them (convert to I2_S or F16 instead)";
    if (t.type == GGML_I2_S) return bind_i2s(t, n_in, n_out, layout, out);
    if (t.type == GGML_TQ2_0 || t.type == GGML_TQ1_0) return bind_tq(t, n_in, n_out, out);
    if (is_float_type(t.type)) return bind_float(t, n_in, n_out, out);
    // Id 39 gets here only where gguf.cpp took it for upstream's MXFP4 (nothing said bitnet.cpp).
    if (t.type == GGML_TL2_OR_MXFP4)
        return "has type 39, MXFP4 in this (non-bitnet.cpp) file: 4-bit floats, not a ternary type this "
               "engine runs (supported: I2_S, TQ2_0, TQ1_0, F32, F16, BF16)";
    if (t.type == GGML_TL1)
        return "has type " + type_name(t.type) +
               ", bitnet.cpp's lookup-table layout, whose packing depends on the kernel tiling of the "
               "build that wrote it and cannot be decoded from the file alone; convert the model from its "
               "Hugging Face checkpoint instead (setup_env.py -md DIR, or "
               "utils/convert-hf-to-gguf-bitnet.py)";
    return "has type " + type_name(t.type) +
           ", which is not a ternary type this engine runs (supported: I2_S, TQ2_0, TQ1_0, F32, F16, BF16)";
}

}  // namespace bitnet
