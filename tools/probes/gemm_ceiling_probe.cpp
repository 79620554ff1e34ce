// gemm-ceiling-probe: how close the AVX2 prompt GEMM (src/kernels/ternary_gemm_avx2.h) comes to
// what this core's int8 instructions can do at all.
//
// 1. The ceiling: int8 multiply-adds per cycle of independent chains with no loads, at the
//    clock measured in the same run (a chain of dependent 1-cycle adds):
//      maddubs+paddw        vpmaddubsw into a temporary, vpaddw into one of 12 int16 sums
//                           (the GEMM's own steps: the AVX2 flavour)
//      maddubs+maddwd+paddd the widening chain of a kernel that keeps int32 sums every step
//      vpdpbusd ymm         12 int32 sums (the AVX-VNNI flavour; only where CPUID has it)
//    32 MACs per instruction.
// 2. The GEMM through the engine's kernel sets ("avx2maddubs", "avx2vnni"), one thread, on the
//    2B-4T layer shapes (qkv, o, gate+up, down) at m activation rows: MACs per second and per
//    cycle, beside the small-batch tiles (the same set with avx2_gemm_min_batch out of reach).
//    Every result is checked equal to the scalar reference before it is timed. Times are the
//    thread's CPU time (the machine may be shared), the best of -r runs.
//
//   gemm-ceiling-probe [-m 128,512] [-r 5] [--shapes NxK,...]   (default: the 2B-4T shapes)
#include <algorithm>
#include <cpuid.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <time.h>
#include <vector>

#include "kernels/ternary.h"
#include "kernels/tuning.h"

namespace {

// This thread's CPU time, not wall time: on a machine shared with other work the time slices
// the thread did not run are left out (what remains is contention for caches and memory).
struct clock_type {
    using time_point = double;
    static double now() {
        timespec ts;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return ts.tv_sec + 1e-9 * ts.tv_nsec;
    }
};

double seconds_since(double t0) {
    return clock_type::now() - t0;
}

// The best rate of `tries` short runs: on a shared machine the fastest run is the one that had
// the core to itself.
template <class F>
double best_rate(F run, int tries = 40) {
    double best = 0;
    for (int t = 0; t < tries; ++t) best = std::max(best, run());
    return best;
}

// Core clock (Hz): 100 dependent 1-cycle adds per iteration.
double clock_hz_once() {
    constexpr long kIters = 200'000;
    uint64_t x = 0;
    const auto t0 = clock_type::now();
    for (long n = 0; n < kIters; ++n) {
        asm volatile(
            ".rept 100\n\t"
            "add $1, %0\n\t"
            ".endr"
            : "+r"(x));
    }
    return 100.0 * kIters / seconds_since(t0);
}

#define CLOBBER_YMM                                                                                      \
    "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", \
        "xmm12", "xmm13", "xmm14", "xmm15"

// The int8 steps of one loop iteration: 12 vpmaddubsw or vpdpbusd (12 * 32 MACs).
constexpr long kCeilingIters = 200'000;
constexpr double kMacsPerIter = 12 * 32;

__attribute__((target("avx2"))) double ceiling_maddubs_paddw() {
    const auto t0 = clock_type::now();
    for (long n = 0; n < kCeilingIters; ++n)
        asm volatile(
            ".irp acc, 0,1,2,3,4,5,6,7,8,9,10,11\n\t"
            "vpmaddubsw %%ymm14, %%ymm15, %%ymm12\n\t"
            "vpaddw %%ymm12, %%ymm\\acc, %%ymm\\acc\n\t"
            ".endr" ::
                : CLOBBER_YMM);
    return kMacsPerIter * kCeilingIters / seconds_since(t0);
}

__attribute__((target("avx2"))) double ceiling_maddubs_maddwd_paddd() {
    const auto t0 = clock_type::now();
    for (long n = 0; n < kCeilingIters; ++n)
        asm volatile(
            ".irp acc, 0,1,2,3,4,5,6,7,8,9,10,11\n\t"
            "vpmaddubsw %%ymm14, %%ymm15, %%ymm12\n\t"
            "vpmaddwd %%ymm13, %%ymm12, %%ymm12\n\t"
            "vpaddd %%ymm12, %%ymm\\acc, %%ymm\\acc\n\t"
            ".endr" ::
                : CLOBBER_YMM);
    return kMacsPerIter * kCeilingIters / seconds_since(t0);
}

__attribute__((target("avx2,avxvnni"))) double ceiling_dpbusd_ymm() {
    const auto t0 = clock_type::now();
    for (long n = 0; n < kCeilingIters; ++n)
        asm volatile(
            ".irp acc, 0,1,2,3,4,5,6,7,8,9,10,11\n\t"
            "%{vex%} vpdpbusd %%ymm14, %%ymm15, %%ymm\\acc\n\t"
            ".endr" ::
                : CLOBBER_YMM);
    return kMacsPerIter * kCeilingIters / seconds_since(t0);
}

bool cpu_has_avx2() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}

