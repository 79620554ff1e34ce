// Refusing weights that are not numbers: a NaN or infinity in a float embedding, head or norm
// would turn every logit of every token into NaN, silently. Checked when a model loads.
#pragma once
#include <cstdint>

namespace bitnet {

// Index of the first NaN or infinite value among the n F32 / F16 / BF16 values at data (by ggml
// type id), or -1 when all are finite (or the type is another one). A whole-exponent test on the
// bits, in blocks the compiler vectorizes: the 2B-4T shape's 656 MB F16 embedding costs one read.
int64_t first_non_finite(uint32_t ggml_type, const void *data, int64_t n);

}  // namespace bitnet
