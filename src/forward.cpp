// The forward pass of a BitNet b1.58 transformer, one batch of tokens at a time.
//
// Per layer (x: residual stream, one row per token):
//   h   = RMSNorm(x) * attn_norm
//   q,k,v = BitLinear(h)                       ternary weights, int8 activations
//   q,k = RoPE(q,k)  (NeoX: rotate halves)     k,v -> KV cache
//   a   = softmax(q k^T / sqrt(d)) v           causal, grouped-query
//   x  += BitLinear_o(RMSNorm(a) * attn_sub_norm)
//   h   = RMSNorm(x) * ffn_norm
//   x  += BitLinear_down(RMSNorm(act(BitLinear_gate(h)) * BitLinear_up(h)) * ffn_sub_norm)
// logits = (RMSNorm(x) * output_norm) E^T      (E: token embedding when the head is tied)
// BitLinear(x) = (sum_k t_k * q_k) / s * w_scale with q = int8 absmax(x), s its scale.
// Variants chosen by the architecture row (model.h): an RMSNorm on every linear's own input,
// per-head q/k norms before RoPE, post-norms on each block's output before the residual add,
// GELU-tanh, a sliding attention window, scaled embeddings (the Qwen3 / Gemma3 embedding models).
#include "forward.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <new>
#include <utility>

#include "bitnet.h"
#include "debug_dump.h"
#include "forward_features.h"
#include "head_act.h"
#include "kernels/tq.h"
#include "quant_types.h"

namespace bitnet {

namespace {

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// The least work worth handing to another thread, in bytes streamed (~1-2 us).
constexpr int64_t kMinChunkBytes = 32 << 10;

// Names an intermediate tensor (m rows of n) for the debug dump; free when dumping is off.
inline void name_tensor(const context &ctx, const char *name, int64_t il, const float *x, int64_t m, int64_t n) {
    if (!ctx.dump_dir.empty()) dump_tensor(ctx.dump_dir, name, il, x, m, n);
}

// y = w * (x / sqrt(mean(x^2) + eps)), per row of n; the sum in double so that the scale is
// (nearly always) the correctly rounded value, as PyTorch's f32 reduction gives. Eight partial
// sums, added at the end: independent chains the compiler can vectorize (one chain of n
// dependent double adds cost ~0.7 ms per token for the 2B-4T shape).
void rms_norm(const float *x, const float *w, int64_t n, float eps, float *y) {
    constexpr int kLanes = 8;
    double part[kLanes] = {};
    int64_t j = 0;
    for (; j + kLanes <= n; j += kLanes)
        for (int l = 0; l < kLanes; ++l) part[l] += static_cast<double>(x[j + l]) * x[j + l];
    for (; j < n; ++j) part[0] += static_cast<double>(x[j]) * x[j];
    double ss = 0;
    for (double p : part) ss += p;
    const float mean = static_cast<float>(ss / static_cast<double>(n));
    const float inv = 1.0f / std::sqrt(mean + eps);
    for (int64_t j = 0; j < n; ++j) y[j] = w[j] * (x[j] * inv);
}

// Quantize m rows of width k (parallel over rows), ready for a ternary matmul whose rows are
// k_pad long (model.h): row i at act_q + i * k_pad, quantized over its k true values and padded
// with zeros (zero codes add nothing, and the scale is that of the true row).
void quantize_rows(context &ctx, const float *x, int64_t m, int64_t k, int64_t k_pad) {
    ctx.pool->parallel_for(m, 1, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
            int8_t *q = ctx.act_q.data() + i * k_pad;
            ctx.tk->quantize_row_int8(x + i * k, k, q, &ctx.act_scale[i], &ctx.act_sum[i]);
            std::fill(q + k, q + k_pad, int8_t{0});
        }
    });
}

