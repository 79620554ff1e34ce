// GGUF reader and quant-table tests. A small in-test writer builds files byte by byte in a
// temp dir: one valid file whose every value is checked through the getters and value_json,
// then a table of hostile files, each of which must be refused with a one-line error naming
// the path and the problem. Prints one line per failure and "N passed, M failed".
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "gguf.h"
#include "quant_types.h"

using namespace bitnet;
using bytes = std::vector<uint8_t>;

static int g_passed = 0, g_failed = 0;

static void check(bool ok, const std::string &what) {
    if (ok) {
        g_passed++;
    } else {
        g_failed++;
        printf("FAIL: %s\n", what.c_str());
    }
}

// ---- a tiny GGUF writer ----------------------------------------------------------------------

enum : uint32_t { U8 = 0, I8, U16, I16, U32, I32, F32V, BOOL, STR, ARR, U64, I64, F64V };

template <class T>
static void put(bytes &b, T v) {
    const uint8_t *p = (const uint8_t *)&v;
    b.insert(b.end(), p, p + sizeof v);
}
static void put_str(bytes &b, const std::string &s) {
    put<uint64_t>(b, s.size());
    b.insert(b.end(), s.begin(), s.end());
}
template <class T>
static bytes kv_scalar(const std::string &key, uint32_t type, T v) {
    bytes b;
    put_str(b, key);
    put<uint32_t>(b, type);
    put(b, v);
    return b;
}
static bytes kv_string(const std::string &key, const std::string &v) {
    bytes b;
    put_str(b, key);
    put<uint32_t>(b, STR);
    put_str(b, v);
    return b;
}
static bytes kv_strings(const std::string &key, const std::vector<std::string> &v) {
    bytes b;
    put_str(b, key);
    put<uint32_t>(b, ARR);
    put<uint32_t>(b, STR);
    put<uint64_t>(b, v.size());
    for (const std::string &s : v) put_str(b, s);
    return b;
}
template <class T>
static bytes kv_array(const std::string &key, uint32_t elem, const std::vector<T> &v) {
    bytes b;
    put_str(b, key);
    put<uint32_t>(b, ARR);
    put<uint32_t>(b, elem);
    put<uint64_t>(b, v.size());
    for (T x : v) put(b, x);
    return b;
}
// A key, a value type and raw value bytes, for values the helpers above cannot express.
static bytes kv_raw(const std::string &key, uint32_t type, const bytes &payload) {
    bytes b;
    put_str(b, key);
    put<uint32_t>(b, type);
    b.insert(b.end(), payload.begin(), payload.end());
    return b;
}

struct tensor_spec {
    std::string name;
    std::vector<uint64_t> ne;
    uint32_t type;
    uint64_t offset;
    uint64_t n_bytes;  // data the writer reserves for it
};

struct file_spec {
    uint32_t version = 3;
    std::vector<bytes> kvs;
    std::vector<tensor_spec> tensors;
    uint64_t alignment = 32;  // padding the writer uses
    int64_t n_kv = -1;        // header counts; -1: the real ones
    int64_t n_tensors = -1;
};

static uint8_t data_byte(uint64_t i) {
    return (uint8_t)(i * 7 + 1);
}

// Header, kvs, tensor infos, padding, data. The file ends where the last tensor's data ends
// (no trailing padding), so every shorter prefix is a broken file. Offsets from 4096 on get
// no data: they stand for offsets past the end.
static bytes build(const file_spec &s) {
    bytes b = {'G', 'G', 'U', 'F'};
    put<uint32_t>(b, s.version);
    put<uint64_t>(b, s.n_tensors >= 0 ? (uint64_t)s.n_tensors : s.tensors.size());
    put<uint64_t>(b, s.n_kv >= 0 ? (uint64_t)s.n_kv : s.kvs.size());
    for (const bytes &kv : s.kvs) b.insert(b.end(), kv.begin(), kv.end());
    uint64_t data_end = 0;
    for (const tensor_spec &t : s.tensors) {
        put_str(b, t.name);
        put<uint32_t>(b, (uint32_t)t.ne.size());
        for (uint64_t d : t.ne) put<uint64_t>(b, d);
        put<uint32_t>(b, t.type);
        put<uint64_t>(b, t.offset);
        if (t.offset < 4096 && t.offset + t.n_bytes > data_end) data_end = t.offset + t.n_bytes;
    }
    if (s.tensors.empty()) return b;
    while (b.size() % s.alignment) b.push_back(0);
    for (uint64_t i = 0; i < data_end; i++) b.push_back(data_byte(i));
    return b;
}

static std::string g_dir;
static int g_file_counter = 0;

