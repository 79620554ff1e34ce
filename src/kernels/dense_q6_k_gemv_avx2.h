// The AVX2 Q6_K head for one activation row (decode), bit for bit the reference's order
// (float_order.h) but with no sign-extending shuffle per 8 weights. Included by dense_avx2.cpp
// inside its anonymous namespace, after f16_scale (and after <vector>).
//
// The exact products need every weight as f32 (w = D q, D = d * sc, q = u - 32 with u in 0..63).
// Per 32 weights (a quarter of a half super-block, whose 6-bit values u sit in 32 bytes, see
// load_q6_k) the byte-per-element layout is read as 8 dwords: field b (byte b) of dword i is
// element 4i + b, and
//   t_b = cvt(field b)                 a shift and / or a mask (clang makes fields 1 and 2 one
//                                      vpshufb each), then vcvtdq2ps: u exactly
//   w_b = fma(t_b, S, C)               S = D, C = -32 D per lane: D u - 32 D = D q, exact since
//                                      D q has at most 18 + 5 significant bits, so one rounding
//                                      of the exact value gives the reference's w
//   acc_b = fma(w_b, xp_b, acc_b)
// Lanes 0-3 of field b hold elements b, b+4, b+8, b+12 of the quarter's first 16 (the even
// chunk, chain 0), lanes 4-7 the same of its odd chunk (chain 1): each (chain, reference lane)
// pair is one lane of one accumulator and gets its elements in ascending order, as the
// reference adds them. x is permuted once per call to match (xp), the four accumulators are
// transposed back at the end, and the sub-block scales S, C are [D(2g) x4 | D(2g+1) x4] from one
// vpermps each. That leaves per 8 weights about 5-6 vector operations (the widening path of
// load_q6_k needs 7-8), and no spills.
//
// The empty asm statements fix the schedule: without them clang widens every quarter of a
// super-block first and keeps the 32 vectors on the stack (1.3-1.4x slower), or turns one
// vpermps into two shuffles.
#pragma once

// x reordered to match the fields: xp[32c + 8b + i] = x[32c + 4i + b] (k a multiple of 32).
inline void q6_k_fields_x(const float *x, int64_t k, float *xp) {
    for (int64_t c = 0; c < k; c += 32)
        for (int b = 0; b < 4; ++b)
            for (int i = 0; i < 8; ++i) xp[c + 8 * b + i] = x[c + 4 * i + b];
}

