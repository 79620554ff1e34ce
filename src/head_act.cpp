// The int8-activation head's plumbing: the option's checks, its scratch, and the threaded call.
#include "head_act.h"

#include <new>

#include "bitnet.h"
#include "kernels/head_int8.h"
#include "quant_types.h"

namespace bitnet {

std::string head_act_problem(const model &m, int mode) {
    if (mode == BITNET_HEAD_ACT_EXACT) return "";
    if (mode != BITNET_HEAD_ACT_INT8)
        return "unknown head activation mode " + std::to_string(mode) + " (0 = exact, 1 = int8)";
    const quant_type_traits *t = quant_type_find(m.output.type);
    if (head_act_block(m.output.type) == 0)
        return std::string("int8 head activations need a Q8_0 or Q6_K output head; this model's head is ") +
               (t != nullptr ? t->name : "of another type") +
               " (re-encode it: convert-hf-to-gguf-bitnet.py --token-embedding-type q8_0|q6_k, or setup_env.py --quant-embd)";
    return "";
}

bool context_set_head_act(context &ctx, int mode) {
    if (mode != BITNET_HEAD_ACT_INT8) {
        ctx.head_int8 = nullptr;
        return true;
    }
    const int64_t n = kMaxBatch * ctx.m->hp.n_embd, block = head_act_block(ctx.m->output.type);
    try {
        ctx.head_q.assign(static_cast<size_t>(n), 0);
        ctx.head_d.assign(static_cast<size_t>(n / block), 0.0f);
        ctx.head_bsum.assign(static_cast<size_t>(n / 16), 0);
    } catch (const std::bad_alloc &) {
        return false;
    }
    ctx.head_int8 = head_int8_kernels_active();
    return true;
}

void head_int8_logits(context &ctx, const float *x, int64_t rows, float *logits) {
    const model &md = *ctx.m;
    const int64_t E = md.hp.n_embd, V = md.hp.n_vocab;
    const uint32_t type = md.output.type;
    const bool q6_k = type == GGML_Q6_K;
    quantize_head_acts(x, rows, E, head_act_block(type), ctx.head_q.data(), ctx.head_d.data(),
                       q6_k ? ctx.head_bsum.data() : nullptr);
    const head_acts acts{ctx.head_q.data(), ctx.head_d.data(), ctx.head_bsum.data()};
    const auto *w = static_cast<const uint8_t *>(md.output.data);
    const head_int8_kernel_set &hk = *ctx.head_int8;
    ctx.pool->parallel_for(V, 256, [&](int64_t r0, int64_t r1) {
        if (q6_k) hk.matmul_q6_k(w, E, r0, r1, acts, rows, logits, V);
        else hk.matmul_q8_0(w, E, r0, r1, acts, rows, logits, V);
    });
}

}  // namespace bitnet