static std::string write_file(const bytes &b) {
    std::string path = g_dir + "/f" + std::to_string(g_file_counter++) + ".gguf";
    FILE *f = fopen(path.c_str(), "wb");
    if (!f || (!b.empty() && fwrite(b.data(), 1, b.size(), f) != b.size())) {
        printf("FAIL: cannot write %s\n", path.c_str());
        exit(1);
    }
    fclose(f);
    return path;
}

// A valid file exercising every value type and a few tensor types.
static file_spec valid_spec() {
    file_spec s;
    s.kvs = {
        kv_string("general.architecture", "bitnet-b1.58"),
        kv_scalar<uint32_t>("general.alignment", U32, 32),
        kv_string("general.name", "tiny \"quoted\"\n\x01"),
        kv_scalar<uint8_t>("t.u8", U8, 200),
        kv_scalar<int8_t>("t.i8", I8, -5),
        kv_scalar<uint16_t>("t.u16", U16, 60000),
        kv_scalar<int16_t>("t.i16", I16, -30000),
        kv_scalar<uint32_t>("t.u32", U32, 4000000000u),
        kv_scalar<int32_t>("t.i32", I32, -2000000000),
        kv_scalar<uint64_t>("t.u64", U64, UINT64_MAX),
        kv_scalar<int64_t>("t.i64", I64, INT64_MIN),
        kv_scalar<float>("t.f32", F32V, 0.1f),
        kv_scalar<double>("t.f64", F64V, 0.1),
        kv_scalar<float>("t.nan", F32V, std::numeric_limits<float>::quiet_NaN()),
        kv_scalar<double>("t.inf", F64V, -std::numeric_limits<double>::infinity()),
        kv_scalar<uint8_t>("t.bool", BOOL, 1),
        kv_strings("tokenizer.ggml.tokens", {"a", "h\xc3\xa9llo", "\xff\xfe", "\xe2\x82", "\xe6\x97\xa5",
                                             "\"q\\\t", "", "\xed\xa0\x80"}),
        kv_array<int32_t>("t.ints", I32, {1, -2, 3}),
        kv_array<uint8_t>("t.empty", U8, {}),
        kv_array<uint8_t>("t.bools", BOOL, {1, 0}),
        kv_array<float>("t.floats", F32V, {1.5f, -0.0f}),
    };
    s.tensors = {
        {"a", {4, 2}, GGML_F32, 0, 32},
        {"b", {128, 2}, GGML_I2_S, 32, 96},
        {"d", {32, 1, 1, 2}, GGML_Q8_0, 128, 68},
        {std::string(63, 'n'), {3}, GGML_F16, 224, 6},
    };
    return s;
}

// ---- the valid file --------------------------------------------------------------------------

static void expect_json(const gguf_file &f, const std::string &key, const std::string &want) {
    const gguf_kv *kv = f.find(key);
    std::string got = kv ? f.value_json(*kv) : "<absent>";
    check(got == want, "value_json(" + key + ") = " + got + ", want " + want);
}

