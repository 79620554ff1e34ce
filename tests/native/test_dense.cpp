// Dense (lm_head) kernel tests: every SIMD set this CPU runs against the scalar reference, for
// F32, F16 and BF16 weights and row lengths around the vector widths; Q8_0 / Q6_K kernels
// against the same set's F32 kernel on the widened rows; F16 / Q8_0 / Q6_K heads against the scalar
// set's in batches of 1..8 with rows split unevenly; all bit for bit (every set sums in
// float_order.h's order). Within one set, a row's result must not depend on the batch it is in:
// m = 1 equals every row of a batch bit for bit.
// Prints one line per failure and "N passed, M failed"; exits non-zero on any failure.
#include <cmath>
#include <climits>
#include <cstring>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "dequant.h"
#include "kernels/dense.h"
#include "kernels/ternary.h"
#include "kernels/tuning.h"
#include "quant_types.h"

using namespace bitnet;

namespace {

int g_passed = 0, g_failed = 0;

void check(bool ok, const char *what, const char *isa, const char *type, int64_t k, int64_t i, int64_t r) {
    if (ok) {
        ++g_passed;
        return;
    }
    ++g_failed;
    std::printf("FAIL: %s: %s %s k=%lld row=%lld out=%lld\n", what, isa, type, static_cast<long long>(k),
                static_cast<long long>(i), static_cast<long long>(r));
}

uint16_t f32_to_bf16_trunc(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return static_cast<uint16_t>(u >> 16);
}

struct weights {
    std::vector<float> f32;       // the values every type holds exactly
    std::vector<uint16_t> bits;   // the same values as F16 or BF16 bits
};

// n rows of k values representable in `type` (F32 = 0, F16 = 1, BF16 = 30).
weights make_weights(std::mt19937 &gen, uint32_t type, int64_t n, int64_t k) {
    std::uniform_real_distribution<float> u(-2.0f, 2.0f);
    weights w;
    w.f32.resize(static_cast<size_t>(n * k));
    w.bits.resize(w.f32.size());
    for (size_t j = 0; j < w.f32.size(); ++j) {
        const float v = u(gen);
        if (type == 1) {
            w.bits[j] = f32_to_f16(v);
            w.f32[j] = f16_to_f32(w.bits[j]);
        } else if (type == 30) {
            w.bits[j] = f32_to_bf16_trunc(v);
            w.f32[j] = bf16_to_f32(w.bits[j]);
        } else {
            w.f32[j] = v;
        }
    }
    return w;
}

void run(const dense_kernel_set *ks, uint32_t type, const weights &w, int64_t k, int64_t r0, int64_t r1,
         const float *x, int64_t m, float *y, int64_t ldy) {
    if (type == 0) ks->matmul_f32(w.f32.data(), k, r0, r1, x, m, y, ldy);
    else if (type == 1) ks->matmul_f16(w.bits.data(), k, r0, r1, x, m, y, ldy);
    else ks->matmul_bf16(w.bits.data(), k, r0, r1, x, m, y, ldy);
}

void test_against_reference(const dense_kernel_set *ks) {
    std::mt19937 gen(7);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    const struct {
        uint32_t id;
        const char *name;
    } types[] = {{0, "F32"}, {1, "F16"}, {30, "BF16"}};
    for (const auto &t : types) {
        for (int64_t k : {1, 7, 15, 16, 17, 31, 32, 33, 100, 128, 257, 2560}) {
            const int64_t n = 13, m = 6;
            const weights w = make_weights(gen, t.id, n, k);
            std::vector<float> x(static_cast<size_t>(m * k));
            for (float &v : x) v = u(gen);
            std::vector<float> want(static_cast<size_t>(m * n)), got(want.size()), one(static_cast<size_t>(n));
            run(dense_kernels_scalar(), t.id, w, k, 0, n, x.data(), m, want.data(), n);
            // Split the rows unevenly, as threads do.
            run(ks, t.id, w, k, 0, 5, x.data(), m, got.data(), n);
            run(ks, t.id, w, k, 5, n, x.data(), m, got.data(), n);
            for (int64_t i = 0; i < m; ++i) {
                run(ks, t.id, w, k, 0, n, x.data() + i * k, 1, one.data(), n);
                for (int64_t r = 0; r < n; ++r) {
                    const float g = got[i * n + r], e = want[i * n + r];
                    check(std::memcmp(&g, &e, sizeof g) == 0, "differs from the scalar reference",
                          ks->name, t.name, k, i, r);
                    check(one[r] == g, "m=1 differs from the same row in a batch", ks->name, t.name, k, i, r);
                }
            }
        }
    }
}

// Random Q8_0 / Q6_K rows (finite f16 scales, any quant bytes): the set's native kernel must give
// exactly what its matmul_f32 gives on the same rows widened by dequantize_to_f32.
void test_quantized_equals_widened(const dense_kernel_set *ks) {
    std::mt19937 gen(11);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    const struct {
        uint32_t id;
        const char *name;
        int64_t block, bytes, scale_at;
    } types[] = {{GGML_Q8_0, "Q8_0", 32, 34, 0}, {GGML_Q6_K, "Q6_K", 256, 210, 208}};
    for (const auto &t : types) {
        for (int64_t k : {256, 288, 512, 2560}) {  // 288: Q8_0 rows ending in a half step
            if (k % t.block != 0) continue;
            const int64_t n = 11, m = 5, row_bytes = k / t.block * t.bytes;
            std::vector<uint8_t> w(static_cast<size_t>(n * row_bytes));
            for (uint8_t &b : w) b = static_cast<uint8_t>(gen());
            for (int64_t b = 0; b < n * k / t.block; ++b) {
                const uint16_t d = f32_to_f16(u(gen) * 0.1f);
                std::memcpy(&w[static_cast<size_t>(b * t.bytes + t.scale_at)], &d, 2);
            }
            std::vector<float> wide(static_cast<size_t>(n * k)), x(static_cast<size_t>(m * k));
            dequantize_to_f32(t.id, w.data(), n * k, wide.data());
            for (float &v : x) v = u(gen);
            for (int64_t rows : {int64_t{1}, m}) {
                std::vector<float> want(static_cast<size_t>(rows * n)), got(want.size());
                ks->matmul_f32(wide.data(), k, 0, n, x.data(), rows, want.data(), n);
                (t.id == GGML_Q8_0 ? ks->matmul_q8_0 : ks->matmul_q6_k)(w.data(), k, 0, n, x.data(), rows, got.data(), n);
                for (int64_t i = 0; i < rows * n; ++i)
                    check(std::memcmp(&got[i], &want[i], 4) == 0, "differs from its widened F32 matrix", ks->name,
                          t.name, k, i / n, i % n);
            }
        }
    }
}

// Q6_K scales at their edges, against the scalar set bit for bit, decode and batch: d = +-0, f16
// subnormals, +-65504 and ordinary values, with sub-block scales -128, -1, 0, 1, 127 and random
// ones, every 6-bit value, and activations with zeros, both signs and wide magnitudes. The decode
// kernels rebuild w = d * sc * q in other ways (e.g. AVX2's fma(u, D, -32 D)); their products
// must still be the reference's.
void test_q6_k_scale_edges(const dense_kernel_set *ks) {
    std::mt19937 gen(17);
    const uint16_t ds[] = {0x0000, 0x8000, 0x0001, 0x83ff, 0x7bff, 0xfbff, 0x2e66, 0xb155};
    const int8_t scs[] = {-128, -1, 0, 1, 127};
    for (int64_t k : {256, 2560}) {
        const int64_t n = 24, row_bytes = k / 256 * 210, m = 3;
        std::vector<uint8_t> w(static_cast<size_t>(n * row_bytes));
        for (uint8_t &b : w) b = static_cast<uint8_t>(gen());
        for (int64_t b = 0; b < n * k / 256; ++b) {
            uint8_t *sb = &w[static_cast<size_t>(b * 210)];
            std::memcpy(sb + 208, &ds[b % 8], 2);
            for (int s = 0; s < 16; ++s)
                if ((b + s) % 3 != 0) sb[192 + s] = static_cast<uint8_t>(scs[(b + s) % 5]);
        }
        std::vector<float> x(static_cast<size_t>(m * k));
        for (size_t i = 0; i < x.size(); ++i) {
            const float mag = std::ldexp(1.0f, static_cast<int>(gen() % 40) - 20);
            x[i] = i % 7 == 0 ? 0.0f : (gen() & 1 ? mag : -mag) * (1.0f + static_cast<float>(gen() % 1000) / 1000.0f);
        }
        for (int64_t rows : {int64_t{1}, m}) {
            std::vector<float> want(static_cast<size_t>(rows * n)), got(want.size());
            dense_kernels_scalar()->matmul_q6_k(w.data(), k, 0, n, x.data(), rows, want.data(), n);
            ks->matmul_q6_k(w.data(), k, 0, n, x.data(), rows, got.data(), n);
            for (int64_t i = 0; i < rows * n; ++i)
                check(std::memcmp(&got[i], &want[i], 4) == 0, "Q6_K scale edges differ from the scalar reference",
                      ks->name, "Q6_K", k, i / n, i % n);
        }
    }
}

// The head kernels against the scalar set's, bit for bit, on the shapes the tiles split unevenly:
// F16, Q8_0 and Q6_K weights, 13 rows cut into ranges of 3, 5 and 5 (as threads cut them: odd
// starts, rows left over by two-row decode tiles), batches of 1..8 activation rows (whole and
// partial batch tiles), decode tiles of one and of two rows, several K (whole tiles, a half step,
// a 16-element rest, a scalar tail), and ldy past n: the padding must stay untouched.
void test_heads_against_reference(const dense_kernel_set *ks) {
    std::mt19937 gen(13);
    // Uniform in [-1, 1) from 24 random bits: uniform_real_distribution takes a long-double log per
    // value, which clang does not fold and qemu emulates in software (seconds per test under qemu).
    auto u = [&gen]() { return static_cast<float>(static_cast<int32_t>(gen() >> 8) - (1 << 23)) * 0x1p-23f; };
    const struct {
        uint32_t id;
        const char *name;
        int64_t block, bytes, scale_at;
        int64_t ks[4];
    } types[] = {{GGML_F16, "F16", 1, 2, -1, {48, 112, 300, 529}},
                 {GGML_Q8_0, "Q8_0", 32, 34, 0, {32, 96, 288, 544}},
                 {GGML_Q6_K, "Q6_K", 256, 210, 208, {256, 512, 768, 1280}}};
    int64_t rows_before = 0;
    tuning_get("head_gemv_rows", &rows_before);
    for (const auto &t : types)
        for (int64_t k : t.ks) {
            const int64_t n = 13, ldy = n + 3, row_bytes = k / t.block * t.bytes;
            std::vector<uint8_t> w(static_cast<size_t>(n * row_bytes));
            for (uint8_t &b : w) b = static_cast<uint8_t>(gen());
            if (t.id == GGML_F16)  // finite values
                for (size_t e = 0; e < w.size() / 2; ++e) {
                    const uint16_t h = f32_to_f16(u() * 2.0f);
                    std::memcpy(&w[2 * e], &h, 2);
                }
            else
                for (int64_t b = 0; b < n * k / t.block; ++b) {
                    const uint16_t d = f32_to_f16(u() * 0.1f);
                    std::memcpy(&w[static_cast<size_t>(b * t.bytes + t.scale_at)], &d, 2);
                }
            std::vector<float> x(static_cast<size_t>(8 * k));
            for (float &v : x) v = u();
            auto head = [&](const dense_kernel_set *set, int64_t r0, int64_t r1, int64_t m, float *y) {
                const float *xs = x.data();
                if (t.id == GGML_F16)
                    set->matmul_f16(reinterpret_cast<const uint16_t *>(w.data()), k, r0, r1, xs, m, y, ldy);
                else if (t.id == GGML_Q8_0)
                    set->matmul_q8_0(w.data(), k, r0, r1, xs, m, y, ldy);
                else
                    set->matmul_q6_k(w.data(), k, r0, r1, xs, m, y, ldy);
            };
            for (int64_t m = 1; m <= 8; ++m)
                for (int64_t gemv_rows : {1, 2}) {
                    if (gemv_rows == 1 && m > 1) continue;  // the knob only picks decode tiles
                    std::string error;
                    tuning_set("head_gemv_rows", gemv_rows, &error);
                    std::vector<float> want(static_cast<size_t>(m * ldy), -7.0f), got(want.size(), -7.0f);
                    head(dense_kernels_scalar(), 0, n, m, want.data());
                    head(ks, 0, 3, m, got.data());
                    head(ks, 3, 8, m, got.data());
                    head(ks, 8, n, m, got.data());
                    for (int64_t i = 0; i < m; ++i)
                        for (int64_t r = 0; r < ldy; ++r) {
                            const size_t at = static_cast<size_t>(i * ldy + r);
                            check(std::memcmp(&got[at], &want[at], sizeof(float)) == 0,
                                  r < n ? "head differs from the scalar reference" : "head wrote past its rows",
                                  ks->name, t.name, k, i * 100 + m, r);
                        }
                }
        }
    std::string error;
    tuning_set("head_gemv_rows", rows_before, &error);
}

// attend against the scalar set's, bit for bit (every set follows float_order.h), with scores
// wide enough apart that some weights underflow to subnormals and zeros (the exp's edge cases).
void test_attend(const dense_kernel_set *ks) {
    std::mt19937 gen(5);
    std::uniform_real_distribution<float> u(-2.0f, 2.0f);
    for (int64_t hd : {32, 64, 100, 128, 256, 6, 13})
        for (int64_t n_keys : {1, 7, 100}) {
            const int64_t stride = 3 * hd + 16;  // keys of several heads side by side, as in the cache
            std::vector<float> q(static_cast<size_t>(hd)), kv(static_cast<size_t>(stride * n_keys + hd));
            for (float &x : q) x = u(gen);
            for (float &x : kv) x = u(gen);
            std::vector<float> scores(static_cast<size_t>(n_keys)), want(static_cast<size_t>(hd)), got(want.size());
            const float scale = (n_keys == 7 ? 40.0f : 1.0f) / std::sqrt(static_cast<float>(hd));
            dense_kernels_scalar()->attend(q.data(), kv.data(), kv.data() + hd, stride, n_keys, hd, scale,
                                           scores.data(), want.data());
            ks->attend(q.data(), kv.data(), kv.data() + hd, stride, n_keys, hd, scale, scores.data(), got.data());
            for (int64_t j = 0; j < hd; ++j)
                check(std::memcmp(&got[j], &want[j], sizeof(float)) == 0, "attend differs from the scalar set", ks->name,
                      "F32", hd, n_keys, j);
        }
}

// attend_rows against the scalar set's attend, query by query: GQA groups of 1, 4 and 5 heads,
// rows that see different numbers of keys (causal), head sizes that fill whole registers (64, 128,
// 256) and some that do not (100, 72, 20), key counts across the key blocks; bit for bit.
void test_attend_rows(const dense_kernel_set *ks) {
    std::mt19937 gen(6);
    std::uniform_real_distribution<float> u(-2.0f, 2.0f);
    for (int64_t hd : {64, 100, 128, 256, 72, 20})
        for (int64_t group : {1, 4, 5})
            for (int64_t n_rows : {1, 3, 9}) {
                const int64_t first_keys = 1 + static_cast<int64_t>(gen() % 130), stride = 2 * hd + 16;
                const int64_t n_keys_max = first_keys + n_rows - 1, row_stride = group * hd + 8;
                std::vector<float> q(static_cast<size_t>(n_rows * row_stride)), kv(static_cast<size_t>(stride * n_keys_max + hd));
                for (float &x : q) x = u(gen);
                for (float &x : kv) x = u(gen);
                std::vector<int64_t> n_keys(static_cast<size_t>(n_rows));
                for (int64_t i = 0; i < n_rows; ++i) n_keys[static_cast<size_t>(i)] = first_keys + i;
                std::vector<float> got(q.size(), 7.0f), want(static_cast<size_t>(hd)), scores(static_cast<size_t>(n_keys_max));
                const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
                ks->attend_rows(q.data(), kv.data(), kv.data() + hd, stride, hd, scale, n_rows, row_stride, group,
                                n_keys.data(), got.data());
                // Each row alone gives the same bits as in the block: a query's result must not depend
                // on the batch it came in (lookup drafts are verified in batches of plain decode steps).
                std::vector<float> alone(q.size(), 7.0f);
                for (int64_t i = 0; i < n_rows; ++i)
                    ks->attend_rows(q.data() + i * row_stride, kv.data(), kv.data() + hd, stride, hd, scale, 1,
                                    row_stride, group, n_keys.data() + i, alone.data() + i * row_stride);
                check(std::memcmp(alone.data(), got.data(), got.size() * sizeof(float)) == 0,
                      "attend_rows of one row differs from the same row in a block", ks->name, "F32", hd,
                      n_rows * 1000 + group, 0);
                for (int64_t i = 0; i < n_rows; ++i)
                    for (int64_t t = 0; t < group; ++t) {
                        const int64_t at = i * row_stride + t * hd;
                        dense_kernels_scalar()->attend(q.data() + at, kv.data(), kv.data() + hd, stride, n_keys[static_cast<size_t>(i)], hd, scale,
                                                       scores.data(), want.data());
                        for (int64_t j = 0; j < hd; ++j)
                            check(std::memcmp(&got[static_cast<size_t>(at + j)], &want[static_cast<size_t>(j)], sizeof(float)) == 0,
                                  "attend_rows differs from the scalar attend", ks->name, "F32", hd, n_rows * 1000 + group, at + j);
                    }
            }
}

// scale_sums: the same bits as the scalar set (a division, then a multiply, per element).
void test_scale_sums(const dense_kernel_set *ks) {
    std::mt19937 gen(7);
    for (int64_t n : {1, 7, 16, 33, 1000}) {
        std::vector<int32_t> acc(static_cast<size_t>(n));
        for (int32_t &a : acc) a = static_cast<int32_t>(gen());  // any int32, extremes included
        acc[0] = INT32_MIN;
        const float s = 127.0f / (0.001f + static_cast<float>(gen() % 100000) / 1000.0f);
        const float w_scale = static_cast<float>(gen() % 1000) / 997.0f;
        std::vector<float> want(acc.size()), got(acc.size(), 9.0f);
        dense_kernels_scalar()->scale_sums(acc.data(), n, s, w_scale, want.data());
        ks->scale_sums(acc.data(), n, s, w_scale, got.data());
        check(std::memcmp(want.data(), got.data(), want.size() * sizeof(float)) == 0,
              "scale_sums differs from the scalar set", ks->name, "I32", n, 0, 0);
    }
}

}  // namespace

