// Telling bitnet.cpp's ARM I2_S layout (64-element blocks) from the canonical one (128), which
// take the same bytes and carry no marker in the file.
//
// The two readings differ only in which column of a row a 2-bit code lands in: reading one
// layout as the other permutes the columns inside every 128-column chunk (a quarter of them
// stay put). A trained model's columns are not interchangeable: the per-column density of
// non-zero weights of a matrix follows quantities indexed the same way elsewhere in the file,
// read in the right order:
//   attn_q/k/v and ffn_gate/up columns   <->  attn_norm / ffn_norm weights (the input channel),
//   attn_output columns                  <->  attn_sub_norm, and the density of attn_v's rows,
//   ffn_down columns                     <->  ffn_sub_norm, and the density of ffn_gate/up's rows.
// For each such pair we take N * r^2 (r the correlation, N the columns), ~chi^2(1) when the two
// are unrelated, under both readings, over the first kProbeLayers layers. The ARM reading wins
// only by a wide margin (4x, and far above the unrelated level): a file without such structure
// (random weights) keeps the canonical layout, the published format.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/dense.h"
#include "quant_types.h"
#include "ternary_load.h"

namespace bitnet {

namespace {

constexpr int64_t kProbeLayers = 2;
using profile = std::vector<double>;

bool is_i2s_matrix(const gguf_tensor *t) {
    return t != nullptr && t->type == GGML_I2_S && t->n_dims == 2 && t->ne[0] % 128 == 0;
}

// Non-zero count of every column, read as canonical and as ARM blocks. Both readings put the four
// codes of byte j in four columns; only which ones differs. So the codes are counted per (byte,
// code slot) in one vectorizable pass, and the counts placed in columns afterwards.
void column_density(const gguf_tensor &t, profile *canonical, profile *arm64) {
    const int64_t k = t.ne[0], row_bytes = k / 4;
    std::vector<int32_t> slot[4];  // slot[s][j]: non-zero codes in bits 6-2s..7-2s of byte j
    for (auto &v : slot) v.assign(static_cast<size_t>(row_bytes), 0);
    for (int64_t r = 0; r < t.ne[1]; ++r) {
        const uint8_t *row = t.data + r * row_bytes;
        for (int s = 0; s < 4; ++s) {
            int32_t *count = slot[s].data();
            const int shift = 6 - 2 * s;
            for (int64_t j = 0; j < row_bytes; ++j) count[j] += ((row[j] >> shift) & 3) != 1;  // code 1: zero
        }
    }
    canonical->assign(static_cast<size_t>(k), 0.0);
    arm64->assign(static_cast<size_t>(k), 0.0);
    for (int64_t j = 0; j < row_bytes; ++j)
        for (int s = 0; s < 4; ++s) {
            const double n = slot[s][static_cast<size_t>(j)];
            (*canonical)[static_cast<size_t>((j / 32) * 128 + j % 32 + 32 * s)] = n;
            (*arm64)[static_cast<size_t>((j / 16) * 64 + j % 16 + 16 * s)] = n;
        }
}

// Non-zero count of every row (the same under both readings).
profile row_density(const gguf_tensor &t) {
    const int64_t row_bytes = t.ne[0] / 4;
    profile out(static_cast<size_t>(t.ne[1]));
    for (int64_t r = 0; r < t.ne[1]; ++r) {
        const uint8_t *row = t.data + r * row_bytes;
        int32_t n = 0;
        for (int64_t j = 0; j < row_bytes; ++j)
            for (int s = 0; s < 4; ++s) n += ((row[j] >> (2 * s)) & 3) != 1;
        out[static_cast<size_t>(r)] = n;
    }
    return out;
}

// |weight| of a norm vector, or an empty profile if it is missing or not a float vector.
profile norm_profile(const gguf_file &f, const std::string &name) {
    const gguf_tensor *t = f.tensor(name);
    const bool is_float = t && (t->type == GGML_F32 || t->type == GGML_F16 || t->type == GGML_BF16);
    if (!is_float || t->n_dims != 1) return {};
    std::vector<float> v(static_cast<size_t>(t->ne[0]));
    row_to_f32(t->type, t->data, t->ne[0], v.data());
    profile out(v.size());
    for (size_t i = 0; i < v.size(); ++i) out[i] = std::fabs(v[i]);
    return out;
}

double correlation(const profile &a, const profile &b) {
    const double n = static_cast<double>(a.size());
    double ma = 0, mb = 0;
    for (size_t i = 0; i < a.size(); ++i) ma += a[i], mb += b[i];
    ma /= n, mb /= n;
    double sab = 0, saa = 0, sbb = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        sab += (a[i] - ma) * (b[i] - mb);
        saa += (a[i] - ma) * (a[i] - ma);
        sbb += (b[i] - mb) * (b[i] - mb);
    }
    return saa > 0 && sbb > 0 ? sab / std::sqrt(saa * sbb) : NAN;
}

struct evidence {
    double canonical = 0, arm64 = 0;  // sums of N r^2 under each reading
    int pairs = 0;