// A TQ tensor whose blocks carry different scales (kernels/tq.h): y = sum_b d_b * dot_b / s_i.
void blocked_ternary_linear(context &ctx, const ternary_matrix &w, int64_t m, float *y) {
    ctx.pool->parallel_for(w.n_out, 16, [&](int64_t r0, int64_t r1) {
        ternary_blocked_matmul_ref(w.codes, w.block_scales.data(), w.k_pad, r0, r1, ctx.act_q.data(),
                                   ctx.act_scale.data(), m, y, w.n_out);
    });
}

// Ternary layers that read the same quantized rows (ctx.act_*): q/k/v, or gate/up. One parallel
// loop runs over their stacked output rows, so decode waits for the threads once per group, not
// once per layer. Each chunk multiplies into an int32 scratch of its thread, then scales:
// y[i][r] = acc[i][r] / s_i * w_scale.
using linear_output = std::pair<const ternary_matrix *, float *>;
void ternary_linears(context &ctx, std::initializer_list<linear_output> layers, int64_t m) {
    int64_t n_total = 0, k = 0;
    for (const auto &[w, y] : layers) {
        if (!w->block_scales.empty()) {
            blocked_ternary_linear(ctx, *w, m, y);
            continue;
        }
        n_total += w->n_out;
        k = w->k_pad;
    }
    if (n_total == 0) return;
    // Chunks of at least kMinChunkBytes of weights: a tiny model's layers run on one thread,
    // since waking the others costs more than the work (and much more on a busy machine).
    const int64_t grain = std::max<int64_t>(16, round_up(kMinChunkBytes / std::max<int64_t>(1, k / 4 * m), 16));
    const auto run_rows = [&](const ternary_matrix &w, float *y, int64_t r0, int64_t r1) {
        const int64_t rows = r1 - r0;
        thread_local std::vector<int32_t> acc;
        if (acc.size() < static_cast<size_t>(m * rows)) acc.resize(static_cast<size_t>(m * rows));
        ctx.tk->i2s_matmul(w.codes + r0 * (w.k_pad / 4), w.k_pad, 0, rows, ctx.act_q.data(), ctx.act_sum.data(), m,
                           acc.data(), rows);
        for (int64_t i = 0; i < m; ++i)
            ctx.dk->scale_sums(acc.data() + i * rows, rows, ctx.act_scale[i], w.scale, y + i * w.n_out + r0);
    };
    ctx.pool->parallel_for(n_total, grain, [&](int64_t c0, int64_t c1) {
        int64_t first = 0;  // where the current layer's rows start in the stack
        for (const auto &[w, y] : layers) {
            if (!w->block_scales.empty()) continue;
            const int64_t r0 = std::max(c0, first), r1 = std::min(c1, first + w->n_out);
            if (r0 < r1) run_rows(*w, y, r0 - first, r1 - first);
            first += w->n_out;
        }
    });
}

// RoPE on every head of m rows (n_heads heads of head_dim), row i at rows[i].pos. Rotation j
// (frequency j) turns the pair (j, j + half) in NeoX style (rotate-half), or (2j, 2j + 1) in the
// "normal" style of files whose attn_q/attn_k rows were permuted for it.
// Sliding-window layers with their own RoPE base (Gemma3) read the context's second table.
void rope(const context &ctx, const batch_row *rows, float *x, int64_t m, int64_t n_heads, int64_t il) {
    const int64_t hd = ctx.m->hp.head_dim, half = hd / 2;
    const bool neox = ctx.m->hp.rope == rope_style::neox;
    const int64_t pair = neox ? half : 1, step = neox ? 1 : 2;
    const bool swa = ctx.m->hp.layer_is_swa(il) && !ctx.rope_cos_swa.empty();
    for (int64_t i = 0; i < m; ++i) {
        const context &seq = *rows[i].seq;
        const float *cs = (swa ? seq.rope_cos_swa : seq.rope_cos).data() + rows[i].pos * half;
        const float *sn = (swa ? seq.rope_sin_swa : seq.rope_sin).data() + rows[i].pos * half;
        for (int64_t h = 0; h < n_heads; ++h) {
            float *v = x + (i * n_heads + h) * hd;
            for (int64_t j = 0; j < half; ++j) {
                float &a = v[j * step], &b = v[j * step + pair];
                const float a0 = a, b0 = b;
                a = a0 * cs[j] - b0 * sn[j];
                b = b0 * cs[j] + a0 * sn[j];
            }
        }
    }
}

