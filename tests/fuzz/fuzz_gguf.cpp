// libFuzzer harness for the model loader: the input bytes are a GGUF file.
//
// Each input goes through the path a user's file takes: written to a memory file (memfd, so
// no disk traffic and the loader's own open/fstat/mmap run unchanged), then
// bitnet::model_load (gguf_file::open + every model check). Whatever opens as a GGUF is then
// read completely: every typed getter and value_json on every key, every tensor's bytes, and,
// when the whole model loads, a two-token forward pass. Besides ASan/UBSan, the harness
// checks the reader's promises itself (an abort is a finding):
//   - every key's value and every tensor's data lies inside the file and equals the input;
//   - value_json is valid UTF-8 without raw control bytes (bad bytes become U+FFFD);
//   - get_string_array returns as many strings as the array holds.
// A single input never leaks: the model and the mapping are freed before returning (the
// memory file is reused and truncated, and LeakSanitizer runs at exit).
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "forward.h"
#include "gguf.h"
#include "model.h"

namespace {

// Above this a loaded model is only checked, not run: keeps one input well under a second.
constexpr uint64_t kMaxForwardWeightBytes = 8u << 20;

[[noreturn]] void finding(const char *what, const std::string &detail) {
    std::fprintf(stderr, "fuzz_gguf: %s: %s\n", what, detail.c_str());
    std::abort();
}

// A memory file holding the current input, reachable by path as /proc/self/fd/N; falls back
// to a temporary file where memfd_create is missing.
struct input_file {
    int fd = -1;
    std::string path;

    input_file() {
        fd = memfd_create("fuzz_gguf", MFD_CLOEXEC);
        if (fd >= 0) {
            path = "/proc/self/fd/" + std::to_string(fd);
            return;
        }
        const char *dir = std::getenv("TMPDIR");
        std::string tmpl = std::string(dir && *dir ? dir : "/tmp") + "/fuzz_gguf.XXXXXX";
        std::vector<char> buf(tmpl.begin(), tmpl.end());
        buf.push_back('\0');
        fd = mkstemp(buf.data());
        if (fd < 0) finding("setup", "cannot create a memory or temporary file");
        path = buf.data();
        unlink(path.c_str());  // the path stays usable through /proc while fd is open
        path = "/proc/self/fd/" + std::to_string(fd);
    }

