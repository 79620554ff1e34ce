// Ternary kernel tests: the I2_S byte layout, pack/unpack, the scalar reference against a plain
// int8 dot product, every ISA this CPU runs against the scalar reference (bit for bit), and the
// BITNET_ISA dispatch. Deterministic (fixed seeds). Prints one line per failure and a final
// "N passed, M failed"; exits non-zero on any failure.
#include <algorithm>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/ternary.h"
#include "kernels/tuning.h"

using namespace bitnet;

namespace {

int g_passed = 0, g_failed = 0;

void check(bool ok, const char *fmt, ...) {
    if (ok) {
        ++g_passed;
        return;
    }
    ++g_failed;
    std::printf("FAIL: ");
    va_list ap;
    va_start(ap, fmt);
    std::vprintf(fmt, ap);
    va_end(ap);
    std::printf("\n");
}

// std::mt19937 output is specified by the standard; the distributions are not, so we map the
// raw 32-bit words ourselves to stay identical on every platform.
struct rng {
    std::mt19937 gen;
    explicit rng(uint32_t seed) : gen(seed) {}
    uint32_t next() { return static_cast<uint32_t>(gen()); }
    int below(int n) { return static_cast<int>(next() % static_cast<uint32_t>(n)); }
    float uniform(float lo, float hi) { return lo + (hi - lo) * (next() >> 8) * (1.0f / 16777216.0f); }
};

constexpr int32_t kSentinel = 0x7EADBEEF;

// ---------------------------------------------------------------- I2_S layout, pack/unpack

void test_layout() {
    // Two blocks of zeros (code 1 = 0b01 everywhere -> 0x55), then single codes changed.
    std::vector<int8_t> w(256, 0);
    w[32 + 5] = 1;         // c[32+m] = 2 -> bits 5..4 of byte 5: 0b01'10'01'01
    w[7] = -1;             // c[m] = 0    -> bits 7..6 of byte 7: 0b00'01'01'01
    w[64 + 0] = -1;        // c[64+m] = 0 -> bits 3..2 of byte 0: 0b01'01'00'01
    w[96 + 31] = 1;        // c[96+m] = 2 -> bits 1..0 of byte 31: 0b01'01'01'10
    w[128 + 96 + 2] = -1;  // second block, byte 32+2, bits 1..0: 0b01'01'01'00
    std::vector<uint8_t> packed(64, 0xAA);
    i2s_pack(w.data(), 2, 128, packed.data());
    std::vector<uint8_t> expect(64, 0x55);
    expect[5] = 0x65;
    expect[7] = 0x15;
    expect[0] = 0x51;
    expect[31] = 0x56;
    expect[32 + 2] = 0x54;
    for (int i = 0; i < 64; ++i)
        check(packed[i] == expect[i], "i2s layout: byte %d is 0x%02x, expected 0x%02x", i, packed[i],
              expect[i]);
    std::vector<int8_t> back(256, 9);
    i2s_unpack(packed.data(), 2, 128, back.data());
    check(back == w, "i2s layout: unpack of the hand-made example differs");
}

void test_pack_roundtrip() {
    rng g(1234);
    const int64_t shapes[][2] = {{1, 128}, {3, 256}, {17, 384}, {2, 6912}};
    for (const auto &s : shapes) {
        const int64_t n = s[0], k = s[1];
        std::vector<int8_t> w(n * k), back(n * k, 9);
        for (auto &v : w) v = static_cast<int8_t>(g.below(3) - 1);
        std::vector<uint8_t> packed(n * k / 4);
        i2s_pack(w.data(), n, k, packed.data());
        i2s_unpack(packed.data(), n, k, back.data());
        check(back == w, "pack/unpack round trip n=%lld k=%lld", (long long)n, (long long)k);
    }
}

// ---------------------------------------------------------------- matmul

struct problem {
    int64_t n, k, m;
    std::vector<int8_t> w;        // n x k ternary, or empty when packed holds raw random bytes
    std::vector<uint8_t> packed;  // n*k/4
    std::vector<int8_t> a;        // m x k
    std::vector<int32_t> a_sums;  // m
    std::vector<int32_t> ref;     // m x n, scalar reference over all rows
};

void finish_problem(problem &p) {
    if (!p.w.empty()) {
        p.packed.assign(p.n * p.k / 4, 0);
        i2s_pack(p.w.data(), p.n, p.k, p.packed.data());
    }
    p.a_sums.assign(p.m, 0);
    for (int64_t i = 0; i < p.m; ++i)
        for (int64_t j = 0; j < p.k; ++j) p.a_sums[i] += p.a[i * p.k + j];
    p.ref.assign(p.m * p.n, kSentinel);
    ternary_kernels_scalar()->i2s_matmul(p.packed.data(), p.k, 0, p.n, p.a.data(), p.a_sums.data(), p.m,
                                         p.ref.data(), p.n);
}

// act_mode 0: uniform int8, 1: all -128, 2: all 127, 3: rows alternate -128 / 127.
problem make_problem(rng &g, int64_t n, int64_t k, int64_t m, int act_mode, bool raw_bytes) {
    problem p;
    p.n = n, p.k = k, p.m = m;
    if (raw_bytes) {  // every code 0..3, including the unused 3 (largest products)
        p.packed.resize(n * k / 4);
        for (auto &b : p.packed) b = static_cast<uint8_t>(g.next());
    } else {
        p.w.resize(n * k);
        for (auto &v : p.w) v = static_cast<int8_t>(g.below(3) - 1);
    }
    p.a.resize(m * k);
    for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < k; ++j) {
            int v = g.below(256) - 128;
            if (act_mode == 1 || (act_mode == 3 && i % 2 == 0)) v = -128;
            if (act_mode == 2 || (act_mode == 3 && i % 2 == 1)) v = 127;
            p.a[i * k + j] = static_cast<int8_t>(v);
        }
    finish_problem(p);
    return p;
}

