// The quant-type table: one row per ggml type id we know, driving size validation in the GGUF
// reader, the loader's type checks and (later) the kernel choice. Tables over branches.
#pragma once
#include <cstdint>

namespace bitnet {

enum ggml_type_id : uint32_t {
    GGML_F32 = 0, GGML_F16 = 1, GGML_Q4_0 = 2, GGML_Q4_1 = 3, GGML_Q5_0 = 6, GGML_Q5_1 = 7,
    GGML_Q8_0 = 8, GGML_Q8_1 = 9, GGML_Q2_K = 10, GGML_Q3_K = 11, GGML_Q4_K = 12,
    GGML_Q5_K = 13, GGML_Q6_K = 14, GGML_Q8_K = 15, GGML_I8 = 24, GGML_I16 = 25,
    GGML_I32 = 26, GGML_I64 = 27, GGML_F64 = 28, GGML_BF16 = 30, GGML_TQ1_0 = 34,
    GGML_TQ2_0 = 35, GGML_I2_S = 36, GGML_TL1 = 38, GGML_TL2_OR_MXFP4 = 39,
};

struct quant_type_traits {
    uint32_t id;
    const char *name;
    int64_t block_size;   // elements per block (1 for plain types)
    int64_t type_size;    // bytes per block
    bool whole_tensor;    // size is per tensor, not per row (I2_S: n/4 + 32-byte scale tail)
    bool readable;        // the engine can compute with it today
};

// Whole-tensor types (I2_S, TL1) end with this many bytes after the codes; for I2_S the first
// four hold the tensor's f32 scale.
constexpr uint64_t QUANT_WHOLE_TENSOR_TAIL_BYTES = 32;

// Traits for an id, or nullptr if the id is unknown.
const quant_type_traits *quant_type_find(uint32_t id);

// Bytes a tensor of this type and shape occupies in a GGUF file: ne0/block_size*type_size per
// row times the rows, plus QUANT_WHOLE_TENSOR_TAIL_BYTES for whole-tensor types. Returns false
// (and leaves *n_bytes alone) if the type is unknown, n_dims is outside 1..4, a dim is < 1,
// ne0 is not a multiple of the block size (for whole-tensor types: the element count), or the
// element count (int64) or byte count (uint64) would overflow.
bool quant_type_tensor_bytes(uint32_t id, const int64_t *ne, int n_dims, uint64_t *n_bytes);

}  // namespace bitnet
