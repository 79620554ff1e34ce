// The loop that the vector attention sets (attention_avx2.cpp, attention_avx512.cpp) run around
// their own register tiles: all query heads of one KV head, for several consecutive rows of one
// sequence (dense.h: attend_rows). Included by each ISA's file, instantiated there with that file's
// tiles, so it is compiled with that file's flags.
//
//   for each block of Tiles::key_block keys: transpose it once, then score it against every query
//     that sees it, Tiles::queries queries per tile;
//   softmax each query's scores (padded to whole key blocks, the padding zeroed);
//   weighted values, Tiles::queries queries per tile.
//
// Tiles provides: key_block, queries (<= 4); transpose_keys(k, stride, kb, n, hd, kt);
// scores<NQ>(q[], kt, hd, scale, s[]); softmax(s, n, n_pad); values<NQ>(w[], v, stride, n, hd, out[]).
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace bitnet {

// The queries of a call, row-major: query j is head j % group of row j / group.
struct attention_query_rows {
    const float *base;
    int64_t row_stride, group, hd;
    const float *at(int64_t j) const { return base + (j / group) * row_stride + (j % group) * hd; }
};

// f(std::integral_constant<int, nq>) for nq in 1..4: a tile's query count as a template argument.
template <class F>
void with_query_count(int64_t nq, F &&f) {
    switch (nq) {
        case 4: f(std::integral_constant<int, 4>{}); break;
        case 3: f(std::integral_constant<int, 3>{}); break;
        case 2: f(std::integral_constant<int, 2>{}); break;
        default: f(std::integral_constant<int, 1>{}); break;
    }
}

template <class Tiles>
void attend_rows_tiled(const float *q, const float *k, const float *v, int64_t stride, int64_t hd, float scale,
                       int64_t n_rows, int64_t row_stride, int64_t group, const int64_t *n_keys, float *out) {
    constexpr int64_t kb_size = Tiles::key_block, tile = Tiles::queries;
    static_assert(tile >= 1 && tile <= 4, "with_query_count covers 1..4 queries per tile");
    const attention_query_rows qs{q, row_stride, group, hd}, outs{out, row_stride, group, hd};
    const int64_t n_q = n_rows * group;
    int64_t most = 0;
    for (int64_t i = 0; i < n_rows; ++i) most = std::max(most, n_keys[i]);
    const int64_t n_pad = (most + kb_size - 1) / kb_size * kb_size;
    thread_local std::vector<float> scratch;
    scratch.resize(static_cast<size_t>(n_q * n_pad + hd * kb_size));
    float *scores = scratch.data(), *kt = scores + n_q * n_pad;
    const auto keys_of = [&](int64_t j) { return n_keys[j / group]; };

    // Scores, key block by key block: the block is transposed once for every query that sees it.
    for (int64_t kb = 0; kb < most; kb += kb_size) {
        Tiles::transpose_keys(k, stride, kb, std::min<int64_t>(kb_size, most - kb), hd, kt);
        for (int64_t j = 0; j < n_q; j += tile) {
            const int64_t nq = std::min<int64_t>(tile, n_q - j);
            const float *qp[tile];
            float *sp[tile];
            bool any = false;
            for (int64_t t = 0; t < nq; ++t) {
                qp[t] = qs.at(j + t);
                sp[t] = scores + (j + t) * n_pad + kb;
                any = any || keys_of(j + t) > kb;
            }
            if (!any) continue;  // causal: these queries see none of this block
            with_query_count(nq, [&](auto n) { Tiles::template scores<decltype(n)::value>(qp, kt, hd, scale, sp); });
        }
    }
    for (int64_t j = 0; j < n_q; ++j) Tiles::softmax(scores + j * n_pad, keys_of(j), n_pad);

    // Weighted values.
    for (int64_t j = 0; j < n_q; j += tile) {
        const int64_t nq = std::min<int64_t>(tile, n_q - j);
        const float *wp[tile];
        float *op[tile];
        int64_t n = 0;
        for (int64_t t = 0; t < nq; ++t) {
            wp[t] = scores + (j + t) * n_pad;
            op[t] = const_cast<float *>(outs.at(j + t));
            n = std::max(n, keys_of(j + t));
        }
        with_query_count(nq, [&](auto c) { Tiles::template values<decltype(c)::value>(wp, v, stride, n, hd, op); });
    }
}

}  // namespace bitnet
