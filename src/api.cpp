// The C API: argument checks, error strings and handle ownership. Nothing else lives here.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bitnet.h"
#include "debug_dump.h"
#include "forward.h"
#include "head_act.h"
#include "kernels/tuning.h"
#include "model.h"
#include "sampler.h"

struct bitnet_model {
    std::unique_ptr<bitnet::model> impl;
    int32_t head_act = BITNET_HEAD_ACT_EXACT;  // for contexts created from now on
};
struct bitnet_context {
    std::unique_ptr<bitnet::context> impl;
};
struct bitnet_sampler {
    bitnet::sampler impl;
};

namespace {

thread_local std::string g_last_error;

int set_error(int status, const std::string &msg) {
    g_last_error = msg;
    return status;
}

// Run fn, turning any escaped C++ exception into an error value: nothing may unwind into C.
template <typename Fn>
auto guarded(Fn fn, decltype(fn()) on_error) -> decltype(fn()) {
    try {
        return fn();
    } catch (const std::bad_alloc &) {
        set_error(BITNET_ERR_MEMORY, "out of memory");
    } catch (const std::exception &e) {
        set_error(BITNET_ERR_ARGUMENT, std::string("internal error: ") + e.what());
    }
    return on_error;
}

}  // namespace

extern "C" {

const char *bitnet_last_error(void) { return g_last_error.c_str(); }
const char *bitnet_version(void) { return "0.1.0"; }

const char *bitnet_isa(void) {
    const bitnet::ternary_kernel_set *k = bitnet::ternary_kernels_active(nullptr);
    return k ? k->name : "none";
}

int bitnet_set_isa(const char *name) {
    if (name == nullptr || !bitnet::ternary_kernels_force(name))
        return set_error(BITNET_ERR_UNSUPPORTED, std::string("kernel set '") + (name ? name : "(null)") +
                                                     "' is unknown or not supported by this CPU (available: " +
                                                     bitnet::ternary_kernels_available() + ")");
    return BITNET_OK;
}

const char *bitnet_available_isas(void) { return bitnet::ternary_kernels_available(); }

const char *bitnet_cpu_signature(void) {
    static const std::string sig = bitnet::cpu_signature();
    return sig.c_str();
}

int bitnet_load_preset(const char *path) {
    if (path == nullptr) return set_error(BITNET_ERR_ARGUMENT, "preset path is null");
    return guarded(
        [&]() -> int {
            std::string error;
            return bitnet::tuning_load_preset(path, &error) ? BITNET_OK : set_error(BITNET_ERR_FORMAT, error);
        },
        BITNET_ERR_MEMORY);
}

int bitnet_set_tuning(const char *key, int64_t value) {
    if (key == nullptr) return set_error(BITNET_ERR_ARGUMENT, "tuning key is null");
    std::string error;
    return bitnet::tuning_set(key, value, &error) ? BITNET_OK : set_error(BITNET_ERR_ARGUMENT, error);
}

int64_t bitnet_get_tuning(const char *key) {
    int64_t value = -1;
    return key != nullptr && bitnet::tuning_get(key, &value) ? value : -1;
}

int64_t bitnet_default_tuning(const char *key) {
    int64_t value = -1;
    return key != nullptr && bitnet::tuning_get(key, &value, true) ? value : -1;
}

bitnet_model *bitnet_model_load(const char *path) {
    if (path == nullptr) {
        set_error(BITNET_ERR_ARGUMENT, "model path is null");
        return nullptr;
    }
    return guarded(
        [&]() -> bitnet_model * {
            const char *isa_error = nullptr;
            if (bitnet::ternary_kernels_active(&isa_error) == nullptr) {
                set_error(BITNET_ERR_UNSUPPORTED, isa_error ? isa_error : "no kernels for this CPU");
                return nullptr;
            }
            std::string error;
            auto m = bitnet::model_load(path, &error);
            if (!m) {
                set_error(BITNET_ERR_FORMAT, error);
                return nullptr;
            }
            return new bitnet_model{std::move(m)};
        },
        nullptr);
}

void bitnet_model_free(bitnet_model *model) { delete model; }

int32_t bitnet_model_n_vocab(const bitnet_model *m) { return m ? int32_t(m->impl->hp.n_vocab) : 0; }
int32_t bitnet_model_n_ctx_train(const bitnet_model *m) { return m ? int32_t(m->impl->hp.n_ctx_train) : 0; }
int32_t bitnet_model_n_embd(const bitnet_model *m) { return m ? int32_t(m->impl->hp.n_embd) : 0; }
int32_t bitnet_model_n_layer(const bitnet_model *m) { return m ? int32_t(m->impl->hp.n_layer) : 0; }
const char *bitnet_model_arch(const bitnet_model *m) { return m ? m->impl->arch->name : ""; }
const char *bitnet_model_desc(const bitnet_model *m) { return m ? m->impl->desc.c_str() : ""; }
uint64_t bitnet_model_size_bytes(const bitnet_model *m) { return m ? m->impl->n_weight_bytes : 0; }

int32_t bitnet_model_meta_count(const bitnet_model *m) {
    return m ? static_cast<int32_t>(m->impl->file->kvs().size()) : 0;
}

const char *bitnet_model_meta_key(const bitnet_model *m, int32_t i) {
    if (m == nullptr || i < 0 || static_cast<size_t>(i) >= m->impl->file->kvs().size()) return nullptr;
    return m->impl->file->kvs()[static_cast<size_t>(i)].key.c_str();
}

const char *bitnet_model_meta_json(const bitnet_model *m, const char *key) {
    if (m == nullptr || key == nullptr) return nullptr;
    return guarded(
        [&]() -> const char * {
            const bitnet::gguf_kv *kv = m->impl->file->find(key);
            if (kv == nullptr) return nullptr;
            // Keep the text alive as long as the model (the cache is small in practice: the
            // tokenizer asks for each key once).
            auto &cache = const_cast<bitnet::model &>(*m->impl).meta_json_cache;
            cache.push_back(m->impl->file->value_json(*kv));
            return cache.back().c_str();
        },
        nullptr);
}

bitnet_context *bitnet_context_new(bitnet_model *model, int32_t n_ctx, int32_t n_threads) {
    if (model == nullptr) {
        set_error(BITNET_ERR_ARGUMENT, "model is null");
        return nullptr;
    }
    if (n_threads <= 0) n_threads = static_cast<int32_t>(std::max(1u, std::thread::hardware_concurrency()));
    if (n_threads > 1024) {
        set_error(BITNET_ERR_ARGUMENT, "n_threads " + std::to_string(n_threads) + " is too large");
        return nullptr;
    }
    return guarded(
        [&]() -> bitnet_context * {
            std::string error;
            auto ctx = bitnet::context_new(*model->impl, n_ctx, n_threads, &error);
            if (!ctx) {
                set_error(BITNET_ERR_MEMORY, error);
                return nullptr;
            }
            if (!bitnet::context_set_head_act(*ctx, model->head_act)) {
                set_error(BITNET_ERR_MEMORY, "out of memory allocating the int8 head's scratch");
                return nullptr;
            }
            return new bitnet_context{std::move(ctx)};
        },
        nullptr);
}

void bitnet_context_free(bitnet_context *ctx) { delete ctx; }
int32_t bitnet_context_n_ctx(const bitnet_context *ctx) { return ctx ? int32_t(ctx->impl->n_ctx) : 0; }
int32_t bitnet_context_n_past(const bitnet_context *ctx) { return ctx ? int32_t(ctx->impl->n_past) : 0; }

int bitnet_context_truncate(bitnet_context *ctx, int32_t n_past) {
    if (ctx == nullptr) return set_error(BITNET_ERR_ARGUMENT, "context is null");
    if (n_past < 0 || n_past > ctx->impl->n_past)
        return set_error(BITNET_ERR_ARGUMENT, "cannot truncate to " + std::to_string(n_past) + " tokens (" +
                                                  std::to_string(ctx->impl->n_past) + " cached)");
    ctx->impl->n_past = n_past;
    return BITNET_OK;
}

// The KV cache is [n_layer][n_ctx][kv_dim] per context, so each layer's first n_past rows are
// one contiguous block in both; n_ctx may differ between the two contexts.
int bitnet_context_copy_prefix(bitnet_context *dst, const bitnet_context *src, int32_t n_past) {
    if (dst == nullptr || src == nullptr) return set_error(BITNET_ERR_ARGUMENT, "context is null");
    bitnet::context &d = *dst->impl;
    const bitnet::context &s = *src->impl;
    if (d.m != s.m) return set_error(BITNET_ERR_ARGUMENT, "the contexts belong to different models");
    if (n_past < 0 || n_past > s.n_past || n_past > d.n_ctx)
        return set_error(BITNET_ERR_ARGUMENT, "cannot copy " + std::to_string(n_past) + " tokens (" +
                                                  std::to_string(s.n_past) + " cached, room for " +
                                                  std::to_string(d.n_ctx) + ")");
    if (dst == src) return BITNET_OK;
    const auto &hp = d.m->hp;
    const size_t kv = static_cast<size_t>(hp.n_head_kv * hp.head_dim);
    const size_t rows = static_cast<size_t>(n_past) * kv * sizeof(float);
    for (int64_t il = 0; il < hp.n_layer; ++il) {
        std::memcpy(d.k_cache.get() + il * d.n_ctx * kv, s.k_cache.get() + il * s.n_ctx * kv, rows);
        std::memcpy(d.v_cache.get() + il * d.n_ctx * kv, s.v_cache.get() + il * s.n_ctx * kv, rows);
    }
    d.n_past = n_past;
    return BITNET_OK;
}

int bitnet_context_set_threads(bitnet_context *ctx, int32_t n_threads) {
    if (ctx == nullptr) return set_error(BITNET_ERR_ARGUMENT, "context is null");
    if (n_threads < 1 || n_threads > 1024)
        return set_error(BITNET_ERR_ARGUMENT, "n_threads must be in [1, 1024]");
    return guarded(
        [&]() -> int {
            ctx->impl->pool = std::make_unique<bitnet::thread_pool>(n_threads);
            return BITNET_OK;
        },
        BITNET_ERR_MEMORY);
}

namespace {
int head_act_check(const bitnet::model &m, int32_t mode) {
    const std::string why = bitnet::head_act_problem(m, mode);
    if (why.empty()) return BITNET_OK;
    return set_error(mode == BITNET_HEAD_ACT_INT8 ? BITNET_ERR_UNSUPPORTED : BITNET_ERR_ARGUMENT, why);
}
}  // namespace

int bitnet_model_set_head_act(bitnet_model *model, int32_t mode) {
    if (model == nullptr) return set_error(BITNET_ERR_ARGUMENT, "model is null");
    if (int st = head_act_check(*model->impl, mode); st != BITNET_OK) return st;
    model->head_act = mode;
    return BITNET_OK;
}

int bitnet_context_set_head_act(bitnet_context *ctx, int32_t mode) {
    if (ctx == nullptr) return set_error(BITNET_ERR_ARGUMENT, "context is null");
    if (int st = head_act_check(*ctx->impl->m, mode); st != BITNET_OK) return st;
    return guarded(
        [&]() -> int {
            if (!bitnet::context_set_head_act(*ctx->impl, mode))
                return set_error(BITNET_ERR_MEMORY, "out of memory allocating the int8 head's scratch");
            return BITNET_OK;
        },
        BITNET_ERR_MEMORY);
}

int bitnet_context_set_dump_dir(bitnet_context *ctx, const char *dir) {
    if (ctx == nullptr) return set_error(BITNET_ERR_ARGUMENT, "context is null");
    if (dir != nullptr && *dir != '\0') {
        if (std::string why = bitnet::dump_dir_problem(dir); !why.empty()) return set_error(BITNET_ERR_ARGUMENT, why);
    }
    ctx->impl->dump_dir = dir ? dir : "";
    return BITNET_OK;
}

int bitnet_decode(bitnet_context *ctx, const int32_t *tokens, int32_t n_tokens, float *logits, int all_logits) {
    if (ctx == nullptr || tokens == nullptr) return set_error(BITNET_ERR_ARGUMENT, "context or tokens is null");
    return guarded(
        [&]() -> int {
            std::string error;
            int status = bitnet::forward_decode(*ctx->impl, tokens, n_tokens, logits, all_logits != 0, &error);
            return status == BITNET_OK ? status : set_error(status, error);
        },
        BITNET_ERR_MEMORY);
}

int bitnet_decode_multi(bitnet_context *const *ctxs, const int32_t *tokens, int32_t n, float *logits) {
    if (ctxs == nullptr || tokens == nullptr) return set_error(BITNET_ERR_ARGUMENT, "contexts or tokens is null");
    if (n <= 0) return set_error(BITNET_ERR_ARGUMENT, "no sequences to decode");
    return guarded(
        [&]() -> int {
            std::vector<bitnet::context *> seqs(static_cast<size_t>(n));
            for (int32_t i = 0; i < n; ++i) seqs[static_cast<size_t>(i)] = ctxs[i] ? ctxs[i]->impl.get() : nullptr;
            std::string error;
            int status = bitnet::forward_decode_multi(seqs.data(), tokens, n, logits, &error);
            return status == BITNET_OK ? status : set_error(status, error);
        },
        BITNET_ERR_MEMORY);
}

int bitnet_hidden_multi(bitnet_context *const *ctxs, int32_t n_seq, const int32_t *tokens, const int32_t *n_tokens,
                        float *hidden) {
    if (ctxs == nullptr || tokens == nullptr || n_tokens == nullptr || hidden == nullptr)
        return set_error(BITNET_ERR_ARGUMENT, "contexts, tokens, counts or output is null");
    if (n_seq <= 0) return set_error(BITNET_ERR_ARGUMENT, "no sequences to run");
    return guarded(
        [&]() -> int {
            std::vector<bitnet::context *> seqs(static_cast<size_t>(n_seq));
            std::vector<int64_t> counts(static_cast<size_t>(n_seq));
            for (int32_t i = 0; i < n_seq; ++i) {
                seqs[static_cast<size_t>(i)] = ctxs[i] ? ctxs[i]->impl.get() : nullptr;
                counts[static_cast<size_t>(i)] = n_tokens[i];
            }
            std::string error;
            int status = bitnet::forward_hidden_multi(seqs.data(), n_seq, tokens, counts.data(), hidden, &error);
            return status == BITNET_OK ? status : set_error(status, error);
        },
        BITNET_ERR_MEMORY);
}

bitnet_sampler_params bitnet_sampler_default_params(void) {
    bitnet_sampler_params p;
    p.temperature = 0.8f;
    p.top_k = 40;
    p.top_p = 0.95f;
    p.min_p = 0.05f;
    p.repeat_penalty = 1.0f;
    p.repeat_last_n = 64;
    p.presence_penalty = 0.0f;
    p.frequency_penalty = 0.0f;
    p.seed = 0;
    return p;
}

bitnet_sampler *bitnet_sampler_new(const bitnet_sampler_params *params) {
    if (params == nullptr) {
        set_error(BITNET_ERR_ARGUMENT, "sampler params are null");
        return nullptr;
    }
    const bitnet_sampler_params &p = *params;
    const bool finite = std::isfinite(p.temperature) && std::isfinite(p.top_p) && std::isfinite(p.min_p) &&
                        std::isfinite(p.repeat_penalty) && std::isfinite(p.presence_penalty) &&
                        std::isfinite(p.frequency_penalty);
    if (!finite || p.top_p <= 0 || p.min_p < 0 || p.min_p > 1 || p.repeat_penalty <= 0 || p.repeat_last_n < -1) {
        set_error(BITNET_ERR_ARGUMENT, "invalid sampler parameters (need finite values, top_p > 0, 0 <= min_p <= 1, "
                                       "repeat_penalty > 0, repeat_last_n >= -1)");
        return nullptr;
    }
    return guarded([&]() -> bitnet_sampler * { return new bitnet_sampler{bitnet::sampler(p)}; }, nullptr);
}

void bitnet_sampler_free(bitnet_sampler *s) { delete s; }
void bitnet_sampler_accept(bitnet_sampler *s, int32_t token) {
    if (s) guarded([&] { s->impl.accept(token); return 0; }, 0);
}
void bitnet_sampler_reset(bitnet_sampler *s) {
    if (s) s->impl.reset();
}

int32_t bitnet_sampler_sample(bitnet_sampler *s, const float *logits, int32_t n_vocab) {
    if (s == nullptr || logits == nullptr || n_vocab <= 0)
        return set_error(BITNET_ERR_ARGUMENT, "sampler, logits or n_vocab invalid");
    return guarded(
        [&]() -> int32_t {
            int32_t t = s->impl.sample(logits, n_vocab);
            return t >= 0 ? t : set_error(BITNET_ERR_ARGUMENT, "no finite logits to sample from");
        },
        BITNET_ERR_MEMORY);
}

int bitnet_quantize_activations(const float *x, int64_t n_rows, int64_t k, int8_t *q, float *scales) {
    if (x == nullptr || q == nullptr || scales == nullptr || n_rows < 0 || k <= 0)
        return set_error(BITNET_ERR_ARGUMENT, "invalid arguments to bitnet_quantize_activations");
    const bitnet::ternary_kernel_set *ks = bitnet::ternary_kernels_active(nullptr);
    if (ks == nullptr) return set_error(BITNET_ERR_UNSUPPORTED, "no kernels for this CPU");
    for (int64_t r = 0; r < n_rows; ++r) {
        int32_t sum = 0;
        ks->quantize_row_int8(x + r * k, k, q + r * k, &scales[r], &sum);
    }
    return BITNET_OK;
}

int bitnet_i2s_matmul(const char *isa, const uint8_t *w, int64_t n, int64_t k, const int8_t *a, int64_t m,
                      int32_t *y, int32_t n_threads) {
    if (w == nullptr || a == nullptr || y == nullptr || n <= 0 || m <= 0 || k <= 0 ||
        k % bitnet::kI2SBlock != 0 || k > bitnet::kI2SMaxK || n_threads < 1)
        return set_error(BITNET_ERR_ARGUMENT, "invalid arguments to bitnet_i2s_matmul (k must be a multiple of 128)");
    const bitnet::ternary_kernel_set *ks = (isa == nullptr || *isa == '\0')
                                               ? bitnet::ternary_kernels_active(nullptr)
                                               : bitnet::ternary_kernels_by_name(isa);
    if (ks == nullptr) return set_error(BITNET_ERR_UNSUPPORTED, std::string("kernel set '") + (isa ? isa : "") + "' unavailable");
    return guarded(
        [&]() -> int {
            std::vector<int32_t> sums(static_cast<size_t>(m));
            for (int64_t i = 0; i < m; ++i) {
                int32_t s = 0;
                for (int64_t j = 0; j < k; ++j) s += a[i * k + j];
                sums[static_cast<size_t>(i)] = s;
            }
            bitnet::thread_pool pool(n_threads);
            pool.parallel_for(n, 16, [&](int64_t r0, int64_t r1) {
                ks->i2s_matmul(w, k, r0, r1, a, sums.data(), m, y, n);
            });
            return BITNET_OK;
        },
        BITNET_ERR_MEMORY);
}

}  // extern "C"