bool cpu_has_avxvnni() {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __get_cpuid_count(7, 1, &a, &b, &c, &d) && ((a >> 4) & 1u);
}

struct shape {
    std::string name;
    int64_t n, k;
};

// The 2B-4T layer matrices as forward.cpp runs them (q/k/v and gate/up stacked).
const std::vector<shape> kShapes = {
    {"qkv", 3840, 2560}, {"o", 2560, 2560}, {"gate+up", 13824, 2560}, {"down", 2560, 6912}};

// "a,b,c" of positive integers (sep ','), or "NxK,..." pairs (sep ',' between, 'x' within); false
// on anything else.
bool parse_list(const char *s, std::vector<int64_t> *out) {
    out->clear();
    for (const char *p = s;;) {
        char *end = nullptr;
        const long long v = std::strtoll(p, &end, 10);
        if (end == p || v <= 0 || v > (1 << 24)) return false;
        out->push_back(v);
        if (*end == '\0') return true;
        if (*end != ',' && *end != 'x') return false;
        p = end + 1;
    }
}

int usage_error(const char *what) {
    std::fprintf(stderr, "error: %s (usage: gemm-ceiling-probe [-m 128,512] [-r 5] [--shapes NxK,...], K a multiple "
                 "of 128)\n", what);
    return 2;
}

// Best of `reps` seconds of one i2s_matmul over all rows.
double time_matmul(const bitnet::ternary_kernel_set *ks, const std::vector<uint8_t> &w, const shape &s,
                   const std::vector<int8_t> &a, const std::vector<int32_t> &sums, int64_t m, std::vector<int32_t> &y,
                   int reps) {
    double best = 1e30;
    for (int r = 0; r < reps; ++r) {
        const auto t0 = clock_type::now();
        ks->i2s_matmul(w.data(), s.k, 0, s.n, a.data(), sums.data(), m, y.data(), s.n);
        best = std::min(best, seconds_since(t0));
    }
    return best;
}

}  // namespace