// The scalar reference against a plain dot product of the unpacked int8 weights.
void check_reference(const problem &p, const char *what) {
    if (p.w.empty()) return;
    int bad = 0;
    for (int64_t i = 0; i < p.m && bad == 0; ++i)
        for (int64_t r = 0; r < p.n; ++r) {
            int64_t dot = 0;
            for (int64_t j = 0; j < p.k; ++j) dot += p.w[r * p.k + j] * p.a[i * p.k + j];
            if (dot != p.ref[i * p.n + r]) {
                check(false, "scalar %s n=%lld k=%lld m=%lld: y[%lld][%lld] = %d, plain dot %lld", what,
                      (long long)p.n, (long long)p.k, (long long)p.m, (long long)i, (long long)r,
                      p.ref[i * p.n + r], (long long)dot);
                bad = 1;
                break;
            }
        }
    if (bad == 0) check(true, "");
}

// One kernel call on rows [r0, r1) with ldy = n + 3; everything else must stay untouched.
void check_range(const ternary_kernel_set *ks, const problem &p, int64_t r0, int64_t r1, const char *what) {
    const int64_t ldy = p.n + 3;
    std::vector<int32_t> y(p.m * ldy, kSentinel);
    ks->i2s_matmul(p.packed.data(), p.k, r0, r1, p.a.data(), p.a_sums.data(), p.m, y.data(), ldy);
    for (int64_t i = 0; i < p.m; ++i)
        for (int64_t r = 0; r < ldy; ++r) {
            const int32_t want = (r >= r0 && r < r1) ? p.ref[i * p.n + r] : kSentinel;
            if (y[i * ldy + r] != want) {
                check(false, "%s %s n=%lld k=%lld m=%lld rows [%lld,%lld): y[%lld][%lld] = %d, want %d",
                      ks->name, what, (long long)p.n, (long long)p.k, (long long)p.m, (long long)r0,
                      (long long)r1, (long long)i, (long long)r, y[i * ldy + r], want);
                return;
            }
        }
    check(true, "");
}

void check_ranges(const ternary_kernel_set *ks, const problem &p, const char *what) {
    const int64_t n = p.n;
    check_range(ks, p, 0, n, what);
    if (n > 16) check_range(ks, p, 0, 16, what);
    if (n > 32) check_range(ks, p, 16, 32, what);
    if (n > 2) check_range(ks, p, 1, n - 1, what);
    if (n > 1) check_range(ks, p, n / 2 + 1, n, what);
    check_range(ks, p, n - 1, n, what);
}