// The batch's rows as runs of consecutive positions of one sequence (a prompt is one run).
struct row_run {
    int64_t first, n;
};
std::vector<row_run> runs_of(const batch_row *rows, int64_t m) {
    std::vector<row_run> runs;
    for (int64_t i = 0; i < m; ++i) {
        if (!runs.empty()) {
            row_run &r = runs.back();
            const batch_row &prev = rows[r.first + r.n - 1];
            if (rows[i].seq == prev.seq && rows[i].pos == prev.pos + 1) {
                ++r.n;
                continue;
            }
        }
        runs.push_back({i, 1});
    }
    return runs;
}

// Rows per attend_rows call: enough queries to share each key and value load, few enough that the
// calls balance between threads (later rows see more keys; they are handed out first).
constexpr int64_t kAttentionRowBlock = 16;

// Causal grouped-query attention of m new rows, each against its own sequence's cache of
// layer il up to and including its position (the batch's k, v are already in the caches).
// Work items: (block of up to kAttentionRowBlock rows of a run, KV head), all query heads of the
// KV head's group at once. Every row goes through attend_rows, single decode steps too: a query's
// result must not depend on the batch it came in (lookup drafts, server slots).
void attention(context &ctx, const batch_row *rows, int64_t il, int64_t m) {
    const hparams &hp = ctx.m->hp;
    const int64_t hd = hp.head_dim, kv_dim = hp.n_head_kv * hd, group = hp.n_head / hp.n_head_kv;
    const float scale = hp.attn_scale;
    const int64_t q_dim = hp.n_head * hd;
    // A sliding-window layer: each row sees its own key range, so rows go one per call.
    const int64_t window = hp.layer_is_swa(il) ? hp.n_swa : 0;
    const int64_t row_block = window > 0 ? 1 : kAttentionRowBlock;
    std::vector<row_run> blocks;  // the most keys first
    for (const row_run &r : runs_of(rows, m))
        for (int64_t end = r.first + r.n; end > r.first; end -= row_block)
            blocks.push_back({std::max(r.first, end - row_block), std::min(row_block, end - r.first)});
    const int64_t n_items = static_cast<int64_t>(blocks.size()) * hp.n_head_kv;
    // Items are taken from a shared counter: causal rows differ in length, and a thread that
    // loses its core leaves its share to the other.
    std::atomic<int64_t> next{0};
    const auto work = [&](int, int) {
        int64_t n_keys[kAttentionRowBlock];
        for (int64_t item = next.fetch_add(1, std::memory_order_relaxed); item < n_items;
             item = next.fetch_add(1, std::memory_order_relaxed)) {
            const row_run &b = blocks[static_cast<size_t>(item / hp.n_head_kv)];
            const int64_t g = item % hp.n_head_kv;
            const context &seq = *rows[b.first].seq;
            const int64_t first_key = window_start(rows[b.first].pos, window);
            const float *kc = seq.k_cache.get() + (il * seq.n_ctx + first_key) * kv_dim + g * hd;
            const float *vc = seq.v_cache.get() + (il * seq.n_ctx + first_key) * kv_dim + g * hd;
            for (int64_t i = 0; i < b.n; ++i) n_keys[i] = rows[b.first + i].pos + 1 - first_key;
            const int64_t at = b.first * q_dim + g * group * hd;
            ctx.dk->attend_rows(ctx.q.data() + at, kc, vc, kv_dim, hd, scale, b.n, q_dim, group, n_keys,
                                ctx.att.data() + at);
        }
    };
    // Few keys (a short context, a small model): the calling thread alone, as for small matmuls.
    int64_t n_keys = 0;
    for (int64_t i = 0; i < m; ++i) n_keys += rows[i].pos + 1;
    if (n_keys * hp.n_head * hd * 8 < kMinChunkBytes) work(0, 1);
    else ctx.pool->run(work);
}

