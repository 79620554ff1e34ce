// Token sampler (interface in sampler.h). One call to sample():
//
//   logits --copy--> work_logits_ [n_vocab, by token id] --penalties (window of history_)-->
//     temperature <= 0:  argmax, lowest id on ties, no RNG use
//     otherwise:         work_ids_ = ids of finite logits
//                        -> top-k -> top-p -> min-p -> / temperature -> softmax -> one draw
//
// Reproducibility: a seed must give the same tokens with libstdc++ and libc++. So the draw is
// written here (53 bits of mt19937_64, a walk over the cumulative sum), and candidates are
// only ever in ascending id order or sorted by a strict total order (logit desc, then id asc),
// because std::sort / nth_element order ties differently in each library. The remaining
// platform dependence is expf() in the C maths library (last-bit differences are possible).
//
// Non-finite logits: NaN and -Inf are never picked. +Inf ranks above every finite logit: if
// any logit is +Inf only the +Inf tokens stay, as equals (the softmax's limit). Nothing finite
// or +Inf left: -1.
#include "sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace bitnet {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kPosInf = std::numeric_limits<float>::infinity();

// Uniform in [0, 1) from the top 53 bits: defined by the standard mt19937_64 alone.
double uniform01(std::mt19937_64 &rng) { return double(rng() >> 11) * 0x1.0p-53; }

// Strict total order on token ids: higher logit first, lower id first among equal logits.
struct by_logit_desc {
    const float *logits;
    bool operator()(int32_t a, int32_t b) const {
        return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    }
};

}  // namespace

sampler::sampler(const bitnet_sampler_params &params) : params_(params), rng_(params.seed) {}

void sampler::accept(int32_t token) {
    if (params_.repeat_last_n == 0) return;  // penalties are off: nothing to remember
    history_.push_back(token);
    if (params_.repeat_last_n > 0 && history_.size() > size_t(params_.repeat_last_n)) history_.pop_front();
}

void sampler::reset() {
    history_.clear();
    rng_.seed(params_.seed);
}

// A repeat penalty <= 0 (or NaN) would flip or blow up logits; it is treated as off (1).
bool sampler::penalties_active() const {
    const bool repeat = params_.repeat_penalty > 0.0f && params_.repeat_penalty != 1.0f;
    return !history_.empty() &&
           (repeat || params_.frequency_penalty != 0.0f || params_.presence_penalty != 0.0f);
}

// llama.cpp's penalties, once per distinct token of the window: the repeat penalty pulls the
// logit towards 0 from above and pushes it away below, then OpenAI's frequency and presence
// terms subtract. Ids outside [0, n_vocab) in the history are ignored.
void sampler::apply_penalties(int32_t n_vocab) {
    work_counts_.resize(size_t(n_vocab), 0);
    int32_t *counts = work_counts_.data();
    for (int32_t t : history_)
        if (t >= 0 && t < n_vocab) counts[t]++;
    const float repeat = params_.repeat_penalty > 0.0f ? params_.repeat_penalty : 1.0f;
    for (int32_t t : history_) {
        if (t < 0 || t >= n_vocab || counts[t] == 0) continue;  // 0: this token is done
        const int32_t count = counts[t];
        counts[t] = 0;  // restores the all-zero invariant as it goes
        float &l = work_logits_[size_t(t)];
        l = l > 0.0f ? l / repeat : l * repeat;
        l -= float(count) * params_.frequency_penalty + params_.presence_penalty;
    }
}

// NaN and -Inf never compare greater than -Inf, so they are skipped without a special case.
int32_t sampler::argmax(int32_t n_vocab) const {
    const float *logits = work_logits_.data();
    int32_t best = -1;
    float best_logit = kNegInf;
    for (int32_t i = 0; i < n_vocab; i++) {
        if (logits[i] > best_logit) {
            best = i;
            best_logit = logits[i];
        }
    }
    return best;
}

// Fills work_ids_ with the finite ids in ascending order, or with the +Inf ids only (their
// logits set to 0) when there are any. Returns how many.
size_t sampler::collect_candidates(int32_t n_vocab) {
    work_ids_.resize(size_t(n_vocab));
    float *logits = work_logits_.data();
    int32_t *ids = work_ids_.data();
    size_t n = 0;
    bool any_pos_inf = false;
    for (int32_t i = 0; i < n_vocab; i++) {
        if (logits[i] == kPosInf) {
            if (!any_pos_inf) n = 0;  // drop the finite ones gathered so far
            any_pos_inf = true;
            logits[i] = 0.0f;
            ids[n++] = i;
        } else if (!any_pos_inf) {
            ids[n] = i;
            n += std::isfinite(logits[i]) ? 1 : 0;
        }
    }
    return n;
}