void test_matmul_shapes(const std::vector<const ternary_kernel_set *> &isas) {
    rng g(42);
    const int64_t ks[] = {128, 256, 384, 640, 2560, 6912};
    const int64_t ns[] = {1, 3, 16, 17, 33, 100};
    const int64_t ms[] = {1, 2, 3, 4, 5, 7, 8, 16, 33};
    for (int64_t k : ks)
        for (int64_t n : ns)
            for (int64_t m : ms) {
                const problem p = make_problem(g, n, k, m, 0, false);
                if (m <= 5) check_reference(p, "random");
                for (const ternary_kernel_set *isa : isas) check_ranges(isa, p, "random");
                if (m == 1) {  // the AVX2 GEMV's other tile (a tuning parameter)
                    std::string err;
                    tuning_set("ternary_gemv_rows", 2, &err);
                    for (const ternary_kernel_set *isa : isas) check_ranges(isa, p, "random, 2-row GEMV");
                    tuning_set("ternary_gemv_rows", 1, &err);
                }
            }
    // Prompt-sized batches: the AMX tile GEMM's token groups of 16 and blocks of 256, odd ends.
    for (int64_t k : {384, 2560})
        for (int64_t n : {33, 100})
            for (int64_t m : {40, 130, 300}) {
                const problem p = make_problem(g, n, k, m, 0, false);
                for (const ternary_kernel_set *isa : isas) check_ranges(isa, p, "batch");
            }
    // The VNNI GEMM (48 rows and more): slices of 32 weight rows and single 16-row panels, tiles of
    // 12 and 24 activation rows with every kind of remainder, activation blocks of 192 rows.
    for (int64_t k : {128, 6912})
        for (int64_t n : {16, 33, 100})
            for (int64_t m : {48, 59, 70, 205}) {
                const problem p = make_problem(g, n, k, m, 0, false);
                for (const ternary_kernel_set *isa : isas) check_ranges(isa, p, "batch");
            }
}

void test_matmul_extremes(const std::vector<const ternary_kernel_set *> &isas) {
    rng g(7);
    for (int mode = 1; mode <= 3; ++mode) {
        const problem p = make_problem(g, 17, 640, 5, mode, false);
        check_reference(p, "extreme activations");
        for (const ternary_kernel_set *isa : isas) check_ranges(isa, p, "extreme activations");
    }
    // Raw random bytes (code 3 too): only the SIMD-vs-scalar agreement is defined.
    for (int64_t k : {128, 384, 2560}) {
        const problem p = make_problem(g, 9, k, 6, 0, true);
        for (const ternary_kernel_set *isa : isas) check_ranges(isa, p, "raw codes");
    }
    // Worst-case magnitude: k = 65536, rows of all +1 / all -1 / all 0 weights against rows of
    // all -128 / all 127: |y| = 128 * 65536, every int16 partial sum at its bound.
    const int64_t k = int64_t{1} << 16;
    // With m = 1 (GEMV), m = 2 (small-batch tiles), m = 16 (batch kernels: AMX tiles) and m = 48
    // (VNNI GEMM).
    for (int64_t m : {1, 2, 16, 48}) {
        problem p;
        p.n = 3, p.k = k, p.m = m;
        p.w.resize(3 * k);
        for (int64_t j = 0; j < k; ++j) p.w[j] = 1, p.w[k + j] = -1, p.w[2 * k + j] = 0;
        p.a.resize(m * k);
        for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < k; ++j) p.a[i * k + j] = i % 2 == 0 ? -128 : 127;
        finish_problem(p);
        for (int64_t i = 0; i < m; ++i) {
            const int32_t a = i % 2 == 0 ? -128 : 127, want[3] = {a * 65536, -a * 65536, 0};
            for (int r = 0; r < 3; ++r)
                check(p.ref[i * 3 + r] == want[r], "scalar worst case k=65536: y[%lld][%d] = %d, want %d",
                      (long long)i, r, p.ref[i * 3 + r], want[r]);
        }
        for (const ternary_kernel_set *isa : isas) check_ranges(isa, p, "worst case k=65536");
        if (m == 1) {  // the AVX2 GEMV's two-row tile (a tuning parameter)
            std::string err;
            tuning_set("ternary_gemv_rows", 2, &err);
            for (const ternary_kernel_set *isa : isas) check_ranges(isa, p, "worst case k=65536, 2-row GEMV");
            tuning_set("ternary_gemv_rows", 1, &err);
        }
    }
}