void norm_rows(context &ctx, const float *x, const std::vector<float> &w, int64_t m, int64_t n, float *y,
               float eps) {
    ctx.pool->parallel_for(m, 1, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) rms_norm(x + i * n, w.data(), n, eps, y + i * n);
    });
}

void norm_rows(context &ctx, const float *x, const std::vector<float> &w, int64_t m, int64_t n, float *y) {
    norm_rows(ctx, x, w, m, n, y, ctx.m->hp.rms_eps);
}

// y = BitLinear_w(RMSNorm(x) * w.input_norm) for a model with hparams::has_linear_norms
// (Falcon-E's use_rms_norm): each layer normalizes, then quantizes, its own copy of the input.
// The norm goes to ctx.hidden (in place when x is ctx.hidden).
void normed_bitlinear(context &ctx, const ternary_matrix &w, const float *x, int64_t m, float *y) {
    norm_rows(ctx, x, w.input_norm, m, w.n_in, ctx.hidden.data(), ctx.m->hp.linear_norm_eps);
    quantize_rows(ctx, ctx.hidden.data(), m, w.n_in, w.k_pad);
    ternary_linears(ctx, {{&w, y}}, m);
}

// Several linear layers reading the same input x (q/k/v; gate/up): quantized once, or, with
// per-layer input norms, once per layer.
void shared_input_linears(context &ctx, std::initializer_list<linear_output> layers, const float *x, int64_t m,
                          int64_t k) {
    if (ctx.m->hp.has_linear_norms) {
        for (const auto &[w, y] : layers) normed_bitlinear(ctx, *w, x, m, y);
        return;
    }
    quantize_rows(ctx, x, m, k, layers.begin()->first->k_pad);  // the layers share their input width
    ternary_linears(ctx, layers, m);
}

void attention_block(context &ctx, const batch_row *rows, const layer_weights &l, int64_t il, int64_t m) {
    const hparams &hp = ctx.m->hp;
    const int64_t E = hp.n_embd, Q = hp.n_head * hp.head_dim, KV = hp.n_head_kv * hp.head_dim;
    name_tensor(ctx, "attn_in", il, ctx.x.data(), m, E);
    norm_rows(ctx, ctx.x.data(), l.attn_norm, m, E, ctx.xn.data());
    name_tensor(ctx, "attn_norm", il, ctx.xn.data(), m, E);
    shared_input_linears(ctx, {{&l.wq, ctx.q.data()}, {&l.wk, ctx.k.data()}, {&l.wv, ctx.v.data()}},
                         ctx.xn.data(), m, E);
    name_tensor(ctx, "q", il, ctx.q.data(), m, Q);
    name_tensor(ctx, "k", il, ctx.k.data(), m, KV);
    name_tensor(ctx, "v", il, ctx.v.data(), m, KV);
    if (hp.has_qk_norms) {  // per head, in place
        norm_rows(ctx, ctx.q.data(), l.attn_q_norm, m * hp.n_head, hp.head_dim, ctx.q.data());
        norm_rows(ctx, ctx.k.data(), l.attn_k_norm, m * hp.n_head_kv, hp.head_dim, ctx.k.data());
    }
    rope(ctx, rows, ctx.q.data(), m, hp.n_head, il);
    rope(ctx, rows, ctx.k.data(), m, hp.n_head_kv, il);
    for (int64_t i = 0; i < m; ++i) {
        context &seq = *rows[i].seq;
        const size_t at = static_cast<size_t>((il * seq.n_ctx + rows[i].pos) * KV);
        std::memcpy(seq.k_cache.get() + at, ctx.k.data() + i * KV, static_cast<size_t>(KV) * sizeof(float));
        std::memcpy(seq.v_cache.get() + at, ctx.v.data() + i * KV, static_cast<size_t>(KV) * sizeof(float));
    }
    attention(ctx, rows, il, m);
    name_tensor(ctx, "attn", il, ctx.att.data(), m, Q);
    const float *a = ctx.att.data();
    if (hp.has_sub_norms) {
        norm_rows(ctx, ctx.att.data(), l.attn_sub_norm, m, Q, ctx.hidden.data());
        a = ctx.hidden.data();
        name_tensor(ctx, "attn_sub_norm", il, a, m, Q);
    }
    shared_input_linears(ctx, {{&l.wo, ctx.out.data()}}, a, m, Q);
    if (hp.has_post_norms) norm_rows(ctx, ctx.out.data(), l.post_attn_norm, m, E, ctx.out.data());
    name_tensor(ctx, "attn_out", il, ctx.out.data(), m, E);
    for (int64_t j = 0; j < m * E; ++j) ctx.x[j] += ctx.out[j];
}

