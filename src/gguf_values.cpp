// GGUF values read back: typed getters and JSON for keys that gguf.cpp has already walked and
// validated (every length, count and type is known to fit in the map), and the helpers that
// name values in messages. Getter errors are one line without the file path.
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "gguf.h"
#include "gguf_internal.h"

namespace bitnet {

namespace gguf_detail {

const char *value_type_name(gguf_value_type t) {
    // clang-format off
    static constexpr const char *kNames[kNumValueTypes] = {
        "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
        "bool", "string", "array", "uint64", "int64", "float64"};
    // clang-format on
    return (uint32_t)t < kNumValueTypes ? kNames[(uint32_t)t] : "unknown";
}

std::string type_desc(const gguf_kv &kv) {
    if (kv.type != gguf_value_type::ARRAY) return value_type_name(kv.type);
    return std::string("array of ") + value_type_name(kv.array_type);
}

}  // namespace gguf_detail

using gguf_detail::load;
using gguf_detail::quoted;
using gguf_detail::type_desc;

// ---- typed getters ------------------------------------------------------------------------

namespace {

// An integer scalar as int64; *too_big for a uint64 above INT64_MAX. False if not an integer.
bool scalar_int(const gguf_kv &kv, int64_t *v, bool *too_big) {
    const uint8_t *p = kv.data;
    *too_big = false;
    switch (kv.type) {
        case gguf_value_type::UINT8:
            *v = load<uint8_t>(p);
            return true;
        case gguf_value_type::INT8:
            *v = load<int8_t>(p);
            return true;
        case gguf_value_type::UINT16:
            *v = load<uint16_t>(p);
            return true;
        case gguf_value_type::INT16:
            *v = load<int16_t>(p);
            return true;
        case gguf_value_type::UINT32:
            *v = load<uint32_t>(p);
            return true;
        case gguf_value_type::INT32:
            *v = load<int32_t>(p);
            return true;
        case gguf_value_type::INT64:
            *v = load<int64_t>(p);
            return true;
        case gguf_value_type::UINT64: {
            uint64_t u = load<uint64_t>(p);
            *too_big = u > (uint64_t)INT64_MAX;
            *v = *too_big ? 0 : (int64_t)u;
            return true;
        }
        default:
            return false;
    }
}

// Looks `key` up, clearing *error first; nullptr if absent.
const gguf_kv *lookup(const gguf_file &f, const std::string &key, std::string *error) {
    if (error) error->clear();
    return f.find(key);
}

bool fail_get(std::string *error, const std::string &key, const std::string &what) {
    if (error) *error = "key " + quoted(key) + " " + what;
    return false;
}

bool wrong_type(std::string *error, const gguf_kv &kv, const char *expected) {
    return fail_get(error, kv.key, "is " + type_desc(kv) + ", expected " + expected);
}

}  // namespace

bool gguf_file::get_int(const std::string &key, int64_t *out, std::string *error) const {
    const gguf_kv *kv = lookup(*this, key, error);
    int64_t v;
    bool too_big;
    if (!kv) return false;
    if (!scalar_int(*kv, &v, &too_big)) return wrong_type(error, *kv, "an integer");
    if (too_big) {
        return fail_get(error, key,
                        "= " + std::to_string(load<uint64_t>(kv->data)) + " is out of range for int64");
    }
    *out = v;
    return true;
}

bool gguf_file::get_float(const std::string &key, double *out, std::string *error) const {
    const gguf_kv *kv = lookup(*this, key, error);
    int64_t v;
    bool too_big;
    if (!kv) return false;
    if (kv->type == gguf_value_type::FLOAT32 || kv->type == gguf_value_type::FLOAT64) {
        *out = kv->type == gguf_value_type::FLOAT32 ? load<float>(kv->data) : load<double>(kv->data);
        return true;
    }
    if (!scalar_int(*kv, &v, &too_big)) return wrong_type(error, *kv, "a number");
    const int64_t exact = int64_t(1) << 53;  // a double holds every integer up to here
    if (too_big || v > exact || v < -exact) {
        return fail_get(error, key, "is an integer too large to convert exactly to a float");
    }
    *out = (double)v;
    return true;
}

bool gguf_file::get_bool(const std::string &key, bool *out, std::string *error) const {
    const gguf_kv *kv = lookup(*this, key, error);
    if (!kv) return false;
    if (kv->type != gguf_value_type::BOOL) return wrong_type(error, *kv, "bool");
    *out = kv->data[0] != 0;
    return true;
}

bool gguf_file::get_string(const std::string &key, std::string *out, std::string *error) const {
    const gguf_kv *kv = lookup(*this, key, error);
    if (!kv) return false;
    if (kv->type != gguf_value_type::STRING) return wrong_type(error, *kv, "string");
    out->assign((const char *)kv->data + 8, load<uint64_t>(kv->data));
    return true;
}

bool gguf_file::get_string_array(const std::string &key, std::vector<std::string> *out,
                                 std::string *error) const {
    const gguf_kv *kv = lookup(*this, key, error);
    if (!kv) return false;
    if (kv->type != gguf_value_type::ARRAY || kv->array_type != gguf_value_type::STRING) {
        return wrong_type(error, *kv, "array of string");
    }
    out->clear();
    out->reserve(kv->n_elements);  // walked at open(): each string is really there
    const uint8_t *p = kv->data;
    for (uint64_t i = 0; i < kv->n_elements; i++) {
        const uint64_t n = load<uint64_t>(p);
        out->emplace_back((const char *)p + 8, n);
        p += 8 + n;
    }
    return true;
}

// ---- JSON ------------------------------------------------------------------------------------

namespace {

// Length of the UTF-8 sequence at p (n >= 1 bytes, p[0] >= 0x80) and whether it is a
// well-formed character. An ill-formed one is its longest valid-looking prefix (at least one
// byte), which becomes one U+FFFD: the "maximal subpart" rule of Python's and WHATWG's decoders.
size_t utf8_sequence(const uint8_t *p, size_t n, bool *valid) {
    const uint8_t c = p[0];
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF;  // range of the first continuation byte
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0) lo = 0xA0;  // no overlongs
        if (c == 0xED) hi = 0x9F;  // no surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0) lo = 0x90;  // no overlongs
        if (c == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
    } else {
        *valid = false;
        return 1;
    }
    size_t k = 1;
    for (; k <= need && k < n; k++) {
        if (p[k] < lo || p[k] > hi) break;
        lo = 0x80;
        hi = 0xBF;
    }
    *valid = k == need + 1;
    return k;
}

void append_json_string(std::string &out, const uint8_t *p, uint64_t n) {
    static const char kHex[] = "0123456789abcdef";
    out += '"';
    uint64_t i = 0;
    while (i < n) {
        uint64_t j = i;  // copy runs of plain ASCII in one append
        while (j < n && p[j] >= 0x20 && p[j] < 0x80 && p[j] != '"' && p[j] != '\\') j++;
        out.append((const char *)p + i, j - i);
        if (j == n) break;
        i = j;
        const uint8_t c = p[i];
        if (c < 0x80) {
            i++;
            switch (c) {
                case '"':
                    out += "\\\"";
                    break;
                case '\\':
                    out += "\\\\";
                    break;
                case '\n':
                    out += "\\n";
                    break;
                case '\r':
                    out += "\\r";
                    break;
                case '\t':
                    out += "\\t";
                    break;
                case '\b':
                    out += "\\b";
                    break;
                case '\f':
                    out += "\\f";
                    break;
                default: {
                    const char esc[] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
                    out.append(esc, sizeof esc);
                }
            }
            continue;
        }
        bool valid;
        const size_t len = utf8_sequence(p + i, n - i, &valid);
        if (valid) {
            out.append((const char *)p + i, len);
        } else {
            out += "\xEF\xBF\xBD";  // U+FFFD
        }
        i += len;
    }
    out += '"';
}

template <class T>
void append_int(std::string &out, T v) {
    char buf[24];
    auto r = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, r.ptr - buf);
}