// Rows split the way the engine's thread pool does: chunks of 16, the last one shorter.
// With a small batch and a prompt-sized one (the batch GEMMs).
void test_matmul_thread_split(const std::vector<const ternary_kernel_set *> &isas) {
    rng g(99);
    for (int64_t m : {5, 64}) {
        const problem p = make_problem(g, 100, 2560, m, 0, false);
        for (const ternary_kernel_set *isa : isas) {
            for (int64_t chunk : {16, 32, 48}) {
                std::vector<int32_t> y(p.m * p.n, kSentinel);
                for (int64_t r0 = 0; r0 < p.n; r0 += chunk)
                    isa->i2s_matmul(p.packed.data(), p.k, r0, std::min(p.n, r0 + chunk), p.a.data(),
                                    p.a_sums.data(), p.m, y.data(), p.n);
                check(y == p.ref, "%s thread split in chunks of %lld, m=%lld differs", isa->name,
                      (long long)chunk, (long long)m);
            }
        }
    }
}

// The AVX2 register-tiled GEMM (ternary_gemm_avx2.h), in both flavours, at every batch size the
// engine hands it: with tuning avx2_gemm_min_batch = 2 (every batch) and the default. Slices of
// 16 rows and single 8-row panels, tiles of 6 activation rows with every remainder, blocks of 192
// activation rows; row counts and ranges off the tile, k of one block and of odd block counts.
void test_avx2_gemm(const std::vector<const ternary_kernel_set *> &isas) {
    std::vector<const ternary_kernel_set *> avx2;
    for (const ternary_kernel_set *ks : isas)
        if (std::strncmp(ks->name, "avx2", 4) == 0) avx2.push_back(ks);
    if (avx2.empty()) return;
    std::string err;
    int64_t before = 0;
    tuning_get("avx2_gemm_min_batch", &before);
    rng g(313);
    for (int64_t threshold : {int64_t{2}, before}) {
        tuning_set("avx2_gemm_min_batch", threshold, &err);
        for (int64_t k : {128, 384, 2688})
            for (int64_t n : {1, 7, 9, 24, 41})
                for (int64_t m : {2, 5, 6, 7, 13, 16, 31, 192, 193, 385}) {
                    if (threshold != 2 && m < threshold) continue;  // the small-batch tiles: tested above
                    const problem p = make_problem(g, n, k, m, 0, false);
                    for (const ternary_kernel_set *isa : avx2) check_ranges(isa, p, "gemm");
                }
        // m = 600 (several activation blocks and a short last one), rows split as the thread pool
        // splits them, and raw codes (3 too) against extreme activations: the int16 sums of the
        // vpmaddubsw flavour at their bound (32 steps of 2 * 3 * 128 per block).
        const problem big = make_problem(g, 37, 640, 600, 0, false);
        for (const ternary_kernel_set *isa : avx2) {
            check_ranges(isa, big, "gemm m=600");
            std::vector<int32_t> y(big.m * big.n, kSentinel);
            for (int64_t r0 = 0; r0 < big.n; r0 += 16)
                isa->i2s_matmul(big.packed.data(), big.k, r0, std::min(big.n, r0 + 16), big.a.data(),
                                big.a_sums.data(), big.m, y.data(), big.n);
            check(y == big.ref, "%s gemm thread split in chunks of 16, m=600 differs", isa->name);
        }
        for (int mode = 1; mode <= 3; ++mode) {
            problem p = make_problem(g, 19, 4096, 20, mode, true);
            std::fill(p.packed.begin(), p.packed.begin() + 4096 / 4 * 3, uint8_t{0xFF});  // rows of code 3
            finish_problem(p);
            for (const ternary_kernel_set *isa : avx2)
                check_ranges(isa, p, "gemm raw codes, extreme activations");
        }
    }
    tuning_set("avx2_gemm_min_batch", before, &err);
}

// ---------------------------------------------------------------- quantize_row_int8

