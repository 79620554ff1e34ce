#include "kernels/tuning.h"

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

namespace bitnet {

namespace {

struct parameter {
    const char *name, *env;
    int64_t kernel_tuning::*field;
    int64_t lo, hi;
};

const parameter kParameters[] = {
    {"prefetch_bytes", "BITNET_PREFETCH_BYTES", &kernel_tuning::prefetch_bytes, 0, 1 << 20},
    {"amx_min_batch", "BITNET_AMX_MIN_BATCH", &kernel_tuning::amx_min_batch, 1, 1 << 20},
    {"head_gemv_rows", "BITNET_HEAD_GEMV_ROWS", &kernel_tuning::head_gemv_rows, 1, 2},
    {"head_prefetch_bytes", "BITNET_HEAD_PREFETCH_BYTES", &kernel_tuning::head_prefetch_bytes, 0, 1 << 20},
    {"ternary_gemv_rows", "BITNET_TERNARY_GEMV_ROWS", &kernel_tuning::ternary_gemv_rows, 1, 2},
    {"avx2_gemm_min_batch", "BITNET_AVX2_GEMM_MIN_BATCH", &kernel_tuning::avx2_gemm_min_batch, 2, 1 << 20},
};

// Environment values are read once and re-applied after every preset, so that they always win.
void apply_environment(kernel_tuning &t) {
    for (const parameter &p : kParameters) {
        const char *v = std::getenv(p.env);
        if (v == nullptr || *v == '\0') continue;
        char *end = nullptr;
        const long long n = std::strtoll(v, &end, 10);
        if (*end == '\0' && n >= p.lo && n <= p.hi) t.*p.field = n;
    }
}

kernel_tuning &state() {
    static kernel_tuning t = [] {
        kernel_tuning d;
        apply_environment(d);
        return d;
    }();
    return t;
}

// The next token of a flat JSON object: a string (unescaped, ASCII), a number, or punctuation.
struct json_scanner {
    const std::string &s;
    size_t i = 0;
    void skip() {
        while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    }
    bool take(char c) {
        skip();
        if (i < s.size() && s[i] == c) return ++i, true;
        return false;
    }
    bool string(std::string *out) {
        skip();
        if (i >= s.size() || s[i] != '"') return false;
        const size_t end = s.find('"', i + 1);
        if (end == std::string::npos) return false;
        *out = s.substr(i + 1, end - i - 1);
        i = end + 1;
        return out->find('\\') == std::string::npos;
    }
    // A nested object or array (measurements kept beside the parameters): skipped whole.
    bool nested() {
        int depth = 0;
        for (; i < s.size(); ++i) {
            const char c = s[i];
            if (c == '"') {
                const size_t end = s.find('"', i + 1);
                if (end == std::string::npos) return false;
                i = end;
            } else if (c == '{' || c == '[') {
                ++depth;
            } else if ((c == '}' || c == ']') && --depth == 0) {
                ++i;
                return true;
            }
        }
        return false;
    }
    bool value(std::string *text, bool *is_number) {
        skip();
        if (i < s.size() && (s[i] == '{' || s[i] == '[')) return *is_number = false, nested();
        if (i < s.size() && s[i] == '"') return *is_number = false, string(text);
        const size_t start = i;
        while (i < s.size() && (std::isalnum(static_cast<unsigned char>(s[i])) || s[i] == '-' || s[i] == '.' ||
                                s[i] == '+'))
            ++i;
        *text = s.substr(start, i - start);
        *is_number = true;
        return !text->empty();
    }
};

}  // namespace

const kernel_tuning &tuning() { return state(); }

bool tuning_set(const std::string &key, int64_t value, std::string *error) {
    for (const parameter &p : kParameters) {
        if (key != p.name) continue;
        if (value < p.lo || value > p.hi) {
            *error = "tuning parameter " + key + " = " + std::to_string(value) + " is out of range [" +
                     std::to_string(p.lo) + ", " + std::to_string(p.hi) + "]";
            return false;
        }
        state().*p.field = value;
        return true;
    }
    *error = "unknown tuning parameter '" + key + "' (known: prefetch_bytes, amx_min_batch)";
    return false;
}

bool tuning_get(const std::string &key, int64_t *value, bool built_in_default) {
    static const kernel_tuning kDefaults;
    for (const parameter &p : kParameters) {
        if (key != p.name) continue;
        *value = built_in_default ? kDefaults.*p.field : state().*p.field;
        return true;
    }
    return false;
}

bool tuning_load_preset(const std::string &path, std::string *error) {
    std::ifstream in(path);
    if (!in) {
        *error = "cannot read preset " + path;
        return false;
    }
    std::stringstream buf;
    buf << in.rdbuf();
    const std::string text = buf.str();
    if (text.size() > (1 << 16)) {
        *error = "preset " + path + " is too large for a preset (over 64 KiB)";
        return false;
    }
    json_scanner js{text};
    kernel_tuning next = state();
    bool ok = js.take('{');
    for (bool first = true; ok && !js.take('}'); first = false) {
        std::string key, value;
        bool is_number = false;
        ok = (first || js.take(',')) && js.string(&key) && js.take(':') && js.value(&value, &is_number);
        if (!ok || !is_number) continue;
        for (const parameter &p : kParameters) {
            if (key != p.name) continue;
            char *end = nullptr;
            const long long n = std::strtoll(value.c_str(), &end, 10);
            if (*end != '\0' || n < p.lo || n > p.hi) {
                *error = "preset " + path + ": " + key + " = " + value + " is not an integer in [" +
                         std::to_string(p.lo) + ", " + std::to_string(p.hi) + "]";
                return false;
            }
            next.*p.field = n;
        }
    }
    if (!ok) {
        *error = "preset " + path + " is not a JSON object of numbers, strings and nested measurements";
        return false;
    }
    apply_environment(next);
    state() = next;
    return true;
}

std::string cpu_signature() {
#if defined(__x86_64__)
    unsigned a = 0, b = 0, c = 0, d = 0;
    char vendor[13] = {};
    if (__get_cpuid(0, &a, &b, &c, &d)) {
        std::snprintf(vendor, sizeof vendor, "%.4s%.4s%.4s", reinterpret_cast<char *>(&b), reinterpret_cast<char *>(&d),
                      reinterpret_cast<char *>(&c));
    }
    unsigned family = 0, model = 0;
    if (__get_cpuid(1, &a, &b, &c, &d)) {
        family = (a >> 8) & 0xf;
        model = (a >> 4) & 0xf;
        if (family == 0xf) family += (a >> 20) & 0xff;
        if (family == 0x6 || family >= 0xf) model |= ((a >> 16) & 0xf) << 4;
    }
    return std::string(vendor) + "-" + std::to_string(family) + "-" + std::to_string(model);
#elif defined(__aarch64__)
    return "aarch64";
#else
    return "unknown";
#endif
}

}  // namespace bitnet