static void test_valid_file() {
    bytes b = build(valid_spec());
    std::string path = write_file(b), err;
    auto f = gguf_file::open(path, &err);
    check(f != nullptr && err.empty(), "valid file loads: " + err);
    if (!f) return;
    check(f->version() == 3 && f->alignment() == 32 && f->file_size() == b.size(), "header fields");
    check(f->kvs().size() == valid_spec().kvs.size(), "kv count");
    check(f->path() == path, "path");

    int64_t i = 0;
    double d = 0;
    bool flag = false;
    std::string s;
    check(f->get_int("t.u8", &i, &err) && i == 200, "get_int u8");
    check(f->get_int("t.i8", &i, &err) && i == -5, "get_int i8");
    check(f->get_int("t.u16", &i, &err) && i == 60000, "get_int u16");
    check(f->get_int("t.i16", &i, &err) && i == -30000, "get_int i16");
    check(f->get_int("t.u32", &i, &err) && i == 4000000000LL, "get_int u32");
    check(f->get_int("t.i32", &i, &err) && i == -2000000000LL, "get_int i32");
    check(f->get_int("t.i64", &i, &err) && i == INT64_MIN, "get_int i64");
    check(!f->get_int("t.u64", &i, &err) && err.find("out of range") != std::string::npos,
          "u64 max refused: " + err);
    check(!f->get_int("general.name", &i, &err) && err == "key 'general.name' is string, expected an integer",
          "get_int on a string: " + err);
    check(!f->get_int("absent", &i, &err) && err.empty(), "absent key: false, empty error");
    check(f->get_float("t.f32", &d, &err) && d == (double)0.1f, "get_float f32");
    check(f->get_float("t.f64", &d, &err) && d == 0.1, "get_float f64");
    check(f->get_float("t.u32", &d, &err) && d == 4e9, "get_float from an int");
    check(!f->get_float("t.u64", &d, &err) && !err.empty(), "get_float u64 max refused");
    check(!f->get_float("t.bool", &d, &err) && !err.empty(), "get_float on a bool refused");
    check(f->get_bool("t.bool", &flag, &err) && flag, "get_bool");
    check(!f->get_bool("t.u8", &flag, &err) && err.find("expected bool") != std::string::npos,
          "get_bool on u8");
    check(f->get_string("general.architecture", &s, &err) && s == "bitnet-b1.58", "get_string");
    check(!f->get_string("t.ints", &s, &err) && err.find("array of int32") != std::string::npos,
          "get_string on array: " + err);
    check(f->get_int("t.i8", &i, nullptr), "null error pointer");

    std::vector<std::string> toks;
    check(f->get_string_array("tokenizer.ggml.tokens", &toks, &err) && toks.size() == 8 &&
              toks[1] == "h\xc3\xa9llo" && toks[2] == "\xff\xfe" && toks[6].empty(),
          "get_string_array returns the raw bytes");
    check(!f->get_string_array("t.ints", &toks, &err) && !err.empty(), "get_string_array on ints");

    expect_json(*f, "t.u8", "200");
    expect_json(*f, "t.i8", "-5");
    expect_json(*f, "t.u64", "18446744073709551615");
    expect_json(*f, "t.i64", "-9223372036854775808");
    expect_json(*f, "t.f32", "0.100000001");
    expect_json(*f, "t.f64", "0.10000000000000001");
    expect_json(*f, "t.nan", "null");
    expect_json(*f, "t.inf", "null");
    expect_json(*f, "t.bool", "true");
    expect_json(*f, "general.name", "\"tiny \\\"quoted\\\"\\n\\u0001\"");
    // Invalid UTF-8 -> one U+FFFD per maximal ill-formed subpart, as Python's decoder does.
    expect_json(*f, "tokenizer.ggml.tokens",
                "[\"a\",\"h\xc3\xa9llo\",\"\xef\xbf\xbd\xef\xbf\xbd\",\"\xef\xbf\xbd\",\"\xe6\x97\xa5\","
                "\"\\\"q\\\\\\t\",\"\",\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"]");
    expect_json(*f, "t.ints", "[1,-2,3]");
    expect_json(*f, "t.empty", "[]");
    expect_json(*f, "t.bools", "[true,false]");
    expect_json(*f, "t.floats", "[1.5,-0.0]");

    check(f->tensors().size() == 4, "tensor count");
    const gguf_tensor *t = f->tensor("b");
    check(t && t->type == GGML_I2_S && t->n_dims == 2 && t->ne[0] == 128 && t->ne[1] == 2 && t->ne[2] == 1 &&
              t->ne[3] == 1 && t->n_bytes == 96 && t->offset == 32,
          "tensor b fields");
    const gguf_tensor *a = f->tensor("a"), *last = f->tensor(std::string(63, 'n'));
    check(last && last->n_bytes == 6 && last->offset == 224, "63-byte tensor name accepted");
    // The data pointers land on the bytes the writer put there.
    check(a && t && last && a->data[0] == data_byte(0) && t->data - a->data == 32 &&
              t->data[0] == data_byte(32) && last->data - a->data == 224 && last->data[5] == data_byte(229),
          "tensor data pointers");
    check(f->tensor("nope") == nullptr && f->find("nope") == nullptr, "absent lookups");
}

// Versions 2, no tensors at all, no alignment key, a larger alignment.
static void test_other_valid_files() {
    std::string err;
    file_spec s = valid_spec();
    s.version = 2;
    check(gguf_file::open(write_file(build(s)), &err) != nullptr, "v2 loads: " + err);

    file_spec empty;
    auto f = gguf_file::open(write_file(build(empty)), &err);
    check(f && f->kvs().empty() && f->tensors().empty(), "24-byte empty file loads: " + err);

    file_spec no_align = valid_spec();
    no_align.kvs.erase(no_align.kvs.begin() + 1);
    f = gguf_file::open(write_file(build(no_align)), &err);
    check(f && f->alignment() == 32, "default alignment 32: " + err);

    file_spec a64;
    a64.alignment = 64;
    a64.kvs = {kv_scalar<uint32_t>("general.alignment", U32, 64)};
    a64.tensors = {{"x", {16}, GGML_F32, 0, 64}, {"y", {2}, GGML_BF16, 64, 4}};
    f = gguf_file::open(write_file(build(a64)), &err);
    check(f && f->alignment() == 64 && f->tensor("y")->n_bytes == 4, "alignment 64: " + err);

    // Id 39 whose data is exactly MXFP4-sized: read as MXFP4 (64 elements = 2 blocks of 17).
    file_spec mx;
    mx.tensors = {{"m", {64}, GGML_TL2_OR_MXFP4, 0, 34}, {"z", {1}, GGML_F32, 64, 4}};
    f = gguf_file::open(write_file(build(mx)), &err);
    check(f && f->tensor("m")->n_bytes == 34, "type 39 sized as MXFP4 loads: " + err);
}

