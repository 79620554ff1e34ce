// Model loading: resolve the architecture row, read hyper-parameters from GGUF keys, check
// them against every tensor's shape and type, and bind the weights (zero-copy for I2_S).
#include "model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/dense.h"
#include "kernels/ternary.h"
#include "quant_types.h"

namespace bitnet {

namespace {

const arch_info kArchitectures[] = {
    // BitNet-b1.58-2B-4T as bitnet.cpp names it, and its earlier name.
    {"bitnet-b1.58", activation::relu2, 500000.0f, true},
    {"bitnet-25", activation::relu2, 500000.0f, true},
    // Upstream llama.cpp's name, used for 1bitLLM models (SiLU, theta 1e4) and, with a GPT-2
    // style vocabulary, for 2B-4T conversions (see resolve_arch_defaults).
    {"bitnet", activation::silu, 10000.0f, true},
};

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

    bool load_vector(const std::string &name, int64_t n, std::vector<float> *out) {
        const gguf_tensor *t = find_tensor(name, n, 0);
        if (t == nullptr) return false;
        if (!is_float_type(t->type))
            return fail("tensor '" + name + "' has type " + type_name(t->type) + ", expected F32, F16 or BF16");
        out->resize(static_cast<size_t>(n));
        row_to_f32(t->type, t->data, n, out->data());
        for (float v : *out)
            if (!std::isfinite(v)) return fail("tensor '" + name + "' contains NaN or Inf; the file is corrupt");
        return true;
    }

    bool load_dense(const std::string &name, int64_t n_in, int64_t n_out, dense_matrix *out) {
        const gguf_tensor *t = find_tensor(name, n_in, n_out);
        if (t == nullptr) return false;
        if (!is_float_type(t->type))
            return fail("tensor '" + name + "' has type " + type_name(t->type) +
                        "; this engine reads F32, F16 or BF16 embeddings and output heads");
        *out = dense_matrix{t->data, t->type, n_in, n_out};
        return true;
    }

    // I2_S is used in place. Float tensors holding t*scale (our f32/f16/bf16 outtypes) are
    // checked to be ternary and repacked, so every linear layer runs the same integer kernel.
    bool load_ternary(const std::string &name, int64_t n_in, int64_t n_out, ternary_matrix *out) {
        const gguf_tensor *t = find_tensor(name, n_in, n_out);
        if (t == nullptr) return false;
        if (n_in % kI2SBlock != 0)
            return fail("tensor '" + name + "' has rows of " + std::to_string(n_in) +
                        " elements; ternary rows must be a multiple of 128");
        out->n_in = n_in;
        out->n_out = n_out;
        const int64_t n = n_in * n_out;
        if (t->type == GGML_I2_S) {
            out->codes = t->data;
            std::memcpy(&out->scale, t->data + n / 4, sizeof(float));
            if (!std::isfinite(out->scale) || out->scale < 0)
                return fail("tensor '" + name + "' has scale " + std::to_string(out->scale) +
                            " (must be finite and >= 0); the file is corrupt");
            if (has_unused_code(t->data, n / 4))
                return fail("tensor '" + name + "' holds the unused 2-bit code 3: not a valid I2_S "
                            "tensor (an ARM-built bitnet.cpp file or a corrupt file?)");
            return true;
        }
        if (!is_float_type(t->type))
            return fail("tensor '" + name + "' has type " + type_name(t->type) +
                        ", which this engine cannot run yet (supported: I2_S, F32, F16, BF16)");
        return repack_float(name, *t, out);
    }

    static bool has_unused_code(const uint8_t *codes, int64_t n_bytes) {
        uint8_t any = 0;
        for (int64_t i = 0; i < n_bytes; ++i) any |= codes[i] & (codes[i] >> 1) & 0x55;
        return any != 0;
    }

