// The inference context (KV cache, scratch buffers, thread pool) and the forward pass.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/dense.h"
#include "kernels/head_int8.h"
#include "kernels/ternary.h"
#include "model.h"
#include "threadpool.h"

namespace bitnet {

// Longer prompts are processed in consecutive batches of at most this many tokens.
constexpr int64_t kMaxBatch = 512;

struct context {
    const model *m = nullptr;
    int64_t n_ctx = 0;
    int64_t n_past = 0;
    std::unique_ptr<thread_pool> pool;
    const ternary_kernel_set *tk = nullptr;
    const dense_kernel_set *dk = nullptr;

    // KV cache, f32: [n_layer][n_ctx][n_head_kv * head_dim]; positions >= n_past unwritten.
    std::unique_ptr<float[]> k_cache, v_cache;
    // RoPE tables: [n_ctx][head_dim / 2].
    std::vector<float> rope_cos, rope_sin;
    std::vector<float> rope_cos_swa, rope_sin_swa;  // sliding-window layers' base, when it differs

    // Scratch for one batch of up to kMaxBatch tokens (named as in the model's equations).
    std::vector<float> x, xn, q, k, v, att, gate, up, hidden, out;
    std::vector<int8_t> act_q;        // int8 activations entering a ternary layer
    std::vector<float> act_scale;     // per token
    std::vector<int32_t> act_sum;     // per token
    std::string dump_dir;             // debug dumps of named tensors when not empty (debug_dump.h)
    // The int8-activation head (head_act.h): on when set, with its activation scratch.
    const head_int8_kernel_set *head_int8 = nullptr;
    std::vector<int8_t> head_q;
    std::vector<float> head_d;
    std::vector<int16_t> head_bsum;
};

// One row of a batch: a token at position `pos` of sequence `seq` (whose KV cache it joins).
struct batch_row {
    context *seq;
    int64_t pos;
};

// nullptr with *error on failure (bad arguments, allocation failure, unsupported ISA).
std::unique_ptr<context> context_new(const model &m, int64_t n_ctx, int n_threads, std::string *error);

// Appends n tokens after the cached ones. logits: n_vocab floats for the last token, or n * n_vocab
// when all_logits; may be null. Returns a bitnet_status value.
int forward_decode(context &ctx, const int32_t *tokens, int64_t n, float *logits, bool all_logits,
                   std::string *error);

// Appends one token to each of n different contexts of the same model in a single batched
// pass (one read of the weights for all of them), on seqs[0]'s threads and scratch.
// logits: n * n_vocab floats, row i for seqs[i]; may be null. Returns a bitnet_status value.
int forward_decode_multi(context *const *seqs, const int32_t *tokens, int64_t n, float *logits,
                         std::string *error);

// Appends n_tokens[s] tokens to each of n_seq different contexts of the same model (their tokens
// concatenated in `tokens`), packed into shared batches on seqs[0]'s threads and scratch, and
// writes every token's final hidden state after output_norm to hidden (sum(n_tokens) * n_embd
// floats, in the order of `tokens`). What embedding models pool. Returns a bitnet_status value.
int forward_hidden_multi(context *const *seqs, int64_t n_seq, const int32_t *tokens, const int64_t *n_tokens,
                         float *hidden, std::string *error);

}  // namespace bitnet
