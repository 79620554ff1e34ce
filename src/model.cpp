// Model loading: resolve the architecture row, read hyper-parameters from GGUF keys, check
// them against every tensor's shape and type, and bind the weights (zero-copy for canonical
// I2_S; ternary_load.cpp for the other ternary kinds, dequant.cpp for quantized heads).
#include "model.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <set>

#include "dequant.h"
#include "finite_check.h"
#include "kernels/dense.h"
#include "kernels/ternary.h"
#include "kernels/tq.h"
#include "quant_types.h"
#include "ternary_load.h"

namespace bitnet {

namespace {

// clang-format off
//  general.architecture  activation      theta      sub-norms  RoPE pairs
const arch_info kArchitectures[] = {
    // BitNet-b1.58-2B-4T as bitnet.cpp names it, and its earlier name (no activation key:
    // relu2 is implied).
    {"bitnet-b1.58",  activation::relu2, 500000.0f, true,  rope_style::neox},
    {"bitnet-25",     activation::relu2, 500000.0f, true,  rope_style::neox},
    // Upstream llama.cpp's name, used for 1bitLLM models (SiLU, theta 1e4) and, with a GPT-2
    // style vocabulary, for 2B-4T conversions (see resolve_arch_defaults).
    {"bitnet",        activation::silu,  10000.0f,  true,  rope_style::neox},
    // Ternary Llama-shaped models (Llama3-8B-1.58, Falcon3-*-1.58bit, Falcon-E): SwiGLU, no
    // sub-norms; llama.cpp's converters permute attn_q/attn_k rows for its "normal" RoPE.
    {"llama",         activation::silu,  10000.0f,  false, rope_style::normal},
    // BitNet embedding models (bitnet-embedding-0.6b / -270m; docs/embedding-models.md): a
    // Qwen3 / Gemma3 block whose every linear layer normalizes its own input (<linear>_norm_in).
    // Gemma3 adds sqrt(n_embd) embedding scale, (1 + w) norms, post-norms, GELU-tanh and a
    // sliding window on five layers of six.
    {"qwen3",         activation::silu,  1000000.0f, false, rope_style::neox,
     "_norm_in", true, true, false, false, 0.0f, 0},
    {"gemma3",        activation::gelu_tanh, 1000000.0f, false, rope_style::neox,
     "_norm_in", true, true, true, true, 1.0f, 6},
};
// clang-format on

// Sanity limits: far above any real model, low enough that a hostile header cannot make us
// allocate absurd buffers.
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxWidth = 1 << 17;
constexpr int64_t kMaxVocab = 1 << 22;
constexpr int64_t kMaxHeads = 1024;

struct loader {
    const gguf_file &file;
    std::string prefix;  // "<arch>."
    std::string *error;
    i2s_layout layout = i2s_layout::canonical;
    std::set<std::string> used;  // tensors bound so far: the file must hold no others

    bool fail(const std::string &msg) {
        *error = file.path() + ": " + msg;
        return false;
    }

    bool get_required_int(const char *key, int64_t lo, int64_t hi, int64_t *out) {
        std::string full = prefix + key, err;
        if (!file.get_int(full, out, &err)) return fail(err.empty() ? "missing key '" + full + "'" : err);
        if (*out < lo || *out > hi)
            return fail("key '" + full + "' = " + std::to_string(*out) + " is out of range [" +
                        std::to_string(lo) + ", " + std::to_string(hi) + "]");
        return true;
    }

    bool get_optional_int(const char *key, int64_t lo, int64_t hi, int64_t *out) {
        std::string full = prefix + key, err;
        int64_t v = 0;
        if (!file.get_int(full, &v, &err)) return err.empty() ? true : fail(err);
        if (v < lo || v > hi)
            return fail("key '" + full + "' = " + std::to_string(v) + " is out of range [" + std::to_string(lo) +
                        ", " + std::to_string(hi) + "]");
        *out = v;
        return true;
    }

    bool get_optional_float(const char *key, float *out) {
        std::string full = prefix + key, err;
        double v = 0;
        if (!file.get_float(full, &v, &err)) return err.empty() ? true : fail(err);
        if (!std::isfinite(v) || v <= 0) return fail("key '" + full + "' must be a positive number");
        *out = static_cast<float>(v);
        return true;
    }

