// Small pieces shared by the per-ISA kernel files (internal; not part of the kernel API).
//
// Everything here has internal linkage (anonymous namespace): each ISA file is compiled with its
// own -m flags, and an inline function with external linkage could be emitted with, say, AVX2
// instructions and then picked by the linker for the scalar path of a CPU without AVX2.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

namespace bitnet {
namespace {

// Blocks of 128 summed in int16 lanes before widening to int32. A maddubs lane is at most
// 2 * 3 * 128 = 768 in magnitude (even for the unused code 3), one block adds 4 of them:
// 8 blocks stay below 8 * 4 * 768 = 24576 < 32767.
constexpr int64_t kI16GroupBlocks = 8;

// Software prefetch into L2 (T1), tuning().prefetch_bytes (default 8 KiB) ahead in the weight
// stream. A GEMV tile's rows are contiguous, so tiles walk the matrix front to back; the L2
// streamer alone stops at every 4 KiB page and leaves a thread too few misses in flight.
// Measured on the 2B-4T shape, 2 threads, AVX-512 (layers only, best of 5): prefetching the next
// tile into L1 32 t/s; 8 KiB ahead into L2 39-40 t/s; 2 KiB ahead 36; 64 KiB 36; into L3 38.

// The scale of DESIGN.md section 3, from the row's max |x|, rounded as the reference rounds it:
// transformers writes `127 / absmax.clamp(min=1e-5)`, and PyTorch evaluates a scalar divided by
// a tensor as `tensor.reciprocal() * scalar`: two f32 roundings, not one division. A plain
// 127/amax differs in the last bit for ~10% of rows and then moves codes at .5 boundaries.
inline float int8_scale_from_absmax(float amax) {
    const float inv = 1.0f / std::max(amax, 1e-5f);
    return 127.0f * inv;
}

// One element of DESIGN.md section 3: one f32 multiply, round half to even, clamp.
inline int8_t quantize_one_int8(float x, float s) {
    const float v = std::nearbyint(x * s);
    return static_cast<int8_t>(std::min(std::max(v, -128.0f), 127.0f));
}

// sum c*a - sum a without signed-overflow UB (the true result always fits; the SIMD partial
// sums may wrap, which two's complement undoes).
inline int32_t sub_wrapping(int32_t x, int32_t y) {
    return static_cast<int32_t>(static_cast<uint32_t>(x) - static_cast<uint32_t>(y));
}

}  // namespace
}  // namespace bitnet
