// GGUF v2/v3 reader: mmap the file, then validate every count, length, type, alignment and
// tensor extent against the bytes actually present before anything is allocated or used.
// Nothing here aborts: open() returns nullptr and a one-line message naming the problem.
//
// File layout (little-endian):
//   magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
//   n_kv x { string key | u32 value_type | value }        string = u64 len + bytes
//   n_tensors x { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
//   padding to `general.alignment` (default 32) | tensor data (offsets relative to here)
//
// Limits (beyond "fits in the bytes that are there"): keys 1..65535 bytes, unique; at most
// 2^20 key/values and 2^20 tensors; value types 0..12, arrays of arrays refused, bools 0/1;
// `general.alignment` a UINT32 power of two in 1..1 MiB; tensor names 1..63 bytes (ggml's
// GGML_MAX_NAME 64 with the NUL), unique; no NUL byte in a key or name; 1..4 dims, each
// >= 1, element count within int64; a known type id; offsets multiples of the alignment,
// rising in tensor-info order (as ggml requires); data inside the file, no overlaps; an I2_S
// tensor followed by exactly its 32-byte tail plus padding (another tail size is refused).
// Type id 39 (TL2 in bitnet.cpp, MXFP4 upstream) is TL2, and refused, in a bitnet.cpp file
// (architecture `bitnet*` or general.file_type 39); elsewhere it is accepted as MXFP4 only
// when the bytes up to the next tensor (or the end) are exactly an MXFP4 tensor plus padding.
// Versions 2 and 3 (same layout) are read; v1 and big-endian files are refused.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace bitnet {

// clang-format off
enum class gguf_value_type : uint32_t {
    UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6,
    BOOL = 7, STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
// clang-format on

struct gguf_kv {
    std::string key;
    gguf_value_type type;
    gguf_value_type array_type;  // element type when type == ARRAY
    uint64_t n_elements;         // 1 for scalars, array length for arrays
    const uint8_t *data;         // first byte of the value (after the array header) in the map;
                                 // a string starts with its u64 length
    uint64_t n_bytes;            // bytes of the value in the map from `data` on
};

struct gguf_tensor {
    std::string name;
    uint32_t n_dims;
    int64_t ne[4];        // unused dims are 1
    uint32_t type;        // ggml type id (see quant_types.h)
    uint64_t offset;      // relative to the data section
    uint64_t n_bytes;     // from quant_type_tensor_bytes
    const uint8_t *data;  // into the map
};

class gguf_file {
  public:
    // Map and validate. On failure returns nullptr and sets *error to one line such as
    // "model.gguf: tensor 'blk.0.attn_q.weight' data [1234, 5678) is past the end of the file (4096 bytes)".
    static std::unique_ptr<gguf_file> open(const std::string &path, std::string *error);
    ~gguf_file();
    gguf_file(const gguf_file &) = delete;
    gguf_file &operator=(const gguf_file &) = delete;

    uint32_t version() const;
    uint64_t file_size() const;
    uint64_t alignment() const;
    const std::string &path() const;

    const std::vector<gguf_kv> &kvs() const;
    const gguf_kv *find(const std::string &key) const;  // nullptr if absent

    // Typed scalar getters. Return false if the key is absent; if present but of a type that
    // cannot represent the request exactly (string for int, negative for unsigned, value out of
    // range), return false and set *error naming key, expected and actual type.
    // *error (may be nullptr) is cleared on entry, so after a false return an empty *error
    // means "absent". Messages are one line, without the file path (the caller adds it).
    // get_float accepts integers only where a double holds them exactly (|v| <= 2^53).
    bool get_int(const std::string &key, int64_t *out, std::string *error) const;   // any int type
    bool get_float(const std::string &key, double *out, std::string *error) const;  // f32/f64/ints
    bool get_bool(const std::string &key, bool *out, std::string *error) const;
    bool get_string(const std::string &key, std::string *out, std::string *error) const;
    // Array of strings -> vector (for vocabularies); false if absent or not an array of strings.
    bool get_string_array(const std::string &key, std::vector<std::string> *out, std::string *error) const;

    // A value as JSON text (arrays included). Invalid UTF-8 bytes in strings become U+FFFD.
    std::string value_json(const gguf_kv &kv) const;

    const std::vector<gguf_tensor> &tensors() const;
    const gguf_tensor *tensor(const std::string &name) const;  // nullptr if absent

  private:
    gguf_file();
    struct impl;
    std::unique_ptr<impl> impl_;
};

// A string from a file, quoted for a one-line message: control bytes escaped, long ones cut
// (a file's text must never break an error message across lines).
std::string quoted(const std::string &s);

}  // namespace bitnet