    const gguf_tensor *find_tensor(const std::string &name, int64_t ne0, int64_t ne1) {
        const gguf_tensor *t = file.tensor(name);
        if (t == nullptr) {
            fail("missing tensor '" + name + "'");
            return nullptr;
        }
        used.insert(name);
        const int64_t want_dims = ne1 > 0 ? 2 : 1;
        const bool ok = static_cast<int64_t>(t->n_dims) == want_dims && t->ne[0] == ne0 &&
                        (want_dims == 1 || t->ne[1] == ne1);
        if (!ok) {
            std::string got = "[", want = "[" + std::to_string(ne0);
            for (uint32_t d = 0; d < t->n_dims; ++d) got += (d ? ", " : "") + std::to_string(t->ne[d]);
            want += want_dims == 2 ? ", " + std::to_string(ne1) + "]" : "]";
            fail("tensor '" + name + "' has shape " + got + "], expected " + want +
                 " (the hyper-parameters and the tensors disagree)");
            return nullptr;
        }
        return t;
    }

    static bool is_float_type(uint32_t type) {
        return type == GGML_F32 || type == GGML_F16 || type == GGML_BF16;
    }

    std::string type_name(uint32_t type) {
        const quant_type_traits *tr = quant_type_find(type);
        return tr ? tr->name : "id " + std::to_string(type);
    }

    bool load_vector(const std::string &name, int64_t n, std::vector<float> *out, float offset = 0) {
        const gguf_tensor *t = find_tensor(name, n, 0);
        if (t == nullptr) return false;
        if (!is_float_type(t->type))
            return fail("tensor '" + name + "' has type " + type_name(t->type) + ", expected F32, F16 or BF16");
        out->resize(static_cast<size_t>(n));
        row_to_f32(t->type, t->data, n, out->data());
        for (float &v : *out) v += offset;
        for (float v : *out)
            if (!std::isfinite(v)) return fail("tensor '" + name + "' contains NaN or Inf; the file is corrupt");
        return true;
    }

    bool non_finite(const std::string &name, int64_t bad, int64_t n_in) {
        return fail("tensor '" + name + "' contains NaN or Inf (row " + std::to_string(bad / n_in) + ", column " +
                    std::to_string(bad % n_in) + "); the file is corrupt");
    }

    // F32 / F16 / BF16, and Q8_0 / Q6_K (llama.cpp's usual head types), all read in place. A float
    // tensor is checked finite here unless the caller checks it later (check_floats false: the
    // head, checked as it is copied to huge pages).
    bool load_dense(const std::string &name, int64_t n_in, int64_t n_out, dense_matrix *out, bool check_floats = true) {
        const gguf_tensor *t = find_tensor(name, n_in, n_out);
        if (t == nullptr) return false;
        *out = dense_matrix{t->data, t->type, n_in, n_out};
        if (is_float_type(t->type)) {
            const int64_t bad = check_floats ? first_non_finite(t->type, t->data, n_in * n_out) : -1;
            return bad < 0 || non_finite(name, bad, n_in);
        }
        if (!is_widened_type(t->type))
            return fail("tensor '" + name + "' has type " + type_name(t->type) +
                        "; this engine reads F32, F16, BF16, Q8_0 or Q6_K embeddings and output heads");
        // Every weight is finite exactly when every block's f16 scale is (the rest are integers).
        if (!quantized_scales_finite(t->type, t->data, n_in * n_out))
            return fail("tensor '" + name + "' contains NaN or Inf; the file is corrupt");
        return true;
    }

    // A ternary weight of any kind we read (ternary_load.h), times the optional `<name>.scale`
    // tensor upstream llama.cpp's `bitnet` files may carry (it multiplies the layer's output).
    bool load_ternary(const std::string &name, int64_t n_in, int64_t n_out, ternary_matrix *out) {
        const gguf_tensor *t = find_tensor(name + ".weight", n_in, n_out);
        if (t == nullptr) return false;
        const std::string why = bind_ternary(*t, n_in, n_out, layout, out);
        if (!why.empty()) return fail("tensor '" + name + ".weight' " + why);
        if (file.tensor(name + ".scale") == nullptr) return true;
        std::vector<float> scale;
        if (!load_vector(name + ".scale", 1, &scale)) return false;
        out->scale *= scale[0];
        for (float &d : out->block_scales) d *= scale[0];
        return true;
    }