int main(int argc, char **argv) {
    std::vector<int64_t> ms = {128, 512}, list;
    std::vector<shape> shapes = kShapes;
    int reps = 5;
    for (int i = 1; i < argc; i += 2) {
        if (i + 1 >= argc) return usage_error((std::string("flag ") + argv[i] + " needs a value").c_str());
        const std::string flag = argv[i];
        if (flag != "-m" && flag != "-r" && flag != "--shapes")
            return usage_error(("unknown flag " + flag).c_str());
        if (!parse_list(argv[i + 1], &list)) return usage_error(("bad value for " + flag).c_str());
        if (flag == "-m") ms = list;
        if (flag == "-r") reps = static_cast<int>(list[0]);
        if (flag == "--shapes") {
            if (list.size() % 2 != 0) return usage_error("--shapes takes NxK pairs");
            shapes.clear();
            for (size_t j = 0; j < list.size(); j += 2) {
                if (list[j + 1] % 128 != 0) return usage_error("K must be a multiple of 128");
                shapes.push_back({std::to_string(list[j]) + "x" + std::to_string(list[j + 1]), list[j], list[j + 1]});
            }
        }
    }
    if (!cpu_has_avx2()) {
        std::fprintf(stderr, "error: this CPU lacks AVX2\n");
        return 1;
    }
    const double hz = best_rate(clock_hz_once);
    std::printf("clock %.2f GHz (dependent adds, best of 40 runs)\n", hz / 1e9);
    const double c_madd = best_rate(ceiling_maddubs_paddw), c_madd3 = best_rate(ceiling_maddubs_maddwd_paddd);
    std::printf("ceiling maddubs+paddw        %6.1f GMAC/s  %5.1f MAC/cycle\n", c_madd / 1e9, c_madd / hz);
    std::printf("ceiling maddubs+maddwd+paddd %6.1f GMAC/s  %5.1f MAC/cycle\n", c_madd3 / 1e9, c_madd3 / hz);
    double c_vnni = 0;
    if (cpu_has_avxvnni()) {
        c_vnni = best_rate(ceiling_dpbusd_ymm);
        std::printf("ceiling vpdpbusd ymm         %6.1f GMAC/s  %5.1f MAC/cycle\n", c_vnni / 1e9, c_vnni / hz);
    }

    struct flavour {
        const char *set;
        double ceiling;
    };
    const flavour flavours[] = {{"avx2maddubs", c_madd}, {"avx2vnni", c_vnni}};
    std::mt19937 gen(5);
    std::string err;
    int64_t gemm_min = 0;
    bitnet::tuning_get("avx2_gemm_min_batch", &gemm_min);
    for (const shape &s : shapes) {
        std::vector<uint8_t> w(static_cast<size_t>(s.n * s.k / 4));
        for (auto &b : w) {  // codes 0..2 only
            uint8_t v = 0;
            for (int f = 0; f < 4; ++f) v = static_cast<uint8_t>(v << 2 | gen() % 3);
            b = v;
        }
        for (int64_t m : ms) {
            std::vector<int8_t> a(static_cast<size_t>(m * s.k));
            for (auto &v : a) v = static_cast<int8_t>(gen());
            std::vector<int32_t> sums(static_cast<size_t>(m), 0), ref(static_cast<size_t>(m * s.n)), y(ref.size());
            for (int64_t i = 0; i < m; ++i)
                for (int64_t j = 0; j < s.k; ++j) sums[i] += a[i * s.k + j];
            bitnet::ternary_kernels_scalar()->i2s_matmul(w.data(), s.k, 0, s.n, a.data(), sums.data(), m, ref.data(),
                                                         s.n);
            const double macs = static_cast<double>(m) * s.n * s.k;
            for (const flavour &f : flavours) {
                const bitnet::ternary_kernel_set *ks = bitnet::ternary_kernels_by_name(f.set);
                if (ks == nullptr || f.ceiling == 0) continue;
                double t[2];
                for (int use_gemm = 1; use_gemm >= 0; --use_gemm) {
                    bitnet::tuning_set("avx2_gemm_min_batch", use_gemm ? 2 : (1 << 20), &err);
                    std::fill(y.begin(), y.end(), 0);
                    ks->i2s_matmul(w.data(), s.k, 0, s.n, a.data(), sums.data(), m, y.data(), s.n);
                    if (y != ref) {
                        std::fprintf(stderr, "error: %s (%s) differs from the scalar reference at %s, m=%lld\n",
                                     f.set, use_gemm ? "GEMM" : "tiles", s.name.c_str(), (long long)m);
                        return 1;
                    }
                    t[use_gemm] = time_matmul(ks, w, s, a, sums, m, y, reps);
                }
                std::printf("%-11s %-8s n=%-5lld k=%-4lld m=%-4lld GEMM %6.1f GMAC/s %5.1f MAC/cycle (%3.0f%% of "
                            "ceiling) | tiles %6.1f GMAC/s\n",
                            f.set, s.name.c_str(), (long long)s.n, (long long)s.k, (long long)m, macs / t[1] / 1e9,
                            macs / t[1] / hz, 100.0 * macs / t[1] / f.ceiling, macs / t[0] / 1e9);
            }
        }
    }
    bitnet::tuning_set("avx2_gemm_min_batch", gemm_min, &err);
    return 0;
}
