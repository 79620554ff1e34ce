// lut-layout-probe: does a lookup-table (LUT) ternary kernel beat our I2_S kernels anywhere?
//
// T-MAC and bitnet.cpp's TL1/TL2 replace multiplies by table lookups: per activation row and
// group of g columns, a table of the partial sums of every weight pattern; per weight group, one
// lookup. This probe runs our shape-generic, exact versions of that idea (src/kernels/
// ternary_lut.h: lut2 on AVX2, lut3 on AVX-512) against the engine's I2_S kernels (AVX2, and
// AVX-512 VNNI where the CPU has it) on the same random ternary matrices and int8 activations:
//
//   1. every kernel equals the scalar I2_S reference bit for bit, on every shape and batch size,
//      over all rows and over a range that starts and ends inside a tile (exit 1 if not);
//   2. compute rate with the weights in cache (one thread; a slice of each 2B-4T shape with
//      <= 768 KiB of I2_S weights, repeated), for m activation rows; LUT times include building
//      the tables, charged by the slice's share of the n rows (the engine would build them once
//      per matmul, for all rows and threads);
//   3. DRAM streaming, m = 1: a --mib MiB matrix in 2 MiB pages (as the engine's weight arena),
//      -t threads, each layout read once per pass;
//   4. the one-time repack from I2_S, per GB of I2_S weights.
// Variants are interleaved within each repetition (the machine's bandwidth swings from second to
// second); every figure is the median over -r repetitions.
//
//   lut-layout-probe [--shapes 2560x2560,6912x2560,2560x6912] [-m 1,2,4,8,32] [--mib 512]
//                    [-k 6912] [-t 2] [-r 7]
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "kernels/ternary.h"
#include "ternary_lut.h"
#include "weight_arena.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace {

using bitnet::lut_kernel;
using bitnet::ternary_kernel_set;

struct shape {
    int64_t n, k;
};

struct options {
    std::vector<shape> shapes = {{2560, 2560}, {6912, 2560}, {2560, 6912}};
    std::vector<int64_t> batches = {1, 2, 4, 8, 32};
    int64_t mib = 512, dram_k = 6912;
    int threads = 2, reps = 7;
};

constexpr const char *kUsage =
    "usage: lut-layout-probe [--shapes 2560x2560,6912x2560,2560x6912] [-m 1,2,4,8,32] [--mib 512] [-k 6912]\n"
    "                        [-t 2] [-r 7]\n"
    "  --shapes  n x k of the in-cache matrices (k a multiple of 128)\n"
    "  -m        activation rows per matmul (batch sizes)\n"
    "  --mib     size of the DRAM-streaming matrix, -k its row length; -t threads for it\n"
    "  -r        repetitions (medians are reported)\n";

constexpr int64_t kCacheSliceBytes = 768 << 10;  // I2_S bytes of the in-cache slice

// One kernel under test: an I2_S kernel set, or a LUT kernel with its repacked weights.
struct variant {
    std::string name;
    const ternary_kernel_set *i2s = nullptr;
    const lut_kernel *lut = nullptr;
};