// ---- hostile files ---------------------------------------------------------------------------

static void expect_refused(const std::string &name, const bytes &b, const std::string &want) {
    std::string path = write_file(b), err;
    auto f = gguf_file::open(path, &err);
    bool ok = f == nullptr && err.rfind(path + ": ", 0) == 0 && err.find(want) != std::string::npos &&
              err.find('\n') == std::string::npos;
    check(ok, name + ": want error containing '" + want + "', got '" + err + "'");
    if (getenv("TEST_GGUF_VERBOSE")) printf("  %-36s %s\n", name.c_str(), err.c_str());
}

static void expect_refused(const std::string &name, const std::function<void(file_spec &)> &edit,
                           const std::string &want) {
    file_spec s = valid_spec();
    edit(s);
    expect_refused(name, build(s), want);
}

static bytes patched(bytes b, size_t at, const bytes &with) {
    std::copy(with.begin(), with.end(), b.begin() + at);
    return b;
}

static void test_header_errors() {
    const bytes good = build(valid_spec());
    expect_refused("bad magic", patched(good, 0, {'G', 'G', 'M', 'L'}),
                   "not a GGUF file (bad magic 47 47 4d 4c");
    expect_refused("byte-swapped magic", patched(good, 0, {'F', 'U', 'G', 'G'}),
                   "big-endian GGUF is not supported");
    expect_refused("big-endian version", patched(good, 4, {0, 0, 0, 3}), "big-endian GGUF is not supported");
    expect_refused("version 0", patched(good, 4, {0, 0, 0, 0}), "unsupported GGUF version 0");
    expect_refused("version 1", patched(good, 4, {1, 0, 0, 0}),
                   "GGUF v1 is not supported (re-convert the model)");
    expect_refused("version 4", patched(good, 4, {4, 0, 0, 0}), "unsupported GGUF version 4");
    expect_refused("empty file", bytes{}, "truncated");
    expect_refused(
        "n_tensors 2^63", [](file_spec &s) { s.n_tensors = INT64_MAX; },
        "n_tensors = 9223372036854775807 is implausible");
    expect_refused(
        "n_tensors 1000", [](file_spec &s) { s.n_tensors = 1000; }, "n_tensors = 1000 is implausible");
    expect_refused(
        "n_kv 2^63", [](file_spec &s) { s.n_kv = INT64_MAX; }, "n_kv = 9223372036854775807 is implausible");
    expect_refused("n_kv 2^64-1", patched(good, 16, bytes(8, 0xff)),
                   "n_kv = 18446744073709551615 is implausible");
    expect_refused("n_kv one too many", [](file_spec &s) { s.n_kv = (int64_t)s.kvs.size() + 1; }, "");
    expect_refused("n_tensors one too many", [](file_spec &s) { s.n_tensors = 5; }, "");

    std::string err;
    check(!gguf_file::open(g_dir + "/missing.gguf", &err) && err.find("cannot open") != std::string::npos,
          "missing file: " + err);
    check(!gguf_file::open(g_dir, &err) && err.find("not a regular file") != std::string::npos,
          "directory: " + err);
    const std::string fifo = g_dir + "/fifo";
    check(mkfifo(fifo.c_str(), 0600) == 0 && !gguf_file::open(fifo, &err) &&
              err.find("not a regular file") != std::string::npos,
          "a FIFO is refused without blocking: " + err);
    unlink(fifo.c_str());
}