    bool repack_float(const std::string &name, const gguf_tensor &t, ternary_matrix *out) {
        const int64_t k = out->n_in, rows = out->n_out;
        std::vector<float> row(static_cast<size_t>(k));
        std::vector<int8_t> codes(static_cast<size_t>(k * rows));
        const int64_t elem = t.type == GGML_F32 ? 4 : 2;
        float scale = 0;
        for (int64_t r = 0; r < rows; ++r) {
            row_to_f32(t.type, t.data + r * k * elem, k, row.data());
            for (float v : row) scale = std::max(scale, std::fabs(v));
        }
        for (int64_t r = 0; r < rows; ++r) {
            row_to_f32(t.type, t.data + r * k * elem, k, row.data());
            for (int64_t j = 0; j < k; ++j) {
                const float v = row[j];
                int8_t c = v == 0 ? 0 : (v == scale ? 1 : (v == -scale ? -1 : 2));
                if (c == 2)
                    return fail("tensor '" + name + "' is not ternary (values other than 0 and +-" +
                                std::to_string(scale) + "); convert the checkpoint with --outtype i2_s");
                codes[r * k + j] = c;
            }
        }
        out->owned.resize(static_cast<size_t>(k * rows / 4));
        i2s_pack(codes.data(), rows, k, out->owned.data());
        out->codes = out->owned.data();
        out->scale = scale;
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
    std::string tok_model, err;
    if (std::strcmp(arch.name, "bitnet") == 0 && file.get_string("tokenizer.ggml.model", &tok_model, &err) &&
        tok_model == "gpt2") {
        hp->act = activation::relu2;
        hp->rope_theta = 500000.0f;
    }
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
    if (hp->n_embd % hp->n_head != 0)
        return ld.fail("embedding_length " + std::to_string(hp->n_embd) + " is not divisible by head_count " +
                       std::to_string(hp->n_head));
    if (hp->n_head % hp->n_head_kv != 0)
        return ld.fail("head_count " + std::to_string(hp->n_head) + " is not divisible by head_count_kv " +
                       std::to_string(hp->n_head_kv));
    hp->head_dim = hp->n_embd / hp->n_head;
    if (!ld.get_optional_int("attention.key_length", 2, 1 << 12, &hp->head_dim)) return false;
    if (hp->head_dim % 2 != 0) return ld.fail("head dimension " + std::to_string(hp->head_dim) + " is odd");
    int64_t rope_dims = hp->head_dim;
    if (!ld.get_optional_int("rope.dimension_count", 1, 1 << 12, &rope_dims)) return false;
    if (rope_dims != hp->head_dim)
        return ld.fail("partial RoPE (rope.dimension_count " + std::to_string(rope_dims) + " != head dim " +
                       std::to_string(hp->head_dim) + ") is not supported");

    std::string act, err;
    if (f.get_string(ld.prefix + "hidden_act", &act, &err) || f.get_string("bitnet.hidden_act", &act, &err)) {
        if (act == "relu2") hp->act = activation::relu2;
        else if (act == "silu") hp->act = activation::silu;
        else return ld.fail("unsupported hidden_act " + quoted(act) + " (supported: relu2, silu)");
    } else if (!err.empty()) {
        return ld.fail(err);
    }

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

bool load_layer(loader &ld, const hparams &hp, int64_t il, layer_weights *l) {
    const std::string p = "blk." + std::to_string(il) + ".";
    const int64_t E = hp.n_embd, Q = hp.n_head * hp.head_dim, KV = hp.n_head_kv * hp.head_dim, F = hp.n_ff;
    if (!ld.load_vector(p + "attn_norm.weight", E, &l->attn_norm) ||
        !ld.load_vector(p + "ffn_norm.weight", E, &l->ffn_norm) ||
        !ld.load_ternary(p + "attn_q.weight", E, Q, &l->wq) ||
        !ld.load_ternary(p + "attn_k.weight", E, KV, &l->wk) ||
        !ld.load_ternary(p + "attn_v.weight", E, KV, &l->wv) ||
        !ld.load_ternary(p + "attn_output.weight", Q, E, &l->wo) ||
        !ld.load_ternary(p + "ffn_gate.weight", E, F, &l->w_gate) ||
        !ld.load_ternary(p + "ffn_up.weight", E, F, &l->w_up) ||
        !ld.load_ternary(p + "ffn_down.weight", F, E, &l->w_down))
        return false;
    if (hp.has_sub_norms) {
        if (!ld.load_vector(p + "attn_sub_norm.weight", Q, &l->attn_sub_norm) ||
            !ld.load_vector(p + "ffn_sub_norm.weight", F, &l->ffn_sub_norm))
            return false;
    }
    return true;
}

std::string describe(const model &m) {
    const hparams &hp = m.hp;
    const quant_type_traits *et = quant_type_find(m.token_embd.type);
    std::string s = std::string(m.arch->name) + ": " + std::to_string(hp.n_layer) + " layers, n_embd " +
                    std::to_string(hp.n_embd) + ", heads " + std::to_string(hp.n_head) + "/" +
                    std::to_string(hp.n_head_kv) + ", n_ff " + std::to_string(hp.n_ff) + ", vocab " +
                    std::to_string(hp.n_vocab) + ", " + activation_name(hp.act) + "; ternary I2_S, embedding " +
                    (et ? et->name : "?") + (m.output.data == m.token_embd.data ? " (tied head)" : " + output head");
    return s;
}

}  // namespace

const char *activation_name(activation a) { return a == activation::relu2 ? "relu2" : "silu"; }

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
    loader ld{f, arch_name + ".", error};
    if (!read_hparams(ld, *m->arch, &m->hp) || !check_vocab_arrays(ld, m->hp.n_vocab)) return nullptr;
    const hparams &hp = m->hp;

    if (!ld.load_dense("token_embd.weight", hp.n_embd, hp.n_vocab, &m->token_embd)) return nullptr;
    if (f.tensor("output.weight") != nullptr) {
        if (!ld.load_dense("output.weight", hp.n_embd, hp.n_vocab, &m->output)) return nullptr;
    } else {
        m->output = m->token_embd;
    }
    if (!ld.load_vector("output_norm.weight", hp.n_embd, &m->output_norm)) return nullptr;
    m->layers.resize(static_cast<size_t>(hp.n_layer));
    for (int64_t il = 0; il < hp.n_layer; ++il)
        if (!load_layer(ld, hp, il, &m->layers[static_cast<size_t>(il)])) return nullptr;
    for (const gguf_tensor &t : f.tensors()) m->n_weight_bytes += t.n_bytes;
    m->desc = describe(*m);
    return m;
}

}  // namespace bitnet
