// base3-layout-probe: would a ternary layout of <= 1.7 bits per weight decode faster than I2_S?
//
// Decode reads every weight once per token, so a smaller layout wins only if its kernel still
// streams at the memory limit. This probe measures exactly that on one CPU: the same random
// ternary matrices, packed as I2_S (2 bits per weight) and as base-3 bytes (5 weights per byte,
// 1.6 bits, as TQ1_0 packs most of its weights), multiplied by one int8 activation row (a GEMV)
// with the same threads; both results are checked equal before anything is timed.
//
// The base-3 kernel is the best case we could build: rows padded to a multiple of 320 so every
// load is a full zmm (no masked tails), the five weights of a byte decoded with two-table
// byte permutes (AVX-512 VBMI vpermi2b: 243 values need both halves of a 256-entry table), one
// accumulator per weight plane. I2_S runs the engine's own AVX-512 kernel.
//
//   base3-layout-probe [-k 6912] [--mib 512] [-t 2] [-r 7]
//
// Layout (base-3), per 320-weight chunk of a row (64 bytes): byte m holds the codes c = w + 1 of
// elements 64j + m for j = 0..4 as  c0*81 + c1*27 + c2*9 + c3*3 + c4.
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
#include "weight_arena.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace {

constexpr int64_t kChunk = 320;        // weights per 64-byte base-3 chunk
constexpr int64_t kChunkBytes = 64;

struct options {
    int64_t k = 6912, mib = 512;
    int threads = 2, reps = 7;
};

// Deterministic ternary weights, w in {-1, 0, 1}: row r, column c.
inline int8_t weight(int64_t r, int64_t c) {
    uint64_t x = (static_cast<uint64_t>(r) << 32) ^ static_cast<uint64_t>(c);
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull; x ^= x >> 33;
    return static_cast<int8_t>(x % 3) - 1;
}

void pack_base3_row(const int8_t *w, int64_t k, int64_t k_padded, uint8_t *out) {
    for (int64_t chunk = 0; chunk < k_padded / kChunk; ++chunk)
        for (int64_t m = 0; m < kChunkBytes; ++m) {
            int v = 0;
            for (int64_t j = 0; j < 5; ++j) {
                const int64_t col = chunk * kChunk + 64 * j + m;
                v = v * 3 + (col < k ? w[col] + 1 : 1);  // padding: w = 0
            }
            out[chunk * kChunkBytes + m] = static_cast<uint8_t>(v);
        }
}

#if defined(__x86_64__)
#define BASE3_TARGET __attribute__((target("avx512f,avx512bw,avx512vbmi,avx512vnni")))

// y[r] = sum_k w[r][k] * a[k] for rows [r0, r1); a is padded with zeros to k_padded.
BASE3_TARGET void base3_gemv(const uint8_t *w, int64_t k_padded, int64_t r0, int64_t r1, const int8_t *a,
                             int32_t a_sum, const uint8_t (*tables)[256], int32_t *y) {
    __m512i lo[5], hi[5];  // code of plane j for byte values 0..63 and 128..191 (the other
                           // quarters, 64..127 and 192..255, are read from L1 in the loop)
    for (int j = 0; j < 5; ++j) {
        lo[j] = _mm512_loadu_si512(tables[j]);
        hi[j] = _mm512_loadu_si512(tables[j] + 128);
    }
    const int64_t row_bytes = k_padded / kChunk * kChunkBytes;
    for (int64_t r = r0; r < r1; ++r) {
        const uint8_t *row = w + r * row_bytes;
        __m512i acc[5] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                          _mm512_setzero_si512(), _mm512_setzero_si512()};
        for (int64_t c = 0; c < k_padded / kChunk; ++c) {
            _mm_prefetch(reinterpret_cast<const char *>(row + c * kChunkBytes + 4096), _MM_HINT_T1);
            const __m512i v = _mm512_loadu_si512(row + c * kChunkBytes);
            const __mmask64 upper = _mm512_movepi8_mask(v);  // byte >= 128: the table's upper half
            for (int j = 0; j < 5; ++j) {
                const __m512i code_lo = _mm512_permutex2var_epi8(lo[j], v, _mm512_loadu_si512(tables[j] + 64));
                const __m512i code_hi = _mm512_permutex2var_epi8(hi[j], v, _mm512_loadu_si512(tables[j] + 192));
                const __m512i code = _mm512_mask_blend_epi8(upper, code_lo, code_hi);
                acc[j] = _mm512_dpbusd_epi32(acc[j], code, _mm512_loadu_si512(a + c * kChunk + 64 * j));
            }
        }
        const __m512i s = _mm512_add_epi32(_mm512_add_epi32(acc[0], acc[1]),
                                           _mm512_add_epi32(_mm512_add_epi32(acc[2], acc[3]), acc[4]));
        y[r] = _mm512_reduce_add_epi32(s) - a_sum;
    }
}

bool cpu_has_base3_kernel() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512vnni");
}
#endif

template <class F>
double best_seconds(int reps, int threads, int64_t rows, F &&run_rows) {
    double best = 1e30;
    for (int rep = 0; rep < reps; ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        std::vector<std::thread> pool;
        for (int i = 0; i < threads; ++i)
            pool.emplace_back([&, i] { run_rows(rows * i / threads, rows * (i + 1) / threads); });
        for (auto &t : pool) t.join();
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
}

constexpr const char *kUsage = "usage: base3-layout-probe [-k 6912] [--mib 512] [-t 2] [-r 7]\n";

// Bad input: one line on stderr, exit 2 (as bitnet-bench does).
int fail(const std::string &msg) {
    std::fprintf(stderr, "error: %s (see --help)\n", msg.c_str());
    return 2;
}

}  // namespace