void check_quantize(const ternary_kernel_set *ks, const std::vector<float> &x, const char *what) {
    const int64_t k = static_cast<int64_t>(x.size());
    std::vector<int8_t> q_ref(k + 1, 77), q(k + 1, 77);
    float s_ref = 0, s = 0;
    int32_t sum_ref = 0, sum = 0;
    ternary_kernels_scalar()->quantize_row_int8(x.data(), k, q_ref.data(), &s_ref, &sum_ref);
    ks->quantize_row_int8(x.data(), k, q.data(), &s, &sum);
    int64_t bad = -1;
    for (int64_t i = 0; i <= k && bad < 0; ++i)
        if (q[i] != q_ref[i]) bad = i;
    check(bad < 0 && std::memcmp(&s, &s_ref, sizeof s) == 0 && sum == sum_ref,
          "%s quantize %s k=%lld: first differing q index %lld, scale %.9g vs %.9g, sum %d vs %d", ks->name,
          what, (long long)k, (long long)bad, s, s_ref, sum, sum_ref);
}

// The scalar reference on hand-computed rows: round half to even after one f32 multiply.
void test_quantize_reference() {
    // amax = 127 -> s = 1 exactly, so x + 0.5 lands on the tie.
    const float x[] = {127.0f, 0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 126.5f, -126.5f, 3.49f};
    const int8_t want[] = {127, 0, 2, 2, 0, -2, -2, 126, -126, 3};
    int8_t q[10];
    float s;
    int32_t sum;
    ternary_kernels_scalar()->quantize_row_int8(x, 10, q, &s, &sum);
    int32_t want_sum = 0;
    for (int i = 0; i < 10; ++i) {
        check(q[i] == want[i], "scalar quantize ties: q[%d] = %d, want %d", i, q[i], want[i]);
        want_sum += want[i];
    }
    check(s == 1.0f && sum == want_sum, "scalar quantize ties: scale %g sum %d", s, sum);
    const float zeros[5] = {0, 0, 0, 0, 0};
    ternary_kernels_scalar()->quantize_row_int8(zeros, 5, q, &s, &sum);
    check(s == 127.0f / 1e-5f && sum == 0 && q[0] == 0 && q[4] == 0, "scalar quantize zeros");
}

void test_quantize(const std::vector<const ternary_kernel_set *> &isas) {
    rng g(2024);
    const int64_t lengths[] = {1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 100, 128, 257, 2560, 6913};
    const float scales[] = {1e-6f, 1e-3f, 1.0f, 37.0f, 1e4f};
    for (const ternary_kernel_set *isa : isas)
        for (int64_t k : lengths) {
            for (float sc : scales) {
                std::vector<float> x(k);
                for (auto &v : x) v = g.uniform(-sc, sc);
                check_quantize(isa, x, "uniform");
            }
            // Ties: amax 127 (s = 1) or 254 (s = 0.5) and values on .5 after scaling.
            for (float amax : {127.0f, 254.0f}) {
                std::vector<float> x(k);
                for (auto &v : x) v = (static_cast<float>(g.below(254) - 127) + 0.5f) * (amax / 127.0f);
                x[g.below(static_cast<int>(k))] = g.below(2) ? amax : -amax;
                check_quantize(isa, x, "ties");
            }
            check_quantize(isa, std::vector<float>(k, 0.0f), "zeros");
            check_quantize(isa, std::vector<float>(k, -3.0f), "constant");
            std::vector<float> x(k, 0.0f);  // one outlier, the rest far below it
            for (auto &v : x) v = g.uniform(-1e-3f, 1e-3f);
            x[k / 2] = 1000.0f;
            check_quantize(isa, x, "outlier");
        }
}

// ---------------------------------------------------------------- dispatch

std::vector<std::string> split_names(const char *list) {
    std::vector<std::string> out;
    std::string cur;
    for (const char *c = list; *c; ++c) {
        if (*c == ',')
            out.push_back(cur), cur.clear();
        else
            cur += *c;
    }
    if (!cur.empty()) out.push_back(cur);
    return out;
}

// Runs this binary with BITNET_ISA=value and --dispatch-child; returns its one output line.
std::string run_child(const char *self, const char *value) {
    const std::string cmd = std::string("BITNET_ISA='") + value + "' '" + self + "' --dispatch-child";
    FILE *f = popen(cmd.c_str(), "r");
    if (f == nullptr) return "popen failed";
    char buf[512] = {0};
    const char *got = std::fgets(buf, sizeof buf, f);
    pclose(f);
    std::string line = got ? buf : "";
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
    return line;
}