// Deterministic bytes: splitmix64.
struct rng {
    uint64_t s;
    uint64_t next() {
        uint64_t z = (s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
};

// Random I2_S codes: every byte four codes in {0, 1, 2} (uniform ternary weights).
void random_i2s(uint8_t *out, int64_t n_bytes, uint64_t seed) {
    uint8_t valid[81];
    for (int v = 0; v < 81; ++v) valid[v] = static_cast<uint8_t>((v / 27) << 6 | (v / 9 % 3) << 4 | (v / 3 % 3) << 2 | v % 3);
    rng r{seed};
    for (int64_t i = 0; i < n_bytes; ++i) out[i] = valid[r.next() % 81];
}

// m rows of k int8: row 1 all -128 and row 2 all 127 (the extremes every int16 bound is sized
// for), the others uniform over [-128, 127].
void random_activations(int64_t m, int64_t k, std::vector<int8_t> &a, std::vector<int32_t> &sums) {
    a.resize(m * k);
    sums.assign(m, 0);
    rng r{42};
    for (int64_t i = 0; i < m; ++i)
        for (int64_t c = 0; c < k; ++c) {
            const int v = i == 1 ? -128 : i == 2 ? 127 : static_cast<int>(r.next() & 255) - 128;
            a[i * k + c] = static_cast<int8_t>(v);
            sums[i] += v;
        }
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t h = v.size() / 2;
    return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

// One matrix in every variant's layout.
struct matrix {
    int64_t n = 0, k = 0;
    const uint8_t *i2s = nullptr;
    std::vector<const uint8_t *> packed;  // per variant: its layout (the I2_S bytes for I2_S kernels)
    std::vector<int64_t> bytes;           // per variant: bytes of the whole matrix in its layout
};

// One variant's matmul of m activation rows (a LUT kernel builds the rows' tables first).
void run_variant(const variant &v, const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const int8_t *a,
                 const int32_t *a_sums, int64_t m, std::vector<uint8_t> &tables, int32_t *y, int64_t ldy) {
    if (v.i2s) return v.i2s->i2s_matmul(w, k, r0, r1, a, a_sums, m, y, ldy);
    tables.resize(m * v.lut->table_bytes(k));
    v.lut->build_tables(a, k, m, tables.data());
    v.lut->matmul(w, k, r0, r1, tables.data(), m, y, ldy);
}

// Every variant against the scalar reference: all rows, then rows [r0, r1) cut inside tiles with
// the rest of y left untouched. Returns "" or what differs.
std::string check(const std::vector<variant> &vars, const matrix &mx, const std::vector<int8_t> &a,
                  const std::vector<int32_t> &a_sums, int64_t m) {
    const int64_t n = mx.n, k = mx.k;
    std::vector<int32_t> ref(m * n), y(m * n);
    std::vector<uint8_t> tables;
    bitnet::ternary_kernels_scalar()->i2s_matmul(mx.i2s, k, 0, n, a.data(), a_sums.data(), m, ref.data(), n);
    const int64_t r0 = std::min<int64_t>(5, n - 1), r1 = std::max(r0 + 1, n - 3);
    for (size_t v = 0; v < vars.size(); ++v) {
        std::fill(y.begin(), y.end(), 0x5eed);
        run_variant(vars[v], mx.packed[v], k, 0, n, a.data(), a_sums.data(), m, tables, y.data(), n);
        bool ok = y == ref;
        std::fill(y.begin(), y.end(), 0x5eed);
        run_variant(vars[v], mx.packed[v], k, r0, r1, a.data(), a_sums.data(), m, tables, y.data(), n);
        for (int64_t i = 0; i < m; ++i)
            for (int64_t r = 0; r < n; ++r) ok &= y[i * n + r] == (r >= r0 && r < r1 ? ref[i * n + r] : 0x5eed);
        if (!ok)
            return vars[v].name + " differs from the scalar reference (" + std::to_string(n) + "x" + std::to_string(k) +
                   ", m=" + std::to_string(m) + ")";
    }
    return "";
}

// Bad input: one line on stderr, exit 2 (as bitnet-bench does).
int fail(const std::string &msg) {
    std::fprintf(stderr, "error: %s (see --help)\n", msg.c_str());
    return 2;
}

bool parse_positive(const std::string &s, int64_t *out) {
    char *end = nullptr;
    const long long v = std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || *end != '\0' || v <= 0) return false;
    *out = v;
    return true;
}

// "a,b,c" -> items; false if any item is empty.
std::vector<std::string> split(const std::string &s, char sep) {
    std::vector<std::string> out;
    size_t start = 0;
    for (size_t p; (p = s.find(sep, start)) != std::string::npos; start = p + 1) out.push_back(s.substr(start, p - start));
    out.push_back(s.substr(start));
    return out;
}

// Returns "" or the error message.
std::string parse(int argc, char **argv, options &o, bool *help) {
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        if (flag == "-h" || flag == "--help") return *help = true, "";
        if (flag != "--shapes" && flag != "-m" && flag != "--mib" && flag != "-k" && flag != "-t" && flag != "-r")
            return "unknown flag " + flag;
        if (i + 1 >= argc) return "missing value after " + flag;
        const std::string value = argv[++i];
        int64_t v = 0;
        if (flag == "--shapes") {
            o.shapes.clear();
            for (const std::string &item : split(value, ',')) {
                const std::vector<std::string> nk = split(item, 'x');
                shape s{};
                if (nk.size() != 2 || !parse_positive(nk[0], &s.n) || !parse_positive(nk[1], &s.k))
                    return "bad shape '" + item + "' for --shapes (want NxK, e.g. 2560x6912)";
                if (s.k % bitnet::kI2SBlock != 0) return "k of --shapes must be a multiple of 128 (the I2_S block)";
                o.shapes.push_back(s);
            }
        } else if (flag == "-m") {
            o.batches.clear();
            for (const std::string &item : split(value, ',')) {
                if (!parse_positive(item, &v) || v > 256) return "bad batch size '" + item + "' for -m (1..256)";
                o.batches.push_back(v);
            }
        } else if (!parse_positive(value, &v)) {
            return "bad value for " + flag;
        } else if (flag == "--mib") {
            o.mib = v;
        } else if (flag == "-k") {
            if (v % bitnet::kI2SBlock != 0) return "-k must be a multiple of 128 (the I2_S block)";
            o.dram_k = v;
        } else if (flag == "-t") {
            if (v > 256) return "-t must be at most 256";
            o.threads = static_cast<int>(v);
        } else {
            if (v > 1000) return "-r must be at most 1000";
            o.reps = static_cast<int>(v);
        }
    }
    return "";
}

std::vector<variant> available_variants() {
    std::vector<variant> vars;
    if (const ternary_kernel_set *ks = bitnet::ternary_kernels_by_name("avx2")) vars.push_back({"i2s-avx2", ks, nullptr});
    if (const ternary_kernel_set *ks = bitnet::ternary_kernels_by_name("avx512vnni"))
        vars.push_back({"i2s-avx512vnni", ks, nullptr});
#if defined(__x86_64__)
    if (bitnet::ternary_kernels_by_name("avx2")) vars.push_back({"lut2-avx2", nullptr, bitnet::lut_kernel_avx2()});
    if (bitnet::ternary_kernels_by_name("avx512vnni"))
        vars.push_back({"lut3-avx512", nullptr, bitnet::lut_kernel_avx512()});
#endif
    return vars;
}

// Each LUT variant's layout of mx.i2s, in `store` (one buffer per variant; I2_S variants share
// the I2_S bytes). Returns "" or the error.
std::string pack_all(const std::vector<variant> &vars, matrix &mx, std::vector<std::vector<uint8_t>> &store) {
    store.assign(vars.size(), {});
    mx.packed.assign(vars.size(), mx.i2s);
    mx.bytes.assign(vars.size(), mx.n * mx.k / 4);
    for (size_t v = 0; v < vars.size(); ++v) {
        if (!vars[v].lut) continue;
        store[v].resize(vars[v].lut->packed_bytes(mx.n, mx.k));
        if (!vars[v].lut->repack_i2s(mx.i2s, mx.n, mx.k, store[v].data())) return vars[v].name + ": repack failed";
        mx.packed[v] = store[v].data();
        mx.bytes[v] = static_cast<int64_t>(store[v].size());
    }
    return "";
}

// In-cache rates of one shape for every batch size.
std::string report_in_cache(const options &o, const std::vector<variant> &vars, const shape &s) {
    std::vector<uint8_t> i2s(s.n * s.k / 4);
    random_i2s(i2s.data(), static_cast<int64_t>(i2s.size()), 1000 + s.n + s.k);
    matrix mx;
    mx.n = s.n;
    mx.k = s.k;
    mx.i2s = i2s.data();
    std::vector<std::vector<uint8_t>> store;
    if (std::string err = pack_all(vars, mx, store); !err.empty()) return err;
    const int64_t m_max = *std::max_element(o.batches.begin(), o.batches.end());
    std::vector<int8_t> a;
    std::vector<int32_t> a_sums;
    random_activations(std::max<int64_t>(m_max, 3), s.k, a, a_sums);
    const int64_t slice = std::min(s.n, std::max<int64_t>(64, kCacheSliceBytes / (s.k / 4) / 64 * 64));
    std::printf("\n%lldx%lld (n x k), in cache: %lld rows (%.2f MiB of I2_S), 1 thread, median of %d\n",
                static_cast<long long>(s.n), static_cast<long long>(s.k), static_cast<long long>(slice),
                slice * s.k / 4 / 1048576.0, o.reps);
    std::printf("(LUT times: the matmul plus building the tables, charged at %lld of %lld rows; 'tables' is that share)\n",
                static_cast<long long>(slice), static_cast<long long>(s.n));
    std::printf("%4s  %-15s %12s %10s %9s %8s\n", "m", "kernel", "G w*rows/s", "GB/s w", "vs avx2", "tables");
    std::vector<int32_t> y(m_max * s.n);
    std::vector<std::vector<uint8_t>> tables(vars.size());
    for (int64_t m : o.batches) {
        if (std::string err = check(vars, mx, a, a_sums, m); !err.empty()) return err;
        for (size_t v = 0; v < vars.size(); ++v)
            if (vars[v].lut) tables[v].resize(m * vars[v].lut->table_bytes(s.k));
        auto build = [&](size_t v) { vars[v].lut->build_tables(a.data(), s.k, m, tables[v].data()); };
        auto matmul = [&](size_t v) {
            if (vars[v].i2s) vars[v].i2s->i2s_matmul(mx.packed[v], s.k, 0, slice, a.data(), a_sums.data(), m, y.data(), s.n);
            else vars[v].lut->matmul(mx.packed[v], s.k, 0, slice, tables[v].data(), m, y.data(), s.n);
        };
        auto seconds_per_call = [](int iters, auto &&f) {
            const auto start = std::chrono::steady_clock::now();
            for (int it = 0; it < iters; ++it) f();
            return seconds_since(start) / iters;
        };
        for (size_t v = 0; v < vars.size(); ++v)
            if (vars[v].lut) build(v);
        const int iters = std::max(1, static_cast<int>(0.01 / std::max(seconds_per_call(1, [&] { matmul(0); }), 1e-7)));
        std::vector<std::vector<double>> t(vars.size()), t_tables(vars.size());
        for (int rep = 0; rep < o.reps; ++rep)
            for (size_t v = 0; v < vars.size(); ++v) {  // interleaved, so drift hits every variant
                t[v].push_back(seconds_per_call(iters, [&] { matmul(v); }));
                // The engine builds a row's tables once per matmul, for all n rows: the slice's share.
                if (vars[v].lut) t_tables[v].push_back(seconds_per_call(iters, [&] { build(v); }) * slice / s.n);
            }
        const double base = median(t[0]);
        for (size_t v = 0; v < vars.size(); ++v) {
            const double build_s = vars[v].lut ? median(t_tables[v]) : 0.0, sec = median(t[v]) + build_s;
            const double w_bytes = static_cast<double>(mx.bytes[v]) * slice / s.n;
            char share[16] = "";
            if (vars[v].lut) std::snprintf(share, sizeof share, "%.0f%%", 100 * build_s / sec);
            std::printf("%4lld  %-15s %12.1f %10.1f %8.2fx %8s\n", static_cast<long long>(m), vars[v].name.c_str(),
                        static_cast<double>(slice) * s.k * m / sec / 1e9, w_bytes / sec / 1e9, base / sec, share);
        }
    }
    return "";
}

#if defined(__x86_64__)
// The plain read bandwidth of the same bytes (AVX2 loads, prefetched like the kernels): what a
// GEMV that kept up with memory would reach.
__attribute__((target("avx2"))) uint32_t read_bytes(const uint8_t *p, int64_t n_bytes) {
    __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
    for (int64_t i = 0; i + 128 <= n_bytes; i += 128) {
        _mm_prefetch(reinterpret_cast<const char *>(p + i + 8192), _MM_HINT_T1);
        _mm_prefetch(reinterpret_cast<const char *>(p + i + 8192 + 64), _MM_HINT_T1);
        for (int j = 0; j < 4; ++j)
            acc[j] = _mm256_xor_si256(acc[j], _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p + i + 32 * j)));
    }
    const __m256i x = _mm256_xor_si256(_mm256_xor_si256(acc[0], acc[1]), _mm256_xor_si256(acc[2], acc[3]));
    return static_cast<uint32_t>(_mm256_extract_epi32(x, 0) ^ _mm256_extract_epi32(x, 7));
}
#else
uint32_t read_bytes(const uint8_t *p, int64_t n_bytes) {
    uint32_t x = 0;
    for (int64_t i = 0; i < n_bytes; ++i) x ^= p[i];
    return x;
}
#endif

