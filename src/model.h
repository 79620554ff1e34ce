// The model: architecture table, hyper-parameters and weights bound to the mapped GGUF file.
// Architectures are data: a row of kArchitectures says which keys, tensors, activation and
// defaults a family uses; the forward pass reads the row, never the family's name.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gguf.h"
#include "weight_arena.h"

namespace bitnet {

enum class activation { relu2, silu, gelu_tanh };

// Which dimensions RoPE rotates together: neox pairs j and j + head_dim/2 (rotate-half, as the
// Hugging Face models compute it); normal pairs 2j and 2j+1, for files whose writer permuted the
// rows of attn_q/attn_k to suit it (llama.cpp's `llama` architecture).
enum class rope_style { neox, normal };

struct arch_info {
    const char *name;          // general.architecture
    activation default_act;    // used when the file has no `<arch>.hidden_act`
    float default_rope_theta;  // used when the file has no `<arch>.rope.freq_base`
    bool has_sub_norms;        // attn_sub_norm / ffn_sub_norm tensors
    rope_style rope;
    // The families below (BitNet embedding models on Qwen3 / Gemma3 backbones) add these; a row
    // that names none of them gets the BitNet block above.
    const char *linear_norm_suffix = ".input_norm";  // per-linear input norm: <linear><suffix>.weight
    bool linear_norm_uses_rms_eps = false;  // its epsilon is the model's rms_eps (else 1e-6 / its own key)
    bool has_qk_norms = false;              // attn_q_norm / attn_k_norm: RMSNorm per head before RoPE
    bool has_post_norms = false;            // post_attention_norm / post_ffw_norm on each block's output
    bool scale_embeddings = false;          // token embeddings times sqrt(n_embd)
    float norm_weight_offset = 0;           // Gemma's RMSNorm multiplies by (offset + w)
    int64_t default_swa_pattern = 0;        // every N-th layer global, the others sliding (0: none)
};

struct hparams {
    int64_t n_vocab = 0, n_ctx_train = 0, n_embd = 0, n_layer = 0;
    int64_t n_head = 0, n_head_kv = 0, head_dim = 0, n_ff = 0;
    float rope_theta = 0, rms_eps = 0;
    activation act = activation::relu2;
    bool has_sub_norms = true;
    rope_style rope = rope_style::neox;
    // Falcon-E's use_rms_norm: an RMSNorm (own weight, this epsilon) on the input of every
    // ternary linear layer, before its activations are quantized.
    bool has_linear_norms = false;
    float linear_norm_eps = 1e-6f;
    bool has_qk_norms = false, has_post_norms = false;
    float embd_scale = 1.0f;  // token embeddings are multiplied by this
    float attn_scale = 0;     // softmax(q k^T * attn_scale); 1/sqrt(head_dim) unless a key says
    // Sliding-window attention (Gemma3): layer il attends to the last n_swa keys unless
    // (il + 1) % swa_pattern == 0; such layers use RoPE base rope_theta_swa. n_swa 0: none.
    int64_t n_swa = 0, swa_pattern = 0;
    float rope_theta_swa = 0;
    bool layer_is_swa(int64_t il) const { return n_swa > 0 && swa_pattern > 0 && (il + 1) % swa_pattern != 0; }
};

// A ternary matrix of n_out rows by n_in columns, in I2_S codes (DESIGN section 2) with one
// f32 scale. Points into the mapped file, or into `owned` when it had to be repacked (TQ1_0 /
// TQ2_0, bitnet.cpp's ARM I2_S layout, float tensors).
// Rows are stored k_pad >= n_in codes long (k_pad a multiple of 128, the kernels' block): a row
// whose length is not a multiple of 128 ends in zero weights, and the quantized activations in
// zeros (forward.cpp), which add nothing. The padding exists only in memory, never in a file.
struct ternary_matrix {
    const uint8_t *codes = nullptr;
    int64_t n_in = 0, n_out = 0, k_pad = 0;
    float scale = 0;
    std::vector<uint8_t> owned;
    // A TQ tensor whose non-zero blocks have different scales: one per 256 weights of each row
    // (row r, block b at r * n_in/256 + b), used instead of `scale` (kernels/tq.h). Empty otherwise.
    std::vector<float> block_scales;
    // The RMSNorm weight on this layer's input (hparams::has_linear_norms); empty when none.
    std::vector<float> input_norm;
};

// A high-precision matrix: n_out rows of n_in, F32 / F16 / BF16 / Q8_0 / Q6_K as stored.
struct dense_matrix {
    const void *data = nullptr;
    uint32_t type = 0;
    int64_t n_in = 0, n_out = 0;
};

struct layer_weights {
    std::vector<float> attn_norm, attn_sub_norm, ffn_norm, ffn_sub_norm;
    std::vector<float> attn_q_norm, attn_k_norm, post_attn_norm, post_ffw_norm;  // hparams flags say which
    ternary_matrix wq, wk, wv, wo, w_gate, w_up, w_down;
};

struct model {
    std::unique_ptr<gguf_file> file;
    const arch_info *arch = nullptr;
    hparams hp;
    dense_matrix token_embd;
    dense_matrix output;  // the lm_head: token_embd itself when tied
    std::vector<float> output_norm;
    std::vector<layer_weights> layers;
    std::string desc;
    uint64_t n_weight_bytes = 0;
    std::vector<std::string> meta_json_cache;  // keeps bitnet_model_meta_json() strings alive
    std::unique_ptr<weight_arena> arena;       // the ternary weights, when moved out of the map
};

// Load and validate; nullptr with *error set on failure.
std::unique_ptr<model> model_load(const std::string &path, std::string *error);

const char *activation_name(activation a);

}  // namespace bitnet
