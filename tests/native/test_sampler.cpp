// Tests for bitnet::sampler: greedy, seeding, each filter against a plain reference, penalties,
// non-finite logits, and a full-size (128256) vocabulary. Prints one line per failure and
// "N passed, M failed"; exits non-zero on any failure.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <new>
#include <numeric>
#include <set>
#include <vector>

#include "sampler.h"

// Counts heap allocations, to check that sample() reuses its buffers after the first call.
static size_t g_n_allocs = 0;
void *operator new(size_t n) {
    g_n_allocs++;
    if (void *p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
void operator delete(void *p) noexcept { std::free(p); }
void operator delete(void *p, size_t) noexcept { std::free(p); }

namespace {

int n_passed = 0, n_failed = 0;

void check(bool ok, const char *what, int line) {
    if (ok) {
        n_passed++;
    } else {
        n_failed++;
        std::printf("FAIL line %d: %s\n", line, what);
    }
}
#define CHECK(cond) check((cond), #cond, __LINE__)

const float kInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();

bitnet_sampler_params params(float temperature, uint64_t seed = 42) {
    bitnet_sampler_params p{};
    p.temperature = temperature;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.repeat_penalty = 1.0f;
    p.repeat_last_n = 64;
    p.seed = seed;
    return p;
}

int32_t sample_once(const bitnet_sampler_params &p, const std::vector<float> &logits) {
    bitnet::sampler s(p);
    return s.sample(logits.data(), int32_t(logits.size()));
}

// Deterministic test data without <random> distributions: logits uniform in [lo, hi).
std::vector<float> random_logits(size_t n, float lo, float hi, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<float> out(n);
    for (float &x : out) x = lo + (hi - lo) * float(double(rng() >> 11) * 0x1.0p-53);
    return out;
}

// Reference chain, as plain as possible: full sort, top-k, top-p, min-p, softmax(l / T).
std::vector<double> reference_probs(const std::vector<float> &l, const bitnet_sampler_params &p) {
    std::vector<int> ids(l.size());
    std::iota(ids.begin(), ids.end(), 0);
    std::sort(ids.begin(), ids.end(), [&](int a, int b) { return l[a] > l[b] || (l[a] == l[b] && a < b); });
    if (p.top_k > 0 && size_t(p.top_k) < ids.size()) ids.resize(size_t(p.top_k));
    if (p.top_p < 1.0f) {
        double sum = 0, cum = 0;
        for (int i : ids) sum += std::exp(double(l[i]) - l[ids[0]]);
        size_t keep = 0;
        while (keep < ids.size() && cum < p.top_p * sum) cum += std::exp(double(l[ids[keep++]]) - l[ids[0]]);
        ids.resize(std::max<size_t>(keep, 1));
    }
    const double max_logit = l[ids[0]];
    auto below_min_p = [&](int i) { return std::exp(l[i] - max_logit) < p.min_p; };
    if (p.min_p > 0.0f) ids.erase(std::remove_if(ids.begin(), ids.end(), below_min_p), ids.end());
    std::vector<double> probs(l.size(), 0.0);
    double sum = 0;
    for (int i : ids) sum += probs[size_t(i)] = std::exp((l[i] - max_logit) / p.temperature);
    for (double &q : probs) q /= sum;
    return probs;
}

// Largest |empirical frequency - expected| over n_draws draws from one sampler.
double max_freq_error(const bitnet_sampler_params &p, const std::vector<float> &l, int n_draws) {
    bitnet::sampler s(p);
    std::vector<double> freq(l.size(), 0.0);
    for (int i = 0; i < n_draws; i++) {
        const int32_t t = s.sample(l.data(), int32_t(l.size()));
        if (t < 0 || size_t(t) >= l.size()) return 1.0;
        freq[size_t(t)] += 1.0 / n_draws;
    }
    const std::vector<double> ref = reference_probs(l, p);
    double err = 0;
    for (size_t i = 0; i < l.size(); i++) err = std::max(err, std::abs(freq[i] - ref[i]));
    return err;
}

// The set of tokens drawn in n_draws equals the reference's support (all of it appears).
bool support_matches(const bitnet_sampler_params &p, const std::vector<float> &l, int n_draws) {
    const std::vector<double> ref = reference_probs(l, p);
    std::set<int32_t> expected, drawn;
    for (size_t i = 0; i < l.size(); i++)
        if (ref[i] > 0.0) expected.insert(int32_t(i));
    bitnet::sampler s(p);
    for (int i = 0; i < n_draws; i++) drawn.insert(s.sample(l.data(), int32_t(l.size())));
    return drawn == expected;
}

void test_greedy() {
    CHECK(sample_once(params(0.0f), {0.1f, 3.0f, -2.0f, 2.9f}) == 1);
    CHECK(sample_once(params(-1.0f), {-5.0f, -1.0f, -3.0f}) == 1);
    CHECK(sample_once(params(0.0f), {1.0f, 7.0f, 2.0f, 7.0f, 7.0f}) == 1);  // ties: lowest id
    CHECK(sample_once(params(kNaN), {1.0f, 7.0f, 2.0f}) == 1);              // NaN temperature
    const std::vector<float> l = {0.5f, 2.0f, 1.0f};
    bitnet::sampler s(params(0.0f));
    for (int i = 0; i < 10; i++) CHECK(s.sample(l.data(), 3) == 1);
}

void test_seeds() {
    const std::vector<float> l = random_logits(16, -1.0f, 1.0f, 7);
    auto run = [&](bitnet::sampler &s) {
        std::vector<int32_t> out;
        for (int i = 0; i < 200; i++) out.push_back(s.sample(l.data(), 16));
        return out;
    };
    bitnet::sampler a(params(1.0f, 123)), b(params(1.0f, 123)), c(params(1.0f, 124));
    const std::vector<int32_t> seq_a = run(a);
    CHECK(seq_a == run(b));
    CHECK(seq_a != run(c));
    a.reset();
    CHECK(seq_a == run(a));  // reset re-seeds
}

void test_filters_equal_greedy() {
    const std::vector<float> l = random_logits(50, -3.0f, 3.0f, 11);
    const int32_t greedy = sample_once(params(0.0f), l);
    for (float t : {0.1f, 1.0f, 5.0f, 100.0f}) {
        bitnet_sampler_params k1 = params(t), p0 = params(t), m1 = params(t);
        k1.top_k = 1;
        p0.top_p = 1e-6f;
        m1.min_p = 1.0f;
        for (auto p : {k1, p0, m1}) {
            bitnet::sampler s(p);
            bool all = true;
            for (int i = 0; i < 50; i++) all = all && s.sample(l.data(), 50) == greedy;
            CHECK(all);
        }
    }
}

void test_distribution() {
    const std::vector<float> four = {1.0f, 2.0f, 0.5f, -1.0f};
    CHECK(max_freq_error(params(1.0f), four, 100000) < 0.01);
    // Temperature: matches softmax(l / T), and a low T concentrates on the best token.
    CHECK(max_freq_error(params(0.5f), four, 100000) < 0.01);
    CHECK(max_freq_error(params(2.0f), four, 100000) < 0.01);
    const double p_low = reference_probs(four, params(0.5f))[1];
    const double p_high = reference_probs(four, params(2.0f))[1];
    CHECK(p_low > 0.8 && p_high < 0.5);
    // Each filter and the whole chain on 8 tokens.
    const std::vector<float> eight = {0.3f, 2.1f, -0.4f, 1.7f, 0.9f, 2.4f, -1.3f, 1.2f};
    bitnet_sampler_params k = params(0.8f), tp = params(1.3f), mp = params(1.0f), all = params(0.7f);
    k.top_k = 3;
    tp.top_p = 0.7f;
    mp.min_p = 0.3f;
    all.top_k = 5;
    all.top_p = 0.9f;
    all.min_p = 0.2f;
    for (auto p : {k, tp, mp, all}) CHECK(max_freq_error(p, eight, 100000) < 0.01);

    // top-p buckets the logits: a cut inside a bucket of ties, equal logits, a huge range.
    std::vector<float> clumps(140);
    for (size_t i = 0; i < clumps.size(); i++) clumps[i] = float(i % 7) * 0.5f;
    tp.temperature = 1.0f;
    for (float top_p : {0.3f, 0.6f, 0.95f}) {
        tp.top_p = top_p;
        CHECK(support_matches(tp, clumps, 20000));
    }
    tp.top_p = 0.5f;
    CHECK(max_freq_error(tp, std::vector<float>(10, 1.0f), 100000) < 0.01);  // ids 0..4
    CHECK(support_matches(tp, {-3e38f, 3e38f, 3e38f, 1.0f}, 1000));           // id 1 only
    mp.min_p = 1.0f;  // ties of the max all stay, as in llama.cpp
    CHECK(support_matches(mp, {1.0f, 3.0f, 3.0f, 2.0f}, 1000));
    all.top_k = 0;
    std::vector<float> spread = random_logits(500, -2.0f, 2.0f, 5);
    spread[7] = -20.0f;  // widens the buckets: ~5 distinct logits in each
    CHECK(support_matches(all, spread, 50000));
}

void test_penalties() {
    bitnet_sampler_params p = params(0.0f);
    p.repeat_penalty = 1.1f;
    const std::vector<float> pos = {1.0f, 0.95f}, neg = {-1.0f, -1.05f};
    bitnet::sampler s(p);
    CHECK(s.sample(pos.data(), 2) == 0);
    s.accept(0);  // 1.0 / 1.1 < 0.95 and -1.0 * 1.1 < -1.05: the near-tie flips
    CHECK(s.sample(pos.data(), 2) == 1);
    CHECK(s.sample(neg.data(), 2) == 1);
    s.accept(-7);       // out-of-range ids in the history are ignored
    s.accept(1 << 20);
    CHECK(s.sample(pos.data(), 2) == 1);
    s.reset();  // history cleared
    CHECK(s.sample(pos.data(), 2) == 0);

    p.repeat_last_n = 2;  // window of 2: token 0 slides out after two more
    bitnet::sampler w(p);
    w.accept(0);
    w.accept(5);
    CHECK(w.sample(pos.data(), 2) == 1);
    w.accept(6);
    CHECK(w.sample(pos.data(), 2) == 0);
    p.repeat_last_n = -1;  // unbounded: token 0 stays
    bitnet::sampler u(p);
    u.accept(0);
    for (int i = 0; i < 1000; i++) u.accept(5);
    CHECK(u.sample(pos.data(), 2) == 1);
    p.repeat_last_n = 0;  // off
    bitnet::sampler off(p);
    off.accept(0);
    CHECK(off.sample(pos.data(), 2) == 0);

    // Frequency and presence subtract exactly: 10 - (2 * 0.5 + 0.25) = 8.75 ties token 0 (the
    // lower id wins); one ulp below 8.75 and token 2 wins.
    bitnet_sampler_params fp = params(0.0f);
    fp.frequency_penalty = 0.5f;
    fp.presence_penalty = 0.25f;
    std::vector<float> l = {8.75f, 0.0f, 10.0f, 0.0f};
    const std::vector<float> original = l;
    bitnet::sampler f(fp);
    for (int32_t t : {2, 3, 2}) f.accept(t);
    CHECK(f.sample(l.data(), 4) == 0);
    CHECK(l == original);  // the caller's logits are not modified
    l[0] = std::nextafter(8.75f, 0.0f);
    CHECK(f.sample(l.data(), 4) == 2);
    l = {-0.76f, -5.0f, 0.0f, 0.0f};  // token 2 -> -1.25, token 3 (count 1) -> -0.75
    CHECK(f.sample(l.data(), 4) == 3);
    l[0] = -0.74f;
    CHECK(f.sample(l.data(), 4) == 0);
}

void test_non_finite() {
    CHECK(sample_once(params(0.0f), {kNaN, 1.0f, 2.0f, kNaN}) == 2);
    CHECK(sample_once(params(0.0f), {1.0f, kInf, 2.0f, kInf}) == 1);
    const std::vector<float> mixed = {kNaN, 0.0f, -kInf, 0.0f, kNaN};
    bitnet_sampler_params topk = params(1.0f), topp = params(1.0f);
    topk.top_k = 4;
    topp.top_p = 0.9f;
    for (auto p : {params(1.0f), topk, topp}) {
        bitnet::sampler s(p);
        bool valid = true;
        for (int i = 0; i < 1000; i++) {
            const int32_t t = s.sample(mixed.data(), 5);
            valid = valid && (t == 1 || t == 3);
        }
        CHECK(valid);
    }
    // +Inf beats everything finite; several +Inf share the mass equally.
    const std::vector<float> infs = {5.0f, kInf, 1e30f, kInf};
    bitnet::sampler s(params(1.0f));
    int n1 = 0, n3 = 0;
    for (int i = 0; i < 10000; i++) {
        const int32_t t = s.sample(infs.data(), 4);
        n1 += t == 1;
        n3 += t == 3;
    }
    CHECK(n1 + n3 == 10000 && std::abs(n1 - 5000) < 300);
    // Nothing usable: -1, greedy or not, and for empty or null input.
    for (float t : {0.0f, 1.0f}) {
        CHECK(sample_once(params(t), {-kInf, -kInf, -kInf}) == -1);
        CHECK(sample_once(params(t), {kNaN, -kInf}) == -1);
        CHECK(sample_once(params(t), {}) == -1);
        bitnet::sampler e(params(t));
        CHECK(e.sample(nullptr, 10) == -1);
    }
}

// A Llama-3-size vocabulary: filters agree with the reference sets; buffers are reused.
void test_large_vocab() {
    const int32_t n = 128256;
    const std::vector<float> l = random_logits(size_t(n), 0.0f, 8.0f, 99);
    const int32_t best = int32_t(std::max_element(l.begin(), l.end()) - l.begin());
    CHECK(sample_once(params(0.0f), l) == best);
    // The nucleus of top_p = 0.9 here is ~30% of the vocabulary: exercises the growing sort.
    bitnet_sampler_params k = params(0.8f), tp = params(1.0f), dflt = params(0.8f);
    k.top_k = 40;
    tp.top_p = 0.9f;
    dflt.top_k = 40;
    dflt.top_p = 0.95f;
    dflt.min_p = 0.05f;
    for (auto p : {params(1.0f), k, tp, dflt}) {
        std::vector<double> ref = reference_probs(l, p);
        bitnet::sampler s(p);
        bool in_set = true;
        size_t n_allocs = 0;
        for (int i = 0; i < 50; i++) {
            const int32_t t = s.sample(l.data(), n);
            in_set = in_set && t >= 0 && t < n && ref[size_t(t)] > 0.0;
            if (i == 0) n_allocs = g_n_allocs;
        }
        CHECK(in_set);
        CHECK(g_n_allocs == n_allocs);  // no allocation after the first call
    }
    // The repeat penalty moves the argmax to the runner-up (logits are spread over [0, 8)).
    std::vector<float> rest = l;
    rest[size_t(best)] = -kInf;
    bitnet_sampler_params rp = params(0.0f);
    rp.repeat_penalty = 1.1f;
    bitnet::sampler s(rp);
    s.accept(best);
    CHECK(s.sample(l.data(), n) == int32_t(std::max_element(rest.begin(), rest.end()) - rest.begin()));
}

}  // namespace

int main() {
    test_greedy();
    test_seeds();
    test_filters_equal_greedy();
    test_distribution();
    test_penalties();
    test_non_finite();
    test_large_vocab();
    std::printf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed == 0 ? 0 : 1;
}
