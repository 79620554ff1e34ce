// The int8-activation head (kernels/head_int8.h): the activation quantizer on chosen values (half
// to even, clamp, the 1e-5 floor), the scalar reference against the definition recomputed here in
// another way (weights widened by dequant.cpp with the f16 scale set to 1, products summed in
// int64), and every SIMD set this CPU runs against the scalar reference bit for bit, on row
// lengths with odd block counts, row ranges and batch sizes; a row's result must not depend on
// the batch it is in.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "dequant.h"
#include "kernels/dense.h"
#include "kernels/float_order.h"
#include "kernels/head_int8.h"
#include "kernels/ternary.h"
#include "quant_types.h"

using namespace bitnet;
using bitnet_test::check;

namespace {

struct acts {
    std::vector<int8_t> q;
    std::vector<float> d;
    std::vector<int16_t> bsum;
    head_acts view() const { return {q.data(), d.data(), bsum.data()}; }
};

acts quantize(const std::vector<float> &x, int64_t m, int64_t k, int64_t block) {
    acts a{std::vector<int8_t>(static_cast<size_t>(m * k)), std::vector<float>(static_cast<size_t>(m * k / block)),
           std::vector<int16_t>(static_cast<size_t>(m * k / 16))};
    quantize_head_acts(x.data(), m, k, block, a.q.data(), a.d.data(), a.bsum.data());
    return a;
}

void test_quantizer() {
    std::vector<float> x(32, 0.0f);
    x[0] = 127.0f;  // s = 1: the codes are the values rounded half to even
    x[1] = 2.5f, x[2] = 3.5f, x[3] = -2.5f, x[4] = -0.5f, x[5] = 1.5f, x[6] = -127.0f, x[7] = 126.49f;
    acts a = quantize(x, 1, 32, 32);
    const int expect[8] = {127, 2, 4, -2, 0, 2, -127, 126};
    for (int j = 0; j < 8; ++j) check(a.q[static_cast<size_t>(j)] == expect[j], "quantizer: value " + std::to_string(j));
    check(a.d[0] == 127.0f / 127.0f, "quantizer: d = amax / 127");
    int32_t s0 = 0;
    for (int j = 0; j < 16; ++j) s0 += a.q[static_cast<size_t>(j)];
    check(a.bsum[0] == s0 && a.bsum[1] == 0, "quantizer: sums of 16");
    std::vector<float> zero(32, 0.0f);
    zero[3] = 1e-7f;  // below the floor: s = 127 / 1e-5
    acts z = quantize(zero, 1, 32, 32);
    check(z.d[0] == 1e-5f / 127.0f && z.q[3] == static_cast<int8_t>(std::nearbyint(1e-7f * (127.0f / 1e-5f))),
          "quantizer: the 1e-5 floor");
}

// Random rows of a type with finite scales (f16 scale bytes rewritten), any quant bytes.
std::vector<uint8_t> random_rows(std::mt19937 &gen, uint32_t type, int64_t n, int64_t k, bool unit_scale) {
    const int64_t bs = type == GGML_Q8_0 ? 32 : 256, ts = type == GGML_Q8_0 ? 34 : 210, at = type == GGML_Q8_0 ? 0 : 208;
    std::vector<uint8_t> w(static_cast<size_t>(n * k / bs * ts));
    for (auto &b : w) b = static_cast<uint8_t>(gen());
    std::uniform_real_distribution<float> u(-0.05f, 0.05f);
    for (int64_t b = 0; b < n * k / bs; ++b) {
        const uint16_t h = f32_to_f16(unit_scale ? 1.0f : u(gen));
        std::memcpy(&w[static_cast<size_t>(b * ts + at)], &h, 2);
    }
    return w;
}

std::vector<float> random_acts(std::mt19937 &gen, int64_t n) {
    std::normal_distribution<float> g(0.0f, 1.0f);
    std::vector<float> x(static_cast<size_t>(n));
    for (auto &v : x) v = g(gen) * (gen() % 7 == 0 ? 30.0f : 1.0f);  // some outliers
    return x;
}

// head_int8.h's definition, from the widened unit-scale weights (exact integers as f32).
float definition(uint32_t type, const uint8_t *row, int64_t k, const acts &a, int64_t i) {
    std::vector<float> wf(static_cast<size_t>(k));
    dequantize_to_f32(type, row, k, wf.data());  // f16 scale 1: w = q (Q8_0) or sc * q6 (Q6_K)
    const int8_t *q = a.q.data() + i * k;
    if (type == GGML_Q8_0) {
        float lane[kSumLanes] = {};
        for (int64_t b = 0; b < k / 32; ++b)
            for (int g = 0; g < 8; ++g) {
                int64_t isum = 0;
                for (int e = 4 * g; e < 4 * g + 4; ++e) isum += static_cast<int64_t>(wf[32 * b + e]) * q[32 * b + e];
                lane[8 * (b % 2) + g] = std::fma(static_cast<float>(isum), a.d[i * (k / 32) + b], lane[8 * (b % 2) + g]);
            }
        return sum_lanes16(lane);
    }
    float acc = 0.0f;
    for (int64_t b = 0; b < k / 256; ++b) {
        int64_t total = 0;
        for (int e = 0; e < 256; ++e) total += static_cast<int64_t>(wf[256 * b + e]) * q[256 * b + e];
        acc = std::fma(static_cast<float>(total), a.d[i * (k / 256) + b], acc);
    }
    return acc;
}

using matmul_fn = decltype(head_int8_kernel_set::matmul_q8_0);

matmul_fn pick(const head_int8_kernel_set *s, uint32_t type) {
    return type == GGML_Q8_0 ? s->matmul_q8_0 : s->matmul_q6_k;
}

void test_reference(std::mt19937 &gen, uint32_t type, int64_t k) {
    const int64_t n = 5, m = 2, block = head_act_block(type), row_bytes = dense_row_bytes(type, k);
    const std::vector<uint8_t> w = random_rows(gen, type, n, k, true);
    const acts a = quantize(random_acts(gen, m * k), m, k, block);
    std::vector<float> y(static_cast<size_t>(m * n));
    pick(head_int8_kernels_scalar(), type)(w.data(), k, 0, n, a.view(), m, y.data(), n);
    for (int64_t i = 0; i < m; ++i)
        for (int64_t r = 0; r < n; ++r)
            check(y[static_cast<size_t>(i * n + r)] == definition(type, w.data() + r * row_bytes, k, a, i),
                  "reference vs definition: type " + std::to_string(type) + " k=" + std::to_string(k));
}

struct named_set {
    const char *isa;  // the ternary set whose CPU support it needs
    const head_int8_kernel_set *(*get)();
};

void test_set(std::mt19937 &gen, const named_set &ns, uint32_t type, int64_t k) {
    const head_int8_kernel_set *set = ns.get();
    const int64_t n = 37, r0 = 3, r1 = 34, block = head_act_block(type);
    const std::vector<uint8_t> w = random_rows(gen, type, n, k, false);
    for (int64_t m : {1, 2, 3, 5}) {
        const acts a = quantize(random_acts(gen, m * k), m, k, block);
        std::vector<float> want(static_cast<size_t>(m * n), -1.0f), got = want, one(static_cast<size_t>(n), -1.0f);
        pick(head_int8_kernels_scalar(), type)(w.data(), k, r0, r1, a.view(), m, want.data(), n);
        pick(set, type)(w.data(), k, r0, r1, a.view(), m, got.data(), n);
        const std::string what = std::string(set->name) + " type " + std::to_string(type) + " k=" + std::to_string(k) +
                                 " m=" + std::to_string(m);
        check(std::memcmp(want.data(), got.data(), want.size() * 4) == 0, what + ": same bits as the reference");
        // The last activation row alone gives that row's results of the batch.
        const acts last{std::vector<int8_t>(a.q.end() - k, a.q.end()), std::vector<float>(a.d.end() - k / block, a.d.end()),
                        std::vector<int16_t>(a.bsum.end() - k / 16, a.bsum.end())};
        pick(set, type)(w.data(), k, r0, r1, last.view(), 1, one.data(), n);
        check(std::memcmp(one.data() + r0, got.data() + (m - 1) * n + r0, static_cast<size_t>(r1 - r0) * 4) == 0,
              what + ": one row equals the batch's row");
    }
}

}  // namespace

int main() {
    std::mt19937 gen(1234);
    test_quantizer();
    for (int64_t k : {32, 96, 160, 2592}) test_reference(gen, GGML_Q8_0, k);
    for (int64_t k : {256, 768}) test_reference(gen, GGML_Q6_K, k);
    const named_set sets[] = {{"scalar", head_int8_kernels_scalar}, {"avx2", head_int8_kernels_avx2},
                              {"avx2vnni", head_int8_kernels_avxvnni}, {"avx512bw", head_int8_kernels_avx512bw},
                              {"avx512vnni", head_int8_kernels_avx512vnni}, {"neon", head_int8_kernels_neon}};
    int n_sets = 0;
    for (const named_set &ns : sets) {
        if (ternary_kernels_by_name(ns.isa) == nullptr || ns.get() == nullptr) continue;
        ++n_sets;
        for (int64_t k : {32, 64, 96, 160, 2560, 2592}) test_set(gen, ns, GGML_Q8_0, k);
        for (int64_t k : {256, 512, 768, 2560}) test_set(gen, ns, GGML_Q6_K, k);
    }
    std::printf("%d kernel sets checked\n", n_sets);
    return bitnet_test::report();
}
