// Ternary weights from every file kind we read, bound as I2_S codes (what the kernels run):
//   I2_S, canonical (128-element blocks): used in place, zero-copy;
//   I2_S written by bitnet.cpp's ARM build (64-element blocks): repacked;
//   TQ2_0 / TQ1_0 (llama.cpp): repacked; one f32 scale when every non-zero block has the same
//     f16 scale (what llama.cpp's converter writes), else one scale per 256-weight block;
//   F32 / F16 / BF16 holding t * scale: checked to be ternary, repacked.
// Rows of any length: a row that is not a multiple of 128 long is repacked, padded with zero
// weights to ternary_matrix::k_pad (I2_S then needs rows * n_in % 128 == 0, as bitnet.cpp
// writes it; TQ1_0 / TQ2_0 rows must be a multiple of 256).
// TL1 / TL2 are refused: their layout is the build-time kernel tiling of the bitnet.cpp that
// wrote them, which the file does not record.
#pragma once
#include <cstdint>
#include <string>

#include "gguf.h"
#include "model.h"

namespace bitnet {

// How I2_S codes are grouped: 128 elements in 32 bytes (DESIGN section 2: x86 bitnet.cpp,
// the published files, our converter) or 64 in 16 bytes (bitnet.cpp built for ARM):
//   canonical: byte[m] = c[m]<<6 | c[32+m]<<4 | c[64+m]<<2 | c[96+m]   per 128, m < 32
//   arm64:     byte[m] = c[m]<<6 | c[16+m]<<4 | c[32+m]<<2 | c[48+m]   per 64,  m < 16
// Both are n/4 bytes + a 32-byte scale tail, so only the weights can tell them apart.
enum class i2s_layout { canonical, arm64 };

// Bind tensor t (n_out rows of n_in, shape already checked) into *out. Returns "" or a reason
// without the file or tensor name (the caller adds them).
std::string bind_ternary(const gguf_tensor &t, int64_t n_in, int64_t n_out, i2s_layout layout,
                         ternary_matrix *out);

// The layout of a file's I2_S tensors. BITNET_I2S_LAYOUT=128 or 64 forces one; otherwise the
// weights decide (see the .cpp): the correct reading keeps the model's structure across
// tensors, the wrong one scrambles it. *note explains an ARM verdict for the model description.
i2s_layout detect_i2s_layout(const gguf_file &f, const hparams &hp, std::string *note, std::string *error);

}  // namespace bitnet