void append_float(std::string &out, double v, const char *format) {
    if (!std::isfinite(v)) {
        out += "null";
        return;
    }
    char buf[40];
    int n = snprintf(buf, sizeof buf, format, v);
    out.append(buf, (size_t)n);
    // "2" would read back as an integer: a float key must never pass for a count or a token id.
    if (std::strpbrk(buf, ".eE") == nullptr) out += ".0";
}

// Appends one non-array value at p; returns the bytes it occupies.
uint64_t append_json_value(std::string &out, gguf_value_type t, const uint8_t *p) {
    switch (t) {
        case gguf_value_type::UINT8:
            append_int(out, load<uint8_t>(p));
            return 1;
        case gguf_value_type::INT8:
            append_int(out, load<int8_t>(p));
            return 1;
        case gguf_value_type::UINT16:
            append_int(out, load<uint16_t>(p));
            return 2;
        case gguf_value_type::INT16:
            append_int(out, load<int16_t>(p));
            return 2;
        case gguf_value_type::UINT32:
            append_int(out, load<uint32_t>(p));
            return 4;
        case gguf_value_type::INT32:
            append_int(out, load<int32_t>(p));
            return 4;
        case gguf_value_type::UINT64:
            append_int(out, load<uint64_t>(p));
            return 8;
        case gguf_value_type::INT64:
            append_int(out, load<int64_t>(p));
            return 8;
        case gguf_value_type::FLOAT32:
            append_float(out, load<float>(p), "%.9g");
            return 4;
        case gguf_value_type::FLOAT64:
            append_float(out, load<double>(p), "%.17g");
            return 8;
        case gguf_value_type::BOOL:
            out += p[0] ? "true" : "false";
            return 1;
        case gguf_value_type::STRING: {
            const uint64_t n = load<uint64_t>(p);
            append_json_string(out, p + 8, n);
            return 8 + n;
        }
        default:
            out += "null";
            return 0;  // ARRAY never reaches here: refused at open()
    }
}

}  // namespace

std::string gguf_file::value_json(const gguf_kv &kv) const {
    std::string out;
    if (kv.type != gguf_value_type::ARRAY) {
        out.reserve(kv.n_bytes + 32);
        append_json_value(out, kv.type, kv.data);
        return out;
    }
    // Strings: the 8-byte length prefixes more than pay for quotes and commas. Numbers: up to
    // about 3 characters per byte (a u8 "255,") and 2.5 for f32 ("-1.17549435e-38,").
    out.reserve(kv.array_type == gguf_value_type::STRING ? kv.n_bytes + 2 : kv.n_bytes * 3 + 2);
    out += '[';
    const uint8_t *p = kv.data;
    for (uint64_t i = 0; i < kv.n_elements; i++) {
        if (i) out += ',';
        p += append_json_value(out, kv.array_type, p);
    }
    out += ']';
    return out;
}

std::string quoted(const std::string &s) {
    std::string out = "'";
    for (size_t i = 0; i < s.size() && i < 96; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || c == '\\' || c == '\'') {
            char buf[8];
            snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        } else {
            out += (char)c;
        }
    }
    if (s.size() > 96) out += "...";
    return out + "'";
}

}  // namespace bitnet
