// Token sampler: penalties, then greedy or temperature + top-k + top-p + min-p, with its own
// seeded RNG so that a seed reproduces a run. Mirrors llama.cpp's default chain order:
// penalties -> top-k -> top-p -> min-p -> temperature -> draw.
#pragma once
#include <cstdint>
#include <deque>
#include <random>
#include <vector>

#include "bitnet.h"

namespace bitnet {

class sampler {
  public:
    explicit sampler(const bitnet_sampler_params &params);
    void accept(int32_t token);
    void reset();
    // Returns a token id in [0, n_vocab), or -1 if the logits hold nothing finite.
    int32_t sample(const float *logits, int32_t n_vocab);

  private:
    bool penalties_active() const;
    void apply_penalties(int32_t n_vocab);
    int32_t argmax(int32_t n_vocab) const;
    size_t collect_candidates(int32_t n_vocab);
    size_t top_p_cut(size_t n);
    size_t min_p_cut(size_t n);
    int32_t draw(size_t n);

    bitnet_sampler_params params_;
    std::mt19937_64 rng_;
    std::deque<int32_t> history_;  // the last repeat_last_n tokens (or all of them)
    std::vector<float> work_logits_;    // [n_vocab] penalized copy of the logits, by token id
    std::vector<int32_t> work_ids_;     // [n_vocab] candidate ids, the first n are live
    std::vector<int32_t> work_counts_;  // [n_vocab] window counts; all zero between calls
    std::vector<float> work_weights_;   // [n_vocab] draw weights, by candidate position
    std::vector<int32_t> work_crossing_;  // top-p: ids of the bucket that crosses the target
    std::vector<double> bucket_mass_;     // top-p: probability mass per logit bucket
};

}  // namespace bitnet
