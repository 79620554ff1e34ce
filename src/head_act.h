// The output head's activation mode: exact for the stored weights (default), or int8
// activations per block with integer dot products (kernels/head_int8.h), for Q8_0 / Q6_K heads.
#pragma once
#include <cstdint>
#include <string>

#include "forward.h"

namespace bitnet {

// Empty when the model's head can take `mode` (BITNET_HEAD_ACT_*), else why not, in one line.
std::string head_act_problem(const model &m, int mode);
// Switch ctx's head to `mode` (checked with head_act_problem first); false on allocation failure.
bool context_set_head_act(context &ctx, int mode);
// logits[i * n_vocab + r] for the rows rows of x (n_embd floats each, after output_norm) through
// ctx's int8-activation head.
void head_int8_logits(context &ctx, const float *x, int64_t rows, float *logits);

}  // namespace bitnet
