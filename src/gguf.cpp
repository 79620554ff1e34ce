// GGUF reader. The file is untrusted: every count, length, type and extent is checked against
// the bytes actually mapped before it is used, and no allocation is sized by a count that has
// not been walked. Parsing goes through one bounded cursor; on the first problem the parser
// records one line and open() returns nullptr with "<path>: <line>".
#include "gguf.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <unordered_map>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "quant_types.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the GGUF reader assumes a little-endian host"
#endif

namespace bitnet {
namespace {

constexpr uint64_t kMaxKeyBytes = 65535;
constexpr uint64_t kMaxTensorNameBytes = 63;  // GGML_MAX_NAME = 64 including the NUL
constexpr uint64_t kMaxKvs = uint64_t(1) << 20;
constexpr uint64_t kMaxTensors = uint64_t(1) << 20;
constexpr uint64_t kMaxAlignment = uint64_t(1) << 20;
constexpr uint64_t kDefaultAlignment = 32;
constexpr uint64_t kHeaderBytes = 4 + 4 + 8 + 8;
// Smallest possible records: key len + 1-byte key + type + 1-byte value; name len + 1-byte
// name + n_dims + one dim + type + offset.
constexpr uint64_t kMinKvBytes = 8 + 1 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 1 + 4 + 8 + 4 + 8;
constexpr uint32_t kAmbiguousTypeId = GGML_TL2_OR_MXFP4;

// Bytes per scalar of each value type; 0 for STRING and ARRAY (variable).
constexpr uint64_t kValueSize[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
constexpr const char *kValueName[] = {"uint8",  "int8",    "uint16", "int16",  "uint32",
                                      "int32",  "float32", "bool",   "string", "array",
                                      "uint64", "int64",   "float64"};
constexpr uint32_t kNumValueTypes = 13;

const char *value_type_name(gguf_value_type t) {
    return (uint32_t)t < kNumValueTypes ? kValueName[(uint32_t)t] : "unknown";
}

std::string type_desc(const gguf_kv &kv) {
    if (kv.type != gguf_value_type::ARRAY) return value_type_name(kv.type);
    return std::string("array of ") + value_type_name(kv.array_type);
}

// A name from the file, quoted for a one-line message: control bytes escaped, long names cut.
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

// Id 39 means TL2 in bitnet.cpp files and MXFP4 upstream; `why` says why it is not MXFP4 here.
std::string type39_refusal(const std::string &tensor_name, const std::string &why) {
    return "tensor " + quoted(tensor_name) +
           " has ggml type 39, which is TL2 in bitnet.cpp files and MXFP4 upstream; " + why +
           ", and TL2 is not supported (re-convert the model with i2_s)";
}

template <class T>
T load(const uint8_t *p) {
    T v;
    memcpy(&v, p, sizeof v);
    return v;
}

// Bounded reads over the map; every read says what it was reading so a truncation error can
// name it.
struct parser {
    const uint8_t *base;
    uint64_t size;
    uint64_t pos = 0;
    std::string err;

    parser(const uint8_t *base_, uint64_t size_) : base(base_), size(size_) {}

    uint64_t left() const { return size - pos; }

    bool fail(std::string msg) {
        err = std::move(msg);
        return false;
    }
    bool take(uint64_t n, const char *what, const uint8_t **p = nullptr) {
        if (n > left()) {
            return fail("file is truncated: " + std::string(what) + " at offset " +
                        std::to_string(pos) + " needs " + std::to_string(n) + " bytes, " +
                        std::to_string(left()) + " left");
        }
        if (p) *p = base + pos;
        pos += n;
        return true;
    }
    template <class T>
    bool read(T *v, const char *what) {
        const uint8_t *p;
        if (!take(sizeof(T), what, &p)) return false;
        *v = load<T>(p);
        return true;
    }
    // u64 length + bytes, length within [min_len, max_len].
    bool read_string(std::string *out, uint64_t min_len, uint64_t max_len, const char *what) {
        uint64_t n;
        const uint8_t *p;
        if (!read(&n, what)) return false;
        if (n < min_len || n > max_len) {
            return fail(std::string(what) + " at offset " + std::to_string(pos - 8) + " is " +
                        std::to_string(n) + " bytes long (allowed " + std::to_string(min_len) +
                        ".." + std::to_string(max_len) + ")");
        }
        if (!take(n, what, &p)) return false;
        out->assign((const char *)p, n);
        return true;
    }
};

}  // namespace

struct gguf_file::impl {
    std::string path;
    const uint8_t *map = nullptr;
    uint64_t size = 0;
    uint32_t version = 0;
    uint64_t alignment = kDefaultAlignment;
    uint64_t data_offset = 0;
    std::vector<gguf_kv> kvs;
    std::vector<gguf_tensor> tensors;
    std::unordered_map<std::string, size_t> kv_index, tensor_index;

