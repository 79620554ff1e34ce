// GGUF reader. The file is untrusted: every count, length, type and extent is checked against
// the bytes actually mapped before it is used, and no allocation is sized by a count that has
// not been walked. Parsing goes through one bounded cursor; on the first problem the parser
// records one line and open() returns nullptr with "<path>: <line>".
#include "gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <unordered_map>

#include "gguf_internal.h"
#include "quant_types.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the GGUF reader assumes a little-endian host"
#endif

namespace bitnet {

using gguf_detail::kNumValueTypes;
using gguf_detail::load;
using gguf_detail::quoted;
using gguf_detail::type_desc;
using gguf_detail::value_type_name;

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
constexpr const char *kNotMxfp4 = "its data is not MXFP4-sized";

// Bytes per scalar of each value type; 0 for STRING and ARRAY (variable).
constexpr uint64_t kValueSize[kNumValueTypes] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

// Id 39 means TL2 in bitnet.cpp files and MXFP4 upstream; `why` says why it is not MXFP4 here.
std::string type39_refusal(const std::string &tensor_name, const std::string &why) {
    return "tensor " + quoted(tensor_name) +
           " has ggml type 39, which is TL2 in bitnet.cpp files and MXFP4 upstream; " + why +
           ", and TL2 is not supported (re-convert the model with i2_s)";
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
            return fail("file is truncated: " + std::string(what) + " at offset " + std::to_string(pos) +
                        " needs " + std::to_string(n) + " bytes, " + std::to_string(left()) + " left");
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
    // A key or tensor name: u64 length + bytes, length within [min_len, max_len], no NUL byte
    // (the C API hands names out as C strings, where a NUL would cut one into another name).
    bool read_name(std::string *out, uint64_t min_len, uint64_t max_len, const char *what) {
        uint64_t n;
        const uint8_t *p;
        if (!read(&n, what)) return false;
        if (n < min_len || n > max_len) {
            return fail(std::string(what) + " at offset " + std::to_string(pos - 8) + " is " +
                        std::to_string(n) + " bytes long (allowed " + std::to_string(min_len) + ".." +
                        std::to_string(max_len) + ")");
        }
        if (!take(n, what, &p)) return false;
        if (memchr(p, 0, n) != nullptr) {
            return fail(std::string(what) + " at offset " + std::to_string(pos - n - 8) +
                        " contains a NUL byte");
        }
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
    bool check_room(parser &ps, size_t k) const;
    std::string past_the_end(const gguf_tensor &t) const;
    std::string id39_tl2_reason() const;
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
    if (memcmp(magic, "FUGG", 4) == 0 || (magic_ok && ver_le > 0xffff && ver_be >= 1 && ver_be <= 3)) {
        return ps.fail(
            "big-endian GGUF is not supported (the header is byte-swapped; "
            "re-convert the model on a little-endian machine)");
    }
    if (!magic_ok) {
        char buf[96];
        snprintf(buf, sizeof buf, "not a GGUF file (bad magic %02x %02x %02x %02x, expected \"GGUF\")",
                 magic[0], magic[1], magic[2], magic[3]);
        return ps.fail(buf);
    }
    version = ver_le;
    if (version == 1) return ps.fail("GGUF v1 is not supported (re-convert the model)");
    if (version != 2 && version != 3) {
        return ps.fail("unsupported GGUF version " + std::to_string(version) + " (expected 2 or 3)");
    }
    ps.pos = 8;
    ps.read(n_tensors, "n_tensors");
    ps.read(n_kv, "n_kv");
    // Every record takes at least a few bytes, so the counts must fit in what is left.
    const uint64_t left = ps.left();
    if (*n_kv > kMaxKvs || *n_kv > left / kMinKvBytes) {
        return ps.fail("n_kv = " + std::to_string(*n_kv) + " is implausible for " + std::to_string(left) +
                       " bytes of header (limit " + std::to_string(std::min(kMaxKvs, left / kMinKvBytes)) +
                       ")");
    }
    const uint64_t left_for_tensors = left - *n_kv * kMinKvBytes;
    if (*n_tensors > kMaxTensors || *n_tensors > left_for_tensors / kMinTensorInfoBytes) {
        return ps.fail("n_tensors = " + std::to_string(*n_tensors) + " is implausible for " +
                       std::to_string(left) + " bytes of header (limit " +
                       std::to_string(std::min(kMaxTensors, left_for_tensors / kMinTensorInfoBytes)) + ")");
    }
    return true;
}

bool gguf_file::impl::parse_kv(parser &ps) {
    gguf_kv kv{};
    std::string what = "key #" + std::to_string(kvs.size());
    if (!ps.read_name(&kv.key, 1, kMaxKeyBytes, what.c_str())) return false;
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
            return ps.fail(name + ": " + std::to_string(kv.n_elements) + " strings cannot fit in the " +
                           std::to_string(ps.left()) + " bytes left");
        }
        for (uint64_t i = 0; i < kv.n_elements; i++) {
            uint64_t n;
            if (!ps.read(&n, "string length")) return false;
            if (n > ps.left()) {
                return ps.fail(name + ": string #" + std::to_string(i) + " of " + std::to_string(n) +
                               " bytes runs past the end of the file (" + std::to_string(ps.left()) +
                               " bytes left)");
            }
            ps.pos += n;
        }
    } else {
        const uint64_t esize = kValueSize[elem];
        if (kv.n_elements > ps.left() / esize) {
            return ps.fail(name + ": array of " + std::to_string(kv.n_elements) + " " +
                           value_type_name((gguf_value_type)elem) + " needs more bytes than the " +
                           std::to_string(ps.left()) + " left in the file");
        }
        const uint8_t *p;
        ps.take(kv.n_elements * esize, "value", &p);
        if (elem == (uint32_t)gguf_value_type::BOOL) {
            for (uint64_t i = 0; i < kv.n_elements; i++) {
                if (p[i] > 1) {
                    return ps.fail(name + ": bool byte is " + std::to_string(p[i]) + " (must be 0 or 1)");
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
                       " is invalid (must be a power of two, 1.." + std::to_string(kMaxAlignment) + ")");
    }
    alignment = a;
    return true;
}

bool gguf_file::impl::parse_tensor_info(parser &ps) {
    gguf_tensor t{};
    std::string what = "tensor #" + std::to_string(tensors.size()) + " name";
    if (!ps.read_name(&t.name, 1, kMaxTensorNameBytes, what.c_str())) return false;
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
    if (!qt) {
        // Newer bitnet.cpp builds number their TL1/TL2 lookup-table types past 39.
        const bool maybe_lut = t.type >= 40 && t.type <= 43;
        const char *lut_hint =
            " (newer bitnet.cpp builds use ids from 40 for their TL1/TL2 lookup-table layouts, which cannot "
            "be decoded from the file alone: convert the model from its Hugging Face checkpoint instead)";
        return ps.fail(name + " has unknown ggml type id " + std::to_string(t.type) +
                       (maybe_lut ? lut_hint : ""));
    }
    // A whole-tensor type (I2_S) packs the flattened tensor: only the element count need fill blocks.
    if ((qt->whole_tensor ? n_elements : t.ne[0]) % qt->block_size != 0) {
        if (qt->whole_tensor)
            return ps.fail(name + " of type " + qt->name + " has " + std::to_string(n_elements) +
                           " elements, not a multiple of its block size " + std::to_string(qt->block_size) +
                           " (the layout has no room for a partial last block)");
        if (t.type == kAmbiguousTypeId) {
            return ps.fail(
                type39_refusal(t.name, "ne0 = " + std::to_string(t.ne[0]) + " is not a multiple of 32"));
        }
        return ps.fail(name + " of type " + qt->name + " has ne0 = " + std::to_string(t.ne[0]) +
                       ", not a multiple of its block size " + std::to_string(qt->block_size));
    }
    if (!quant_type_tensor_bytes(t.type, t.ne, (int)t.n_dims, &t.n_bytes)) {
        return ps.fail(name + " byte size overflows 64 bits");
    }
    if (t.offset % alignment != 0) {
        return ps.fail(name + " offset " + std::to_string(t.offset) + " is not a multiple of the alignment " +
                       std::to_string(alignment));
    }
    tensor_index.emplace(t.name, tensors.size());
    tensors.push_back(std::move(t));
    return true;
}

// Why id 39 is TL2 in this file, or "" when nothing says so. bitnet.cpp writes TL2 under a
// `bitnet*` architecture or with general.file_type 39 (its LLAMA_FTYPE_MOSTLY_TL2); upstream
// MXFP4 appears in neither (DESIGN section 2: dispatch on the architecture and file_type).
std::string gguf_file::impl::id39_tl2_reason() const {
    auto arch = kv_index.find("general.architecture");
    if (arch != kv_index.end() && kvs[arch->second].type == gguf_value_type::STRING) {
        const gguf_kv &kv = kvs[arch->second];
        const std::string name((const char *)kv.data + 8, load<uint64_t>(kv.data));
        if (name.rfind("bitnet", 0) == 0) return "the architecture " + quoted(name) + " is bitnet.cpp's";
    }
    auto ftype = kv_index.find("general.file_type");
    if (ftype != kv_index.end() && kvs[ftype->second].type == gguf_value_type::UINT32 &&
        load<uint32_t>(kvs[ftype->second].data) == 39) {
        return "general.file_type 39 is bitnet.cpp's TL2";
    }
    return "";
}

// Data section placement, then three passes over the tensors, each reporting the first
// problem of its kind: data inside the file; offsets rising in tensor-info order (as ggml
// writes and requires); each tensor against its room, up to the next tensor or the end.
bool gguf_file::impl::check_layout(parser &ps) {
    const uint64_t header_end = ps.pos;  // <= size
    data_offset = header_end + (alignment - header_end % alignment) % alignment;
    if (tensors.empty()) return true;
    if (data_offset > size) {
        return ps.fail("tensor data section would start at offset " + std::to_string(data_offset) +
                       ", past the end of the file (" + std::to_string(size) + " bytes)");
    }
    const uint64_t data_size = size - data_offset;
    const std::string tl2_reason = id39_tl2_reason();
    for (const gguf_tensor &t : tensors) {
        const bool id39 = t.type == kAmbiguousTypeId;
        if (id39 && !tl2_reason.empty()) return ps.fail(type39_refusal(t.name, tl2_reason));
        if (t.offset > data_size || t.n_bytes > data_size - t.offset) {
            return ps.fail(id39 ? type39_refusal(t.name, kNotMxfp4) : past_the_end(t));
        }
    }
    for (size_t k = 0; k + 1 < tensors.size(); k++) {
        const gguf_tensor &t = tensors[k], &next = tensors[k + 1];
        if (next.offset < t.offset) {
            return ps.fail("tensor offsets are out of order: " + quoted(next.name) + " at " +
                           std::to_string(next.offset) + " follows " + quoted(t.name) + " at " +
                           std::to_string(t.offset) + " (data must be in tensor-info order)");
        }
    }
    for (size_t k = 0; k < tensors.size(); k++) {
        if (!check_room(ps, k)) return false;
        tensors[k].data = map + data_offset + tensors[k].offset;
    }
    return true;
}

// Tensor k (inside the file, offsets in order) against the bytes up to the next tensor. Two
// types are checked for what follows them too, since a writer that sized them otherwise
// leaves a gap: I2_S (its 32-byte scale tail) and id 39 (TL2 or MXFP4).
bool gguf_file::impl::check_room(parser &ps, size_t k) const {
    const gguf_tensor &t = tensors[k];
    const gguf_tensor *next = k + 1 < tensors.size() ? &tensors[k + 1] : nullptr;
    const uint64_t data_size = size - data_offset;
    const uint64_t room = (next ? std::min(next->offset, data_size) : data_size) - t.offset;
    const bool fits = t.n_bytes <= room;
    if (t.type == kAmbiguousTypeId) {
        // MXFP4 only when the room is an MXFP4 tensor plus less than one alignment of padding
        // (and nothing said bitnet.cpp); otherwise refuse rather than guess.
        if (!fits || room - t.n_bytes >= alignment) return ps.fail(type39_refusal(t.name, kNotMxfp4));
        return true;
    }
    // An I2_S writer with another tail size leaves too little or too much room.
    auto wrong_i2s_tail = [&](const char *how_much) {
        return ps.fail("I2_S tensor " + quoted(t.name) + " needs " + std::to_string(t.n_bytes) +
                       " bytes (n/4 codes + a 32-byte scale tail) but " + how_much + std::to_string(room) +
                       " lie before " + quoted(next->name) +
                       ": its tail is not 32 bytes (re-convert the model)");
    };
    if (!fits) {  // then `next` exists: the data is inside the file
        if (t.type == GGML_I2_S && t.n_bytes - room <= QUANT_WHOLE_TENSOR_TAIL_BYTES) {
            return wrong_i2s_tail("only ");
        }
        return ps.fail("tensors " + quoted(t.name) + " and " + quoted(next->name) +
                       " overlap in the data section");
    }
    if (t.type == GGML_I2_S && next && room - t.n_bytes >= alignment) return wrong_i2s_tail("");
    return true;
}

std::string gguf_file::impl::past_the_end(const gguf_tensor &t) const {
    uint64_t end;
    if (t.offset <= size - data_offset && !__builtin_add_overflow(data_offset + t.offset, t.n_bytes, &end)) {
        return "tensor " + quoted(t.name) + " data [" + std::to_string(data_offset + t.offset) + ", " +
               std::to_string(end) + ") is past the end of the file (" + std::to_string(size) + " bytes)";
    }
    return "tensor " + quoted(t.name) + " data (offset " + std::to_string(t.offset) + ", " +
           std::to_string(t.n_bytes) + " bytes) is past the end of the file (" + std::to_string(size) +
           " bytes)";
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

uint32_t gguf_file::version() const {
    return impl_->version;
}
uint64_t gguf_file::file_size() const {
    return impl_->size;
}
uint64_t gguf_file::alignment() const {
    return impl_->alignment;
}
const std::string &gguf_file::path() const {
    return impl_->path;
}
const std::vector<gguf_kv> &gguf_file::kvs() const {
    return impl_->kvs;
}
const std::vector<gguf_tensor> &gguf_file::tensors() const {
    return impl_->tensors;
}

const gguf_kv *gguf_file::find(const std::string &key) const {
    auto it = impl_->kv_index.find(key);
    return it == impl_->kv_index.end() ? nullptr : &impl_->kvs[it->second];
}

const gguf_tensor *gguf_file::tensor(const std::string &name) const {
    auto it = impl_->tensor_index.find(name);
    return it == impl_->tensor_index.end() ? nullptr : &impl_->tensors[it->second];
}

}  // namespace bitnet
