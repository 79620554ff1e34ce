// The decode (one activation row) path of the dense sets' matmul<Load>: one or two weight rows
// per tile (tuning().head_gemv_rows: one memory stream, or two FMA chains side by side), then
// the odd row alone. Included by dense_avx2.cpp, dense_avx512.cpp and dense_neon.cpp inside
// their anonymous namespace, after their tile<Load, R, M>.
#pragma once

template <class Load>
void gemv_rows(const uint8_t *w, int64_t k, int64_t r0, int64_t r1, const float *x, float *y, int64_t ldy) {
    int64_t r = r0;
    if (tuning().head_gemv_rows == 2)
        for (; r + 2 <= r1; r += 2) tile<Load, 2, 1>(w, k, r, x, y, ldy);
    for (; r < r1; ++r) tile<Load, 1, 1>(w, k, r, x, y, ldy);
}
