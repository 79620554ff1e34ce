// The quant-type table: ggml's block sizes and bytes per block for every id we recognise.
// Sizes are facts of the ggml format (its type_traits), restated here; a type we only
// recognise (to name it in an error) has readable = false.
#include "quant_types.h"

namespace bitnet {
namespace {

// clang-format off
//  id               name        block  bytes  whole_tensor readable
const quant_type_traits kQuantTypes[] = {
    {GGML_F32,          "F32",      1,     4,   false, true},
    {GGML_F16,          "F16",      1,     2,   false, true},
    {GGML_Q4_0,         "Q4_0",     32,    18,  false, false},  // f16 d + 16 B nibbles
    {GGML_Q4_1,         "Q4_1",     32,    20,  false, false},  // f16 d, m + 16 B
    {GGML_Q5_0,         "Q5_0",     32,    22,  false, false},  // f16 d + 4 B high bits + 16 B
    {GGML_Q5_1,         "Q5_1",     32,    24,  false, false},
    {GGML_Q8_0,         "Q8_0",     32,    34,  false, false},  // f16 d + 32 int8
    {GGML_Q8_1,         "Q8_1",     32,    36,  false, false},  // f16 d, s + 32 int8
    {GGML_Q2_K,         "Q2_K",     256,   84,  false, false},
    {GGML_Q3_K,         "Q3_K",     256,   110, false, false},
    {GGML_Q4_K,         "Q4_K",     256,   144, false, false},
    {GGML_Q5_K,         "Q5_K",     256,   176, false, false},
    {GGML_Q6_K,         "Q6_K",     256,   210, false, false},
    {GGML_Q8_K,         "Q8_K",     256,   292, false, false},  // f32 d + 256 int8 + 16 i16 sums
    {GGML_I8,           "I8",       1,     1,   false, false},
    {GGML_I16,          "I16",      1,     2,   false, false},
    {GGML_I32,          "I32",      1,     4,   false, false},
    {GGML_I64,          "I64",      1,     8,   false, false},
    {GGML_F64,          "F64",      1,     8,   false, false},
    {GGML_BF16,         "BF16",     1,     2,   false, true},
    {GGML_TQ1_0,        "TQ1_0",    256,   54,  false, false},  // qs[48] qh[4] f16 d
    {GGML_TQ2_0,        "TQ2_0",    256,   66,  false, false},  // qs[64] f16 d
    // bitnet.cpp: 128 codes -> 32 bytes over the flattened tensor (rows may start inside a
    // block), then a 32-byte tail holding the f32 scale: n/4 + 32 bytes, n % 128 == 0.
    {GGML_I2_S,         "I2_S",     128,   32,  true,  true},
    // bitnet.cpp sizes TL1 like I2_S (n/4 + 32); its layout follows build-time tiling.
    {GGML_TL1,          "TL1",      4,     1,   true,  false},
    // 39 is TL2 in bitnet.cpp and MXFP4 (32 elements: e8m0 scale + 16 B of e2m1) upstream.
    // The table sizes it as MXFP4; gguf.cpp refuses the tensor unless its data fits that size
    // exactly (see the comment there).
    {GGML_TL2_OR_MXFP4, "TL2|MXFP4", 32,   17,  false, false},
};
// clang-format on

bool mul_u64(uint64_t a, uint64_t b, uint64_t *out) { return !__builtin_mul_overflow(a, b, out); }

}  // namespace

const quant_type_traits *quant_type_find(uint32_t id) {
    for (const quant_type_traits &t : kQuantTypes) {
        if (t.id == id) return &t;
    }
    return nullptr;
}

bool quant_type_tensor_bytes(uint32_t id, const int64_t *ne, int n_dims, uint64_t *n_bytes) {
    const quant_type_traits *t = quant_type_find(id);
    if (!t || !ne || n_dims < 1 || n_dims > 4) return false;
    int64_t n_elements = 1;
    for (int i = 0; i < n_dims; i++) {
        if (ne[i] < 1 || __builtin_mul_overflow(n_elements, ne[i], &n_elements)) return false;
    }
    const uint64_t block = (uint64_t)t->block_size;
    const uint64_t ne0 = (uint64_t)ne[0];
    if (t->whole_tensor) {  // the flattened tensor in blocks, then the tail
        if ((uint64_t)n_elements % block != 0) return false;
        *n_bytes = (uint64_t)n_elements / block * (uint64_t)t->type_size + QUANT_WHOLE_TENSOR_TAIL_BYTES;
        return true;
    }
    if (ne0 % block != 0) return false;

    uint64_t n_rows = 1;
    for (int i = 1; i < n_dims; i++) {
        if (!mul_u64(n_rows, (uint64_t)ne[i], &n_rows)) return false;
    }
    uint64_t row_bytes = 0, total = 0;
    if (!mul_u64(ne0 / block, (uint64_t)t->type_size, &row_bytes)) return false;
    if (!mul_u64(row_bytes, n_rows, &total)) return false;
    if (t->whole_tensor && __builtin_add_overflow(total, QUANT_WHOLE_TENSOR_TAIL_BYTES, &total)) {
        return false;
    }
    *n_bytes = total;
    return true;
}

}  // namespace bitnet