    ~impl() {
        if (map) munmap(const_cast<uint8_t *>(map), size);
    }

    bool map_file(std::string *err);
    bool parse_header(parser &ps, uint64_t *n_tensors, uint64_t *n_kv);
    bool parse_kv(parser &ps);
    bool parse_alignment(parser &ps);
    bool parse_tensor_info(parser &ps);
    bool check_layout(parser &ps);
    std::string err_prefix() const { return path + ": "; }
};

bool gguf_file::impl::map_file(std::string *err) {
    // O_NONBLOCK: opening a FIFO must not hang; it is refused below as not a regular file.
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        *err = err_prefix() + "cannot open: " + strerror(errno);
        return false;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        *err = err_prefix() + "not a regular file";
        ::close(fd);
        return false;
    }
    size = (uint64_t)st.st_size;
    if (size < kHeaderBytes) {
        *err = err_prefix() + "file is truncated: " + std::to_string(size) +
               " bytes, shorter than the 24-byte GGUF header";
        ::close(fd);
        return false;
    }
    void *p = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    ::close(fd);  // the mapping keeps the file alive
    if (p == MAP_FAILED) {
        *err = err_prefix() + "cannot mmap: " + strerror(map_errno);
        return false;
    }
    map = (const uint8_t *)p;
    return true;
}

bool gguf_file::impl::parse_header(parser &ps, uint64_t *n_tensors, uint64_t *n_kv) {
    const uint8_t *magic = ps.base;
    uint32_t ver_le = load<uint32_t>(ps.base + 4);
    uint32_t ver_be = __builtin_bswap32(ver_le);
    bool magic_ok = memcmp(magic, "GGUF", 4) == 0;
    if (memcmp(magic, "FUGG", 4) == 0 ||
        (magic_ok && ver_le > 0xffff && ver_be >= 1 && ver_be <= 3)) {
        return ps.fail(
            "big-endian GGUF is not supported (the header is byte-swapped; "
            "re-convert the model on a little-endian machine)");
    }
    if (!magic_ok) {
        char buf[96];
        snprintf(buf, sizeof buf,
                 "not a GGUF file (bad magic %02x %02x %02x %02x, expected \"GGUF\")", magic[0],
                 magic[1], magic[2], magic[3]);
        return ps.fail(buf);
    }
    version = ver_le;
    if (version == 1) return ps.fail("GGUF v1 is not supported (re-convert the model)");
    if (version != 2 && version != 3) {
        return ps.fail("unsupported GGUF version " + std::to_string(version) +
                       " (expected 2 or 3)");
    }
    ps.pos = 8;
    ps.read(n_tensors, "n_tensors");
    ps.read(n_kv, "n_kv");
    // Every record takes at least a few bytes, so the counts must fit in what is left.
    const uint64_t left = ps.left();
    if (*n_kv > kMaxKvs || *n_kv > left / kMinKvBytes) {
        return ps.fail("n_kv = " + std::to_string(*n_kv) + " is implausible for " +
                       std::to_string(left) + " bytes of header (limit " +
                       std::to_string(std::min(kMaxKvs, left / kMinKvBytes)) + ")");
    }
    const uint64_t left_for_tensors = left - *n_kv * kMinKvBytes;
    if (*n_tensors > kMaxTensors || *n_tensors > left_for_tensors / kMinTensorInfoBytes) {
        return ps.fail(
            "n_tensors = " + std::to_string(*n_tensors) + " is implausible for " +
            std::to_string(left) + " bytes of header (limit " +
            std::to_string(std::min(kMaxTensors, left_for_tensors / kMinTensorInfoBytes)) + ")");
    }
    return true;
}

bool gguf_file::impl::parse_kv(parser &ps) {
    gguf_kv kv{};
    std::string what = "key #" + std::to_string(kvs.size());
    if (!ps.read_string(&kv.key, 1, kMaxKeyBytes, what.c_str())) return false;
    if (kv_index.count(kv.key)) return ps.fail("duplicate key " + quoted(kv.key));
    const std::string name = "key " + quoted(kv.key);

    uint32_t type;
    if (!ps.read(&type, "value type")) return false;
    if (type >= kNumValueTypes) {
        return ps.fail(name + " has unknown value type " + std::to_string(type));
    }
    kv.type = kv.array_type = (gguf_value_type)type;
    kv.n_elements = 1;
    uint32_t elem = type;
    if (kv.type == gguf_value_type::ARRAY) {
        if (!ps.read(&elem, "array element type") || !ps.read(&kv.n_elements, "array length")) {
            return false;
        }
        if (elem >= kNumValueTypes) {
            return ps.fail(name + " is an array of unknown value type " + std::to_string(elem));
        }
        if (elem == (uint32_t)gguf_value_type::ARRAY) {
            return ps.fail(name + " is an array of arrays, which is not supported");
        }
        kv.array_type = (gguf_value_type)elem;
    }
    const uint64_t start = ps.pos;
    kv.data = ps.base + start;

    if (elem == (uint32_t)gguf_value_type::STRING) {
        // Each string is at least its 8-byte length: bound the count before walking it.
        if (kv.n_elements > ps.left() / 8) {
            return ps.fail(name + ": " + std::to_string(kv.n_elements) +
                           " strings cannot fit in the " + std::to_string(ps.left()) +
                           " bytes left");
        }
        for (uint64_t i = 0; i < kv.n_elements; i++) {
            uint64_t n;
            if (!ps.read(&n, "string length")) return false;
            if (n > ps.left()) {
                return ps.fail(name + ": string #" + std::to_string(i) + " of " +
                               std::to_string(n) + " bytes runs past the end of the file (" +
                               std::to_string(ps.left()) + " bytes left)");
            }
            ps.pos += n;
        }
    } else {
        const uint64_t esize = kValueSize[elem];
        if (kv.n_elements > ps.left() / esize) {
            return ps.fail(name + ": array of " + std::to_string(kv.n_elements) + " " +
                           kValueName[elem] + " needs more bytes than the " +
                           std::to_string(ps.left()) + " left in the file");
        }
        const uint8_t *p;
        ps.take(kv.n_elements * esize, "value", &p);
        if (elem == (uint32_t)gguf_value_type::BOOL) {
            for (uint64_t i = 0; i < kv.n_elements; i++) {
                if (p[i] > 1) {
                    return ps.fail(name + ": bool byte is " + std::to_string(p[i]) +
                                   " (must be 0 or 1)");
                }
            }
        }
    }
    kv.n_bytes = ps.pos - start;
    kv_index.emplace(kv.key, kvs.size());
    kvs.push_back(std::move(kv));
    return true;
}

bool gguf_file::impl::parse_alignment(parser &ps) {
    auto it = kv_index.find("general.alignment");
    if (it == kv_index.end()) return true;
    const gguf_kv &kv = kvs[it->second];
    if (kv.type != gguf_value_type::UINT32) {
        return ps.fail("general.alignment must be uint32, found " + type_desc(kv));
    }
    uint32_t a = load<uint32_t>(kv.data);
    if (a == 0 || (a & (a - 1)) != 0 || a > kMaxAlignment) {
        return ps.fail("general.alignment = " + std::to_string(a) +
                       " is invalid (must be a power of two, 1.." + std::to_string(kMaxAlignment) +
                       ")");
    }
    alignment = a;
    return true;
}

bool gguf_file::impl::parse_tensor_info(parser &ps) {
    gguf_tensor t{};
    std::string what = "tensor #" + std::to_string(tensors.size()) + " name";
    if (!ps.read_string(&t.name, 1, kMaxTensorNameBytes, what.c_str())) return false;
    const std::string name = "tensor " + quoted(t.name);
    if (tensor_index.count(t.name)) return ps.fail("duplicate tensor name " + quoted(t.name));

    if (!ps.read(&t.n_dims, "n_dims")) return false;
    if (t.n_dims < 1 || t.n_dims > 4) {
        return ps.fail(name + " has n_dims = " + std::to_string(t.n_dims) + " (expected 1..4)");
    }
    int64_t n_elements = 1;
    for (int i = 0; i < 4; i++) t.ne[i] = 1;
    for (uint32_t i = 0; i < t.n_dims; i++) {
        uint64_t d;
        if (!ps.read(&d, "tensor dimension")) return false;
        if (d < 1 || d > (uint64_t)INT64_MAX) {
            return ps.fail(name + " dimension " + std::to_string(i) + " is " + std::to_string(d) +
                           " (must be 1..2^63-1)");
        }
        t.ne[i] = (int64_t)d;
        if (__builtin_mul_overflow(n_elements, t.ne[i], &n_elements)) {
            return ps.fail(name + " element count overflows int64");
        }
    }
    if (!ps.read(&t.type, "tensor type") || !ps.read(&t.offset, "tensor offset")) return false;

    const quant_type_traits *qt = quant_type_find(t.type);
    if (!qt) return ps.fail(name + " has unknown ggml type id " + std::to_string(t.type));
    if (t.ne[0] % qt->block_size != 0) {
        if (t.type == kAmbiguousTypeId) {
            return ps.fail(type39_refusal(
                t.name, "ne0 = " + std::to_string(t.ne[0]) + " is not a multiple of 32"));
        }
        return ps.fail(name + " of type " + qt->name + " has ne0 = " + std::to_string(t.ne[0]) +
                       ", not a multiple of its block size " + std::to_string(qt->block_size));
    }
    if (!quant_type_tensor_bytes(t.type, t.ne, (int)t.n_dims, &t.n_bytes)) {
        return ps.fail(name + " byte size overflows 64 bits");
    }
    if (t.offset % alignment != 0) {
        return ps.fail(name + " offset " + std::to_string(t.offset) +
                       " is not a multiple of the alignment " + std::to_string(alignment));
    }
    tensor_index.emplace(t.name, tensors.size());
    tensors.push_back(std::move(t));
    return true;
}

// Data section placement, extents inside the file, no overlaps, and the type-39 decision.
bool gguf_file::impl::check_layout(parser &ps) {
    const uint64_t header_end = ps.pos;  // <= size
    data_offset = header_end + (alignment - header_end % alignment) % alignment;
    if (tensors.empty()) return true;
    if (data_offset > size) {
        return ps.fail("tensor data section would start at offset " + std::to_string(data_offset) +
                       ", past the end of the file (" + std::to_string(size) + " bytes)");
    }
    const uint64_t data_size = size - data_offset;
    for (gguf_tensor &t : tensors) {
        if (t.offset > data_size || t.n_bytes > data_size - t.offset) {
            if (t.type == kAmbiguousTypeId) continue;  // reported below with the ambiguity
            uint64_t end;
            if (t.offset <= data_size &&
                !__builtin_add_overflow(data_offset + t.offset, t.n_bytes, &end)) {
                const uint64_t start = data_offset + t.offset;  // <= size
                return ps.fail("tensor " + quoted(t.name) + " data [" + std::to_string(start) +
                               ", " + std::to_string(end) + ") is past the end of the file (" +
                               std::to_string(size) + " bytes)");
            }
            return ps.fail("tensor " + quoted(t.name) + " data (offset " +
                           std::to_string(t.offset) + ", " + std::to_string(t.n_bytes) +
                           " bytes) is past the end of the file (" + std::to_string(size) +
                           " bytes)");
        }
        t.data = map + data_offset + t.offset;
    }
    std::vector<size_t> order(tensors.size());
    for (size_t i = 0; i < order.size(); i++) order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return tensors[a].offset < tensors[b].offset; });
    for (size_t k = 0; k < order.size(); k++) {
        const gguf_tensor &t = tensors[order[k]];
        const uint64_t limit = k + 1 < order.size() ? tensors[order[k + 1]].offset : data_size;
        const bool fits = t.offset <= limit && t.n_bytes <= limit - t.offset;
        if (t.type == kAmbiguousTypeId) {
            // Id 39: bitnet.cpp's TL2 (size tied to its build-time tiling) or upstream MXFP4.
            // Take it as MXFP4 only when the bytes up to the next tensor are an MXFP4 tensor
            // plus less than one alignment of padding; otherwise refuse rather than guess.
            // TODO: also dispatch on general.architecture / general.file_type (DESIGN §2).
            if (!fits || limit - t.offset - t.n_bytes >= alignment) {
                return ps.fail(type39_refusal(t.name, "its data is not MXFP4-sized"));
            }
        } else if (!fits) {
            if (k + 1 == order.size())
                return ps.fail("tensor " + quoted(t.name) + " data is past the end of the file");
            return ps.fail("tensors " + quoted(t.name) + " and " +
                           quoted(tensors[order[k + 1]].name) + " overlap in the data section");
        }
    }
    return true;
}