    void write_all(const uint8_t *data, size_t size) {
        if (ftruncate(fd, 0) != 0) finding("setup", "ftruncate failed");
        size_t done = 0;
        while (done < size) {
            ssize_t n = pwrite(fd, data + done, size - done, static_cast<off_t>(done));
            if (n <= 0) finding("setup", "pwrite failed");
            done += static_cast<size_t>(n);
        }
    }
};

// The first byte of the mapped file, derived from the first key (whose position is fixed by
// the format: 24-byte header, u64 key length, key, u32 type, [u32 elem type, u64 count]).
const uint8_t *map_base(const bitnet::gguf_file &f) {
    if (f.kvs().empty()) return nullptr;
    const bitnet::gguf_kv &kv = f.kvs()[0];
    uint64_t before = 24 + 8 + kv.key.size() + 4;
    if (kv.type == bitnet::gguf_value_type::ARRAY) before += 4 + 8;
    return kv.data - before;
}

// [p, p + n) must lie inside the file and hold the input's bytes at the same offset.
void check_extent(const uint8_t *base, const uint8_t *p, uint64_t n, const uint8_t *input, uint64_t size,
                  const std::string &what) {
    if (base == nullptr) return;
    if (p < base || static_cast<uint64_t>(p - base) > size || n > size - static_cast<uint64_t>(p - base))
        finding("extent outside the file", what);
    const uint64_t off = static_cast<uint64_t>(p - base);
    if (n != 0 && std::memcmp(p, input + off, n) != 0) finding("mapped bytes differ from the input", what);
}

// Valid UTF-8 (no overlongs, surrogates or code points above U+10FFFF), no raw bytes < 0x20.
bool is_clean_utf8(const std::string &s) {
    const auto *p = reinterpret_cast<const uint8_t *>(s.data());
    const size_t n = s.size();
    for (size_t i = 0; i < n;) {
        const uint8_t c = p[i];
        if (c < 0x20) return false;
        if (c < 0x80) {
            ++i;
            continue;
        }
        // Lead byte -> continuation bytes; C0, C1 (overlong) and F5..FF never start a character.
        const size_t need = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : 1;
        if (c < 0xC2 || c > 0xF4) return false;
        uint32_t cp = c & (0x3F >> need);
        if (n - i <= need) return false;
        for (size_t k = 1; k <= need; ++k) {
            if ((p[i + k] & 0xC0) != 0x80) return false;
            cp = cp << 6 | (p[i + k] & 0x3F);
        }
        if ((need == 2 && cp < 0x800) || (need == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += need + 1;
    }
    return true;
}

void exercise_kvs(const bitnet::gguf_file &f, const uint8_t *base, const uint8_t *input, uint64_t size) {
    for (const bitnet::gguf_kv &kv : f.kvs()) {
        check_extent(base, kv.data, kv.n_bytes, input, size, "key '" + kv.key + "'");
        if (f.find(kv.key) != &kv) finding("find() does not return the key itself", kv.key);
        std::string err, s;
        int64_t i = 0;
        double d = 0;
        bool b = false;
        std::vector<std::string> strings;
        f.get_int(kv.key, &i, &err);
        f.get_float(kv.key, &d, &err);
        f.get_bool(kv.key, &b, &err);
        f.get_string(kv.key, &s, &err);
        if (f.get_string_array(kv.key, &strings, &err) && strings.size() != kv.n_elements)
            finding("get_string_array count differs from the array length", kv.key);
        const std::string json = f.value_json(kv);
        if (json.empty() || !is_clean_utf8(json))
            finding("value_json is empty, not UTF-8 or has raw control bytes", kv.key);
    }
    // An absent key (keys are never empty): false with the error cleared.
    std::string err = "stale";
    int64_t i = 0;
    if (f.get_int("", &i, &err) || !err.empty())
        finding("absent key", "get_int(\"\") found a value or set an error");
}

uint64_t exercise_tensors(const bitnet::gguf_file &f, const uint8_t *base, const uint8_t *input,
                          uint64_t size) {
    uint64_t sum = 0;
    for (const bitnet::gguf_tensor &t : f.tensors()) {
        if (f.tensor(t.name) != &t) finding("tensor() does not return the tensor itself", t.name);
        if (t.data == nullptr) finding("tensor without data after a successful open", t.name);
        check_extent(base, t.data, t.n_bytes, input, size, "tensor '" + t.name + "'");
        for (uint64_t k = 0; k < t.n_bytes; ++k) sum += t.data[k];  // every byte, so ASan sees each
    }
    return sum;
}

// Two tokens through the forward pass, logits for both: the embedding rows at both ends of the
// vocabulary, every layer, the head. Errors are fine; crashes and sanitizer reports are not.
void run_forward(const bitnet::model &m) {
    if (m.n_weight_bytes > kMaxForwardWeightBytes) return;
    std::string err;
    auto ctx = bitnet::context_new(m, 4, 1, &err);
    if (!ctx) return;
    const int32_t tokens[2] = {0, static_cast<int32_t>(m.hp.n_vocab - 1)};
    std::vector<float> logits(static_cast<size_t>(2 * m.hp.n_vocab));
    bitnet::forward_decode(*ctx, tokens, 2, logits.data(), true, &err);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static input_file file;
    file.write_all(data, size);

    std::string error;
    std::unique_ptr<bitnet::model> m = bitnet::model_load(file.path, &error);
    if (m) {
        if (!error.empty()) finding("model_load succeeded but set an error", error);
        run_forward(*m);
        m.reset();
    } else if (error.empty() || error.find('\n') != std::string::npos) {
        finding("model_load failed without a one-line error", error);
    }

    // The GGUF layer by itself: files that are valid GGUF but not a valid model get here too.
    std::unique_ptr<bitnet::gguf_file> f = bitnet::gguf_file::open(file.path, &error);
    if (!f) return 0;
    if (f->file_size() != size)
        finding("file_size", std::to_string(f->file_size()) + " != " + std::to_string(size));
    const uint8_t *base = map_base(*f);
    exercise_kvs(*f, base, data, size);
    volatile uint64_t sink = exercise_tensors(*f, base, data, size);
    (void)sink;
    return 0;
}