void ffn_block(context &ctx, const layer_weights &l, int64_t il, int64_t m) {
    const hparams &hp = ctx.m->hp;
    const int64_t E = hp.n_embd, F = hp.n_ff;
    name_tensor(ctx, "ffn_in", il, ctx.x.data(), m, E);
    norm_rows(ctx, ctx.x.data(), l.ffn_norm, m, E, ctx.xn.data());
    name_tensor(ctx, "ffn_norm", il, ctx.xn.data(), m, E);
    shared_input_linears(ctx, {{&l.w_gate, ctx.gate.data()}, {&l.w_up, ctx.up.data()}}, ctx.xn.data(), m, E);
    name_tensor(ctx, "gate", il, ctx.gate.data(), m, F);
    name_tensor(ctx, "up", il, ctx.up.data(), m, F);
    float *g = ctx.gate.data();
    const float *u = ctx.up.data();
    // In parallel over rows: SiLU's exp is ~10 ns an element (1bitLLM-3B: 29 M per 128-token prompt).
    ctx.pool->parallel_for(m, 1, [&](int64_t i0, int64_t i1) {
        if (hp.act == activation::relu2) {
            for (int64_t j = i0 * F; j < i1 * F; ++j) {
                const float r = std::max(g[j], 0.0f);
                g[j] = r * r * u[j];
            }
        } else if (hp.act == activation::silu) {
            for (int64_t j = i0 * F; j < i1 * F; ++j) g[j] = g[j] / (1.0f + std::exp(-g[j])) * u[j];
        } else {
            for (int64_t j = i0 * F; j < i1 * F; ++j) g[j] = gelu_tanh(g[j]) * u[j];
        }
    });
    name_tensor(ctx, "ffn_act", il, g, m, F);
    const float *h = g;
    if (hp.has_sub_norms) {
        norm_rows(ctx, g, l.ffn_sub_norm, m, F, ctx.hidden.data());
        h = ctx.hidden.data();
        name_tensor(ctx, "ffn_sub_norm", il, h, m, F);
    }
    shared_input_linears(ctx, {{&l.w_down, ctx.out.data()}}, h, m, F);
    if (hp.has_post_norms) norm_rows(ctx, ctx.out.data(), l.post_ffw_norm, m, E, ctx.out.data());
    name_tensor(ctx, "ffn_out", il, ctx.out.data(), m, E);
    for (int64_t j = 0; j < m * E; ++j) ctx.x[j] += ctx.out[j];
}

// logits for rows [first, m) of the batch into `logits` (row-major, n_vocab each).
void output_head(context &ctx, int64_t first, int64_t m, float *logits) {
    const model &md = *ctx.m;
    const int64_t E = md.hp.n_embd, V = md.hp.n_vocab, rows = m - first;
    norm_rows(ctx, ctx.x.data() + first * E, md.output_norm, rows, E, ctx.xn.data());
    name_tensor(ctx, "output_norm", -1, ctx.xn.data(), rows, E);
    const dense_matrix &w = md.output;
    const float *x = ctx.xn.data();
    if (ctx.head_int8 != nullptr) {  // the option of head_act.h
        head_int8_logits(ctx, x, rows, logits);
        name_tensor(ctx, "logits", -1, logits, rows, V);
        return;
    }
    ctx.pool->parallel_for(V, 256, [&](int64_t r0, int64_t r1) {
        const auto *bytes = static_cast<const uint8_t *>(w.data);
        switch (w.type) {
            case GGML_F32: ctx.dk->matmul_f32(static_cast<const float *>(w.data), E, r0, r1, x, rows, logits, V); break;
            case GGML_F16: ctx.dk->matmul_f16(static_cast<const uint16_t *>(w.data), E, r0, r1, x, rows, logits, V); break;
            case GGML_BF16: ctx.dk->matmul_bf16(static_cast<const uint16_t *>(w.data), E, r0, r1, x, rows, logits, V); break;
            case GGML_Q8_0: ctx.dk->matmul_q8_0(bytes, E, r0, r1, x, rows, logits, V); break;
            default: ctx.dk->matmul_q6_k(bytes, E, r0, r1, x, rows, logits, V); break;  // the loader admits no other
        }
    });
    name_tensor(ctx, "logits", -1, logits, rows, V);
}