int main() {
    std::vector<const dense_kernel_set *> sets;
    // A set runs only where the CPU has its ISA; the ternary table answers that question.
    if (ternary_kernels_by_name("avx2") != nullptr && dense_kernels_avx2() != nullptr)
        sets.push_back(dense_kernels_avx2());
    if (ternary_kernels_by_name("avx512") != nullptr && dense_kernels_avx512() != nullptr)
        sets.push_back(dense_kernels_avx512());
    if (ternary_kernels_by_name("neon") != nullptr && dense_kernels_neon() != nullptr)
        sets.push_back(dense_kernels_neon());
    std::printf("testing dense kernels: scalar");
    for (const dense_kernel_set *ks : sets) std::printf(", %s", ks->name);
    std::printf("\n");
    test_against_reference(dense_kernels_scalar());
    test_quantized_equals_widened(dense_kernels_scalar());
    test_attend_rows(dense_kernels_scalar());
    for (const dense_kernel_set *ks : sets) {
        test_against_reference(ks);
        test_quantized_equals_widened(ks);
        test_heads_against_reference(ks);
        test_q6_k_scale_edges(ks);
        // A set that reuses the scalar attention (NEON) has nothing of its own to check there.
        if (ks->attend != dense_kernels_scalar()->attend) test_attend(ks);
        if (ks->attend_rows != dense_kernels_scalar()->attend_rows) test_attend_rows(ks);
        test_scale_sums(ks);
    }
    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
