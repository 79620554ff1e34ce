// The order of the float operations that every dense kernel set follows (DESIGN section 3: all
// sets give the scalar reference's bits). The reference is defined as what the widest SIMD code
// does naturally, written out in scalar form here; the other sets reproduce it lane for lane.
//
//   lane sums (head matmul, softmax denominator): element j of a sum goes to lane j % 16 (and,
//     for the head, to chain (j / 16) % 2: two chains of alternating 16-element chunks), then the
//     16 lanes are added as a halving tree: l[i] += l[i + 8], l[i] += l[i + 4], l[i] += l[i + 2],
//     l[0] + l[1] (a 512-bit register folded in halves; two 256-bit ones do the same).
//   exp (softmax): exp_ref below, a Cephes-style polynomial with fused multiply-adds.
//   dot products of attention: one fused chain per key, acc = fma(q[d], k[d], acc), d ascending;
//     weighted values: one fused chain per output dimension, keys ascending.
//
// Internal linkage throughout (see ternary_impl.h: each ISA file is compiled with its own flags).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace bitnet {
namespace {

constexpr int kSumLanes = 16;

// The halving tree over 16 lanes.
inline float sum_lanes16(const float l[kSumLanes]) {
    float t8[8], t4[4];
    for (int i = 0; i < 8; ++i) t8[i] = l[i] + l[i + 8];
    for (int i = 0; i < 4; ++i) t4[i] = t8[i] + t8[i + 4];
    return (t4[0] + t4[2]) + (t4[1] + t4[3]);
}

// The head's two chains, added lane by lane, then the tree.
inline float sum_two_chains(const float chain[2][kSumLanes]) {
    float l[kSumLanes];
    for (int i = 0; i < kSumLanes; ++i) l[i] = chain[0][i] + chain[1][i];
    return sum_lanes16(l);
}

// 2^e for -126 <= e <= 127, exactly.
inline float pow2_exact(int e) {
    const uint32_t bits = static_cast<uint32_t>(e + 127) << 23;
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

// Constants of exp_ref: x = n ln2 + r with ln 2 in two parts, e^r by a degree-7 polynomial
// (Cephes' expf coefficients).
constexpr float kExpMin = -104.0f;  // e^-104 is below the smallest subnormal
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kExpPoly[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                               4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

// e^x for x <= 0 (max-subtracted scores), within a few ulp of expf:
//   x' = max(x, -104); n = rint(x' log2e); r = fma(-n, ln2_lo, fma(-n, ln2_hi, x'))
//   p = Horner over kExpPoly with fma; p = fma(p, r*r, r + 1); result p * 2^n, rounded once
// (2^n applied in two exact-or-once-rounded steps, so subnormal results round correctly).
inline float exp_ref(float x) {
    x = std::fmax(x, kExpMin);
    const float n = std::nearbyint(x * kLog2e);
    float r = std::fma(-n, kLn2Hi, x);
    r = std::fma(-n, kLn2Lo, r);
    float p = kExpPoly[0];
    for (int i = 1; i < 6; ++i) p = std::fma(p, r, kExpPoly[i]);
    p = std::fma(p, r * r, r + 1.0f);
    const int e = static_cast<int>(n), a = e < -125 ? -125 : e;
    return p * pow2_exact(a) * pow2_exact(e - a);
}

}  // namespace
}  // namespace bitnet
