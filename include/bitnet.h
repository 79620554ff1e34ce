/* bitnet.h: the only way into libbitnet, the ternary-LLM inference engine.
 *
 * Opaque handles, a single `bitnet_` prefix, and errors as values: every call that can fail
 * returns NULL or a negative status, and bitnet_last_error() then names the problem in one
 * line (thread-local, valid until the next failing call on the same thread). Nothing here
 * aborts the process on bad input.
 */
#ifndef BITNET_H
#define BITNET_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define BITNET_API __declspec(dllexport)
#else
#define BITNET_API __attribute__((visibility("default")))
#endif

typedef struct bitnet_model bitnet_model;
typedef struct bitnet_context bitnet_context;
typedef struct bitnet_sampler bitnet_sampler;

enum bitnet_status {
    BITNET_OK = 0,
    BITNET_ERR_IO = -1,          /* cannot open / map / read a file */
    BITNET_ERR_FORMAT = -2,      /* the file is not a valid GGUF or contradicts itself */
    BITNET_ERR_UNSUPPORTED = -3, /* valid, but an architecture or type we do not run */
    BITNET_ERR_ARGUMENT = -4,    /* a caller passed something out of range */
    BITNET_ERR_MEMORY = -5,      /* allocation failed */
    BITNET_ERR_CONTEXT_FULL = -6 /* more tokens than the context holds */
};

BITNET_API const char *bitnet_last_error(void);
BITNET_API const char *bitnet_version(void);

/* ---- CPU dispatch ---------------------------------------------------------------------- */
/* Name of the kernel set in use ("scalar", "avx2", "avx512", "neon"). The set is picked once
 * from CPUID; the environment variable BITNET_ISA=scalar|avx2|avx512|neon forces one (an
 * ISA the CPU lacks is an error at first use, reported by bitnet_model_load). */
BITNET_API const char *bitnet_isa(void);
/* Force a kernel set by name for this process; returns BITNET_OK or an error if unknown or
 * not supported by this CPU. Mainly for tests. */
BITNET_API int bitnet_set_isa(const char *name);
/* Comma-separated names of the kernel sets this CPU can run, e.g. "scalar,avx2". */
BITNET_API const char *bitnet_available_isas(void);

/* ---- Kernel tuning (no setting changes a result, only the speed) ------------------------- */
/* "vendor-family-model" of this CPU: the name of its preset file, preset_kernels/<sig>.json. */
BITNET_API const char *bitnet_cpu_signature(void);
/* Apply a preset (a JSON object: "prefetch_bytes", "amx_min_batch"; other keys ignored).
 * The environment variables BITNET_PREFETCH_BYTES / BITNET_AMX_MIN_BATCH still win. */
BITNET_API int bitnet_load_preset(const char *path);
/* Set or read one parameter by name (default: its built-in value, before presets and the
 * environment); the readers return -1 for an unknown name. */
BITNET_API int bitnet_set_tuning(const char *key, int64_t value);
BITNET_API int64_t bitnet_get_tuning(const char *key);
BITNET_API int64_t bitnet_default_tuning(const char *key);

/* ---- Model ----------------------------------------------------------------------------- */
/* mmap and validate a GGUF file; NULL on failure (see bitnet_last_error). */
BITNET_API bitnet_model *bitnet_model_load(const char *path);
BITNET_API void bitnet_model_free(bitnet_model *model);

BITNET_API int32_t bitnet_model_n_vocab(const bitnet_model *model);
BITNET_API int32_t bitnet_model_n_ctx_train(const bitnet_model *model);
BITNET_API int32_t bitnet_model_n_embd(const bitnet_model *model);
BITNET_API int32_t bitnet_model_n_layer(const bitnet_model *model);
/* Architecture as resolved from the file (e.g. "bitnet-b1.58"). */
BITNET_API const char *bitnet_model_arch(const bitnet_model *model);
/* One line describing shapes and types, for logs and benchmarks. */
BITNET_API const char *bitnet_model_desc(const bitnet_model *model);
/* Bytes of tensor data mapped (weights + embedding). */
BITNET_API uint64_t bitnet_model_size_bytes(const bitnet_model *model);
/* GGUF metadata, for the tokenizer and chat template: the number of keys, the i-th key, and a
 * key's value as JSON text (numbers, strings, bools, arrays); NULL if absent. Strings are
 * owned by the model and live as long as it. */
BITNET_API int32_t bitnet_model_meta_count(const bitnet_model *model);
BITNET_API const char *bitnet_model_meta_key(const bitnet_model *model, int32_t i);
BITNET_API const char *bitnet_model_meta_json(const bitnet_model *model, const char *key);

/* ---- Context: KV cache + scratch for one sequence ---------------------------------------- */
/* n_ctx <= 0 means the model's training context. n_threads <= 0 means all cores. */
BITNET_API bitnet_context *bitnet_context_new(bitnet_model *model, int32_t n_ctx, int32_t n_threads);
BITNET_API void bitnet_context_free(bitnet_context *ctx);
BITNET_API int32_t bitnet_context_n_ctx(const bitnet_context *ctx);
/* Tokens held in the KV cache. */
BITNET_API int32_t bitnet_context_n_past(const bitnet_context *ctx);
/* Drop cached positions >= n_past (0 clears the cache). */
BITNET_API int bitnet_context_truncate(bitnet_context *ctx, int32_t n_past);
BITNET_API int bitnet_context_set_threads(bitnet_context *ctx, int32_t n_threads);
/* Make dst hold the first n_past cached positions of src (same model): one prompt computed once
 * serves several continuations. dst's positions past n_past are dropped. */
