// One answer on every CPU, end to end: the demo model's logits for a 520-token prompt are bit for
// bit the same under every kernel set this CPU runs (NEON too, under qemu: tests/cross/), with 1,
// 2 and 3 threads, and when the prompt comes in other batches (single tokens, a split past the
// batch limit). tests/test_same_bits.py checks more shapes on x86 through Python.
// BITNET_SAME_BITS_QUICK=1 (set by tests/cross/run_neon_qemu.sh, where emulated float math is
// slow): the prompt goes in 65-token batches with only each batch's last row of logits compared,
// the same 520 positions, the SIMD sets at every thread count against scalar at one, without the
// all-rows head.
// Prints one line per failure and "N passed, M failed"; exits non-zero on any failure.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "forward.h"
#include "check.h"
#include "kernels/ternary.h"
#include "model.h"

using namespace bitnet;
using bitnet_test::check;
using bitnet_test::report;

namespace {

// The repository root, from this file's path (tests/native/test_same_bits.cpp).
std::string repo_root() {
    std::string f = __FILE__;
    for (int i = 0; i < 3; ++i) f = f.substr(0, f.find_last_of('/'));
    return f;
}

constexpr int64_t kPrompt = 520;

// Logits of every prompt token, the prompt fed in batches ending at `splits` (then the rest); with
// last_only, only each batch's last row.
std::vector<float> prompt_logits(const model &m, const std::vector<int32_t> &ids, int n_threads,
                                 const std::vector<int64_t> &splits = {}, bool last_only = false) {
    std::string error;
    auto ctx = context_new(m, static_cast<int64_t>(ids.size()), n_threads, &error);
    if (!ctx) {
        check(false, "context_new: " + error);
        return {};
    }
    const int64_t V = m.hp.n_vocab;
    std::vector<int64_t> ends = splits;
    ends.push_back(static_cast<int64_t>(ids.size()));
    std::vector<float> out((last_only ? ends.size() : ids.size()) * static_cast<size_t>(V));
    int64_t start = 0;
    for (size_t b = 0; b < ends.size(); ++b) {
        const int64_t end = ends[b];
        float *dst = out.data() + (last_only ? static_cast<int64_t>(b) : start) * V;
        if (forward_decode(*ctx, ids.data() + start, end - start, dst, !last_only, &error) != 0)
            check(false, "forward_decode: " + error);
        start = end;
    }
    return out;
}

}  // namespace

int main() {
    std::string error;
    const std::string path = repo_root() + "/models/bitnet-b1.58-austen-5M/ggml-model-i2_s.gguf";
    auto m = model_load(path, &error);
    if (!m) {
        std::printf("FAIL: cannot load %s: %s\n0 passed, 1 failed\n", path.c_str(), error.c_str());
        return 1;
    }
    std::vector<int32_t> ids(kPrompt);
    for (int64_t i = 0; i < kPrompt; ++i) ids[static_cast<size_t>(i)] = static_cast<int32_t>((i * 7919 + 13) % m->hp.n_vocab);

    std::vector<std::string> sets;
    std::stringstream available(ternary_kernels_available());
    for (std::string name; std::getline(available, name, ',');) sets.push_back(name);
    // Both AVX2 flavours: the one "avx2" does not pick on this CPU too (vpmaddubsw beside AVX-VNNI).
    for (const char *variant : {"avx2maddubs", "avx2vnni"}) {
        const ternary_kernel_set *t = ternary_kernels_by_name(variant);
        if (t != nullptr && t != ternary_kernels_by_name("avx2")) sets.push_back(variant);
    }
    std::printf("testing: %s (and the AVX2 flavour it does not pick, if any)\n", ternary_kernels_available());

    const char *quick_env = std::getenv("BITNET_SAME_BITS_QUICK");
    const bool quick = quick_env != nullptr && std::strcmp(quick_env, "1") == 0;
    std::vector<int64_t> batches;  // quick: batch ends every 65 tokens
    if (quick)
        for (int64_t end = 65; end < kPrompt; end += 65) batches.push_back(end);
    ternary_kernels_force("scalar");
    const std::vector<float> want = prompt_logits(*m, ids, 1, batches, quick);
    for (const std::string &set : sets) {
        if (quick && set == "scalar" && sets.size() > 1) continue;  // the reference; threads checked with the SIMD set
        ternary_kernels_force(set.c_str());
        for (int n_threads : {1, 2, 3}) {
            const std::vector<float> got = prompt_logits(*m, ids, n_threads, batches, quick);
            check(got.size() == want.size() && std::memcmp(got.data(), want.data(), want.size() * sizeof(float)) == 0,
                  set + ", " + std::to_string(n_threads) + " threads: logits differ from scalar, 1 thread");
        }
        if (quick) continue;
        const std::vector<float> split = prompt_logits(*m, ids, 2, {1, 2, 17, 300, 301});
        check(split.size() == want.size() && std::memcmp(split.data(), want.data(), want.size() * sizeof(float)) == 0,
              set + ": logits depend on how the prompt is split into batches");
    }
    return report();
}