static void test_kv_errors() {
    auto only = [](bytes kv) {
        return [kv](file_spec &s) {
            s.kvs = {kv};
            s.tensors.clear();
        };
    };
    auto add = [](bytes kv) { return [kv](file_spec &s) { s.kvs.push_back(kv); }; };
    bytes long_string;
    put<uint64_t>(long_string, 1000);
    long_string.insert(long_string.end(), {'a', 'b', 'c'});
    expect_refused("string past the end", only(kv_raw("k", STR, long_string)),
                   "string #0 of 1000 bytes runs past the end");
    bytes huge_string;
    put<uint64_t>(huge_string, UINT64_MAX);
    expect_refused("string length 2^64-1", add(kv_raw("k", STR, huge_string)), "runs past the end");
    expect_refused("empty key", add(kv_string("", "x")), "is 0 bytes long (allowed 1..65535)");
    expect_refused("NUL in a key", only(kv_string(std::string("general.name\0x", 14), "x")),
                   "key #0 at offset 24 contains a NUL byte");
    expect_refused("key of 65536 bytes", add(kv_string(std::string(65536, 'k'), "x")), "is 65536 bytes long");
    bytes key_past_end;
    put<uint64_t>(key_past_end, 100);
    key_past_end.resize(key_past_end.size() + 20, 'k');
    expect_refused("key past the end", only(key_past_end),
                   "file is truncated: key #0 at offset 32 needs 100 bytes, 20 left");
    expect_refused("unknown value type", add(kv_raw("k", 13, {0, 0, 0, 0})),
                   "key 'k' has unknown value type 13");
    expect_refused("value type 2^32-1", add(kv_raw("k", 0xffffffffu, {0, 0, 0, 0})),
                   "unknown value type 4294967295");
    bytes arr_arr;
    put<uint32_t>(arr_arr, ARR);
    put<uint64_t>(arr_arr, 1);
    put<uint32_t>(arr_arr, U8);
    put<uint64_t>(arr_arr, 1);
    arr_arr.push_back(0);
    expect_refused("array of arrays", add(kv_raw("k", ARR, arr_arr)), "array of arrays");
    bytes arr_unknown;
    put<uint32_t>(arr_unknown, 77);
    put<uint64_t>(arr_unknown, 0);
    expect_refused("array of unknown type", add(kv_raw("k", ARR, arr_unknown)),
                   "array of unknown value type 77");
    for (uint64_t n : {uint64_t(1) << 62, UINT64_MAX, uint64_t(1000000)}) {
        bytes arr;
        put<uint32_t>(arr, U32);
        put<uint64_t>(arr, n);
        put<uint32_t>(arr, 7);
        expect_refused("u32 array length " + std::to_string(n), add(kv_raw("k", ARR, arr)),
                       "needs more bytes than");
    }
    bytes strs;
    put<uint32_t>(strs, STR);
    put<uint64_t>(strs, uint64_t(1) << 61);
    put_str(strs, "x");
    expect_refused("string array count 2^61", add(kv_raw("k", ARR, strs)), "strings cannot fit");
    bytes strs_lie;
    put<uint32_t>(strs_lie, STR);
    put<uint64_t>(strs_lie, 2);
    put_str(strs_lie, "x");
    put<uint64_t>(strs_lie, 1u << 30);
    expect_refused("string array element past the end", add(kv_raw("k", ARR, strs_lie)),
                   "string #1 of 1073741824 bytes");
    expect_refused("duplicate key", add(kv_scalar<uint8_t>("t.u8", U8, 1)), "duplicate key 't.u8'");
    expect_refused("bool byte 2", add(kv_scalar<uint8_t>("k", BOOL, 2)), "bool byte is 2");
    expect_refused("bool array byte 2", add(kv_array<uint8_t>("k", BOOL, {1, 0, 2})), "bool byte is 2");
    auto align = [](bytes kv) { return [kv](file_spec &s) { s.kvs[1] = kv; }; };
    expect_refused("alignment as uint64", align(kv_scalar<uint64_t>("general.alignment", U64, 32)),
                   "general.alignment must be uint32, found uint64");
    expect_refused("alignment as string", align(kv_string("general.alignment", "32")),
                   "general.alignment must be uint32, found string");
    expect_refused("alignment 0", align(kv_scalar<uint32_t>("general.alignment", U32, 0)),
                   "general.alignment = 0 is invalid");
    expect_refused("alignment 3", align(kv_scalar<uint32_t>("general.alignment", U32, 3)),
                   "general.alignment = 3 is invalid");
    expect_refused("alignment 2^30", align(kv_scalar<uint32_t>("general.alignment", U32, 1u << 30)),
                   "general.alignment = 1073741824 is invalid");
    expect_refused("alignment 2^31", align(kv_scalar<uint32_t>("general.alignment", U32, 1u << 31)),
                   "is invalid");
}

