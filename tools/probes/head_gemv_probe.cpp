// head-gemv-probe: the output head's decode GEMV (one activation row) alone, per dense kernel set
// and weight type: weights per second and bytes per second, from memory (the whole head, as a
// token reads it) and from cache (a few hundred rows read again and again). The speed of the
// head is otherwise hidden inside a token's time (bitnet-bench); this is where a head kernel's
// change shows by itself.
//
// Each set's result is checked equal to the scalar reference (on the first rows) before it is
// timed. Times are the thread's CPU time (the machine may be shared), the best of -r runs, one
// thread.
//
//   head-gemv-probe [-r 5] [--rows 128256] [-k 2560] [--types f16,q8_0,q6_k] [--cache-rows 512]
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <time.h>
#include <vector>

#include "kernels/dense.h"
#include "kernels/ternary.h"

namespace {

double thread_seconds() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

struct head_type {
    const char *name;
    int64_t block, bytes, scale_at;  // scale_at < 0: F16 elements
};

// A random head of `rows` rows: any quant bytes, finite scales (or finite F16 values).
std::vector<uint8_t> random_head(const head_type &t, int64_t rows, int64_t k, std::mt19937 &gen) {
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<uint8_t> w(static_cast<size_t>(rows * (k / t.block) * t.bytes));
    if (t.scale_at < 0) {
        for (size_t e = 0; e < w.size() / 2; ++e) {
            const uint16_t h = bitnet::f32_to_f16(u(gen));
            std::memcpy(&w[2 * e], &h, 2);
        }
        return w;
    }
    for (uint8_t &b : w) b = static_cast<uint8_t>(gen());
    for (int64_t b = 0; b < rows * (k / t.block); ++b) {
        const uint16_t d = bitnet::f32_to_f16(u(gen) * 0.01f);
        std::memcpy(&w[static_cast<size_t>(b * t.bytes + t.scale_at)], &d, 2);
    }
    return w;
}

void run(const bitnet::dense_kernel_set *ks, const head_type &t, const std::vector<uint8_t> &w, int64_t k,
         int64_t r0, int64_t r1, const float *x, float *y) {
    if (t.scale_at < 0)
        ks->matmul_f16(reinterpret_cast<const uint16_t *>(w.data()), k, r0, r1, x, 1, y, r1);
    else if (t.block == 32)
        ks->matmul_q8_0(w.data(), k, r0, r1, x, 1, y, r1);
    else
        ks->matmul_q6_k(w.data(), k, r0, r1, x, 1, y, r1);
}

double best_seconds(const bitnet::dense_kernel_set *ks, const head_type &t, const std::vector<uint8_t> &w,
                    int64_t k, int64_t rows, const float *x, float *y, int reps, int inner) {
    double best = 1e30;
    for (int r = 0; r < reps; ++r) {
        const double t0 = thread_seconds();
        for (int i = 0; i < inner; ++i) run(ks, t, w, k, 0, rows, x, y);
        best = std::min(best, (thread_seconds() - t0) / inner);
    }
    return best;
}

}  // namespace

int main(int argc, char **argv) {
    int reps = 5;
    int64_t rows = 128256, k = 2560, cache_rows = 512;
    std::string types = "f16,q8_0,q6_k";
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : nullptr;
        if (a == "-r" && v) reps = std::atoi(argv[++i]);
        else if (a == "--rows" && v) rows = std::atoll(argv[++i]);
        else if (a == "-k" && v) k = std::atoll(argv[++i]);
        else if (a == "--cache-rows" && v) cache_rows = std::atoll(argv[++i]);
        else if (a == "--types" && v) types = argv[++i];
        else {
            std::fprintf(stderr, "error: unknown or incomplete flag %s (head-gemv-probe [-r 5] [--rows 128256] [-k 2560] "
                                 "[--types f16,q8_0,q6_k] [--cache-rows 512])\n", a.c_str());
            return 2;
        }
    }
    if (reps < 1 || rows < 1 || cache_rows < 1 || k < 256 || k % 256 != 0) {
        std::fprintf(stderr, "error: need -r >= 1, --rows >= 1, --cache-rows >= 1 and -k a multiple of 256\n");
        return 2;
    }
    cache_rows = std::min(cache_rows, rows);
    std::vector<const bitnet::dense_kernel_set *> sets;
    if (bitnet::ternary_kernels_by_name("avx2") != nullptr && bitnet::dense_kernels_avx2() != nullptr)
        sets.push_back(bitnet::dense_kernels_avx2());
    if (bitnet::ternary_kernels_by_name("avx512") != nullptr && bitnet::dense_kernels_avx512() != nullptr)
        sets.push_back(bitnet::dense_kernels_avx512());
    const head_type all[] = {{"f16", 1, 2, -1}, {"q8_0", 32, 34, 0}, {"q6_k", 256, 210, 208}};
    std::mt19937 gen(7);
    std::vector<float> x(static_cast<size_t>(k)), y(static_cast<size_t>(rows)), want(static_cast<size_t>(rows));
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (float &v : x) v = u(gen);
    std::printf("head GEMV, one activation row, K = %lld; one thread, CPU time, best of %d\n",
                static_cast<long long>(k), reps);
    std::printf("| set | type | rows | G weights/s | GB/s |\n|---|---|---:|---:|---:|\n");
    int failed = 0;
    for (const head_type &t : all) {
        if (("," + types + ",").find("," + std::string(t.name) + ",") == std::string::npos) continue;
        const std::vector<uint8_t> w = random_head(t, rows, k, gen);
        const int64_t check_rows = std::min<int64_t>(rows, 64);
        run(bitnet::dense_kernels_scalar(), t, w, k, 0, check_rows, x.data(), want.data());
        const double bytes_per_row = static_cast<double>(k / t.block * t.bytes);
        for (const bitnet::dense_kernel_set *ks : sets) {
            run(ks, t, w, k, 0, check_rows, x.data(), y.data());
            if (std::memcmp(y.data(), want.data(), static_cast<size_t>(check_rows) * sizeof(float)) != 0) {
                std::printf("| %s | %s | differs from the scalar reference | | |\n", ks->name, t.name);
                ++failed;
                continue;
            }
            for (int64_t n : {rows, cache_rows}) {
                const int inner = static_cast<int>(std::max<int64_t>(1, rows / n));
                const double s = best_seconds(ks, t, w, k, n, x.data(), y.data(), reps, inner);
                std::printf("| %s | %s | %lld%s | %.2f | %.1f |\n", ks->name, t.name, static_cast<long long>(n),
                            n == rows ? " (memory)" : " (cache)", static_cast<double>(n * k) / s * 1e-9,
                            static_cast<double>(n) * bytes_per_row / s * 1e-9);
            }
        }
    }
    return failed == 0 ? 0 : 1;
}