gguf_file::gguf_file() : impl_(new impl) {}
gguf_file::~gguf_file() = default;

std::unique_ptr<gguf_file> gguf_file::open(const std::string &path, std::string *error) {
    std::string local_error;
    std::string &err = error ? *error : local_error;
    err.clear();
    try {
        std::unique_ptr<gguf_file> f(new gguf_file());
        impl &m = *f->impl_;
        m.path = path;
        if (!m.map_file(&err)) return nullptr;

        parser ps(m.map, m.size);
        uint64_t n_tensors = 0, n_kv = 0;
        bool ok = m.parse_header(ps, &n_tensors, &n_kv);
        for (uint64_t i = 0; ok && i < n_kv; i++) ok = m.parse_kv(ps);
        ok = ok && m.parse_alignment(ps);
        for (uint64_t i = 0; ok && i < n_tensors; i++) ok = m.parse_tensor_info(ps);
        ok = ok && m.check_layout(ps);
        if (!ok) {
            err = m.err_prefix() + ps.err;
            return nullptr;
        }
        return f;
    } catch (const std::bad_alloc &) {
        err = path + ": out of memory while reading the GGUF header";
    } catch (const std::exception &e) {
        err = path + ": " + e.what();
    }
    return nullptr;
}

uint32_t gguf_file::version() const { return impl_->version; }
uint64_t gguf_file::file_size() const { return impl_->size; }
uint64_t gguf_file::alignment() const { return impl_->alignment; }
const std::string &gguf_file::path() const { return impl_->path; }
const std::vector<gguf_kv> &gguf_file::kvs() const { return impl_->kvs; }
const std::vector<gguf_tensor> &gguf_file::tensors() const { return impl_->tensors; }