// One batch of m rows through the model with ctx's scratch and threads; row i is token
// tokens[i] at position rows[i].pos of sequence rows[i].seq (ctx itself, or other contexts of
// the same model when several sequences are decoded together).
// hidden_out, when given, receives every row's final hidden state after output_norm (m * n_embd).
void forward_batch(context &ctx, const batch_row *rows, const int32_t *tokens, int64_t m, float *logits,
                   bool all_logits, float *hidden_out = nullptr) {
    const model &md = *ctx.m;
    const int64_t E = md.hp.n_embd;
    const int64_t row_bytes = dense_row_bytes(md.token_embd.type, E);
    for (int64_t i = 0; i < m; ++i) {
        const auto *row = static_cast<const uint8_t *>(md.token_embd.data) + tokens[i] * row_bytes;
        row_to_f32(md.token_embd.type, row, E, ctx.x.data() + i * E);
    }
    if (md.hp.embd_scale != 1.0f)
        for (int64_t j = 0; j < m * E; ++j) ctx.x[j] *= md.hp.embd_scale;
    for (int64_t il = 0; il < md.hp.n_layer; ++il) {
        const layer_weights &l = md.layers[static_cast<size_t>(il)];
        attention_block(ctx, rows, l, il, m);
        ffn_block(ctx, l, il, m);
    }
    for (int64_t i = 0; i < m; ++i) rows[i].seq->n_past = std::max(rows[i].seq->n_past, rows[i].pos + 1);
    if (logits != nullptr) output_head(ctx, all_logits ? 0 : m - 1, m, logits);
    if (hidden_out != nullptr) norm_rows(ctx, ctx.x.data(), md.output_norm, m, E, hidden_out);
}

template <typename T>
bool try_resize(std::vector<T> &v, int64_t n) {
    try {
        v.assign(static_cast<size_t>(n), T{});
        return true;
    } catch (const std::bad_alloc &) {
        return false;
    }
}

}  // namespace