static void test_tensor_errors() {
    auto tensor0 = [](std::function<void(tensor_spec &)> edit) {
        return [edit](file_spec &s) { edit(s.tensors[0]); };
    };
    expect_refused(
        "duplicate tensor name", [](file_spec &s) { s.tensors[1].name = "a"; }, "duplicate tensor name 'a'");
    expect_refused("tensor name of 64 bytes", tensor0([](tensor_spec &t) { t.name = std::string(64, 'x'); }),
                   "tensor #0 name at offset 707 is 64 bytes long (allowed 1..63)");
    // Names from the file are escaped, so the message stays on one line.
    expect_refused(
        "duplicate name with a newline", [](file_spec &s) { s.tensors[0].name = s.tensors[1].name = "x\ny"; },
        "duplicate tensor name 'x\\x0ay'");
    expect_refused("empty tensor name", tensor0([](tensor_spec &t) { t.name.clear(); }), "is 0 bytes long");
    expect_refused("n_dims 0", tensor0([](tensor_spec &t) { t.ne.clear(); }),
                   "tensor 'a' has n_dims = 0 (expected 1..4)");
    expect_refused("n_dims 5", tensor0([](tensor_spec &t) { t.ne = {4, 2, 1, 1, 1}; }), "has n_dims = 5");
    expect_refused("zero dim", tensor0([](tensor_spec &t) { t.ne = {4, 0}; }), "tensor 'a' dimension 1 is 0");
    expect_refused("dim above int64", tensor0([](tensor_spec &t) { t.ne = {uint64_t(1) << 63}; }),
                   "dimension 0 is 9223372036854775808");
    expect_refused("element count overflow",
                   tensor0([](tensor_spec &t) { t.ne = {uint64_t(1) << 32, uint64_t(1) << 32}; }),
                   "element count overflows int64");
    expect_refused("element count overflow (4 dims)",
                   tensor0([](tensor_spec &t) { t.ne = {1u << 16, 1u << 16, 1u << 16, 1u << 15}; }),
                   "element count overflows int64");
    expect_refused("byte count overflow", tensor0([](tensor_spec &t) {
                       t.type = GGML_F64;
                       t.ne = {1u << 31, 1u << 31};
                   }),
                   "byte size overflows");
    expect_refused("unknown type id 16", tensor0([](tensor_spec &t) { t.type = 16; }),
                   "tensor 'a' has unknown ggml type id 16");
    expect_refused("unknown type id 2^32-1", tensor0([](tensor_spec &t) { t.type = 0xffffffffu; }),
                   "unknown ggml type id 4294967295");
    expect_refused(
        "I2_S 192 elements", [](file_spec &s) { s.tensors[1].ne = {64, 3}; },
        "tensor 'b' of type I2_S has 192 elements, not a multiple of its block size 128");
    expect_refused("Q4_0 ne0 33", tensor0([](tensor_spec &t) {
                       t.type = GGML_Q4_0;
                       t.ne = {33};
                   }),
                   "not a multiple of its block size 32");
    expect_refused(
        "offset not aligned", [](file_spec &s) { s.tensors[1].offset = 48; },
        "offset 48 is not a multiple of the alignment 32");
    expect_refused(
        "offset past the end", [](file_spec &s) { s.tensors[1].offset = 1u << 20; },
        "is past the end of the file");
    expect_refused(
        "offset near 2^64", [](file_spec &s) { s.tensors[1].offset = UINT64_MAX - 31; },
        "is past the end of the file");
    expect_refused("data past the end", tensor0([](tensor_spec &t) { t.ne = {4, 200}; }),
                   "tensor 'a' data [");
    expect_refused("overlap", [](file_spec &s) { s.tensors[0].ne = {16}; }, "tensors 'a' and 'b' overlap");
    expect_refused("same offset", [](file_spec &s) { s.tensors[2].offset = 32; }, "overlap");
    expect_refused(
        "offsets out of order", [](file_spec &s) { std::swap(s.tensors[0].offset, s.tensors[1].offset); },
        "tensor offsets are out of order: 'b' at 0 follows 'a' at 32");
    // I2_S is n/4 codes + a 32-byte tail: a writer with another tail leaves other room.
    expect_refused(
        "I2_S tail too short", [](file_spec &s) { s.tensors[1].ne = {128, 3}; },
        "I2_S tensor 'b' needs 128 bytes (n/4 codes + a 32-byte scale tail) but only 96 lie "
        "before 'd': its tail is not 32 bytes");
    expect_refused(
        "I2_S tail too long",
        [](file_spec &s) {
            s.tensors[1].ne = {128, 1};
            s.tensors.pop_back();  // nothing after 'd' to keep in order
        },
        "needs 64 bytes (n/4 codes + a 32-byte scale tail) but 96 lie before 'd'");
    expect_refused("NUL in a tensor name", tensor0([](tensor_spec &t) { t.name = std::string("a\0b", 3); }),
                   "tensor #0 name at offset 707 contains a NUL byte");
}

