// Ternary rows whose length is not a multiple of 128 (1bitLLM-3B's FFN of 8640, hidden 320, ...),
// end to end through every kernel set this CPU runs (NEON too, under qemu: tests/cross/):
//   a tensor packed as bitnet.cpp packs it (128-element blocks over the flattened tensor, or the
//   ARM build's 64-element blocks, or F32 values t * scale) -> bind_ternary, which pads each row
//   to k_pad with zero weights -> activations quantized over the true k and padded with zeros, as
//   forward.cpp does -> i2s_matmul at m = 1 (decode GEMV), small batches and prompt-sized ones;
// every result equal to a plain integer dot product over the true k.
// Prints one line per failure and "N passed, M failed"; exits non-zero on any failure.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "kernels/ternary.h"
#include "quant_types.h"
#include "ternary_load.h"

using namespace bitnet;
using bitnet_test::check;
using bitnet_test::report;

namespace {

// The flattened n*k codes in blocks of `block` (128: canonical; 64: bitnet.cpp's ARM build), with
// the 32-byte tail holding the scale.
std::vector<uint8_t> pack_flat(const std::vector<int8_t> &w, int64_t block, float scale) {
    const int64_t n = static_cast<int64_t>(w.size()), quarter = block / 4;
    std::vector<uint8_t> out(static_cast<size_t>(n / 4 + 32), 0);
    for (int64_t e = 0; e < n; ++e) {
        const int64_t p = e % block;
        out[static_cast<size_t>(e / block * quarter + p % quarter)] |=
            static_cast<uint8_t>((w[static_cast<size_t>(e)] + 1) << (6 - 2 * (p / quarter)));
    }
    std::memcpy(out.data() + n / 4, &scale, sizeof scale);
    return out;
}

gguf_tensor tensor_of(uint32_t type, const std::vector<uint8_t> &bytes, int64_t k, int64_t n) {
    gguf_tensor t;
    t.name = "w";
    t.n_dims = 2;
    t.ne[0] = k, t.ne[1] = n, t.ne[2] = t.ne[3] = 1;
    t.type = type;
    t.offset = 0;
    t.n_bytes = bytes.size();
    t.data = bytes.data();
    return t;
}

// One bound matrix against the plain dot products, under every set, at several batch sizes.
void check_matrix(const ternary_matrix &tm, const std::vector<int8_t> &w, const std::vector<const ternary_kernel_set *> &sets,
                  std::mt19937 &gen, const std::string &what) {
    const int64_t k = tm.n_in, n = tm.n_out, kp = tm.k_pad;
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (int64_t m : {1, 3, 17, 64}) {
        std::vector<float> x(static_cast<size_t>(m * k));
        for (float &v : x) v = normal(gen);
        for (const ternary_kernel_set *ks : sets) {
            std::vector<int8_t> q(static_cast<size_t>(m * kp), 99);  // 99: the padding must be written
            std::vector<float> scale(static_cast<size_t>(m));
            std::vector<int32_t> sums(static_cast<size_t>(m)), y(static_cast<size_t>(m * n), -7);
            for (int64_t i = 0; i < m; ++i) {
                int8_t *row = q.data() + i * kp;
                ks->quantize_row_int8(x.data() + i * k, k, row, &scale[static_cast<size_t>(i)], &sums[static_cast<size_t>(i)]);
                std::fill(row + k, row + kp, int8_t{0});
            }
            ks->i2s_matmul(tm.codes, kp, 0, n, q.data(), sums.data(), m, y.data(), n);
            bool ok = true;
            for (int64_t i = 0; i < m && ok; ++i)
                for (int64_t r = 0; r < n && ok; ++r) {
                    int32_t dot = 0;
                    for (int64_t j = 0; j < k; ++j) dot += w[static_cast<size_t>(r * k + j)] * q[static_cast<size_t>(i * kp + j)];
                    ok = dot == y[static_cast<size_t>(i * n + r)];
                }
            check(ok, what + " k=" + std::to_string(k) + " n=" + std::to_string(n) + " m=" + std::to_string(m) + " on " +
                          ks->name);
        }
    }
}

}  // namespace

int main() {
    std::vector<const ternary_kernel_set *> sets = {ternary_kernels_scalar()};
    for (const char *name : {"avx2maddubs", "avx2vnni", "avx512bw", "avx512vnni", "amx", "neon"})
        if (const ternary_kernel_set *ks = ternary_kernels_by_name(name)) sets.push_back(ks);
    std::printf("testing:");
    for (const ternary_kernel_set *ks : sets) std::printf(" %s", ks->name);
    std::printf("\n");

    std::mt19937 gen(12);
    std::uniform_int_distribution<int> trit(-1, 1);
    // (k, n): n * k a multiple of 128; rows start inside blocks for every k here but 256.
    const int64_t shapes[][2] = {{8640, 6}, {320, 8}, {704, 16}, {100, 32}, {1080, 48}, {192, 2}, {256, 3}};
    for (const auto &shape : shapes) {
        const int64_t k = shape[0], n = shape[1];
        std::vector<int8_t> w(static_cast<size_t>(n * k));
        for (int8_t &v : w) v = static_cast<int8_t>(trit(gen));
        const float scale = 0.0371f;
        for (int64_t block : {128, 64}) {
            const std::vector<uint8_t> bytes = pack_flat(w, block, scale);
            ternary_matrix tm;
            const i2s_layout layout = block == 128 ? i2s_layout::canonical : i2s_layout::arm64;
            const std::string why = bind_ternary(tensor_of(GGML_I2_S, bytes, k, n), k, n, layout, &tm);
            check(why.empty() && tm.scale == scale && tm.k_pad % 128 == 0 && tm.k_pad >= k && tm.k_pad < k + 128,
                  "bind I2_S (" + std::to_string(block) + "-blocks) k=" + std::to_string(k) + ": " + why);
            if (why.empty()) check_matrix(tm, w, sets, gen, block == 128 ? "I2_S" : "I2_S (ARM layout)");
        }
        std::vector<float> values(w.size());
        for (size_t i = 0; i < w.size(); ++i) values[i] = static_cast<float>(w[i]) * scale;
        std::vector<uint8_t> f32(values.size() * sizeof(float));
        std::memcpy(f32.data(), values.data(), f32.size());
        ternary_matrix tm;
        const std::string why = bind_ternary(tensor_of(GGML_F32, f32, k, n), k, n, i2s_layout::canonical, &tm);
        check(why.empty() && tm.scale == scale, "bind F32 k=" + std::to_string(k) + ": " + why);
        if (why.empty()) check_matrix(tm, w, sets, gen, "F32");
    }
    // A tensor I2_S cannot hold (a partial last block), and TQ rows that are not whole 256-blocks.
    {
        const std::vector<uint8_t> bytes(100 * 3 / 4 + 32, 0x55);
        ternary_matrix tm;
        const std::string why = bind_ternary(tensor_of(GGML_I2_S, bytes, 100, 3), 100, 3, i2s_layout::canonical, &tm);
        check(why.find("not a multiple of 128: I2_S cannot hold it") != std::string::npos, "I2_S 3x100 refused: " + why);
        const std::vector<uint8_t> tq(66 * 2, 0);
        const std::string why_tq = bind_ternary(tensor_of(GGML_TQ2_0, tq, 384, 1), 384, 1, i2s_layout::canonical, &tm);
        check(why_tq.find("TQ2_0 packs each row in blocks of 256") != std::string::npos, "TQ2_0 k=384 refused: " + why_tq);
    }
    return report();
}