const gguf_kv *gguf_file::find(const std::string &key) const {
    auto it = impl_->kv_index.find(key);
    return it == impl_->kv_index.end() ? nullptr : &impl_->kvs[it->second];
}

const gguf_tensor *gguf_file::tensor(const std::string &name) const {
    auto it = impl_->tensor_index.find(name);
    return it == impl_->tensor_index.end() ? nullptr : &impl_->tensors[it->second];
}

// ---- typed getters ------------------------------------------------------------------------

namespace {

// An integer scalar as int64; *too_big for a uint64 above INT64_MAX. False if not an integer.
bool scalar_int(const gguf_kv &kv, int64_t *v, bool *too_big) {
    const uint8_t *p = kv.data;
    *too_big = false;
    switch (kv.type) {
        case gguf_value_type::UINT8: *v = load<uint8_t>(p); return true;
        case gguf_value_type::INT8: *v = load<int8_t>(p); return true;
        case gguf_value_type::UINT16: *v = load<uint16_t>(p); return true;
        case gguf_value_type::INT16: *v = load<int16_t>(p); return true;
        case gguf_value_type::UINT32: *v = load<uint32_t>(p); return true;
        case gguf_value_type::INT32: *v = load<int32_t>(p); return true;
        case gguf_value_type::INT64: *v = load<int64_t>(p); return true;
        case gguf_value_type::UINT64: {
            uint64_t u = load<uint64_t>(p);
            *too_big = u > (uint64_t)INT64_MAX;
            *v = *too_big ? 0 : (int64_t)u;
            return true;
        }
        default: return false;
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
        return fail_get(
            error, key,
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
        *out =
            kv->type == gguf_value_type::FLOAT32 ? load<float>(kv->data) : load<double>(kv->data);
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
                case '"': out += "\\\""; break;
                case '\\': out += "\\\\"; break;
                case '\n': out += "\\n"; break;
                case '\r': out += "\\r"; break;
                case '\t': out += "\\t"; break;
                case '\b': out += "\\b"; break;
                case '\f': out += "\\f"; break;
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
}

// Appends one non-array value at p; returns the bytes it occupies.
uint64_t append_json_value(std::string &out, gguf_value_type t, const uint8_t *p) {
    switch (t) {
        case gguf_value_type::UINT8: append_int(out, load<uint8_t>(p)); return 1;
        case gguf_value_type::INT8: append_int(out, load<int8_t>(p)); return 1;
        case gguf_value_type::UINT16: append_int(out, load<uint16_t>(p)); return 2;
        case gguf_value_type::INT16: append_int(out, load<int16_t>(p)); return 2;
        case gguf_value_type::UINT32: append_int(out, load<uint32_t>(p)); return 4;
        case gguf_value_type::INT32: append_int(out, load<int32_t>(p)); return 4;
        case gguf_value_type::UINT64: append_int(out, load<uint64_t>(p)); return 8;
        case gguf_value_type::INT64: append_int(out, load<int64_t>(p)); return 8;
        case gguf_value_type::FLOAT32: append_float(out, load<float>(p), "%.9g"); return 4;
        case gguf_value_type::FLOAT64: append_float(out, load<double>(p), "%.17g"); return 8;
        case gguf_value_type::BOOL: out += p[0] ? "true" : "false"; return 1;
        case gguf_value_type::STRING: {
            const uint64_t n = load<uint64_t>(p);
            append_json_string(out, p + 8, n);
            return 8 + n;
        }
        default: out += "null"; return 0;  // ARRAY never reaches here: refused at open()
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

}  // namespace bitnet