std::unique_ptr<context> context_new(const model &m, int64_t n_ctx, int n_threads, std::string *error) {
    const hparams &hp = m.hp;
    if (n_ctx <= 0) n_ctx = hp.n_ctx_train;
    if (n_ctx > (1 << 22)) {
        *error = "n_ctx " + std::to_string(n_ctx) + " is too large";
        return nullptr;
    }
    auto ctx = std::make_unique<context>();
    ctx->m = &m;
    ctx->n_ctx = n_ctx;
    const char *isa_error = nullptr;
    ctx->tk = ternary_kernels_active(&isa_error);
    if (ctx->tk == nullptr) {
        *error = isa_error ? isa_error : "no ternary kernels for this CPU";
        return nullptr;
    }
    ctx->dk = dense_kernels_active();
    if (const char *dir = std::getenv("BITNET_DUMP_DIR"); dir != nullptr && *dir != '\0') {
        if (std::string why = dump_dir_problem(dir); !why.empty()) {
            *error = "BITNET_DUMP_DIR: " + why;
            return nullptr;
        }
        ctx->dump_dir = dir;
    }
    ctx->pool = std::make_unique<thread_pool>(n_threads);

    const int64_t B = kMaxBatch, E = hp.n_embd, Q = hp.n_head * hp.head_dim;
    const int64_t KV = hp.n_head_kv * hp.head_dim, F = hp.n_ff, half = hp.head_dim / 2;
    const int64_t widest = std::max({E, Q, F});
    // The KV cache is allocated, not written: pages are mapped as positions fill them, so a long
    // context costs memory (and start-up time: 0.6 GB for 4096 tokens of the 2B-4T shape) only
    // as far as it is used. Nothing reads a position before a batch has written it.
    const size_t kv_floats = static_cast<size_t>(hp.n_layer * n_ctx * KV);
    ctx->k_cache.reset(new (std::nothrow) float[kv_floats]);
    ctx->v_cache.reset(new (std::nothrow) float[kv_floats]);
    const bool ok = ctx->k_cache && ctx->v_cache && try_resize(ctx->rope_cos, n_ctx * half) &&
                    try_resize(ctx->rope_sin, n_ctx * half) && try_resize(ctx->x, B * E) &&
                    try_resize(ctx->xn, B * E) && try_resize(ctx->q, B * Q) && try_resize(ctx->k, B * KV) &&
                    try_resize(ctx->v, B * KV) && try_resize(ctx->att, B * Q) && try_resize(ctx->gate, B * F) &&
                    try_resize(ctx->up, B * F) && try_resize(ctx->hidden, B * widest) &&
                    try_resize(ctx->out, B * E) && try_resize(ctx->act_q, B * round_up(widest, kI2SBlock)) &&
                    try_resize(ctx->act_scale, B) && try_resize(ctx->act_sum, B);
    if (!ok) {
        *error = "out of memory allocating a context of " + std::to_string(n_ctx) + " tokens";
        return nullptr;
    }
    fill_rope_tables(hp.rope_theta, hp.head_dim, n_ctx, ctx->rope_cos.data(), ctx->rope_sin.data());
    if (hp.n_swa > 0 && hp.rope_theta_swa != hp.rope_theta) {
        if (!try_resize(ctx->rope_cos_swa, n_ctx * half) || !try_resize(ctx->rope_sin_swa, n_ctx * half)) {
            *error = "out of memory allocating a context of " + std::to_string(n_ctx) + " tokens";
            return nullptr;
        }
        fill_rope_tables(hp.rope_theta_swa, hp.head_dim, n_ctx, ctx->rope_cos_swa.data(), ctx->rope_sin_swa.data());
    }
    return ctx;
}

int forward_decode(context &ctx, const int32_t *tokens, int64_t n, float *logits, bool all_logits,
                   std::string *error) {
    const int64_t V = ctx.m->hp.n_vocab;
    if (n <= 0) {
        *error = "no tokens to decode";
        return BITNET_ERR_ARGUMENT;
    }
    if (ctx.n_past + n > ctx.n_ctx) {
        *error = "context is full: " + std::to_string(ctx.n_past) + " cached + " + std::to_string(n) +
                 " new tokens > n_ctx " + std::to_string(ctx.n_ctx);
        return BITNET_ERR_CONTEXT_FULL;
    }
    for (int64_t i = 0; i < n; ++i) {
        if (tokens[i] < 0 || tokens[i] >= V) {
            *error = "token id " + std::to_string(tokens[i]) + " is out of range [0, " + std::to_string(V) + ")";
            return BITNET_ERR_ARGUMENT;
        }
    }
    for (int64_t done = 0; done < n; done += kMaxBatch) {
        const int64_t m = std::min(kMaxBatch, n - done);
        const bool last = done + m == n;
        float *out = nullptr;
        if (logits != nullptr && all_logits) out = logits + done * V;
        else if (logits != nullptr && last) out = logits;
        std::vector<batch_row> rows(static_cast<size_t>(m));
        for (int64_t i = 0; i < m; ++i) rows[static_cast<size_t>(i)] = {&ctx, ctx.n_past + i};
        forward_batch(ctx, rows.data(), tokens + done, m, out, all_logits);
    }
    return BITNET_OK;
}