// m = 1 over a matrix much larger than the caches, -t threads splitting whole tiles; then the
// one-time repack cost.
std::string report_dram(const options &o, const std::vector<variant> &vars) {
    const int64_t k = o.dram_k, row_bytes = k / 4, unit = bitnet::kLutTileRows * o.threads;
    const int64_t rows = std::max(unit, o.mib * (int64_t{1} << 20) / row_bytes / unit * unit);
    matrix mx;
    mx.n = rows;
    mx.k = k;
    // Every layout in 2 MiB pages, as the engine's weight arena holds model weights.
    int64_t total = rows * row_bytes + 64;
    for (const variant &v : vars)
        if (v.lut) total += v.lut->packed_bytes(rows, k) + 64;
    bitnet::weight_arena arena;
    if (!arena.reserve(static_cast<size_t>(total))) return "out of memory for the weights (try a smaller --mib)";
    uint8_t *i2s = arena.take(static_cast<size_t>(rows * row_bytes));
    random_i2s(i2s, rows * row_bytes, 7);
    mx.i2s = i2s;
    mx.packed.assign(vars.size(), i2s);
    mx.bytes.assign(vars.size(), rows * row_bytes);
    std::vector<double> repack_s(vars.size(), 0);
    for (size_t v = 0; v < vars.size(); ++v) {
        if (!vars[v].lut) continue;
        mx.bytes[v] = vars[v].lut->packed_bytes(rows, k);
        uint8_t *out = arena.take(static_cast<size_t>(mx.bytes[v]));
        const auto t0 = std::chrono::steady_clock::now();
        if (!vars[v].lut->repack_i2s(i2s, rows, k, out)) return vars[v].name + ": repack failed";
        repack_s[v] = seconds_since(t0);
        mx.packed[v] = out;
    }
    std::vector<int8_t> a;
    std::vector<int32_t> a_sums;
    random_activations(1, k, a, a_sums);
    std::vector<int32_t> ref(rows), y(rows);
    bitnet::ternary_kernels_scalar()->i2s_matmul(i2s, k, 0, rows, a.data(), a_sums.data(), 1, ref.data(), rows);
    std::vector<std::vector<uint8_t>> tables(o.threads);
    auto pass = [&](size_t v) {
        std::vector<std::thread> pool;
        const int64_t tiles = rows / bitnet::kLutTileRows;
        for (int i = 0; i < o.threads; ++i)
            pool.emplace_back([&, i] {
                const int64_t r0 = tiles * i / o.threads * bitnet::kLutTileRows;
                const int64_t r1 = tiles * (i + 1) / o.threads * bitnet::kLutTileRows;
                run_variant(vars[v], mx.packed[v], k, r0, r1, a.data(), a_sums.data(), 1, tables[i], y.data(), rows);
            });
        for (auto &th : pool) th.join();
    };
    for (size_t v = 0; v < vars.size(); ++v) {
        std::fill(y.begin(), y.end(), 0);
        pass(v);
        if (y != ref) return vars[v].name + " differs from the scalar reference (DRAM matrix)";
    }
    std::vector<uint32_t> sink(o.threads);
    auto read_pass = [&] {
        std::vector<std::thread> pool;
        const int64_t bytes = rows * row_bytes;
        for (int i = 0; i < o.threads; ++i)
            pool.emplace_back([&, i] {
                const int64_t b0 = bytes * i / o.threads / 128 * 128, b1 = bytes * (i + 1) / o.threads / 128 * 128;
                sink[i] = read_bytes(i2s + b0, b1 - b0);
            });
        for (auto &th : pool) th.join();
    };
    std::vector<std::vector<double>> t(vars.size());
    std::vector<double> t_read;
    for (int rep = 0; rep < o.reps; ++rep) {
        auto t0 = std::chrono::steady_clock::now();
        read_pass();
        t_read.push_back(seconds_since(t0));
        for (size_t v = 0; v < vars.size(); ++v) {
            t0 = std::chrono::steady_clock::now();
            pass(v);
            t[v].push_back(seconds_since(t0));
        }
    }
    std::printf("\nDRAM streaming, m = 1: %lld x %lld (%.0f MiB of I2_S), %d threads, median of %d\n",
                static_cast<long long>(rows), static_cast<long long>(k), rows * row_bytes / 1048576.0, o.threads, o.reps);
    std::printf("%-15s %8s %9s %10s %12s %9s\n", "kernel", "bits/w", "ms/pass", "GB/s read", "G weights/s", "vs avx2");
    std::printf("%-15s %8s %9.2f %10.1f %12s %9s\n", "(plain read)", "", median(t_read) * 1e3,
                rows * row_bytes / median(t_read) / 1e9, "", "");
    const double base = median(t[0]);
    for (size_t v = 0; v < vars.size(); ++v) {
        const double sec = median(t[v]);
        std::printf("%-15s %8.3f %9.2f %10.1f %12.1f %8.2fx\n", vars[v].name.c_str(), 8.0 * mx.bytes[v] / (rows * k),
                    sec * 1e3, mx.bytes[v] / sec / 1e9, static_cast<double>(rows) * k / sec / 1e9, base / sec);
    }
    // 2B-4T: 30 layers x (4 x 2560x2560 + 3 x 2560x6912) ternary weights, 2 bits each as I2_S.
    const double model_gb = 30.0 * (4.0 * 2560 * 2560 + 3.0 * 2560 * 6912) / 4 / 1e9;
    std::printf("\nrepack from I2_S (once, at load; scalar, 1 thread)\n%-15s %9s %9s %16s\n", "layout", "ms", "s/GB",
                "2B-4T s");
    for (size_t v = 0; v < vars.size(); ++v) {
        if (!vars[v].lut) continue;
        const double per_gb = repack_s[v] / (rows * row_bytes / 1e9);
        std::printf("%-15s %9.1f %9.2f %16.2f\n", vars[v].name.c_str(), repack_s[v] * 1e3, per_gb, per_gb * model_gb);
    }
    return "";
}

}  // namespace

int main(int argc, char **argv) {
    options o;
    bool help = false;
    if (std::string err = parse(argc, argv, o, &help); !err.empty()) return fail(err);
    if (help) return std::fputs(kUsage, stdout), 0;
#if !defined(__x86_64__)
    return fail("the LUT kernels are x86-64 only (AVX2, AVX-512)");
#else
    if (!bitnet::ternary_kernels_by_name("avx2")) return fail("this CPU lacks AVX2, which the LUT kernel needs");
    const std::vector<variant> vars = available_variants();
    std::printf("lut-layout-probe: kernels");
    for (const variant &v : vars) std::printf(" %s", v.name.c_str());
    std::printf("; every kernel is checked against the scalar I2_S reference first\n");
    for (const shape &s : o.shapes)
        if (std::string err = report_in_cache(o, vars, s); !err.empty())
            return std::fprintf(stderr, "error: %s\n", err.c_str()), 1;
    if (std::string err = report_dram(o, vars); !err.empty()) return std::fprintf(stderr, "error: %s\n", err.c_str()), 1;
    std::printf("\nall kernels equal the scalar reference on every shape and batch size\n");
    return 0;
#endif
}