BITNET_API int bitnet_context_copy_prefix(bitnet_context *dst, const bitnet_context *src, int32_t n_past);

/* The output head's activations. EXACT (default): f32 activations times the stored weights
 * widened exactly. INT8: for a Q8_0 or Q6_K head only, the activations are quantized to int8 per
 * block (32 for Q8_0, 256 for Q6_K; absmax scale, round half to even) and multiplied with integer
 * dot products, as ggml's Q8_0 / Q8_K dot products do: faster, not exact for the stored weights
 * (its cost in perplexity and KL is measured in the README). Any other head type, or an unknown
 * mode, is BITNET_ERR_UNSUPPORTED / BITNET_ERR_ARGUMENT with a message. The model's setting
 * applies to the contexts created after it; the context's to that context (bitnet_decode_multi
 * uses ctxs[0]'s). */
enum bitnet_head_act { BITNET_HEAD_ACT_EXACT = 0, BITNET_HEAD_ACT_INT8 = 1 };
BITNET_API int bitnet_model_set_head_act(bitnet_model *model, int32_t mode);
BITNET_API int bitnet_context_set_head_act(bitnet_context *ctx, int32_t mode);

/* Debugging: write every named intermediate tensor of each batch (attn_norm, q, k, v, attn,
 * attn_sub_norm, attn_out, ffn_norm, gate, up, ffn_act, ffn_sub_norm, ffn_out per layer; then
 * output_norm and logits) as <dir>/<layer>-<name>.npy; NULL or "" turns it off. The environment
 * variable BITNET_DUMP_DIR sets it for every new context. A dir that is not an existing folder
 * is an error (BITNET_ERR_ARGUMENT here; bitnet_context_new fails for BITNET_DUMP_DIR). */
BITNET_API int bitnet_context_set_dump_dir(bitnet_context *ctx, const char *dir);

/* Run the model over n_tokens new tokens (one batch) appended after the cached ones.
 * logits: n_vocab floats for the last token, or n_tokens*n_vocab when all_logits != 0;
 * may be NULL to only fill the cache. Returns BITNET_OK or a negative status. */
BITNET_API int bitnet_decode(bitnet_context *ctx, const int32_t *tokens, int32_t n_tokens,
                             float *logits, int all_logits);

/* Append one token to each of n different contexts of the same model, in one batched pass over
 * the weights (continuous batching: several sequences for the price of about one), using the
 * threads and scratch of ctxs[0]. logits: n * n_vocab floats, row i for ctxs[i]; may be NULL.
 * Each row's result equals what bitnet_decode of that token alone would give. */
BITNET_API int bitnet_decode_multi(bitnet_context *const *ctxs, const int32_t *tokens, int32_t n,
                                   float *logits);

/* Run n_tokens[s] tokens appended to each of n_seq different contexts of the same model (their
 * ids concatenated in `tokens`) in shared batches on ctxs[0]'s threads, and write every token's
 * final hidden state after the output norm to hidden (sum(n_tokens) * n_embd floats, in the
 * order of `tokens`): what embedding models pool. */
BITNET_API int bitnet_hidden_multi(bitnet_context *const *ctxs, int32_t n_seq, const int32_t *tokens,
                                   const int32_t *n_tokens, float *hidden);

/* ---- Sampling ---------------------------------------------------------------------------- */
typedef struct bitnet_sampler_params {
    float temperature;        /* <= 0: greedy (argmax) */
    int32_t top_k;            /* <= 0: off */
    float top_p;              /* >= 1: off */
    float min_p;              /* <= 0: off */
    float repeat_penalty;     /* 1: off; llama.cpp semantics (divide positive, multiply negative) */
    int32_t repeat_last_n;    /* window of recent tokens the penalty looks at; 0 off, -1 all */
    float presence_penalty;   /* 0: off (OpenAI semantics) */
    float frequency_penalty;  /* 0: off (OpenAI semantics) */
    uint64_t seed;
} bitnet_sampler_params;

BITNET_API bitnet_sampler_params bitnet_sampler_default_params(void);
BITNET_API bitnet_sampler *bitnet_sampler_new(const bitnet_sampler_params *params);
BITNET_API void bitnet_sampler_free(bitnet_sampler *sampler);
/* Record a token as part of the history the penalties see (prompt and generated). */
BITNET_API void bitnet_sampler_accept(bitnet_sampler *sampler, int32_t token);
BITNET_API void bitnet_sampler_reset(bitnet_sampler *sampler);
/* Pick a token from one row of logits (not modified). Returns the id, or a negative status. */
BITNET_API int32_t bitnet_sampler_sample(bitnet_sampler *sampler, const float *logits, int32_t n_vocab);

/* ---- Kernel entry points, for tests and benchmarks -------------------------------------- */
/* Quantize rows of f32 activations to int8 exactly as DESIGN.md section 3; scales[r] = s. */
BITNET_API int bitnet_quantize_activations(const float *x, int64_t n_rows, int64_t k, int8_t *q,
                                           float *scales);
/* int32 y[m][n] = sum_k W[n][k] * a[m][k] for an I2_S weight (n rows of k, packed as DESIGN
 * section 2 without the scale tail) with the named kernel set ("" = current). */
BITNET_API int bitnet_i2s_matmul(const char *isa, const uint8_t *w_packed, int64_t n, int64_t k,
                                 const int8_t *a, int64_t m, int32_t *y, int32_t n_threads);

#ifdef __cplusplus
}
#endif
#endif /* BITNET_H */