    // One matrix's columns against reference profiles indexed by its input channel.
    void add(const gguf_tensor *t, const std::vector<profile> &refs) {
        if (!is_i2s_matrix(t)) return;
        profile can, arm;
        column_density(*t, &can, &arm);
        for (const profile &ref : refs) {
            if (ref.size() != can.size()) continue;
            const double rc = correlation(ref, can), ra = correlation(ref, arm);
            if (!std::isfinite(rc) || !std::isfinite(ra)) continue;
            const double n = static_cast<double>(ref.size());
            canonical += n * rc * rc;
            arm64 += n * ra * ra;
            ++pairs;
        }
    }
};

// Density of the rows producing each input channel of attn_output: v row (h / group) * hd + d
// feeds column h * hd + d.
profile v_rows_per_output_column(const gguf_tensor &v, const hparams &hp) {
    const profile rows = row_density(v);
    const int64_t group = hp.n_head / hp.n_head_kv, hd = hp.head_dim;
    if (static_cast<int64_t>(rows.size()) != hp.n_head_kv * hd) return {};  // shapes are checked later
    profile out(static_cast<size_t>(hp.n_head * hd));
    for (int64_t h = 0; h < hp.n_head; ++h)
        for (int64_t d = 0; d < hd; ++d)
            out[static_cast<size_t>(h * hd + d)] = rows[static_cast<size_t>(h / group * hd + d)];
    return out;
}

void gather_layer(const gguf_file &f, const hparams &hp, int64_t il, evidence *ev) {
    const std::string p = "blk." + std::to_string(il) + ".";
    auto tensor = [&](const char *name) { return f.tensor(p + name + ".weight"); };
    const profile attn_norm = norm_profile(f, p + "attn_norm.weight");
    const profile ffn_norm = norm_profile(f, p + "ffn_norm.weight");
    for (const char *name : {"attn_q", "attn_k", "attn_v"}) ev->add(tensor(name), {attn_norm});
    for (const char *name : {"ffn_gate", "ffn_up"}) ev->add(tensor(name), {ffn_norm});
    std::vector<profile> o_refs = {norm_profile(f, p + "attn_sub_norm.weight")};
    if (is_i2s_matrix(tensor("attn_v"))) o_refs.push_back(v_rows_per_output_column(*tensor("attn_v"), hp));
    ev->add(tensor("attn_output"), o_refs);
    std::vector<profile> down_refs = {norm_profile(f, p + "ffn_sub_norm.weight")};
    const gguf_tensor *gate = tensor("ffn_gate"), *up = tensor("ffn_up");
    if (is_i2s_matrix(gate) && is_i2s_matrix(up)) {
        profile rows = row_density(*gate);
        const profile up_rows = row_density(*up);
        for (size_t i = 0; i < rows.size() && i < up_rows.size(); ++i) rows[i] += up_rows[i];
        down_refs.push_back(rows);
    }
    ev->add(tensor("ffn_down"), down_refs);
}

}  // namespace

i2s_layout detect_i2s_layout(const gguf_file &f, const hparams &hp, std::string *note, std::string *error) {
    note->clear();
    if (const char *forced = std::getenv("BITNET_I2S_LAYOUT")) {
        if (std::strcmp(forced, "128") == 0) return i2s_layout::canonical;
        if (std::strcmp(forced, "64") == 0) {
            *note = "I2_S read as bitnet.cpp's ARM layout (BITNET_I2S_LAYOUT=64), repacked";
            return i2s_layout::arm64;
        }
        *error = "BITNET_I2S_LAYOUT must be 128 or 64, not " + quoted(forced);
        return i2s_layout::canonical;
    }
    evidence ev;
    for (int64_t il = 0; il < std::min(hp.n_layer, kProbeLayers); ++il) gather_layer(f, hp, il, &ev);
    const double unrelated = ev.pairs + 20.0 * std::sqrt(2.0 * ev.pairs) + 30.0;
    if (ev.pairs > 0 && ev.arm64 > 4.0 * ev.canonical && ev.arm64 > unrelated) {
        *note = "I2_S read as bitnet.cpp's ARM layout (64-element blocks; the weights' structure says so), "
                "repacked";
        return i2s_layout::arm64;
    }
    return i2s_layout::canonical;
}

}  // namespace bitnet
