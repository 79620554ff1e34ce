// Private to the GGUF reader: what its two halves share. gguf.cpp parses and validates the
// file; gguf_values.cpp reads the validated values back (typed getters, JSON) and names them
// in messages. Nothing here checks bounds: callers only pass bytes that open() has walked.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

#include "gguf.h"

namespace bitnet {
namespace gguf_detail {

template <class T>
T load(const uint8_t *p) {
    T v;
    memcpy(&v, p, sizeof v);
    return v;
}

constexpr uint32_t kNumValueTypes = 13;

// "uint32", "string", ...; "unknown" outside 0..12.
const char *value_type_name(gguf_value_type t);

// A kv's type for a message: "uint64", "array of string".
std::string type_desc(const gguf_kv &kv);

using bitnet::quoted;

}  // namespace gguf_detail
}  // namespace bitnet