// One row against xp: the reference's float, from its two chains of 16 lanes.
inline float q6_k_fields_row(const uint8_t *row, int64_t k, const float *xp, int64_t ahead) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(0x30), byte0 = _mm256_set1_epi32(0xff);
    for (int64_t j = 0; j < k; j += 256) {
        const uint8_t *sb = row + j / 256 * 210;
        for (int c = 0; c < 256; c += 64)  // the super-block `ahead` bytes on (about 4 lines per 210 bytes)
            _mm_prefetch(reinterpret_cast<const char *>(sb + ahead + c), _MM_HINT_T1);
        // D and -32 D for the 16 sub-blocks, rounded as dequant.cpp rounds d * sc (exact anyway).
        const __m256 d = _mm256_set1_ps(f16_scale(sb + 208)), m32 = _mm256_set1_ps(-32.0f);
        const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i *>(sb + 192));
        const __m256 dsc[2] = {_mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc))),
                               _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(sc, sc))))};
        const __m256 csc[2] = {_mm256_mul_ps(m32, dsc[0]), _mm256_mul_ps(m32, dsc[1])};
        for (int h = 0; h < 2; ++h) {
            const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(sb + 64 * h));
            const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(sb + 64 * h + 32));
            const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(sb + 128 + 32 * h));
            // The u of quarters 0..3 of this half (load_q6_k's bit layout).
            const __m256i u[4] = {
                _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m2)),
                _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m2)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), _mm256_and_si256(qh, m2)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                _mm256_and_si256(_mm256_srli_epi16(qh, 2), m2)),
            };
            __m256i pick = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);  // sub-blocks 2g, 2g + 1
            asm("" : "+x"(pick));
            for (int g = 0; g < 4; ++g) {
                if (g > 0) pick = _mm256_add_epi32(pick, _mm256_set1_epi32(2));
                const __m256 s = _mm256_permutevar8x32_ps(dsc[h], pick), c = _mm256_permutevar8x32_ps(csc[h], pick);
                const float *xq = xp + j + 128 * h + 32 * g;
                const __m256 t0 = _mm256_cvtepi32_ps(_mm256_and_si256(u[g], byte0));
                const __m256 t1 = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(u[g], 8), byte0));
                const __m256 t2 = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(u[g], 16), byte0));
                const __m256 t3 = _mm256_cvtepi32_ps(_mm256_srli_epi32(u[g], 24));
                a0 = _mm256_fmadd_ps(_mm256_fmadd_ps(t0, s, c), _mm256_loadu_ps(xq), a0);
                a1 = _mm256_fmadd_ps(_mm256_fmadd_ps(t1, s, c), _mm256_loadu_ps(xq + 8), a1);
                a2 = _mm256_fmadd_ps(_mm256_fmadd_ps(t2, s, c), _mm256_loadu_ps(xq + 16), a2);
                a3 = _mm256_fmadd_ps(_mm256_fmadd_ps(t3, s, c), _mm256_loadu_ps(xq + 24), a3);
                asm volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3));  // one quarter at a time
            }
        }
    }
    // a_b lane i: chain i / 4, reference lane 4 (i % 4) + b. A 4x4 transpose in each 128-bit half
    // gives n_m = [chain 0 lanes 4m .. 4m+3 | chain 1 lanes 4m .. 4m+3].
    const __m256 t01l = _mm256_unpacklo_ps(a0, a1), t01h = _mm256_unpackhi_ps(a0, a1);
    const __m256 t23l = _mm256_unpacklo_ps(a2, a3), t23h = _mm256_unpackhi_ps(a2, a3);
    auto pd = [](__m256 v) { return _mm256_castps_pd(v); };
    const __m256 n0 = _mm256_castpd_ps(_mm256_unpacklo_pd(pd(t01l), pd(t23l)));
    const __m256 n1 = _mm256_castpd_ps(_mm256_unpackhi_pd(pd(t01l), pd(t23l)));
    const __m256 n2 = _mm256_castpd_ps(_mm256_unpacklo_pd(pd(t01h), pd(t23h)));
    const __m256 n3 = _mm256_castpd_ps(_mm256_unpackhi_pd(pd(t01h), pd(t23h)));
    // Chain 0 + chain 1, lane by lane: lanes 0-7, then 8-15; then float_order.h's tree.
    const __m256 lo = _mm256_add_ps(_mm256_permute2f128_ps(n0, n1, 0x20), _mm256_permute2f128_ps(n0, n1, 0x31));
    const __m256 hi = _mm256_add_ps(_mm256_permute2f128_ps(n2, n3, 0x20), _mm256_permute2f128_ps(n2, n3, 0x31));
    return sum_lanes16(lo, hi);
}

// y[r] for rows r0 .. r1 of a Q6_K matrix with K = k (a multiple of 256), one activation row.
inline void gemv_q6_k_fields(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const float *x, float *y) {
    thread_local std::vector<float> xp;
    if (static_cast<int64_t>(xp.size()) < k) xp.resize(static_cast<size_t>(k));
    q6_k_fields_x(x, k, xp.data());
    const int64_t row_bytes = k / 256 * 210, ahead = tuning().head_prefetch_bytes;
    for (int64_t r = r0; r < r1; ++r) y[r] = q6_k_fields_row(w + r * row_bytes, k, xp.data(), ahead);
}