int main(int argc, char **argv) {
    options o;
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        if (flag == "-h" || flag == "--help") return std::fputs(kUsage, stdout), 0;
        if (i + 1 >= argc) return fail("missing value after " + flag);
        const long long v = std::atoll(argv[++i]);
        if (v <= 0) return fail("bad value for " + flag);
        if (flag == "-k") o.k = v;
        else if (flag == "--mib") o.mib = v;
        else if (flag == "-t") o.threads = static_cast<int>(v);
        else if (flag == "-r") o.reps = static_cast<int>(v);
        else return fail("unknown flag " + flag);
    }
    if (o.k % 128 != 0) return fail("-k must be a multiple of 128 (the I2_S block)");
#if !defined(__x86_64__)
    return fail("the base-3 kernel is x86-64 only (AVX-512 VBMI)");
#else
    if (!cpu_has_base3_kernel()) return fail("this CPU lacks AVX-512 VBMI/VNNI, which the base-3 kernel needs");
    const char *err = nullptr;
    const bitnet::ternary_kernel_set *ks = bitnet::ternary_kernels_active(&err);
    if (!ks) return fail(err);

    const int64_t k = o.k, k_padded = (k + kChunk - 1) / kChunk * kChunk;
    const int64_t i2s_row = k / 4, base3_row = k_padded / kChunk * kChunkBytes;
    const int64_t rows = o.mib * (1 << 20) / i2s_row;
    // Both layouts are packed here, then moved into 2 MiB pages the way the engine's weight arena
    // holds model weights (TLB misses would otherwise cost the layout that reads more pages).
    std::vector<uint8_t> i2s_packed(rows * i2s_row), base3_packed(rows * base3_row);
    std::vector<int8_t> w(k);
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < k; ++c) w[c] = weight(r, c);
        bitnet::i2s_pack(w.data(), 1, k, i2s_packed.data() + r * i2s_row);
        pack_base3_row(w.data(), k, k_padded, base3_packed.data() + r * base3_row);
    }
    bitnet::weight_arena arena;
    if (!arena.reserve(i2s_packed.size() + base3_packed.size() + 64))
        return fail("out of memory for the weights (try a smaller --mib)");
    uint8_t *i2s = arena.take(i2s_packed.size());
    uint8_t *base3 = arena.take(base3_packed.size());
    std::memcpy(i2s, i2s_packed.data(), i2s_packed.size());
    std::memcpy(base3, base3_packed.data(), base3_packed.size());
    const size_t i2s_size = i2s_packed.size(), base3_size = base3_packed.size();
    std::vector<uint8_t>().swap(i2s_packed);
    std::vector<uint8_t>().swap(base3_packed);
    std::vector<int8_t> a(k_padded, 0);
    int32_t a_sum = 0;
    for (int64_t c = 0; c < k; ++c) a_sum += a[c] = static_cast<int8_t>((c * 37) % 255 - 127);
    uint8_t tables[5][256];
    for (int v = 0; v < 256; ++v)
        for (int j = 0, p = 81; j < 5; ++j, p /= 3) tables[j][v] = static_cast<uint8_t>(v < 243 ? v / p % 3 : 0);

    std::vector<int32_t> y_i2s(rows), y_base3(rows);
    auto run_i2s = [&](int64_t r0, int64_t r1) {
        ks->i2s_matmul(i2s, k, r0, r1, a.data(), &a_sum, 1, y_i2s.data(), rows);
    };
    auto run_base3 = [&](int64_t r0, int64_t r1) {
        base3_gemv(base3, k_padded, r0, r1, a.data(), a_sum, tables, y_base3.data());
    };
    run_i2s(0, rows);
    run_base3(0, rows);
    if (y_i2s != y_base3) return std::fputs("error: the I2_S and base-3 kernels disagree\n", stderr), 1;

    std::printf("%lld rows x %lld, %d threads, I2_S kernel %s; both results equal\n",
                static_cast<long long>(rows), static_cast<long long>(k), o.threads, ks->name);
    std::printf("%-8s %9s %10s %8s %12s\n", "layout", "bits/w", "MiB", "ms", "GB/s read");
    double t_i2s = 0, t_base3 = 0;
    for (int round = 0; round < 3; ++round) {  // interleaved, so drift hits both
        t_i2s += best_seconds(o.reps, o.threads, rows, run_i2s);
        t_base3 += best_seconds(o.reps, o.threads, rows, run_base3);
    }
    t_i2s /= 3;
    t_base3 /= 3;
    const double bits_base3 = 8.0 * base3_row / k;
    std::printf("%-8s %9.3f %10.1f %8.2f %12.1f\n", "I2_S", 2.0, i2s_size / 1048576.0, t_i2s * 1e3,
                i2s_size / t_i2s / 1e9);
    std::printf("%-8s %9.3f %10.1f %8.2f %12.1f\n", "base-3", bits_base3, base3_size / 1048576.0,
                t_base3 * 1e3, base3_size / t_base3 / 1e9);
    std::printf("base-3 time per pass / I2_S: %.2fx (below 1.00x the smaller layout would decode faster)\n",
                t_base3 / t_i2s);
    return 0;
#endif
}