// Id 39: TL2 in bitnet.cpp files, MXFP4 upstream. Outside bitnet.cpp files it is read as MXFP4
// only when exactly MXFP4-sized (test_other_valid_files has the one that loads).
static void test_type_39() {
    auto upstream = [](std::vector<tensor_spec> tensors) {
        return [tensors](file_spec &s) {
            s.kvs = {kv_string("general.architecture", "gpt-oss")};
            s.tensors = tensors;
        };
    };
    // MXFP4 would need 256/32*17 = 136 bytes; only 96 are there before the next tensor.
    expect_refused("type 39 TL2-sized",
                   upstream({{"m", {256}, GGML_TL2_OR_MXFP4, 0, 96}, {"z", {1}, GGML_F32, 96, 4}}),
                   "has ggml type 39, which is TL2 in bitnet.cpp files and MXFP4 upstream");
    // MXFP4 would take 34 bytes, but 128 lie before the next tensor: not an MXFP4 layout.
    expect_refused("type 39 with a gap",
                   upstream({{"m", {64}, GGML_TL2_OR_MXFP4, 0, 128}, {"z", {1}, GGML_F32, 128, 4}}),
                   "its data is not MXFP4-sized");
    expect_refused("type 39 ne0 16", upstream({{"m", {16}, GGML_TL2_OR_MXFP4, 0, 16}}),
                   "ne0 = 16 is not a multiple of 32, and TL2 is not supported");
    expect_refused("type 39 past the end", upstream({{"m", {256}, GGML_TL2_OR_MXFP4, 0, 100}}), "type 39");
    // MXFP4-sized, but the file says bitnet.cpp: TL2, whatever its size.
    const std::vector<tensor_spec> mxfp4_sized = {{"m", {64}, GGML_TL2_OR_MXFP4, 0, 34},
                                                  {"z", {1}, GGML_F32, 64, 4}};
    expect_refused(
        "type 39 in a bitnet file", [&](file_spec &s) { s.tensors = mxfp4_sized; },
        "type 39, which is TL2 in bitnet.cpp files and MXFP4 upstream; the architecture "
        "'bitnet-b1.58' is bitnet.cpp's, and TL2 is not supported (re-convert the model with i2_s)");
    expect_refused(
        "type 39 with file_type 39",
        [&](file_spec &s) {
            upstream(mxfp4_sized)(s);
            s.kvs.push_back(kv_scalar<uint32_t>("general.file_type", U32, 39));
        },
        "general.file_type 39 is bitnet.cpp's TL2");
}

// Every prefix of a valid file is broken: none may crash, all must be refused.
static void test_truncation() {
    const bytes good = build(valid_spec());
    int bad = 0;
    for (size_t n = 0; n < good.size(); n++) {
        std::string path = write_file(bytes(good.begin(), good.begin() + n)), err;
        auto f = gguf_file::open(path, &err);
        if (f || err.rfind(path + ": ", 0) != 0 || err.find('\n') != std::string::npos) {
            if (bad++ < 5) printf("FAIL: truncated to %zu bytes: %s\n", n, f ? "loaded" : err.c_str());
        }
        unlink(path.c_str());
    }
    check(bad == 0, "truncation at every byte (" + std::to_string(bad) + " bad)");
}

// Flip every byte of a valid file a few ways: whatever opens must be safe to read back.
static void test_mutations() {
    const bytes good = build(valid_spec());
    int bad = 0;
    for (size_t i = 0; i < good.size(); i++) {
        for (uint8_t x : {0x01, 0x80, 0xff}) {
            bytes b = good;
            b[i] ^= x;
            std::string path = write_file(b), err;  // a fresh file: rewriting one is slow
            auto f = gguf_file::open(path, &err);
            unlink(path.c_str());
            if (!f && err.empty()) bad++;
            if (!f) continue;
            std::vector<std::string> v;
            for (const gguf_kv &kv : f->kvs()) {
                f->value_json(kv);
                f->get_string_array(kv.key, &v, &err);
            }
            for (const gguf_tensor &t : f->tensors()) {
                volatile uint8_t sink = t.data[0] ^ t.data[t.n_bytes - 1];
                (void)sink;
            }
        }
    }
    check(bad == 0, "byte mutations never fail without a message");
}

// A 128256-entry vocabulary (the Llama 3 size) round-trips through getters and JSON.
static void test_large_vocab() {
    file_spec s;
    std::vector<std::string> vocab(128256);
    size_t text_bytes = 0;
    for (size_t i = 0; i < vocab.size(); i++) {
        vocab[i] = "tok" + std::to_string(i) + (i % 3 == 0 ? "\xc4\xa0x" : "");
        text_bytes += vocab[i].size();
    }
    s.kvs = {kv_strings("tokenizer.ggml.tokens", vocab)};
    std::string err;
    auto f = gguf_file::open(write_file(build(s)), &err);
    std::vector<std::string> got;
    check(f && f->get_string_array("tokenizer.ggml.tokens", &got, &err) && got == vocab,
          "large vocab get_string_array");
    if (!f) return;
    std::string json = f->value_json(*f->find("tokenizer.ggml.tokens"));
    check(json.size() == text_bytes + 3 * vocab.size() + 1 &&
              json.rfind("[\"tok0\xc4\xa0x\",\"tok1\",", 0) == 0 &&
              json.compare(json.size() - 12, 12, "\"tok128255\"]") == 0,
          "large vocab JSON");
}

// ---- the quant table -------------------------------------------------------------------------