int forward_decode_multi(context *const *seqs, const int32_t *tokens, int64_t n, float *logits,
                         std::string *error) {
    if (n <= 0 || n > kMaxBatch) {
        *error = "decode_multi takes 1 to " + std::to_string(kMaxBatch) + " sequences, got " + std::to_string(n);
        return BITNET_ERR_ARGUMENT;
    }
    context &lead = *seqs[0];
    const int64_t V = lead.m->hp.n_vocab;
    std::vector<batch_row> rows(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
        context *seq = seqs[i];
        const std::string which = "sequence " + std::to_string(i);
        if (seq == nullptr || seq->m != lead.m) {
            *error = which + (seq == nullptr ? " is null" : " belongs to another model");
            return BITNET_ERR_ARGUMENT;
        }
        for (int64_t j = 0; j < i; ++j) {
            if (seqs[j] == seq) {
                *error = which + " repeats sequence " + std::to_string(j) + " (one token per sequence)";
                return BITNET_ERR_ARGUMENT;
            }
        }
        if (seq->n_past >= seq->n_ctx) {
            *error = which + ": context is full (" + std::to_string(seq->n_ctx) + " tokens)";
            return BITNET_ERR_CONTEXT_FULL;
        }
        if (tokens[i] < 0 || tokens[i] >= V) {
            *error = "token id " + std::to_string(tokens[i]) + " is out of range [0, " + std::to_string(V) + ")";
            return BITNET_ERR_ARGUMENT;
        }
        rows[static_cast<size_t>(i)] = {seq, seq->n_past};
    }
    forward_batch(lead, rows.data(), tokens, n, logits, true);
    return BITNET_OK;
}

int forward_hidden_multi(context *const *seqs, int64_t n_seq, const int32_t *tokens, const int64_t *n_tokens,
                         float *hidden, std::string *error) {
    if (n_seq <= 0) {
        *error = "no sequences to run";
        return BITNET_ERR_ARGUMENT;
    }
    const model &md = *seqs[0]->m;
    std::vector<batch_row> rows;  // every token of every sequence, in order
    for (int64_t s = 0; s < n_seq; ++s) {
        context *seq = seqs[s];
        if (seq == nullptr || seq->m != &md || n_tokens[s] <= 0) {
            *error = "sequence " + std::to_string(s) +
                     (seq == nullptr ? " is null" : seq->m != &md ? " belongs to another model" : " has no tokens");
            return BITNET_ERR_ARGUMENT;
        }
        for (int64_t j = 0; j < s; ++j)
            if (seqs[j] == seq) {
                *error = "sequence " + std::to_string(s) + " repeats sequence " + std::to_string(j);
                return BITNET_ERR_ARGUMENT;
            }
        if (seq->n_past + n_tokens[s] > seq->n_ctx) {
            *error = "sequence " + std::to_string(s) + ": " + std::to_string(n_tokens[s]) +
                     " tokens do not fit its context of " + std::to_string(seq->n_ctx);
            return BITNET_ERR_CONTEXT_FULL;
        }
        for (int64_t i = 0; i < n_tokens[s]; ++i) rows.push_back({seq, seq->n_past + i});
    }
    const int64_t n = static_cast<int64_t>(rows.size()), E = md.hp.n_embd;
    for (int64_t i = 0; i < n; ++i)
        if (tokens[i] < 0 || tokens[i] >= md.hp.n_vocab) {
            *error = "token id " + std::to_string(tokens[i]) + " is out of range [0, " + std::to_string(md.hp.n_vocab) + ")";
            return BITNET_ERR_ARGUMENT;
        }
    // Batches of up to kMaxBatch rows, in order: a sequence split between two batches has its
    // first part cached before the second part attends to it.
    for (int64_t done = 0; done < n; done += kMaxBatch) {
        const int64_t m = std::min(kMaxBatch, n - done);
        forward_batch(*seqs[0], rows.data() + done, tokens + done, m, nullptr, false, hidden + done * E);
    }
    return BITNET_OK;
}

}  // namespace bitnet