int dispatch_child() {
    const char *err = nullptr;
    const ternary_kernel_set *ks = ternary_kernels_active(&err);
    std::printf("%s%s\n", ks ? "name=" : "error=", ks ? ks->name : (err ? err : "(none)"));
    return 0;
}

void test_dispatch(const char *self) {
    const std::vector<std::string> avail = split_names(ternary_kernels_available());
    check(!avail.empty() && avail.front() == "scalar", "available() = '%s' must start with scalar",
          ternary_kernels_available());
    for (const std::string &name : avail)
        check(ternary_kernels_by_name(name.c_str()) != nullptr, "by_name(%s) is null", name.c_str());
    check(ternary_kernels_by_name("bogus") == nullptr, "by_name(bogus) is not null");
    check(!ternary_kernels_force("bogus"), "force(bogus) succeeded");

    // Whatever the environment says, active() must agree with by_name().
    const char *env = std::getenv("BITNET_ISA");
    const char *err = nullptr;
    const ternary_kernel_set *active = ternary_kernels_active(&err);
    if (env && *env && std::strcmp(env, "auto") != 0) {
        check(active == ternary_kernels_by_name(env), "BITNET_ISA=%s: active() is %s", env,
              active ? active->name : "null");
        check(active != nullptr || (err && std::strstr(err, env)), "BITNET_ISA=%s: no error text", env);
    } else {
        check(active == ternary_kernels_by_name(avail.back().c_str()) && err == nullptr,
              "default active() is not the best available (%s)", avail.back().c_str());
    }
    check(ternary_kernels_force("scalar") && ternary_kernels_active(nullptr) == ternary_kernels_scalar(),
          "force(scalar) did not take");
    check(ternary_kernels_force(avail.back().c_str()), "force(%s) failed", avail.back().c_str());

    // A fresh process per BITNET_ISA value (the variable is read once). Under a user-mode
    // emulator without binfmt the binary cannot start itself: say so and skip these.
    if (run_child(self, "auto").rfind("name=", 0) != 0) {
        std::printf("note: BITNET_ISA child-process checks skipped: cannot re-run %s\n", self);
        return;
    }
    for (const std::string &name : avail) {
        const std::string line = run_child(self, name.c_str());
        const std::string want = std::string("name=") + ternary_kernels_by_name(name.c_str())->name;
        check(line == want, "child BITNET_ISA=%s printed '%s', want '%s'", name.c_str(), line.c_str(),
              want.c_str());
    }
    std::string line = run_child(self, "bogus");
    check(line.find("error=BITNET_ISA=bogus is not a known kernel set (available: ") == 0,
          "child BITNET_ISA=bogus printed '%s'", line.c_str());
    for (const char *name : {"scalar", "avx2", "avx512", "neon"}) {
        if (ternary_kernels_by_name(name) != nullptr) continue;
        line = run_child(self, name);
        const std::string want = std::string("error=BITNET_ISA=") + name +
                                 " is not supported by this CPU (available: " + ternary_kernels_available() +
                                 ")";
        check(line == want, "child BITNET_ISA=%s printed '%s', want '%s'", name, line.c_str(), want.c_str());
    }
}

}  // namespace

int main(int argc, char **argv) {
    if (argc > 1 && std::strcmp(argv[1], "--dispatch-child") == 0) return dispatch_child();

    std::vector<const ternary_kernel_set *> isas;  // every SIMD set this CPU runs
    for (const char *name : {"avx2maddubs", "avx2vnni", "avx512bw", "avx512vnni", "amx", "neon"}) {
        if (const ternary_kernel_set *ks = ternary_kernels_by_name(name))
            isas.push_back(ks);
        else
            std::printf("note: %s kernels not run: not in this build, or this CPU lacks them\n", name);
    }
    std::printf("testing: scalar");
    for (const ternary_kernel_set *ks : isas) std::printf(", %s", ks->name);
    std::printf(" (available: %s)\n", ternary_kernels_available());

    test_layout();
    test_pack_roundtrip();
    test_quantize_reference();
    test_matmul_shapes(isas);
    test_matmul_extremes(isas);
    test_matmul_thread_split(isas);
    test_avx2_gemm(isas);
    test_quantize(isas);
    test_dispatch(argv[0]);

    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
