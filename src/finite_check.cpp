#include "finite_check.h"

#include <algorithm>

#include "quant_types.h"

namespace bitnet {

namespace {

// Elements per block: any non-finite value in a block is found by an OR over it (no branch in the
// inner loop), and only such a block is searched for the index.
constexpr int64_t kBlock = 4096;

// All-ones exponent (Inf or NaN) of each value: (bits & mask) == mask.
template <typename Bits>
int64_t first_with_exponent(const void *data, int64_t n, Bits mask) {
    const auto *p = static_cast<const Bits *>(data);
    for (int64_t b = 0; b < n; b += kBlock) {
        const int64_t end = b + kBlock < n ? b + kBlock : n;
        Bits any = 0;  // packed compares and ORs (SSE2 has no unsigned 16-bit min)
        for (int64_t i = b; i < end; ++i) any |= static_cast<Bits>((p[i] & mask) == mask);
        if (any == 0) continue;
        for (int64_t i = b; i < end; ++i)
            if ((p[i] & mask) == mask) return i;
    }
    return -1;
}

}  // namespace

int64_t first_non_finite(uint32_t ggml_type, const void *data, int64_t n) {
    switch (ggml_type) {
        case GGML_F32: return first_with_exponent<uint32_t>(data, n, 0x7f800000u);
        case GGML_F16: return first_with_exponent<uint16_t>(data, n, 0x7c00u);
        case GGML_BF16: return first_with_exponent<uint16_t>(data, n, 0x7f80u);
        default: return -1;
    }
}

}  // namespace bitnet