    // Every layer tensor of the file must be one the architecture's row asked for: a sub-norm in
    // a `llama` file, say, means another model whose math we would get wrong. (Tensors outside
    // the blocks other than RoPE frequency factors are not part of the math and are left alone.)
    bool check_no_stray_tensors(const std::string &arch) {
        for (const gguf_tensor &t : file.tensors())
            if (!used.count(t.name) && (t.name.rfind("blk.", 0) == 0 || t.name.rfind("rope_freqs", 0) == 0))
                return fail("tensor " + quoted(t.name) + " is not part of the " + quoted(arch) +
                            " architecture (a file of another model family, or a variant this engine does "
                            "not run)");
        return true;
    }
};

const arch_info *find_arch(const std::string &name) {
    for (const arch_info &a : kArchitectures)
        if (name == a.name) return &a;
    return nullptr;
}

std::string supported_arch_list() {
    std::string s;
    for (const arch_info &a : kArchitectures) s += (s.empty() ? "" : ", ") + std::string(a.name);
    return s;
}

// Defaults that depend on more than the architecture name: upstream llama.cpp writes both
// 1bitLLM models and BitNet-b1.58-2B-4T as `bitnet`; the 2B-4T vocabulary is GPT-2 style.
void resolve_arch_defaults(const gguf_file &file, const arch_info &arch, hparams *hp) {
    hp->act = arch.default_act;
    hp->rope_theta = arch.default_rope_theta;
    hp->has_sub_norms = arch.has_sub_norms;
    hp->rope = arch.rope;
    hp->has_qk_norms = arch.has_qk_norms;
    hp->has_post_norms = arch.has_post_norms;
    hp->swa_pattern = arch.default_swa_pattern;
    std::string tok_model, err;
    if (std::strcmp(arch.name, "bitnet") == 0 && file.get_string("tokenizer.ggml.model", &tok_model, &err) &&
        tok_model == "gpt2") {
        hp->act = activation::relu2;
        hp->rope_theta = 500000.0f;
    }
}

// Plain RoPE over the whole head: partial rotation and context-extension scaling would change
// the math, so they are refused rather than ignored.
bool read_rope(loader &ld, hparams *hp) {
    int64_t rope_dims = hp->head_dim;
    if (!ld.get_optional_int("rope.dimension_count", 1, 1 << 12, &rope_dims)) return false;
    if (rope_dims != hp->head_dim)
        return ld.fail("partial RoPE (rope.dimension_count " + std::to_string(rope_dims) + " != head dim " +
                       std::to_string(hp->head_dim) + ") is not supported");
    std::string scaling, err;
    if (ld.file.get_string(ld.prefix + "rope.scaling.type", &scaling, &err) && scaling != "none")
        return ld.fail("RoPE scaling " + quoted(scaling) + " is not supported (only plain RoPE)");
    return err.empty() || ld.fail(err);
}

// The FFN activation: the architecture's default unless a key names one. Ours write
// `<arch>.hidden_act`; some writers use `hidden_activation`, or `bitnet.` under another arch.
bool read_activation(loader &ld, hparams *hp) {
    const std::string keys[] = {ld.prefix + "hidden_act", ld.prefix + "hidden_activation",
                                "bitnet.hidden_act"};
    for (const std::string &key : keys) {
        std::string act, err;
        if (!ld.file.get_string(key, &act, &err)) {
            if (!err.empty()) return ld.fail(err);
            continue;
        }
        if (act == "relu2") hp->act = activation::relu2;
        else if (act == "silu") hp->act = activation::silu;
        else if (act == "gelu_pytorch_tanh" || act == "gelu_tanh") hp->act = activation::gelu_tanh;
        else return ld.fail("unsupported hidden_act " + quoted(act) + " (supported: relu2, silu, gelu_pytorch_tanh)");
        return true;
    }
    return true;
}

// The BitNet embedding families' extras (Gemma3): embedding scale, attention scale, sliding
// window (upstream llama.cpp's key names); causal attention only.
bool read_embedding_features(loader &ld, const arch_info &arch, hparams *hp) {
    hp->embd_scale = arch.scale_embeddings ? std::sqrt(static_cast<float>(hp->n_embd)) : 1.0f;
    hp->attn_scale = 1.0f / std::sqrt(static_cast<float>(hp->head_dim));
    hp->rope_theta_swa = hp->rope_theta;
    if (!ld.get_optional_float("attention.scale", &hp->attn_scale) ||
        !ld.get_optional_int("attention.sliding_window", 1, 1 << 24, &hp->n_swa) ||
        !ld.get_optional_int("attention.sliding_window_pattern", 1, kMaxLayers, &hp->swa_pattern) ||
        !ld.get_optional_float("rope.freq_base_swa", &hp->rope_theta_swa))
        return false;
    bool causal = true;
    std::string err;
    if (ld.file.get_bool(ld.prefix + "attention.causal", &causal, &err) && !causal)
        return ld.fail("bidirectional attention (attention.causal = false) is not supported");
    return err.empty() || ld.fail(err);
}

bool read_hparams(loader &ld, const arch_info &arch, hparams *hp) {
    const gguf_file &f = ld.file;
    resolve_arch_defaults(f, arch, hp);
    if (!ld.get_required_int("embedding_length", 1, kMaxWidth, &hp->n_embd) ||
        !ld.get_required_int("block_count", 1, kMaxLayers, &hp->n_layer) ||
        !ld.get_required_int("feed_forward_length", 1, kMaxWidth * 4, &hp->n_ff) ||
        !ld.get_required_int("attention.head_count", 1, kMaxHeads, &hp->n_head))
        return false;
    hp->n_head_kv = hp->n_head;
    hp->n_ctx_train = 4096;
    hp->rms_eps = 1e-5f;
    if (!ld.get_optional_int("attention.head_count_kv", 1, kMaxHeads, &hp->n_head_kv) ||
        !ld.get_optional_int("context_length", 1, 1 << 24, &hp->n_ctx_train) ||
        !ld.get_optional_float("rope.freq_base", &hp->rope_theta) ||
        !ld.get_optional_float("attention.layer_norm_rms_epsilon", &hp->rms_eps))
        return false;
    if (hp->n_embd % hp->n_head != 0 && f.find(ld.prefix + "attention.key_length") == nullptr)
        return ld.fail("embedding_length " + std::to_string(hp->n_embd) + " is not divisible by head_count " +
                       std::to_string(hp->n_head));
    if (hp->n_head % hp->n_head_kv != 0)
        return ld.fail("head_count " + std::to_string(hp->n_head) + " is not divisible by head_count_kv " +
                       std::to_string(hp->n_head_kv));
    hp->head_dim = hp->n_embd / hp->n_head;
    if (!ld.get_optional_int("attention.key_length", 2, 1 << 12, &hp->head_dim)) return false;
    if (hp->head_dim % 2 != 0) return ld.fail("head dimension " + std::to_string(hp->head_dim) + " is odd");
    int64_t value_length = hp->head_dim;
    if (!ld.get_optional_int("attention.value_length", 2, 1 << 12, &value_length)) return false;
    if (value_length != hp->head_dim)
        return ld.fail("attention.value_length " + std::to_string(value_length) + " != key_length " +
                       std::to_string(hp->head_dim) + " is not supported");
    if (!read_rope(ld, hp) || !read_activation(ld, hp) || !read_embedding_features(ld, arch, hp)) return false;
    // Per-linear input norms (hparams::has_linear_norms): Falcon-E's use_rms_norm, or the BitNet
    // embedding models' <linear>_norm_in.
    hp->has_linear_norms = f.tensor("blk.0.attn_q" + std::string(arch.linear_norm_suffix) + ".weight") != nullptr;
    if (arch.linear_norm_uses_rms_eps) hp->linear_norm_eps = hp->rms_eps;
    if (!ld.get_optional_float("linear_norm_rms_epsilon", &hp->linear_norm_eps)) return false;

    const gguf_tensor *embd = f.tensor("token_embd.weight");
    if (embd == nullptr) return ld.fail("missing tensor 'token_embd.weight'");
    hp->n_vocab = embd->n_dims == 2 ? embd->ne[1] : 0;
    if (hp->n_vocab < 1 || hp->n_vocab > kMaxVocab) return ld.fail("token_embd.weight has an invalid vocabulary size");
    int64_t vocab_key = hp->n_vocab;
    if (!ld.get_optional_int("vocab_size", 1, kMaxVocab, &vocab_key)) return false;
    if (vocab_key != hp->n_vocab)
        return ld.fail("vocab_size " + std::to_string(vocab_key) + " disagrees with token_embd.weight (" +
                       std::to_string(hp->n_vocab) + " rows)");
    return true;
}

// The tokenizer's per-token arrays are indexed by token id: each must have one entry per row of
// token_embd.weight (llama.cpp's rule), so that no id the model can produce indexes past one.
bool check_vocab_arrays(loader &ld, int64_t n_vocab) {
    static const char *const kPerTokenKeys[] = {"tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                                                "tokenizer.ggml.scores"};
    for (const char *key : kPerTokenKeys) {
        const gguf_kv *kv = ld.file.find(key);
        if (kv == nullptr) continue;
        if (kv->type != gguf_value_type::ARRAY) return ld.fail("key '" + std::string(key) + "' is not an array");
        if (kv->n_elements != static_cast<uint64_t>(n_vocab))
            return ld.fail("key '" + std::string(key) + "' has " + std::to_string(kv->n_elements) +
                           " entries but token_embd.weight has " + std::to_string(n_vocab) +
                           " rows (one per token)");
    }
    return true;
}

// The ternary linear layers of a block: GGUF name, member, and input / output width.
enum width { kEmbd, kQ, kKV, kFF };
struct linear_slot {
    const char *name;
    ternary_matrix layer_weights::*member;
    width in, out;
};
const linear_slot kLinears[] = {
    {"attn_q", &layer_weights::wq, kEmbd, kQ},          {"attn_k", &layer_weights::wk, kEmbd, kKV},
    {"attn_v", &layer_weights::wv, kEmbd, kKV},         {"attn_output", &layer_weights::wo, kQ, kEmbd},
    {"ffn_gate", &layer_weights::w_gate, kEmbd, kFF},   {"ffn_up", &layer_weights::w_up, kEmbd, kFF},
    {"ffn_down", &layer_weights::w_down, kFF, kEmbd},
};

int64_t width_of(const hparams &hp, width w) {
    const int64_t sizes[] = {hp.n_embd, hp.n_head * hp.head_dim, hp.n_head_kv * hp.head_dim, hp.n_ff};
    return sizes[w];
}

bool load_layer(loader &ld, const arch_info &arch, const hparams &hp, int64_t il, layer_weights *l) {
    const std::string p = "blk." + std::to_string(il) + ".";
    const float off = arch.norm_weight_offset;  // the block's own norms; linear input norms are plain
    if (!ld.load_vector(p + "attn_norm.weight", hp.n_embd, &l->attn_norm, off) ||
        !ld.load_vector(p + "ffn_norm.weight", hp.n_embd, &l->ffn_norm, off))
        return false;
    if (hp.has_qk_norms && (!ld.load_vector(p + "attn_q_norm.weight", hp.head_dim, &l->attn_q_norm, off) ||
                            !ld.load_vector(p + "attn_k_norm.weight", hp.head_dim, &l->attn_k_norm, off)))
        return false;
    if (hp.has_post_norms && (!ld.load_vector(p + "post_attention_norm.weight", hp.n_embd, &l->post_attn_norm, off) ||
                              !ld.load_vector(p + "post_ffw_norm.weight", hp.n_embd, &l->post_ffw_norm, off)))
        return false;
    for (const linear_slot &s : kLinears) {
        ternary_matrix &w = l->*s.member;
        const int64_t n_in = width_of(hp, s.in);
        if (!ld.load_ternary(p + s.name, n_in, width_of(hp, s.out), &w)) return false;
        if (hp.has_linear_norms &&
            !ld.load_vector(p + s.name + arch.linear_norm_suffix + ".weight", n_in, &w.input_norm))
            return false;
    }
    if (hp.has_sub_norms) {
        if (!ld.load_vector(p + "attn_sub_norm.weight", width_of(hp, kQ), &l->attn_sub_norm) ||
            !ld.load_vector(p + "ffn_sub_norm.weight", hp.n_ff, &l->ffn_sub_norm))
            return false;
    }
    return true;
}

// "ternary I2_S", "ternary TQ2_0 (repacked to I2_S), some with per-block scales", ...: how the
// file stores its ternary weights (layer 0's) and whether any kept one scale per block.
std::string ternary_desc(const model &m) {
    const gguf_tensor *t = m.file->tensor("blk.0.attn_q.weight");
    const quant_type_traits *tr = t ? quant_type_find(t->type) : nullptr;
    std::string s = std::string("ternary ") + (tr ? tr->name : "?");
    if (t && t->type != GGML_I2_S) s += " (repacked to I2_S)";
    for (const layer_weights &l : m.layers)
        for (const linear_slot &slot : kLinears)
            if (!(l.*slot.member).block_scales.empty()) return s + ", some with per-block scales";
    return s;
}

std::string describe(const model &m, const std::string &note) {
    const hparams &hp = m.hp;
    auto type_of = [](const dense_matrix &d) {
        const quant_type_traits *t = quant_type_find(d.type);
        return std::string(t ? t->name : "?");
    };
    std::string s = std::string(m.arch->name) + ": " + std::to_string(hp.n_layer) + " layers, n_embd " +
                    std::to_string(hp.n_embd) + ", heads " + std::to_string(hp.n_head) + "/" +
                    std::to_string(hp.n_head_kv) + ", n_ff " + std::to_string(hp.n_ff) + ", vocab " +
                    std::to_string(hp.n_vocab) + ", " + activation_name(hp.act) + "; " + ternary_desc(m) +
                    ", embedding " + type_of(m.token_embd);
    s += m.output.data == m.token_embd.data ? " (tied head)" : " + output head " + type_of(m.output);
    if (hp.has_linear_norms) s += "; RMSNorm on every linear layer's input";
    return note.empty() ? s : s + "; " + note;
}

}  // namespace

const char *activation_name(activation a) {
    return a == activation::relu2 ? "relu2" : a == activation::silu ? "silu" : "gelu_pytorch_tanh";
}

std::unique_ptr<model> model_load(const std::string &path, std::string *error) {
    auto m = std::make_unique<model>();
    m->file = gguf_file::open(path, error);
    if (!m->file) return nullptr;
    const gguf_file &f = *m->file;

    std::string arch_name, err;
    if (!f.get_string("general.architecture", &arch_name, &err)) {
        *error = path + ": " + (err.empty() ? "missing key 'general.architecture'" : err);
        return nullptr;
    }
    m->arch = find_arch(arch_name);
    if (m->arch == nullptr) {
        *error = path + ": unknown architecture " + quoted(arch_name) + " (supported: " + supported_arch_list() + ")";
        return nullptr;
    }
    loader ld{f, arch_name + ".", error, i2s_layout::canonical, {}};
    if (!read_hparams(ld, *m->arch, &m->hp) || !check_vocab_arrays(ld, m->hp.n_vocab)) return nullptr;
    const hparams &hp = m->hp;
    std::string note;
    ld.layout = detect_i2s_layout(f, hp, &note, &err);
    if (!err.empty()) {
        ld.fail(err);
        return nullptr;
    }

    // Streamed weights go to huge pages (weight_arena.h); BITNET_WEIGHTS=mapped keeps them in the
    // file mapping (less load time, slower decode). Failing to allocate is not an error. A moved
    // float head is checked for NaN / Inf during the copy, not before it.
    const char *where = std::getenv("BITNET_WEIGHTS");
    const bool relocate = where == nullptr || std::strcmp(where, "mapped") != 0;
    const bool tied = f.tensor("output.weight") == nullptr;
    const char *head_name = tied ? "token_embd.weight" : "output.weight";
    if (!ld.load_dense("token_embd.weight", hp.n_embd, hp.n_vocab, &m->token_embd, !(tied && relocate))) return nullptr;
    if (!tied) {
        if (!ld.load_dense("output.weight", hp.n_embd, hp.n_vocab, &m->output, !relocate)) return nullptr;
    } else {
        m->output = m->token_embd;
    }
    if (!ld.load_vector("output_norm.weight", hp.n_embd, &m->output_norm, m->arch->norm_weight_offset)) return nullptr;
    m->layers.resize(static_cast<size_t>(hp.n_layer));
    for (int64_t il = 0; il < hp.n_layer; ++il)
        if (!load_layer(ld, *m->arch, hp, il, &m->layers[static_cast<size_t>(il)])) return nullptr;
    if (!ld.check_no_stray_tensors(arch_name)) return nullptr;
    for (const gguf_tensor &t : f.tensors()) m->n_weight_bytes += t.n_bytes;
    m->desc = describe(*m, note);
    if (!relocate) return m;
    const void *head_in_file = m->output.data;
    int64_t bad = -1;
    if (!relocate_streamed_weights(*m, &bad) || m->output.data == head_in_file)  // not moved: check in place
        bad = first_non_finite(m->output.type, m->output.data, hp.n_embd * hp.n_vocab);
    if (bad >= 0 && !ld.non_finite(head_name, bad, hp.n_embd)) return nullptr;
    return m;
}

}  // namespace bitnet