static void test_quant_table() {
    struct row {
        uint32_t id;
        int64_t block, size;
        bool readable;
    };
    const row rows[] = {
        {GGML_F32, 1, 4, true},       {GGML_F16, 1, 2, true},       {GGML_BF16, 1, 2, true},
        {GGML_Q4_0, 32, 18, false},   {GGML_Q4_1, 32, 20, false},   {GGML_Q5_0, 32, 22, false},
        {GGML_Q5_1, 32, 24, false},   {GGML_Q8_0, 32, 34, false},   {GGML_Q8_1, 32, 36, false},
        {GGML_Q2_K, 256, 84, false},  {GGML_Q3_K, 256, 110, false}, {GGML_Q4_K, 256, 144, false},
        {GGML_Q5_K, 256, 176, false}, {GGML_Q6_K, 256, 210, false}, {GGML_Q8_K, 256, 292, false},
        {GGML_I8, 1, 1, false},       {GGML_I16, 1, 2, false},      {GGML_I32, 1, 4, false},
        {GGML_I64, 1, 8, false},      {GGML_F64, 1, 8, false},      {GGML_TQ1_0, 256, 54, false},
        {GGML_TQ2_0, 256, 66, false},
    };
    for (const row &r : rows) {
        const quant_type_traits *t = quant_type_find(r.id);
        const std::string name = "type " + std::to_string(r.id);
        check(t && t->block_size == r.block && t->type_size == r.size && t->readable == r.readable &&
                  !t->whole_tensor,
              name + " traits");
        const int64_t ne[2] = {512, 3};
        uint64_t n = 0;
        check(quant_type_tensor_bytes(r.id, ne, 2, &n) && n == (uint64_t)(3 * 512 / r.block * r.size),
              name + " bytes");
    }
    uint64_t n = 0;
    const int64_t i2s[2] = {256, 3};
    check(quant_type_find(GGML_I2_S)->readable && quant_type_tensor_bytes(GGML_I2_S, i2s, 2, &n) &&
              n == 256 * 3 / 4 + 32,
          "I2_S is n/4 + 32");
    check(quant_type_find(GGML_TL1) && !quant_type_find(GGML_TL1)->readable &&
              quant_type_tensor_bytes(GGML_TL1, i2s, 2, &n) && n == 256 * 3 / 4 + 32,
          "TL1 known, not readable, n/4 + 32");
    const int64_t mx[1] = {64};
    check(quant_type_tensor_bytes(GGML_TL2_OR_MXFP4, mx, 1, &n) && n == 34, "type 39 sized as MXFP4");
    for (uint32_t id : {4u, 5u, 16u, 23u, 29u, 31u, 37u, 40u, 1000u}) {
        check(quant_type_find(id) == nullptr, "unknown id " + std::to_string(id));
    }
    n = 7;
    const int64_t bad_i2s[2] = {64, 3}, huge[2] = {INT64_MAX, 2}, f32_wrap[2] = {int64_t(1) << 62, 1},
                  tl1_wrap[2] = {int64_t(1) << 62, 4}, zero[2] = {4, 0}, neg[1] = {-4};
    check(!quant_type_tensor_bytes(GGML_I2_S, bad_i2s, 2, &n), "I2_S of 192 elements (a partial block) refused");
    check(!quant_type_tensor_bytes(GGML_F32, huge, 2, &n), "element overflow refused");
    check(!quant_type_tensor_bytes(GGML_F32, f32_wrap, 2, &n), "byte overflow refused");
    check(!quant_type_tensor_bytes(GGML_TL1, tl1_wrap, 2, &n), "element overflow with small bytes refused");
    check(!quant_type_tensor_bytes(GGML_F32, zero, 2, &n), "zero dim refused");
    check(!quant_type_tensor_bytes(GGML_F32, neg, 1, &n), "negative dim refused");
    check(!quant_type_tensor_bytes(GGML_F32, i2s, 0, &n) && !quant_type_tensor_bytes(GGML_F32, i2s, 5, &n),
          "n_dims 0/5 refused");
    check(!quant_type_tensor_bytes(16, i2s, 2, &n), "unknown id refused");
    check(n == 7, "*n_bytes untouched on failure");
    const int64_t rows_straddle[2] = {64, 4};  // flattened blocks: two 64-element rows per block
    check(quant_type_tensor_bytes(GGML_I2_S, rows_straddle, 2, &n) && n == 64 * 4 / 4 + 32,
          "I2_S of 64-element rows sized n/4 + 32");
}

int main() {
    char tmpl[] = "/tmp/test_gguf.XXXXXX";
    if (!mkdtemp(tmpl)) {
        printf("FAIL: mkdtemp\n0 passed, 1 failed\n");
        return 1;
    }
    g_dir = tmpl;

    test_quant_table();
    test_valid_file();
    test_other_valid_files();
    test_header_errors();
    test_kv_errors();
    test_tensor_errors();
    test_type_39();
    test_truncation();
    test_mutations();
    test_large_vocab();

    for (int i = 0; i < g_file_counter; i++) unlink((g_dir + "/f" + std::to_string(i) + ".gguf").c_str());
    rmdir(g_dir.c_str());
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