// Smallest prefix by probability (descending) whose mass reaches top_p, at least one token,
// without sorting 128k candidates: bucket them by logit (bucket 0 holds the max), keep whole
// buckets while their mass stays under the target, and sort only the bucket that crosses it.
// Result order: the whole buckets' ids in their current order, then that bucket's sorted head.
// All sums run in an order fixed by the ids, so the cut is the same on every library.
size_t sampler::top_p_cut(size_t n) {
    const float *logits = work_logits_.data();
    int32_t *ids = work_ids_.data();
    float max_logit = kNegInf, min_logit = kPosInf;
    for (size_t j = 0; j < n; j++) {
        max_logit = std::max(max_logit, logits[ids[j]]);
        min_logit = std::min(min_logit, logits[ids[j]]);
    }
    const size_t n_buckets = std::min<size_t>(n, 4096);
    const float range = max_logit - min_logit;
    const float scale = range > 0.0f && std::isfinite(range) ? float(n_buckets) / range : 0.0f;
    auto bucket_of = [&](float logit) {
        const float x = (max_logit - logit) * scale;
        return x < float(n_buckets) ? size_t(x) : n_buckets - 1;
    };
    bucket_mass_.assign(n_buckets, 0.0);
    double sum = 0.0;
    for (size_t j = 0; j < n; j++) {
        const float weight = std::exp(logits[ids[j]] - max_logit);
        bucket_mass_[bucket_of(logits[ids[j]])] += weight;
        sum += weight;
    }
    const double target = double(params_.top_p) * sum;
    size_t crossing = 0;
    double cum = 0.0;
    while (crossing + 1 < n_buckets && cum + bucket_mass_[crossing] < target) cum += bucket_mass_[crossing++];

    size_t kept = 0;  // compacts in place: kept <= j
    work_crossing_.clear();
    for (size_t j = 0; j < n; j++) {
        const size_t b = bucket_of(logits[ids[j]]);
        if (b < crossing) ids[kept++] = ids[j];
        else if (b == crossing) work_crossing_.push_back(ids[j]);
    }
    // The crossing bucket is not empty (bucket 0 holds the max; the loop above passes an empty
    // bucket only while cum < target, and then stops at a non-empty one or the last, which
    // holds the min), so at least one token is kept.
    std::sort(work_crossing_.begin(), work_crossing_.end(), by_logit_desc{logits});
    for (int32_t id : work_crossing_) {
        ids[kept++] = id;
        cum += std::exp(logits[id] - max_logit);
        if (cum >= target) break;
    }
    return kept;
}

// Keeps p >= min_p * p_max, i.e. logit >= max + log(min_p) (llama.cpp compares logits too),
// in the current order; the first best token stays if nothing else does (min_p > 1).
size_t sampler::min_p_cut(size_t n) {
    const float *logits = work_logits_.data();
    int32_t *ids = work_ids_.data();
    size_t best = 0;
    for (size_t j = 1; j < n; j++)
        if (logits[ids[j]] > logits[ids[best]]) best = j;
    const int32_t best_id = ids[best];
    const float floor_logit = logits[best_id] + std::log(params_.min_p);
    size_t kept = 0;
    for (size_t j = 0; j < n; j++)
        if (logits[ids[j]] >= floor_logit) ids[kept++] = ids[j];
    if (kept == 0) ids[kept++] = best_id;
    return kept;
}

// softmax(logit / temperature) over ids[0, n), then one uniform against the cumulative sum.
int32_t sampler::draw(size_t n) {
    const float *logits = work_logits_.data();
    const int32_t *ids = work_ids_.data();
    size_t best = 0;
    for (size_t j = 1; j < n; j++)
        if (logits[ids[j]] > logits[ids[best]]) best = j;
    const float max_logit = logits[ids[best]];
    work_weights_.resize(n);
    float *weights = work_weights_.data();
    double total = 0.0;
    for (size_t j = 0; j < n; j++) {
        weights[j] = std::exp((logits[ids[j]] - max_logit) / params_.temperature);
        total += weights[j];
    }
    // The same additions in the same order make the final cum equal total exactly, and r is
    // below total, so the loop returns; the fallback is only for safety.
    const double r = uniform01(rng_) * total;
    double cum = 0.0;
    for (size_t j = 0; j < n; j++) {
        cum += weights[j];
        if (r < cum) return ids[j];
    }
    return ids[best];
}

int32_t sampler::sample(const float *logits, int32_t n_vocab) {
    if (logits == nullptr || n_vocab <= 0) return -1;
    work_logits_.assign(logits, logits + n_vocab);  // reuses capacity after the first call
    work_crossing_.reserve(size_t(n_vocab));
    if (penalties_active()) apply_penalties(n_vocab);
    if (!(params_.temperature > 0.0f)) return argmax(n_vocab);  // NaN temperature: greedy too

    size_t n = collect_candidates(n_vocab);
    if (n == 0) return -1;
    if (params_.top_k > 0 && size_t(params_.top_k) < n) {
        int32_t *ids = work_ids_.data();
        std::partial_sort(ids, ids + params_.top_k, ids + n, by_logit_desc{work_logits_.data()});
        n = size_t(params_.top_k);
    }
    if (params_.top_p < 1.0f && n > 1) n = top_p_cut(n);
    if (params_.min_p > 0.0f && n > 1) n = min_p_cut(n);
    return draw(n);  // one uniform per sampled call, whatever the filters left
}

}  // namespace bitnet
